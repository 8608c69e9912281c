"""What a user watches during training: log.txt, the tick line, stats.jsonl, TensorBoard, image
grids and plots.png, all in the run folder.

    monitor = RunMonitor(run_dir, enabled=(rank == 0), total_kimg=25000, ada_target=0.6, device=device)
    stats = StatsCollector()                        # on every rank
    grid_size, images, labels = setup_snapshot_image_grid(dataset)
    monitor.save_reals(images, grid_size); monitor.save_fakes_init(G_ema_images, grid_size)
    monitor.begin_tick(cur_nimg)                    # training starts: setup time is tick 0's maintenance
    ...  stats.add('Loss/G/loss', loss) every step ...
    summary = stats.summarize(); stats.reset()      # every rank: a collective when distributed
    progress = monitor.tick_line(cur_tick, cur_nimg, augment_p=p, stats=summary)
    monitor.save_fakes(G_ema_images, cur_nimg, grid_size)
    monitor.record_metric('fid50k_full', fid, cur_nimg, snapshot_pkl=path)
    monitor.record({**summary, **progress}, cur_nimg)
    monitor.draw_plots()                            # after record: it reads stats.jsonl
    monitor.begin_tick(cur_nimg)                    # after the maintenance of snapshots and metrics
    monitor.close()

Names and layouts are the releases': `stats.jsonl` lines of {name: {num, mean, std}} plus
`timestamp`, `metric-<name>.jsonl`, `fakes000123.png` named by kimg, the tick line's fields in the
release's order. With `enabled=False` (ranks other than 0) every method does nothing.
"""
import json
import math
import os
import sys
import time

import torch

from stylegan.durations import format_duration
from stylegan.training.monitor.grid import save_image_grid, setup_snapshot_image_grid
from stylegan.training.monitor.plots import draw_run_plots
from stylegan.training.monitor.resources import cpu_memory_gb, gpu_memory_gb, take_gpu_memory_peaks
from stylegan.training.monitor.stats import StatsCollector

__all__ = ['RunMonitor', 'StatsCollector', 'setup_snapshot_image_grid', 'format_duration', 'format_tick_line']

# Losses appended to the tick line after the release's fields: (statistic, label).
TICK_LOSSES = [('Loss/G/loss', 'loss_G'), ('Loss/D/loss', 'loss_D'), ('Loss/r1_penalty', 'r1')]


def single_value(value):
    """A number reported once (by rank 0), in the stats.jsonl layout."""
    return {'num': 1, 'mean': float(value), 'std': 0.0}


