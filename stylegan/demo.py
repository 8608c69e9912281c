"""`make demo`: watch a GAN learn on the CPU in minutes, end to end.

Trains the `tiny` preset with ADA on the bundled Fashion-MNIST set (`data/fashion-mnist-32.zip`),
computes a metric at every network snapshot (FID when the Inception weights are on this machine,
otherwise the sliced Wasserstein distance, which needs no download), generates a grid from the
final snapshot, and lists where every file is. Each step is one of the project's own command lines,
printed before it runs, so the demo doubles as a guide to them.

    python -m stylegan.demo [--outdir=runs/demo] [--kimg=10] [--data=data/fashion-mnist-32.zip]
"""
import argparse
import glob
import json
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FID_METRIC = 'fid1k_full'
NO_DOWNLOAD_METRIC = 'swd1k'


def choose_metric():
    """FID when its weights are here (never downloading), else SWD, with a line saying how to get FID."""
    from metrics.weights import MissingWeightsError, weights_path
    try:
        weights_path('inception', download=False)
        return FID_METRIC
    except MissingWeightsError as error:
        print(f'FID needs the Inception weights, which are not on this machine: {error}')
        print(f'The demo reports {NO_DOWNLOAD_METRIC} (sliced Wasserstein distance, lower is better) instead.\n')
        return NO_DOWNLOAD_METRIC


def run(args):
    print('$ ' + shlex.join(args), flush=True)
    subprocess.run(args, cwd=REPO, check=True)


def newest_run_dir(outdir):
    runs = sorted(d for d in glob.glob(os.path.join(outdir, '[0-9]' * 5 + '-*')) if os.path.isdir(d))
    if not runs:
        raise SystemExit(f'no run folder was written under {outdir}')
    return runs[-1]


def metric_values(run_dir, metric):
    """[(snapshot file, value)] from the run's metric-<name>.jsonl, in order."""
    path = os.path.join(run_dir, f'metric-{metric}.jsonl')
    if not os.path.isfile(path):
        return []
    with open(path) as file:
        lines = [json.loads(line) for line in file if line.strip()]
    return [(line.get('snapshot_pkl'), line['results'][metric]) for line in lines]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--outdir', default=os.path.join('runs', 'demo'))
    parser.add_argument('--data', default=os.path.join('data', 'fashion-mnist-32.zip'))
    parser.add_argument('--kimg', type=float, default=10.0, help='training length in thousands of images')
    args = parser.parse_args(argv)

    metric = choose_metric()
    run([sys.executable, 'train.py', f'--outdir={args.outdir}', '--cfg=tiny', f'--data={args.data}',
         '--device=cpu', '--gpus=1', '--aug=ada', '--mirror=1', f'--kimg={args.kimg}', '--tick=1', '--snap=5', '--img-snap=1',
         f'--metrics={metric}', '--workers=1'])
    run_dir = newest_run_dir(args.outdir)
    snapshots = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pt')))
    generated = os.path.join(run_dir, 'generated')
    run([sys.executable, 'generate.py', f'--network={snapshots[-1]}', '--seeds=0-63', '--grid=8x8',
         f'--outdir={generated}'])

    print(f'\nThe demo run is in {run_dir}:')
    fakes = sorted(glob.glob(os.path.join(run_dir, 'fakes[0-9]*.png')))
    for label, paths in [
        ('training images', [os.path.join(run_dir, 'reals.png')]),
        ('samples before training', [os.path.join(run_dir, 'fakes_init.png')]),
        ('samples per snapshot (fixed latents)', fakes),
        ('plots of losses, R1, ADA p, metrics', [os.path.join(run_dir, 'plots.png')]),
        ('network snapshots', snapshots),
        (f'metric lines ({metric})', [os.path.join(run_dir, f'metric-{metric}.jsonl')]),
        ('generated grid from the last snapshot', sorted(glob.glob(os.path.join(generated, '*.png')))),
        ('log and statistics', [os.path.join(run_dir, 'log.txt'), os.path.join(run_dir, 'stats.jsonl')]),
    ]:
        print(f'  {label}:')
        for path in paths:
            print(f'    {_shown(path)}')
    values = metric_values(run_dir, metric)
    if values:
        print(f'\n{metric} by snapshot (lower is better):')
        for snapshot, value in values:
            print(f'  {snapshot}: {value:.2f}')


def _shown(path):
    """A path as short as it can be: relative to the repository when inside it."""
    relative = os.path.relpath(path, REPO)
    return path if relative.startswith('..') else relative


if __name__ == '__main__':
    main()
