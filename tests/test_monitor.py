"""What a user watches during training: statistics, log, tick line, image grids, plots, TensorBoard."""
import json
import math
import os
import sys
import types

import numpy as np
import PIL.Image
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stylegan.training.monitor import RunMonitor, StatsCollector, format_duration, setup_snapshot_image_grid
from stylegan.training.monitor.grid import snapshot_grid_size
from stylegan.training.monitor.plots import build_plots_figure, read_jsonl, read_metric_series


class FakeClock:
    """A clock the test moves by hand, so timings are exact without waiting."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class TinyDataset:
    """Images whose every pixel is their index (mod 256), labels one-hot of `index % num_classes`."""

    def __init__(self, num_images, num_classes=0, image_shape=(1, 8, 8)):
        self.num_images = num_images
        self.num_classes = num_classes
        self.image_shape = list(image_shape)
        self.has_labels = num_classes > 0

    def __len__(self):
        return self.num_images

    def get_label(self, idx):
        if not self.has_labels:
            return np.zeros([0], np.float32)
        return np.eye(self.num_classes, dtype=np.float32)[idx % self.num_classes]

    def __getitem__(self, idx):
        return np.full(self.image_shape, idx % 256, np.uint8), self.get_label(idx)


def numpy_record(values):
    values = np.asarray(values, np.float64)
    return values.size, values.mean(), values.std()


# -- StatsCollector ---------------------------------------------------------------------------

def test_stats_jsonl_lines_hold_mean_and_std_of_the_added_values(tmp_path):
    rng = np.random.default_rng(0)
    collector = StatsCollector()
    monitor = RunMonitor(tmp_path, progress_bar=False)
    windows = []
    for _ in range(2):
        losses = [rng.normal(size=5).astype(np.float32) for _ in range(4)]
        for loss in losses:
            collector.add('Loss/G/loss', torch.from_numpy(loss))
        collector.add('Loss/r1_penalty', 0.25)
        collector.add('Loss/r1_penalty', [0.5, 1.0])
        monitor.record(collector.summarize(), cur_nimg=4000 * (len(windows) + 1))
        collector.reset()
        windows.append((np.concatenate(losses), [0.25, 0.5, 1.0]))
    monitor.close()

    lines = read_jsonl(tmp_path / 'stats.jsonl')
    assert len(lines) == 2
    for line, (losses, penalties) in zip(lines, windows):
        for name, values in [('Loss/G/loss', losses), ('Loss/r1_penalty', penalties)]:
            num, mean, std = numpy_record(values)
            assert line[name]['num'] == num
            assert line[name]['mean'] == pytest.approx(mean, rel=1e-6)
            assert line[name]['std'] == pytest.approx(std, rel=1e-6)
        assert isinstance(line['timestamp'], float)
    assert [line['Progress/kimg']['mean'] for line in lines] == [4.0, 8.0]


def test_summary_of_one_value_has_zero_std_and_unused_names_are_left_out():
    collector = StatsCollector()
    collector.add('Progress/augment', torch.tensor(0.3))
    collector.add('Loss/pl_penalty', [])
    assert collector.summarize() == {'Progress/augment': {'num': 1, 'mean': pytest.approx(0.3), 'std': 0.0}}
    collector.reset()
    assert collector.summarize() == {}


def test_add_keeps_moments_on_the_values_device_without_reading_them():
    # Meta tensors have no data: any host read (.item(), .cpu()) in `add` would raise.
    collector = StatsCollector()
    collector.add('Loss/scores/real', torch.empty(16, device='meta'))
    collector.add('Loss/scores/real', torch.empty(16, device='meta'))
    [moments] = collector._moments['Loss/scores/real'].values()
    assert moments.device.type == 'meta' and moments.dtype == torch.float64


def _two_rank_worker(rank, init_file, values, out_dir):
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    torch.set_num_threads(1)
    collector = StatsCollector()
    for chunk in values[rank]:
        collector.add('Loss/D/loss', torch.tensor(chunk))
    collector.add0('Progress/kimg', 12.0, rank)
    if rank == 1:
        collector.add('Timing/rank1_only', 3.0)  # a name the other rank never saw
    summary = collector.summarize()
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as file:
        json.dump(summary, file)
    dist.destroy_process_group()


def test_two_rank_gloo_all_reduce_equals_single_rank_statistics(tmp_path):
    rng = np.random.default_rng(1)
    values = [[rng.normal(size=3).tolist() for _ in range(4)], [rng.normal(size=7).tolist() for _ in range(2)]]
    context = mp.get_context('spawn')
    workers = [context.Process(target=_two_rank_worker, args=(rank, tmp_path / 'init', values, str(tmp_path)))
               for rank in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0

    single = StatsCollector()
    for chunk in values[0] + values[1]:
        single.add('Loss/D/loss', torch.tensor(chunk))
    single.add('Progress/kimg', 12.0)
    single.add('Timing/rank1_only', 3.0)
    expected = single.summarize()
    for rank in range(2):
        summary = json.loads((tmp_path / f'rank{rank}.json').read_text())
        assert summary.keys() == expected.keys()
        for name, record in expected.items():
            assert summary[name]['num'] == record['num']
            assert summary[name]['mean'] == pytest.approx(record['mean'], rel=1e-12)
            assert summary[name]['std'] == pytest.approx(record['std'], rel=1e-12)


# -- log.txt, the tick line, TensorBoard, metrics -----------------------------------------------

def test_disabled_monitor_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / 'run'
    monitor = RunMonitor(run_dir, enabled=False, total_kimg=10, progress_bar=False)
    images = np.zeros([4, 3, 8, 8], np.uint8)
    monitor.log('hello')
    monitor.begin_tick(0)
    assert monitor.tick_line(0, 4000, augment_p=0.1, stats={}) == {}
    monitor.record({'Loss/G/loss': {'num': 1, 'mean': 1.0, 'std': 0.0}}, 4000)
    monitor.record_metric('fid50k_full', 10.0, 4000)
    monitor.save_reals(images, (2, 2))
    monitor.save_fakes_init(images, (2, 2))
    monitor.save_fakes(images, 4000, (2, 2))
    assert monitor.draw_plots() is None
    monitor.close()
    assert not run_dir.exists()
    assert capsys.readouterr().out == ''


def test_log_prints_and_appends_to_log_txt(tmp_path, capsys):
    with RunMonitor(tmp_path, progress_bar=False) as monitor:
        monitor.log('Loading training set...')
    with RunMonitor(tmp_path, progress_bar=False) as monitor:  # a resumed run keeps the old lines
        monitor.log('Resuming')
    assert (tmp_path / 'log.txt').read_text() == 'Loading training set...\nResuming\n'
    assert capsys.readouterr().out == 'Loading training set...\nResuming\n'


def test_tick_line_times_the_tick_and_its_maintenance(tmp_path, capsys):
    clock = FakeClock()
    monitor = RunMonitor(tmp_path, total_kimg=20, clock=clock, progress_bar=False)
    clock.now += 5                      # setup: networks, reals.png
    monitor.begin_tick(0)
    clock.now += 40                     # 4 kimg of training
    stats = {'Loss/G/loss': {'num': 8, 'mean': 1.25, 'std': 0.1}}
    progress = monitor.tick_line(0, 4000, augment_p=0.125, stats=stats)
    value = {name: record['mean'] for name, record in progress.items()}
    assert value['Progress/kimg'] == 4.0
    assert value['Timing/sec_per_tick'] == 40.0
    assert value['Timing/sec_per_kimg'] == 10.0
    assert value['Timing/maintenance_sec'] == 5.0
    assert value['Timing/total_sec'] == 45.0
    assert value['Progress/augment'] == 0.125
    clock.now += 2                      # snapshot and metrics
    monitor.begin_tick(4000)
    assert monitor.maintenance_sec == 2.0
    monitor.close()

    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith('tick 0     kimg 4.0      time 45s          sec/tick 40.0    sec/kimg 10.00 ')
    assert 'augment 0.125' in line and 'loss_G 1.2500' in line
    # 16 kimg left at 45 s per 4 kimg (training plus maintenance).
    assert 'eta 3m 00s' in line
    assert (tmp_path / 'log.txt').read_text().splitlines()[-1] == line


def test_progress_bar_shows_kimg_eta_losses_and_p_and_stays_out_of_log_txt(tmp_path, capsys):
    clock = FakeClock()
    monitor = RunMonitor(tmp_path, total_kimg=10, clock=clock, progress_bar=True)
    monitor.begin_tick(0)
    for tick in range(2):
        clock.now += 30
        monitor.tick_line(tick, 2000 * (tick + 1), augment_p=0.05, stats={'Loss/D/loss': {'num': 2, 'mean': 0.5, 'std': 0}})
        monitor.begin_tick(2000 * (tick + 1))
    monitor.close()
    bar = capsys.readouterr().out.split('\r')[-1]
    assert bar.startswith(' 40%|') and '4.0/10 kimg' in bar
    assert 'ETA=1m 30s' in bar and 'loss_D=0.500' in bar and 'p=0.050' in bar
    assert [line[:6] for line in (tmp_path / 'log.txt').read_text().splitlines()] == ['tick 0', 'tick 1']


def test_format_duration_writes_the_release_time_spans():
    assert [format_duration(s) for s in (42, 187, 7509, 273900)] == ['42s', '3m 07s', '2h 05m 09s', '3d 04h 05m']


def test_record_writes_tensorboard_scalars_when_tensorboard_is_installed(tmp_path, monkeypatch):
    calls = []

    class RecordingWriter:
        def __init__(self, log_dir):
            calls.append(('open', log_dir))

        def add_scalar(self, name, value, global_step, walltime):
            calls.append((name, value, global_step))

        def flush(self):
            pass

        def close(self):
            calls.append(('close',))

    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', types.SimpleNamespace(SummaryWriter=RecordingWriter))
    with RunMonitor(tmp_path, clock=FakeClock(), progress_bar=False) as monitor:
        monitor.record_metric('fid50k_full', 12.5, 8000)
        monitor.record({'Loss/D/loss': {'num': 4, 'mean': 0.75, 'std': 0.1}}, 8000)
    assert calls == [('open', str(tmp_path)), ('Loss/D/loss', 0.75, 8), ('Progress/kimg', 8.0, 8),
                     ('Metrics/fid50k_full', 12.5, 8), ('close',)]


def test_record_skips_tensorboard_silently_when_it_is_absent(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)  # import raises ImportError
    with RunMonitor(tmp_path, progress_bar=False) as monitor:
        monitor.record({'Loss/D/loss': {'num': 1, 'mean': 0.5, 'std': 0.0}}, 4000)
    assert sorted(os.listdir(tmp_path)) == ['stats.jsonl']
    assert capsys.readouterr().out == ''


def test_record_metric_appends_the_release_metric_line(tmp_path):
    with RunMonitor(tmp_path, clock=FakeClock(), progress_bar=False) as monitor:
        monitor.record_metric('pr50k3_full', {'pr50k3_full_precision': 0.5, 'pr50k3_full_recall': 0.25}, 12000,
                              snapshot_pkl=tmp_path / 'network-snapshot-000012.pkl', total_time=75, num_gpus=1)
    [line] = read_jsonl(tmp_path / 'metric-pr50k3_full.jsonl')
    assert line == {'results': {'pr50k3_full_precision': 0.5, 'pr50k3_full_recall': 0.25},
                    'metric': 'pr50k3_full', 'total_time': 75, 'total_time_str': '1m 15s', 'num_gpus': 1,
                    'snapshot_pkl': 'network-snapshot-000012.pkl', 'kimg': 12.0, 'timestamp': 1000.0}


def test_record_metric_takes_the_whole_result_of_calc_metric(tmp_path):
    result = {'results': {'fid50k_full': 8.25}, 'metric': 'fid50k_full', 'total_time': 3.5,
              'total_time_str': '4s', 'num_gpus': 2}
    with RunMonitor(tmp_path, clock=FakeClock(), progress_bar=False) as monitor:
        monitor.record_metric('fid50k_full', result, 4000, snapshot_pkl=tmp_path / 'network-snapshot-000004.pkl')
    [line] = read_jsonl(tmp_path / 'metric-fid50k_full.jsonl')
    assert line == dict(result, snapshot_pkl='network-snapshot-000004.pkl', kimg=4.0, timestamp=1000.0)
    assert monitor.metrics == {'Metrics/fid50k_full': 8.25}


def test_a_metric_goes_into_the_next_stats_line_only(tmp_path):
    with RunMonitor(tmp_path, clock=FakeClock(), progress_bar=False) as monitor:
        monitor.record_metric('fid50k_full', 8.25, 4000)
        monitor.record({'Loss/G/loss': {'num': 1, 'mean': 1.0, 'std': 0.0}}, 4000)
        monitor.record({'Loss/G/loss': {'num': 1, 'mean': 0.5, 'std': 0.0}}, 8000)
    first, second = read_jsonl(tmp_path / 'stats.jsonl')
    assert first['Metrics/fid50k_full'] == {'num': 1, 'mean': 8.25, 'std': 0.0}
    assert 'Metrics/fid50k_full' not in second


def test_metric_lines_of_the_release_are_placed_by_their_snapshot_name(tmp_path):
    # The release writes no kimg: it is read from the snapshot's file name.
    line = {'results': {'fid50k_full': 7.5}, 'metric': 'fid50k_full', 'snapshot_pkl': 'network-snapshot-000400.pkl'}
    (tmp_path / 'metric-fid50k_full.jsonl').write_text(json.dumps(line) + '\n{"torn')
    assert read_metric_series(tmp_path) == {'fid50k_full': {'fid50k_full': ([400], [7.5])}}


def test_record_takes_plain_numbers_as_single_values(tmp_path):
    with RunMonitor(tmp_path, progress_bar=False) as monitor:
        monitor.record({'Progress/augment': 0.25}, 6000)
    [line] = read_jsonl(tmp_path / 'stats.jsonl')
    assert line['Progress/augment'] == {'num': 1, 'mean': 0.25, 'std': 0.0}
    assert line['Progress/kimg'] == {'num': 1, 'mean': 6.0, 'std': 0.0}


def test_a_short_run_writes_every_file_a_user_watches(tmp_path):
    grid_size, reals, labels = setup_snapshot_image_grid(TinyDataset(10))
    collector = StatsCollector()
    with RunMonitor(tmp_path, total_kimg=8, ada_target=0.6, progress_bar=False) as monitor:
        monitor.save_reals(reals, grid_size)
        monitor.save_fakes_init(torch.zeros(reals.shape), grid_size)
        monitor.begin_tick(0)
        for tick in range(2):
            cur_nimg = 4000 * (tick + 1)
            collector.add('Loss/G/loss', torch.randn(4))
            collector.add('Loss/signs/real', torch.randn(4).sign())
            summary = collector.summarize()
            collector.reset()
            progress = monitor.tick_line(tick, cur_nimg, augment_p=0.01 * tick, stats=summary)
            monitor.save_fakes(torch.zeros(reals.shape), cur_nimg, grid_size)
            monitor.record_metric('fid50k_full', 100.0 - tick, cur_nimg)
            monitor.record({**summary, **progress}, cur_nimg)
            monitor.draw_plots()
            monitor.begin_tick(cur_nimg)
    assert sorted(os.listdir(tmp_path)) == ['fakes000004.png', 'fakes000008.png', 'fakes_init.png', 'log.txt',
                                            'metric-fid50k_full.jsonl', 'plots.png', 'reals.png', 'stats.jsonl']
    assert len(read_jsonl(tmp_path / 'stats.jsonl')) == 2


# -- image grids --------------------------------------------------------------------------------

def test_snapshot_grid_fills_7680x4320_within_7x4_and_32x32_cells():
    assert snapshot_grid_size([3, 1024, 1024]) == (7, 4)
    assert snapshot_grid_size([3, 256, 256]) == (30, 16)
    assert snapshot_grid_size([3, 64, 64]) == (32, 32)


def test_unlabelled_grid_shows_a_random_order_of_every_image():
    grid_size, images, labels = setup_snapshot_image_grid(TinyDataset(100), random_seed=0)
    assert grid_size == (32, 32) and images.shape == (1024, 1, 8, 8) and images.dtype == np.uint8
    shown = images[:, 0, 0, 0].astype(int)
    assert sorted(shown[:100]) == list(range(100))          # one pass through a shuffled dataset
    assert list(shown[100:200]) == list(shown[:100])        # then it repeats
    assert list(shown[:100]) != list(range(100))
    assert labels.shape == (1024, 0)


def test_labelled_grid_gives_each_row_one_class_in_class_order():
    dataset = TinyDataset(70, num_classes=3)
    (columns, rows), images, labels = setup_snapshot_image_grid(dataset, random_seed=0)
    shown = images[:, 0, 0, 0].reshape(rows, columns).astype(int)
    row_classes = labels.argmax(axis=1).reshape(rows, columns)
    for row in range(rows):
        assert set(row_classes[row]) == {row % 3}
        assert set(shown[row] % 3) == {row % 3}
    # Class 0 has 24 images: its second row (grid row 3) starts where the first one wrapped.
    first_row = list(shown[0])
    assert list(shown[3][:24]) == first_row[8:24] + first_row[:8]


def test_fakes_png_tiles_the_batch_row_major_at_the_expected_size(tmp_path):
    columns, rows, height, width = 3, 2, 4, 5
    levels = torch.linspace(-1, 1, columns * rows)                     # one grey level per image
    images = levels.view(-1, 1, 1, 1).expand(-1, 3, height, width).clone()
    images[0, :, 0, 0] = torch.tensor([-1.0, 0.0, 1.0])                # one coloured pixel
    with RunMonitor(tmp_path, progress_bar=False) as monitor:
        monitor.save_fakes(images, 123456, (columns, rows))
    picture = PIL.Image.open(tmp_path / 'fakes000123.png')
    assert picture.mode == 'RGB' and picture.size == (columns * width, rows * height)
    pixels = np.asarray(picture)
    expected = np.rint((levels.numpy() + 1) * 127.5).astype(np.uint8)
    for i in range(columns * rows):
        row, column = divmod(i, columns)
        assert (pixels[row * height + 1, column * width + 1] == expected[i]).all()
    assert list(pixels[0, 0]) == [0, 128, 255]
    assert not [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]


def test_reals_png_keeps_uint8_pixels_and_grayscale(tmp_path):
    images = np.arange(4 * 1 * 2 * 2, dtype=np.uint8).reshape(4, 1, 2, 2) * 10
    with RunMonitor(tmp_path, progress_bar=False) as monitor:
        monitor.save_reals(images, (2, 2))
        monitor.save_fakes_init(images, (2, 2))
    for name in ['reals.png', 'fakes_init.png']:
        picture = PIL.Image.open(tmp_path / name)
        assert picture.mode == 'L'
        np.testing.assert_array_equal(np.asarray(picture)[:2, 2:], images[1, 0])


def test_image_grid_refuses_a_batch_that_does_not_fill_it(tmp_path):
    with RunMonitor(tmp_path, progress_bar=False) as monitor:
        with pytest.raises(ValueError, match='a 3x2 grid needs 6 images, got 4'):
            monitor.save_fakes(np.zeros([4, 3, 2, 2], np.uint8), 0, (3, 2))


# -- plots.png ----------------------------------------------------------------------------------

def fake_stats_rows(num_ticks, names):
    return [dict({name: {'num': 4, 'mean': math.sin(tick + i), 'std': 0.1} for i, name in enumerate(names)},
                 **{'Progress/kimg': {'num': 1, 'mean': 4.0 * tick, 'std': 0.0}}) for tick in range(num_ticks)]


def test_plots_have_one_panel_per_statistic_group_present_and_per_metric():
    rows = fake_stats_rows(5, ['Loss/G/loss', 'Loss/D/loss', 'Progress/augment', 'Loss/signs/real'])
    metrics = {'fid50k_full': {'fid50k_full': ([4, 16], [50.0, 30.0])}}
    figure = build_plots_figure(rows, metrics, ada_target=0.6)
    panels = {ax.get_title(): ax for ax in figure.axes}
    assert list(panels) == ['G and D loss', 'Augmentation', 'Metric fid50k_full']
    assert [line.get_label() for line in panels['G and D loss'].get_lines()] == ['G loss', 'D loss']
    assert list(panels['G and D loss'].get_lines()[0].get_xdata()) == [0.0, 4.0, 8.0, 12.0, 16.0]
    target = [line for line in panels['Augmentation'].get_lines() if line.get_label() == 'ADA target 0.6']
    assert list(target[0].get_ydata()) == [0.6, 0.6]
    assert list(panels['Metric fid50k_full'].get_lines()[0].get_ydata()) == [50.0, 30.0]
    assert build_plots_figure([], {}) is None


def test_draw_plots_writes_a_png_from_the_run_files(tmp_path):
    with RunMonitor(tmp_path, progress_bar=False) as monitor:
        assert monitor.draw_plots() is None                              # nothing to plot yet
        for row in fake_stats_rows(3, ['Loss/r1_penalty', 'Loss/pl_penalty']):
            monitor.record({k: v for k, v in row.items() if k != 'Progress/kimg'}, int(row['Progress/kimg']['mean'] * 1000))
        path = monitor.draw_plots()
    assert path == os.path.join(str(tmp_path), 'plots.png')
    with PIL.Image.open(path) as picture:
        assert picture.format == 'PNG' and picture.size == (1200, 320)  # one row of two 6x3.2 in panels
        picture.verify()
