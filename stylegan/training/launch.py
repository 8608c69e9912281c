"""From checked options to running ranks: the dataset and --resume checks that need files, the run
folder (`<outdir>/00000-<desc>` with training_options.json), and the start of every rank.

Everything that can be wrong with the input is checked before the run folder is created, so a bad
command leaves --outdir untouched.
"""
import dataclasses
import functools
import json
import os
import re

import torch

from stylegan.training import distributed
from stylegan.training import snapshot as snapshots
from stylegan.checkpoint import load_network
from stylegan.data.dataset import ImageDataset
from stylegan.training.config import (RESUME_LATEST, DatasetInfo, OptionError, TrainOptions, check_options,
                                   resolve_config, run_description)

DEFAULT_METRIC = 'fid50k_full'


def snapshot_options(resume, outdir=None):
    """The TrainOptions a training snapshot was started with (as a dict), or {} for any other file.
    `resume` is a path or 'latest' (the newest snapshot under `outdir`)."""
    path = snapshots.find_latest_snapshot(outdir) if resume == RESUME_LATEST and outdir else resume
    if path is None or path == RESUME_LATEST or not os.path.isfile(path):
        return {}
    payload = snapshots.read_checkpoint_payload(path)
    state = snapshots.training_state_of(payload) if payload is not None else None
    return dict(state.get('options') or {}) if state is not None else {}


def resolve_resume_path(options):
    """--resume as a file path ('latest' -> the newest snapshot under --outdir), or None."""
    if options.resume is None:
        return None
    if options.resume == RESUME_LATEST:
        path = snapshots.find_latest_snapshot(options.outdir)
        if path is None:
            raise OptionError(f"--resume=latest found no network-snapshot-*.pt in the run folders of --outdir={options.outdir}.")
        return path
    if not os.path.isfile(options.resume):
        raise OptionError(f"--resume={options.resume} is not a file; give a snapshot, a network pickle or 'latest'.")
    return options.resume


def describe_dataset(options):
    """Open the training set once (headers only), with the checks of stylegan.data.dataset."""
    dataset = ImageDataset(options.data, use_labels=options.cond, xflip=False, random_seed=options.seed)
    info = DatasetInfo(name=dataset.name, resolution=dataset.resolution, num_channels=dataset.num_channels,
                       label_dim=dataset.label_dim, size=len(dataset))
    dataset.close()
    return info


def resume_resolution(path):
    """(resolution of the networks in a resume file, whether it is a training snapshot)."""
    payload = snapshots.read_checkpoint_payload(path)
    if payload is None:
        networks = load_network(path)
        G = networks.get('G_ema') or networks.get('G')
        return (G.img_resolution if G is not None else None), False
    records = payload.get('networks') or {}
    record = records.get('G_ema') or records.get('G') or records.get('D') or {}
    resolution = (record.get('init_kwargs') or {}).get('img_resolution')
    return resolution, snapshots.training_state_of(payload) is not None


def resolve_metrics(options):
    """--metrics: None means fid50k_full when the Inception weights are on this machine, else none
    (training never downloads). Named metrics must be known and their weights present."""
    from metrics import metric_main
    from metrics.weights import MissingWeightsError, weights_path
    if options.metrics is None:
        try:
            weights_path('inception', download=False)
            return [DEFAULT_METRIC]
        except MissingWeightsError:
            return []
    for name in options.metrics:
        if not metric_main.is_valid_metric(name):
            raise OptionError(f"--metrics: '{name}' is not a known metric; accepted are "
                              f"{', '.join(metric_main.RELEASE_METRICS)} or 'none'.")
        for key in _weights_needed(name):
            try:
                weights_path(key, download=False)
            except MissingWeightsError as error:
                raise OptionError(f'--metrics={name}: {error}') from None
    return list(options.metrics)


def _weights_needed(metric):
    """Feature-extractor weights (metrics/weights.py keys) a metric reads, by its name's prefix."""
    if metric.startswith('ppl'):
        return ('vgg16', 'lpips')
    if metric.startswith('pr'):
        return ('vgg16',)
    if metric.startswith(('fid', 'kid', 'is')):
        return ('inception',)
    return ()  # equivariance metrics use no pretrained network


