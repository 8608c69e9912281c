"""Train a StyleGAN2 or StyleGAN3 network, with the command line of the releases' train.py.

    python train.py --outdir=runs --cfg=stylegan3-t --data=ffhq-256x256.zip --gpus=8 --batch=32 --gamma=2
    python train.py --outdir=runs --cfg=paper256 --data=ffhq-256x256.zip --gpus=2          # StyleGAN2-ADA preset
    python train.py --outdir=runs --cfg=auto --data=ffhq-256x256.zip --gpus=2 --subset=2000 # StyleGAN2-ADA's auto
    python train.py --outdir=runs --cfg=tiny --data=images/ --device=cpu --kimg=1          # on a laptop
    python train.py --outdir=runs --resume=latest                                          # continue exactly
    torchrun --nnodes=2 --nproc-per-node=8 ... train.py --outdir=runs --cfg=stylegan3-t ... # several machines

See docs/training.md for every option, the presets, snapshots and resume.
"""
import argparse
import dataclasses
import sys

from stylegan.data.dataset import DatasetError
from stylegan.legacy import NetworkFileError
from stylegan.training import launch
from stylegan.training.config import CONFIG_NAMES, OptionError
from stylegan.training.distributed import RankFailure, one_line_error
from stylegan.training.step import NonFiniteTrainingError


def parse_bool(text):
    """The releases' BOOL values: 1/0, true/false, yes/no, on/off (any case)."""
    value = str(text).strip().lower()
    if value in ('1', 'true', 't', 'yes', 'y', 'on'):
        return True
    if value in ('0', 'false', 'f', 'no', 'n', 'off'):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not a boolean; use 1/0, true/false, yes/no or on/off")


def parse_metrics(text):
    return [] if text.strip().lower() in ('', 'none') else [name.strip() for name in text.split(',')]


# (flag, type, metavar, help); every default lives in TrainOptions and the presets.
OPTIONS = [
    ('--outdir', str, 'DIR', 'Where to save the results'),
    ('--cfg', str, 'NAME', f"Base configuration: {', '.join(CONFIG_NAMES)}"),
    ('--data', str, '[ZIP|DIR]', 'Training data'),
    ('--gpus', int, 'INT', 'Number of GPUs (processes) to use  [default: 1]'),
    ('--batch', int, 'INT', 'Total batch size  [required for stylegan2/stylegan3-*; else the preset\'s]'),
    ('--gamma', float, 'FLOAT', 'R1 regularization weight  [required for stylegan2/stylegan3-*; else the preset\'s]'),
    ('--cond', parse_bool, 'BOOL', 'Train conditional model  [default: False]'),
    ('--subset', int, 'INT', 'Train with only INT images, a fixed random subset drawn with --seed  [default: all]'),
    ('--mirror', parse_bool, 'BOOL', 'Enable dataset x-flips  [default: False]'),
    ('--aug', str, 'ada|noaug|fixed', 'Augmentation mode  [default: ada]'),
    ('--augpipe', str, 'NAME', 'Augmentation pipeline (StyleGAN2-ADA presets blit..bgcfnc)  [default: bgc]'),
    ('--resume', str, '[PATH|latest]', 'Resume from a snapshot (exactly), a network pickle or checkpoint (weights)'),
    ('--freezed', int, 'INT', 'Freeze first layers of D  [default: 0]'),
    ('--p', float, 'FLOAT', 'Probability for --aug=fixed  [default: 0.2]'),
    ('--target', float, 'FLOAT', 'Target value for --aug=ada  [default: 0.6]'),
    ('--batch-gpu', int, 'INT', 'Limit batch size per GPU (gradient accumulation)'),
    ('--cbase', int, 'INT', 'Capacity multiplier  [default: 32768 or the preset\'s]'),
    ('--cmax', int, 'INT', 'Max. feature maps  [default: 512 or the preset\'s]'),
    ('--glr', float, 'FLOAT', 'G learning rate  [default: varies]'),
    ('--dlr', float, 'FLOAT', 'D learning rate  [default: 0.002 or the preset\'s]'),
    ('--map-depth', int, 'INT', 'Mapping network depth  [default: varies]'),
    ('--mbstd-group', int, 'INT', 'Minibatch std group size  [default: 4 or the preset\'s]'),
    ('--desc', str, 'STR', 'String to include in result dir name'),
    ('--metrics', parse_metrics, '[NAME|A,B,C|none]', 'Quality metrics  [default: fid50k_full if its weights are here, else none]'),
    ('--kimg', float, 'KIMG', 'Total training duration  [default: 25000 or the preset\'s]'),
    ('--tick', float, 'KIMG', 'How often to print progress  [default: 4]'),
    ('--snap', int, 'TICKS', 'How often to save snapshots  [default: 50]'),
    ('--img-snap', int, 'TICKS', 'How often to save image grids, 0 = never  [default: --snap]'),
    ('--snap-keep', int, 'INT', 'Keep only the newest INT network snapshots, 0 = all  [default: 0]'),
    ('--seed', int, 'INT', 'Random seed  [default: 0]'),
    ('--fp32', parse_bool, 'BOOL', 'Disable mixed-precision (same as --precision=fp32)  [default: False]'),
    ('--precision', str, 'fp16|bf16|fp32', 'fp16: the releases\' scheme; bf16: autocast  [default: fp16]'),
    ('--sn', parse_bool, 'BOOL', 'Spectral normalization in D  [default: False]'),
    ('--nobench', parse_bool, 'BOOL', 'Disable cuDNN benchmarking  [default: False]'),
    ('--allow-tf32', parse_bool, 'BOOL', 'Allow TF32 for matmul and convolutions  [default: False]'),
    ('--nhwc', parse_bool, 'BOOL', 'Use NHWC (channels-last) memory format with FP16  [default: False]'),
    ('--workers', int, 'INT', 'DataLoader worker processes  [default: 3]'),
    ('--device', str, 'cuda|cpu', 'Where to train  [default: cuda]'),
    ('--max-nonfinite', int, 'INT', 'Stop after INT steps in a row with NaN/Inf gradients, 0 = never  [default: 20]'),
]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], argument_default=argparse.SUPPRESS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, kind, metavar, help_text in OPTIONS:
        nargs = '?' if kind is parse_bool else None  # `--mirror` alone means --mirror=1
        extra = dict(const=True) if kind is parse_bool else {}
        parser.add_argument(flag, type=kind, metavar=metavar, help=help_text, nargs=nargs, **extra)
    parser.add_argument('-n', '--dry-run', action='store_true', help='Print training options and exit')
    return parser


def main(argv=None):
    given = vars(build_parser().parse_args(argv))  # only the options on the command line
    try:
        given, stored_options = launch.read_resume(given)  # --resume=latest -> a path; notes about --data
        options = launch.options_from(given, stored_options)
        config, options = launch.prepare_training(options)
        print(f'Run folder: {config.run_dir}')
        for key, value in dataclasses.asdict(config).items():
            print(f'  {key}: {value}')
        if options.dry_run:
            print('Dry run; exiting.')
            return 0
        launch.create_run_dir(config, options)
        launch.start_training(config, options)
    except (OptionError, DatasetError, NetworkFileError, RankFailure, NonFiniteTrainingError) as error:
        print(f'train.py: error: {one_line_error(error) if isinstance(error, DatasetError) else error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
