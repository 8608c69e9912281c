"""Several processes (gloo on the CPU): 2 ranks train like 1 rank with the same global batch, a dying
rank stops the run with a message, and a snapshot killed mid-write leaves the previous one whole."""
import dataclasses
import multiprocessing
import os
import signal
import time

import pytest
import torch
import torch.distributed as dist

from stylegan.checkpoint import build_network
from stylegan.networks import stylegan2
from stylegan.training import distributed, launch
from stylegan.training.config import TrainOptions
from stylegan.training.snapshot import find_latest_snapshot, save_training_snapshot
from test_train_helpers import assert_nested_close, load_snapshot, make_image_folder

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')


def train_deterministic(outdir, data, gpus, batch_gpu):
    """2 steps of a global batch of 4 with every source of per-rank randomness switched off (noise
    inputs, style mixing, path-length noise, augmentation), so only the split of the batch differs."""
    options = TrainOptions(outdir=str(outdir), cfg='tiny', data=str(data), device='cpu', workers=0, metrics=[],
                           batch=4, gpus=gpus, batch_gpu=batch_gpu, mbstd_group=2, aug='noaug', kimg=0.008,
                           img_snap=0)
    config, options = launch.prepare_training(options)
    # Adam's eps raised from 1e-8: Adam scales every gradient to about +-lr, so a gradient that is
    # summation noise (|g| ~ 1e-9, from terms that cancel) would turn float rounding into 1e-4 steps.
    config = dataclasses.replace(config, G_kwargs=dict(config.G_kwargs, use_noise=False),
                                 loss_kwargs=dict(config.loss_kwargs, style_mixing_prob=0, pl_weight=0),
                                 G_opt_kwargs=dict(config.G_opt_kwargs, eps=1e-3),
                                 D_opt_kwargs=dict(config.D_opt_kwargs, eps=1e-3))
    launch.create_run_dir(config, options)
    launch.start_training(config, options)
    return load_snapshot(find_latest_snapshot(str(outdir)))


def parameters_of(snapshot, key):
    """The trainable parameters (not the buffers) of network `key` in a snapshot."""
    record = snapshot['networks'][key]
    names = {name for name, _ in build_network(record, key).named_parameters()}
    return {name: value for name, value in record['state_dict'].items() if name in names}


def test_two_gloo_ranks_train_like_one_rank_with_the_same_global_batch(tmp_path):
    data = make_image_folder(tmp_path / 'faces', count=16, size=16)
    one = train_deterministic(tmp_path / 'one', data, gpus=1, batch_gpu=4)
    two = train_deterministic(tmp_path / 'two', data, gpus=2, batch_gpu=2)
    accumulated = train_deterministic(tmp_path / 'acc', data, gpus=1, batch_gpu=2)
    for other in (two, accumulated):
        for key in ('G', 'D', 'G_ema'):
            assert_nested_close(parameters_of(one, key), parameters_of(other, key), atol=1e-5, where=key)
        assert_nested_close(one['training_state']['D_opt']['state'], other['training_state']['D_opt']['state'],
                            atol=1e-5, where='D_opt')
    # w_avg is averaged over the ranks each step, so 2 ranks also match 1 rank in G's running mean
    # (accumulation rounds update it once per round, as in the releases).
    assert_nested_close(one['networks']['G']['state_dict']['mapping.w_avg'],
                        two['networks']['G']['state_dict']['mapping.w_avg'], atol=1e-5, where='w_avg')
    assert len(two['training_state']['rng']['ranks']) == 2  # every rank's RNG state is kept for a resume
    assert all(bool(state['exp_avg_sq'].abs().sum() > 0) for state in one['training_state']['G_opt']['state'].values())


def _rank_that_dies(rank, world_size, local_rank):
    if rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()  # rank 0 waits here for a peer that is gone


def _rank_that_raises(rank, world_size, local_rank):
    if rank == 1:
        raise FileNotFoundError("image 'x.png' vanished")
    dist.barrier()


def test_a_rank_killed_by_a_signal_stops_every_rank_with_a_message():
    start = time.time()
    with pytest.raises(distributed.RankFailure, match='rank 1 of 2 was killed by signal SIGKILL; all ranks were stopped'):
        distributed.launch(_rank_that_dies, num_gpus=2, device_type='cpu')
    assert time.time() - start < 120  # not the 30-minute collective timeout


def test_a_rank_that_raises_names_its_error():
    with pytest.raises(distributed.RankFailure, match=r"rank 1 failed \(FileNotFoundError: image 'x.png' vanished\)"):
        distributed.launch(_rank_that_raises, num_gpus=2, device_type='cpu')


def _write_and_die(path):
    """Start overwriting `path` with a snapshot and die (no cleanup) halfway through the bytes."""
    def torn_save(obj, file, *args, **kwargs):
        file.write(b'PK\x03\x04' + b'\x00' * 1000)
        file.flush()
        os._exit(9)
    torch.save = torn_save
    D = tiny_network()
    save_training_snapshot(path, D, D, D, {'loop': {'cur_nimg': 8}})


def tiny_network():
    return stylegan2.Discriminator(c_dim=0, img_resolution=4, img_channels=1, channel_base=32, channel_max=4)


def test_a_snapshot_killed_mid_write_leaves_the_previous_one_loadable(tmp_path):
    run_dir = tmp_path / '00000-run'
    run_dir.mkdir()
    path = run_dir / 'network-snapshot-000000.pt'
    D = tiny_network()
    save_training_snapshot(path, D, D, D, {'loop': {'cur_nimg': 4}})
    before = path.read_bytes()
    writer = multiprocessing.get_context('fork').Process(target=_write_and_die, args=(path,))
    writer.start()
    writer.join(60)
    assert writer.exitcode == 9
    assert path.read_bytes() == before
    assert load_snapshot(path)['training_state']['loop']['cur_nimg'] == 4
    leftovers = [p.name for p in run_dir.iterdir() if p.name.endswith('.tmp')]
    assert leftovers, 'the killed writer should have left its temporary file behind'
    assert find_latest_snapshot(str(tmp_path)) == str(path)  # a torn temporary file is never resumed from
