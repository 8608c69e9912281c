"""Training speed: seconds per kimg and peak memory of full training steps (all phases, lazy
regularisation at its real frequency, EMA) for given presets, resolution and batch.

    python bench/train.py --device=cpu --presets=tiny,paper256 --resolution=32 --batch=4 --steps=8
    python bench/train.py --device=cuda --presets=stylegan3-t,stylegan2 --resolution=256 --batch=32
    python bench/train.py --device=cuda --presets=stylegan3-t --resolution=256 --batch=32 --ops=compile

Images are random (speed does not depend on content). The first `--warmup` steps are not timed.
Prints a Markdown table; memory is the peak process RSS on the CPU, peak allocated memory on CUDA.
`--ops` picks the ops: fused (STYLEGAN_OPS=auto: the fused kernels on CUDA), ref (STYLEGAN_OPS=ref),
or compile (STYLEGAN_OPS=ref with G.mapping, G.synthesis and D under torch.compile; the
regularisation phases run eager, as torch.compile cannot differentiate twice).
"""
import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stylegan.training import launch  # noqa: E402
from stylegan.training.config import TrainOptions  # noqa: E402
from stylegan.training.loop import build_run, real_batches, training_step  # noqa: E402


def make_random_dataset(folder, resolution, count):
    import numpy as np
    import PIL.Image
    rng = np.random.RandomState(0)
    for i in range(count):
        PIL.Image.fromarray(rng.randint(0, 256, (resolution, resolution, 3), dtype=np.uint8)).save(
            os.path.join(folder, f'{i:05d}.png'))


def peak_memory_gb(device):
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def compile_networks(run, backend='inductor'):
    """torch.compile G.mapping, G.synthesis and D in place, except during the regularisation
    phases (R1 and path length need double backward, which compiled graphs do not provide)."""
    state = {'eager': False}
    for module in (run.G.mapping, run.G.synthesis, run.D):
        eager, compiled = module.forward, torch.compile(module.forward, backend=backend)
        module.forward = lambda *a, _eager=eager, _compiled=compiled, **k: (_eager if state['eager'] else _compiled)(*a, **k)
    accumulate = run.loss.accumulate_gradients

    def accumulate_gradients(phase, *args, **kwargs):
        state['eager'] = phase in ('Greg', 'Dreg', 'Gboth', 'Dboth')
        return accumulate(phase, *args, **kwargs)
    run.loss.accumulate_gradients = accumulate_gradients


def bench_preset(preset, data, args):
    """(sec/kimg, peak memory GB, batch_gpu) of one preset."""
    options = TrainOptions(outdir=os.path.join(data, 'runs'), cfg=preset, data=data, device=args.device,
                           batch=args.batch, gamma=1, batch_gpu=args.batch_gpu, mbstd_group=args.mbstd_group,
                           workers=0, metrics=[], precision=args.precision, cbase=args.cbase, cmax=args.cmax)
    config, _options = launch.prepare_training(options)
    config = dataclasses.replace(config, augpipe=None if args.noaug else config.augpipe)
    run = build_run(config, rank=0, local_rank=0, options={})
    if args.ops == 'compile':
        compile_networks(run, args.compile_backend)
    batches = real_batches(run.dataset, config, 0, 0, run.device)
    for _ in range(args.warmup):
        training_step(run, next(batches))
    if run.device.type == 'cuda':
        torch.cuda.synchronize(run.device)
        torch.cuda.reset_peak_memory_stats(run.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        training_step(run, next(batches))
    if run.device.type == 'cuda':
        torch.cuda.synchronize(run.device)
    seconds = time.perf_counter() - start
    run.monitor.close()
    return seconds / (args.steps * config.batch_size) * 1000, peak_memory_gb(run.device), config.batch_gpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--presets', default='tiny,paper256')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--resolution', type=int, default=32)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--batch-gpu', type=int, default=None)
    parser.add_argument('--mbstd-group', type=int, default=None)
    parser.add_argument('--cbase', type=int, default=None, help="channel base (default: the preset's)")
    parser.add_argument('--cmax', type=int, default=None, help="channel maximum (default: the preset's)")
    parser.add_argument('--precision', default=None, choices=['fp16', 'bf16', 'fp32'])
    parser.add_argument('--steps', type=int, default=8, help='timed steps (a multiple of 16 times every lazy-reg phase)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--noaug', action='store_true', help='time without the ADA pipe (p = 0 costs little anyway)')
    parser.add_argument('--ops', default='fused', choices=['fused', 'ref', 'compile'],
                        help='fused kernels (STYLEGAN_OPS=auto), reference ops, or torch.compile of the reference ops')
    parser.add_argument('--compile-backend', default='inductor',
                        help="torch.compile backend of --ops=compile ('eager' tests the plumbing quickly)")
    parser.add_argument('--json', default=None, help='also write the rows to this JSON file')
    args = parser.parse_args()
    # Read at every op call. fused keeps a strict STYLEGAN_OPS=cuda (make gpu-check) and else uses auto.
    if args.ops != 'fused':
        os.environ['STYLEGAN_OPS'] = 'ref'
    elif os.environ.get('STYLEGAN_OPS', '').strip().lower() != 'cuda':
        os.environ['STYLEGAN_OPS'] = 'auto'
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if args.device == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'# bench/train.py: {args.resolution}x{args.resolution}, batch {args.batch}, {device_name}, '
          f'{args.steps} timed steps after {args.warmup}')
    print('| preset | ops | resolution | batch | batch-gpu | sec/kimg | peak memory (GB) |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    rows = []
    with tempfile.TemporaryDirectory() as data:
        make_random_dataset(data, args.resolution, count=max(args.batch * 2, 16))
        for preset in args.presets.split(','):
            sec_per_kimg, memory, batch_gpu = bench_preset(preset, data, args)
            rows.append({'preset': preset, 'ops': args.ops, 'resolution': args.resolution, 'batch': args.batch,
                         'batch_gpu': batch_gpu, 'sec_per_kimg': sec_per_kimg, 'peak_memory_gb': memory,
                         'device': device_name, 'precision': args.precision})
            print(f'| {preset} | {args.ops} | {args.resolution} | {args.batch} | {batch_gpu} | {sec_per_kimg:.1f} | '
                  f'{memory:.2f} |', flush=True)
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump(rows, handle, indent=1)


if __name__ == '__main__':
    main()