def check_device(options):
    if options.device != 'cuda':
        return
    if not torch.cuda.is_available():
        raise OptionError('--device=cuda, but no CUDA GPU is visible; use --device=cpu or check CUDA_VISIBLE_DEVICES.')
    if distributed.torchrun_world() is None and options.gpus > torch.cuda.device_count():
        raise OptionError(f'--gpus={options.gpus}, but only {torch.cuda.device_count()} CUDA GPU(s) are visible.')


def prepare_training(options):
    """Check everything and resolve the TrainingConfig; creates nothing. Returns (config, options)."""
    world = distributed.torchrun_world()
    if world is not None:
        if options.gpus not in (None, world[1]):
            raise OptionError(f'--gpus={options.gpus} differs from torchrun\'s world size {world[1]}; omit --gpus under torchrun.')
        options = dataclasses.replace(options, gpus=world[1])
    options = dataclasses.replace(options, gpus=options.gpus or 1)
    check_options(options)
    if os.path.exists(options.outdir) and not os.path.isdir(options.outdir):
        raise OptionError(f'--outdir={options.outdir} exists and is not a folder.')
    check_device(options)
    options = dataclasses.replace(options, metrics=resolve_metrics(options))
    dataset = describe_dataset(options)
    resume_path = resolve_resume_path(options)
    is_snapshot = False
    if resume_path is not None:
        resolution, is_snapshot = resume_resolution(resume_path)
        if resolution is not None and resolution != dataset.resolution:
            raise OptionError(f"--resume={resume_path} holds {resolution}x{resolution} networks, but --data={options.data} "
                              f"has {dataset.resolution}x{dataset.resolution} images; resume from a file of the same resolution.")
    description = run_description(options, dataset.name, dataset.resolution)
    run_dir = os.path.join(options.outdir, f'{next_run_id(options.outdir):05d}-{description}')
    return resolve_config(options, dataset, run_dir, resume_path, is_snapshot), options


def next_run_id(outdir):
    """One more than the highest `NNNNN-` folder number in outdir (the releases' numbering)."""
    if not os.path.isdir(outdir):
        return 0
    ids = [int(m.group()) for m in (re.match(r'^\d+', name) for name in os.listdir(outdir))
           if m is not None and os.path.isdir(os.path.join(outdir, m.string))]
    return max(ids, default=-1) + 1


def create_run_dir(config, options):
    """Create the run folder (never an existing one) and write training_options.json into it."""
    world = distributed.torchrun_world()
    if world is not None and world[0] != 0:
        return  # under torchrun only rank 0 writes
    os.makedirs(os.path.dirname(config.run_dir) or '.', exist_ok=True)
    os.makedirs(config.run_dir, exist_ok=False)
    with open(os.path.join(config.run_dir, 'training_options.json'), 'w', encoding='utf-8') as file:
        json.dump(dict(config.to_json_dict(), options=dataclasses.asdict(options)), file, indent=2)


def _run_rank(config, options_dict, rank, world_size, local_rank):
    from stylegan.training.loop import training_loop
    training_loop(config, rank=rank, local_rank=local_rank, options=options_dict)


def start_training(config, options):
    """Run the training loop on every rank (this process, spawned processes, or under torchrun)."""
    options_dict = {k: v for k, v in dataclasses.asdict(options).items() if k not in ('resume', 'dry_run')}
    distributed.launch(functools.partial(_run_rank, config, options_dict), config.num_gpus, config.device)


def options_from(cli_values, resume_defaults=None):
    """TrainOptions from the options given on the command line, over those a training snapshot was
    started with (so `--resume=latest` alone continues a run), over the defaults."""
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    merged = {k: v for k, v in (resume_defaults or {}).items() if k in fields and k not in ('resume', 'dry_run', 'outdir')}
    merged.update(cli_values)
    return TrainOptions(**merged)