class RunMonitor:
    """Everything written to the run folder for a person to watch; one per run, on every rank.

    enabled:      False on ranks other than 0: every method is then a no-op.
    total_kimg:   length of the run, for the ETA and the progress bar.
    ada_target:   drawn as a line beside E[sign(D(real))] in plots.png (None: no line).
    device:       the training device, whose peak CUDA memory the tick line reports.
    start_time:   when the run began (default: now); setup before the first tick counts as maintenance.
    clock:        the time source, seconds (tests pass a fake one).
    progress_bar: a tqdm bar under the tick lines; default: when stdout is a terminal.
    """

    def __init__(self, run_dir, enabled=True, total_kimg=None, ada_target=None, device=None,
                 start_time=None, clock=time.time, progress_bar=None):
        self.run_dir = os.fspath(run_dir)
        self.enabled = enabled
        self.total_kimg = total_kimg
        self.ada_target = ada_target
        self.device = torch.device(device) if device is not None else None
        self.clock = clock
        self.start_time = clock() if start_time is None else start_time
        self.tick_start_time = self.start_time
        self.tick_start_nimg = 0
        self._tick_end_time = self.start_time
        self.maintenance_sec = 0.0
        self.metrics = {}  # 'Metrics/<result>' -> value computed this tick, for the next stats line
        self._log_file = None
        self._stats_file = None
        self._tensorboard = None
        self._tensorboard_tried = False
        self._bar = None
        self._use_bar = progress_bar if progress_bar is not None else _stdout_is_terminal()
        if enabled:
            os.makedirs(self.run_dir, exist_ok=True)

    # -- log.txt ------------------------------------------------------------------------------

    def log(self, text=''):
        """Print `text` and append it to log.txt (flushed, so `tail -f` follows the run)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)  # keeps the bar below the printed lines
        else:
            print(text, flush=True)
        if self._log_file is None:
            self._log_file = open(os.path.join(self.run_dir, 'log.txt'), 'a', encoding='utf-8')
        self._log_file.write(text + '\n')
        self._log_file.flush()

    # -- the tick line ------------------------------------------------------------------------

    def begin_tick(self, cur_nimg):
        """Mark the start of a tick's training. The time since the last `tick_line` (snapshots,
        metrics, plots) is the next tick's `maintenance`; before the first tick it is setup time."""
        now = self.clock()
        self.maintenance_sec = now - self._tick_end_time
        self.tick_start_time = now
        self.tick_start_nimg = cur_nimg

    def tick_progress(self, cur_tick, cur_nimg, augment_p=0.0):
        """The release's Progress/, Timing/ and Resources/ statistics of the tick just finished,
        in the stats.jsonl layout; also resets the GPU memory peaks for the next tick."""
        now = self.clock()
        self._tick_end_time = now
        tick_sec = now - self.tick_start_time
        tick_nimg = max(cur_nimg - self.tick_start_nimg, 1)
        total_sec = now - self.start_time
        allocated_gb, reserved_gb = gpu_memory_gb(self.device)
        take_gpu_memory_peaks(self.device)
        values = {
            'Progress/tick': cur_tick,
            'Progress/kimg': cur_nimg / 1e3,
            'Timing/total_sec': total_sec,
            'Timing/sec_per_tick': tick_sec,
            'Timing/sec_per_kimg': tick_sec / tick_nimg * 1e3,
            'Timing/maintenance_sec': self.maintenance_sec,
            'Resources/cpu_mem_gb': cpu_memory_gb(),
            'Resources/peak_gpu_mem_gb': allocated_gb,
            'Resources/peak_gpu_mem_reserved_gb': reserved_gb,
            'Progress/augment': float(augment_p),
            'Timing/total_hours': total_sec / (60 * 60),
            'Timing/total_days': total_sec / (24 * 60 * 60),
        }
        return {name: single_value(value) for name, value in values.items()}

    def eta_sec(self, cur_nimg, progress):
        """Seconds left at this tick's pace, maintenance included; None without `total_kimg`."""
        if self.total_kimg is None:
            return None
        tick_kimg = max(cur_nimg - self.tick_start_nimg, 1) / 1e3
        tick_sec = progress['Timing/sec_per_tick']['mean'] + progress['Timing/maintenance_sec']['mean']
        return max(self.total_kimg - cur_nimg / 1e3, 0) * tick_sec / tick_kimg

    def tick_line(self, cur_tick, cur_nimg, augment_p=0.0, stats=None):
        """Print and log the tick's status line and update the progress bar. Returns the tick's
        progress statistics (see `tick_progress`) to merge into `record`; {} when disabled."""
        if not self.enabled:
            return {}
        progress = self.tick_progress(cur_tick, cur_nimg, augment_p)
        eta = self.eta_sec(cur_nimg, progress)
        self._update_bar(cur_nimg, progress, stats or {}, eta)
        self.log(format_tick_line(progress, stats or {}, eta))
        return progress

    def _update_bar(self, cur_nimg, progress, stats, eta):
        if not self._use_bar or self.total_kimg is None:
            return
        if self._bar is None:
            from tqdm import tqdm
            self._bar = tqdm(total=self.total_kimg, unit='kimg', dynamic_ncols=True, file=sys.stdout,
                             bar_format='{l_bar}{bar}| {n:.1f}/{total} kimg{postfix}')
        self._bar.n = min(cur_nimg / 1e3, self.total_kimg)
        postfix = {'sec/kimg': f"{progress['Timing/sec_per_kimg']['mean']:.2f}",
                   'p': f"{progress['Progress/augment']['mean']:.3f}"}
        if eta is not None:
            postfix['ETA'] = format_duration(eta)
        for name, label in TICK_LOSSES:
            if name in stats:
                postfix[label] = f"{stats[name]['mean']:.3f}"
        self._bar.set_postfix(postfix, refresh=True)

    # -- stats.jsonl and TensorBoard ------------------------------------------------------------

    def record(self, stats, cur_nimg, timestamp=None):
        """Append one line to stats.jsonl: `stats` ({name: {num, mean, std}}; a plain number counts as
        one value), `Progress/kimg` when missing, the metrics recorded since the last line
        (`Metrics/<result>`), and `timestamp`; and the means to TensorBoard."""
        if not self.enabled:
            return
        timestamp = self.clock() if timestamp is None else timestamp
        fields = {name: record if isinstance(record, dict) else single_value(record) for name, record in stats.items()}
        fields.setdefault('Progress/kimg', single_value(cur_nimg / 1e3))
        fields.update({name: single_value(value) for name, value in self.metrics.items()})
        self.metrics = {}
        fields['timestamp'] = timestamp
        if self._stats_file is None:
            self._stats_file = open(os.path.join(self.run_dir, 'stats.jsonl'), 'a', encoding='utf-8')
        self._stats_file.write(json.dumps(fields) + '\n')
        self._stats_file.flush()
        self._write_tensorboard(fields, cur_nimg, timestamp)

    def _write_tensorboard(self, fields, cur_nimg, timestamp):
        writer = self._tensorboard_writer()
        if writer is None:
            return
        step, walltime = int(cur_nimg / 1e3), timestamp - self.start_time
        for name, record in fields.items():
            if isinstance(record, dict):
                writer.add_scalar(name, record['mean'], global_step=step, walltime=walltime)
        writer.flush()

    def _tensorboard_writer(self):
        # tensorboard is optional: `torch.utils.tensorboard` raises ImportError without it.
        if not self._tensorboard_tried:
            self._tensorboard_tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tensorboard = SummaryWriter(self.run_dir)
            except ImportError:
                self._tensorboard = None
        return self._tensorboard

    def record_metric(self, name, value, cur_nimg, snapshot_pkl=None, total_time=None, num_gpus=None):
        """Append a metric result to `metric-<name>.jsonl` in the release's layout (plus `kimg`), log
        it, and add it to the next `record` (stats.jsonl and TensorBoard). `value` is a number, a dict of results
        ({'pr50k3_full_precision': .., 'pr50k3_full_recall': ..}) or the whole result of
        `metrics.calc_metric` ({'results': {..}, 'metric', 'total_time', 'total_time_str', 'num_gpus'})."""
        if not self.enabled:
            return
        line = metric_line(name, value, total_time, num_gpus)
        line.update(snapshot_pkl=_relative(snapshot_pkl, self.run_dir), kimg=cur_nimg / 1e3,
                    timestamp=self.clock())
        with open(os.path.join(self.run_dir, f'metric-{name}.jsonl'), 'a', encoding='utf-8') as file:
            file.write(json.dumps(line) + '\n')
        self.metrics.update({f'Metrics/{key}': float(result) for key, result in line['results'].items()})
        self.log(json.dumps(line))

    # -- images and plots -----------------------------------------------------------------------

    def save_reals(self, images, grid_size):
        """reals.png: the training images of the snapshot grid (uint8 [N, C, H, W])."""
        self._save_grid(images, grid_size, 'reals.png')

    def save_fakes_init(self, images, grid_size):
        """fakes_init.png: the fixed latents through the untrained (or resumed) generator."""
        self._save_grid(images, grid_size, 'fakes_init.png')

    def save_fakes(self, images, cur_nimg, grid_size):
        """fakes<kimg:06d>.png: generator output (float in [-1, 1] or uint8, [N, C, H, W])."""
        self._save_grid(images, grid_size, f'fakes{cur_nimg // 1000:06d}.png')

    def _save_grid(self, images, grid_size, file_name):
        if self.enabled:
            save_image_grid(images, os.path.join(self.run_dir, file_name), grid_size)

    def draw_plots(self):
        """Redraw plots.png from stats.jsonl and the metric-*.jsonl files."""
        if not self.enabled:
            return None
        if self._stats_file is not None:
            self._stats_file.flush()
        return draw_run_plots(self.run_dir, ada_target=self.ada_target)

    def close(self):
        for handle in (self._bar, self._tensorboard, self._stats_file, self._log_file):
            if handle is not None:
                handle.close()
        self._bar = self._tensorboard = self._stats_file = self._log_file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def format_tick_line(progress, stats, eta_sec=None):
    """The release's status line (tick, kimg, time, sec/tick, sec/kimg, maintenance, cpumem, gpumem,
    reserved, augment), then the ETA and the tick's mean losses."""
    value = {name: record['mean'] for name, record in progress.items()}
    fields = [
        f"tick {int(value['Progress/tick']):<5d}",
        f"kimg {value['Progress/kimg']:<8.1f}",
        f"time {format_duration(value['Timing/total_sec']):<12s}",
        f"sec/tick {value['Timing/sec_per_tick']:<7.1f}",
        f"sec/kimg {value['Timing/sec_per_kimg']:<7.2f}",
        f"maintenance {value['Timing/maintenance_sec']:<6.1f}",
        f"cpumem {value['Resources/cpu_mem_gb']:<6.2f}",
        f"gpumem {value['Resources/peak_gpu_mem_gb']:<6.2f}",
        f"reserved {value['Resources/peak_gpu_mem_reserved_gb']:<6.2f}",
        f"augment {value['Progress/augment']:.3f}",
    ]
    if eta_sec is not None:
        fields.append(f'eta {format_duration(eta_sec)}')
    for name, label in TICK_LOSSES:
        if name in stats and math.isfinite(stats[name]['mean']):
            fields.append(f"{label} {stats[name]['mean']:.4f}")
    return ' '.join(fields)


def metric_line(name, value, total_time=None, num_gpus=None):
    """The release's metric record ({'results', 'metric', 'total_time', 'total_time_str', 'num_gpus'},
    the fields known) from a number, a dict of results or an already complete record."""
    if isinstance(value, dict) and isinstance(value.get('results'), dict):
        line = dict(value, results=dict(value['results']))
    elif isinstance(value, dict):
        line = {'results': dict(value)}
    else:
        line = {'results': {name: float(value)}}
    line['metric'] = name
    if total_time is not None:
        line.update(total_time=total_time, total_time_str=format_duration(total_time))
    if num_gpus is not None:
        line['num_gpus'] = num_gpus
    return line


def _relative(path, run_dir):
    return None if path is None else os.path.relpath(os.fspath(path), run_dir)


def _stdout_is_terminal():
    return hasattr(sys.stdout, 'isatty') and sys.stdout.isatty()
