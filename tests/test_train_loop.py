"""The training loop on the CPU: a tiny run writes its run folder, every preset trains a step, a
resumed run ends exactly where an uninterrupted one does, and non-finite steps are skipped."""
import dataclasses
import json
import math
import os

import pytest
import torch

from stylegan import load_network
from stylegan.training import launch
from stylegan.training.config import PRESETS, TrainOptions
from stylegan.training.loop import build_run, real_batches, training_step
from stylegan.training.snapshot import save_training_snapshot
from stylegan.training.step import NonFiniteCounter, NonFiniteTrainingError, Phase, step_phase
from test_train_helpers import assert_nested_close, load_snapshot, make_image_folder

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('data') / 'faces', count=16, size=16)


def tiny_options(outdir, data, **kwargs):
    base = dict(outdir=str(outdir), cfg='tiny', data=str(data), device='cpu', workers=0, metrics=[], batch=4,
                tick=0.016, snap=1)
    return TrainOptions(**dict(base, **kwargs))


def train(options, **config_changes):
    """prepare -> run folder -> train, as train.py does; returns the run folder."""
    config, options = launch.prepare_training(options)
    config = dataclasses.replace(config, **config_changes)
    launch.create_run_dir(config, options)
    launch.start_training(config, options)
    return config.run_dir


def test_tiny_cpu_run_writes_its_run_folder_and_stays_finite(tmp_path, image_folder):
    run_dir = train(tiny_options(tmp_path, image_folder, kimg=0.024, aug='ada', target=0.0))
    files = set(os.listdir(run_dir))
    assert {'training_options.json', 'log.txt', 'stats.jsonl', 'reals.png', 'fakes_init.png', 'fakes000000.png',
            'plots.png', 'network-snapshot-000000.pt'} <= files
    assert os.path.basename(run_dir) == '00000-tiny-faces-gpus1-batch4-gamma0.1'
    rows = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert rows[-1]['Progress/kimg']['mean'] == pytest.approx(0.024)
    for row in rows:
        for name in ('Loss/G/loss', 'Loss/D/loss', 'Progress/augment'):
            assert math.isfinite(row[name]['mean']), (name, row)
    nets = load_network(os.path.join(run_dir, 'network-snapshot-000000.pt'))  # readable as a network checkpoint
    assert nets['G_ema'].img_resolution == 16 and nets['augment_p'] >= 0
    options = json.load(open(os.path.join(run_dir, 'training_options.json')))
    assert options['batch_size'] == 4 and options['options']['cfg'] == 'tiny'


def test_resumed_run_ends_exactly_where_an_uninterrupted_run_does(tmp_path, image_folder):
    # 4 steps of 4 images, stopped after 2: lazy G regularisation (every 2 steps here) runs on both sides
    # of the interruption; noise inputs, style mixing, path-length noise and ADA all draw random numbers.
    quick = dict(tick=4, snap=50, img_snap=0)  # snapshots at tick 0 and at the end only, no image grids
    changes = dict(ada_kimg=0.5, G_reg_interval=2)
    full = train(tiny_options(tmp_path / 'a', image_folder, kimg=0.016, **quick), **changes)
    half = train(tiny_options(tmp_path / 'b', image_folder, kimg=0.008, **quick), **changes)
    resumed = train(tiny_options(tmp_path / 'b', image_folder, kimg=0.016, resume='latest', **quick), **changes)
    assert os.path.basename(half).startswith('00000-') and os.path.basename(resumed).startswith('00001-')
    a, b = (load_snapshot(os.path.join(run, 'network-snapshot-000000.pt')) for run in (full, resumed))
    for key in ('G', 'D', 'G_ema'):
        assert_nested_close(a['networks'][key]['state_dict'], b['networks'][key]['state_dict'], where=key)
    state_a, state_b = a['training_state'], b['training_state']
    for key in ('G_opt', 'D_opt', 'ada', 'loss', 'rng', 'nonfinite'):
        assert_nested_close(state_a[key], state_b[key], where=key)
    assert state_a['loop']['cur_nimg'] == state_b['loop']['cur_nimg'] == 16
    assert a['augment_p'] == b['augment_p']
    assert state_a['G_opt']['state'], 'the optimizer state must not be empty'


def train_one_step(tmp_path, image_folder, **kwargs):
    """Build a run and train one step of 2 images; returns the run (its G moved, all finite)."""
    options = tiny_options(tmp_path, image_folder, batch=2, gamma=1, batch_gpu=2, mbstd_group=2, aug='noaug', **kwargs)
    config, _options = launch.prepare_training(options)
    run = build_run(config, rank=0, local_rank=0, options={})
    before = [p.clone() for p in run.G.parameters()]
    training_step(run, next(real_batches(run.dataset, config, 0, 0, run.device)))
    assert run.state.cur_nimg == 2 and run.nonfinite.total == 0
    assert any(not torch.equal(b, p) for b, p in zip(before, run.G.parameters()))
    assert all(torch.isfinite(p).all() for p in run.D.parameters())
    run.monitor.close()
    return run


@pytest.mark.parametrize('preset', sorted(PRESETS))
def test_every_preset_builds_and_trains_one_step(tmp_path, image_folder, preset):
    # Each preset's architecture and loss, shrunk in capacity (cbase/cmax) to fit a CPU test; the
    # augmentation pipe is the same for all and is exercised by the tiny run above.
    train_one_step(tmp_path, image_folder, cfg=preset, cbase=256, cmax=16, map_depth=2)


def test_bf16_precision_trains_a_step_under_autocast(tmp_path, image_folder):
    train_one_step(tmp_path, image_folder, cfg='tiny', precision='bf16')


def nan_phase():
    module = torch.nn.Linear(3, 2)
    return Phase('Dmain', module, torch.optim.Adam(module.parameters(), lr=0.1), interval=1)


class _Stats:
    def __init__(self):
        self.values = []

    def add(self, name, value):
        self.values.append((name, value))


def test_nonfinite_gradients_skip_the_step_and_are_counted():
    phase, counter, stats = nan_phase(), NonFiniteCounter(), _Stats()
    weights = phase.module.weight.detach().clone()
    for param in phase.module.parameters():
        param.grad = torch.full_like(param, float('nan'))
    step_phase(phase, counter, max_nonfinite=3, stats=stats, cur_nimg=0)
    assert torch.equal(phase.module.weight, weights) and counter.total == 1 and counter.streak == 1
    assert stats.values == [('Progress/nonfinite_Dmain', 1.0)]
    for param in phase.module.parameters():
        param.grad = torch.ones_like(param)
    step_phase(phase, counter, max_nonfinite=3, stats=stats, cur_nimg=4)
    assert not torch.equal(phase.module.weight, weights) and counter.streak == 0 and counter.total == 1


def test_many_nonfinite_steps_in_a_row_stop_the_run():
    phase, counter = nan_phase(), NonFiniteCounter()
    with pytest.raises(NonFiniteTrainingError, match='3 optimizer steps in a row had NaN or Inf gradients'):
        for _ in range(3):
            for param in phase.module.parameters():
                param.grad = torch.full_like(param, float('inf'))
            step_phase(phase, counter, max_nonfinite=3, stats=_Stats(), cur_nimg=0)


def test_a_snapshot_never_holds_nan(tmp_path):
    G = torch.nn.Linear(2, 2)
    with torch.no_grad():
        G.weight[0, 0] = float('nan')
    path = tmp_path / 'network-snapshot-000000.pt'
    with pytest.raises(ValueError, match='non-finite'):
        save_training_snapshot(path, G, G, G, {})
    assert not path.exists() and not list(tmp_path.iterdir())
