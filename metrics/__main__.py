"""python -m metrics --network=PATH --metrics=fid50k_full,kid50k_full [--data=PATH] [--gpus=N] ...

Prints one release-format jsonl line per metric and, when the network is a file, appends it to
`metric-<name>.jsonl` next to it (the run folder of a snapshot), as the releases' calc_metrics.py.
"""
import argparse
import os
import sys
import tempfile

import torch

import stylegan
from metrics import metric_main
from metrics.weights import OFFLINE_ENV, WEIGHTS_DIR_ENV, MissingWeightsError


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m metrics', description=__doc__.splitlines()[0])
    parser.add_argument('--network', required=True, help='network pickle or checkpoint (G_ema is evaluated)')
    parser.add_argument('--metrics', default='fid50k_full', help='comma-separated metric names (default fid50k_full)')
    parser.add_argument('--data', help="dataset folder or zip (default: the network file's training_set_kwargs)")
    parser.add_argument('--mirror', type=_parse_bool, default=None, help='x-flip the dataset (legacy metrics only)')
    parser.add_argument('--gpus', type=int, default=1, help='number of GPUs (processes) to share the work')
    parser.add_argument('--weights-dir', help=f'folder of the extractors\' weight files (or ${WEIGHTS_DIR_ENV})')
    parser.add_argument('--cache-dir', help='folder of the real-statistics cache')
    parser.add_argument('--offline', action='store_true', help=f'never download weights (or {OFFLINE_ENV}=1)')
    parser.add_argument('--run-dir', help='where metric-*.jsonl goes (default: the network file\'s folder)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='cuda or cpu')
    parser.add_argument('--verbose', action='store_true')
    return parser.parse_args(argv)


def _parse_bool(text):
    if text.lower() in ('1', 'true', 'yes'):
        return True
    if text.lower() in ('0', 'false', 'no'):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not a boolean; use true or false")


def check_args(args):
    """Validate what can be checked before any work; raises ValueError with one sentence."""
    names = [name for name in args.metrics.split(',') if name]
    if not names:
        raise ValueError('--metrics is empty; give comma-separated names such as fid50k_full,kid50k_full')
    for name in names:
        metric_main.metric_definition(name)
    if args.gpus < 1:
        raise ValueError(f'--gpus={args.gpus} must be at least 1')
    if args.gpus > 1 and args.device == 'cuda' and args.gpus > torch.cuda.device_count():
        raise ValueError(f'--gpus={args.gpus} but only {torch.cuda.device_count()} CUDA devices are visible')
    return names


def dataset_kwargs(args, network):
    """ImageDataset keyword arguments from --data/--mirror, else from the file's training_set_kwargs
    (data from a file: its path must be a plain path without '..', and its other values of their type)."""
    stored = network.get('training_set_kwargs') or {}
    kwargs = dict(stored) if isinstance(stored, dict) else {}
    if args.data is not None:
        kwargs = {'path': args.data, 'use_labels': kwargs.get('use_labels', False) is True}
    elif 'path' in kwargs:
        path = kwargs['path']
        if not isinstance(path, str) or '\0' in path or '..' in path.replace('\\', '/').split('/') \
                or any(not isinstance(kwargs.get(k, False), bool) for k in ('use_labels', 'xflip')):
            raise ValueError(f"'{args.network}' names its dataset as {str(path)[:80]!r} with options that are not a "
                             f"plain path and booleans; give --data.")
    if args.mirror is not None:
        kwargs['xflip'] = args.mirror
    return kwargs if 'path' in kwargs else None


def run(rank, args, names, init_file):
    """Evaluate every metric on one rank; rank 0 prints and appends the lines."""
    device = torch.device(args.device if args.device == 'cpu' else f'cuda:{rank}')
    if args.gpus > 1:
        backend = 'nccl' if device.type == 'cuda' else 'gloo'
        if device.type == 'cuda':
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend, init_method=f'file://{init_file}', rank=rank,
                                             world_size=args.gpus)
    network = stylegan.load_network(args.network, device=device)
    G = network.get('G_ema') or network.get('G')
    if G is None:
        raise ValueError(f"'{args.network}' holds no generator (G_ema or G)")
    data = dataset_kwargs(args, network)
    if rank == 0 and args.data is None and data is not None:
        print(f"note: --data not given, so metrics that read a dataset use the one the network file names, "
              f"'{data['path']}'.", file=sys.stderr)
    run_dir = args.run_dir or os.path.dirname(os.path.abspath(args.network))
    for name in names:
        result = metric_main.calc_metric(name, G, data, num_gpus=args.gpus, rank=rank, device=device,
                                         cache_dir=args.cache_dir, weights_dir=args.weights_dir,
                                         download=not args.offline, verbose=args.verbose)
        if rank == 0:
            print(metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=os.path.abspath(args.network)),
                  flush=True)


def _spawned(rank, args, names, init_file):
    try:
        run(rank, args, names, init_file)
    except BOUNDARY_ERRORS as error:
        if rank == 0:
            print(f'error: {error}', file=sys.stderr)
        sys.exit(1)


def main(argv=None):
    args = parse_args(argv)
    try:
        names = check_args(args)
        if args.gpus == 1:
            run(0, args, names, None)
            return 0
        with tempfile.TemporaryDirectory() as folder:
            torch.multiprocessing.spawn(_spawned, args=(args, names, os.path.join(folder, 'init')), nprocs=args.gpus)
        return 0
    except BOUNDARY_ERRORS as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except torch.multiprocessing.ProcessExitedException:
        return 1


def _boundary_errors():
    from stylegan.data.dataset import DatasetError
    return (stylegan.NetworkFileError, DatasetError, MissingWeightsError, ValueError)


BOUNDARY_ERRORS = _boundary_errors()

if __name__ == '__main__':
    sys.exit(main())
