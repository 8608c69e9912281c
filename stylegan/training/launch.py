"""From checked options to running ranks: the dataset and --resume checks that need files, the run
folder (`<outdir>/00000-<desc>` with training_options.json), and the start of every rank.

Everything that can be wrong with the input is checked before the run folder is created, so a bad
command leaves --outdir untouched: the options, the dataset, the --resume file, and the networks
the options describe (built shape-only, no memory).

A snapshot's stored options are data from a file: each must have its option's type, a stored
--desc must name one folder, and a stored --data may not climb out with '..'; a --data on the
command line wins over the stored one, and either choice is said on stdout.
"""
import dataclasses
import functools
import json
import os
import re
import typing

import numpy as np
import torch

from stylegan.checkpoint import load_network
from stylegan.data.dataset import ImageDataset
from stylegan.files import remove_stale_temporaries
from stylegan.legacy import NetworkFileError
from stylegan.training import distributed
from stylegan.training import snapshot as snapshots
from stylegan.training.config import (RESUME_LATEST, DatasetInfo, OptionError, TrainOptions, check_options,
                                   resolve_config, run_description)

DEFAULT_METRIC = 'fid50k_full'
MAX_RUN_NAME_BYTES = 255   # one folder name on common file systems
MAX_STORED_TEXT = 4096     # a stored string option (a --data path) longer than this is not a path


def read_resume(given, say=print):
    """(command-line options, the options a training snapshot was started with) for train.py.
    --resume=latest becomes the newest snapshot under --outdir that reads whole (newer damaged ones
    are skipped, each with a sentence to `say`); the stored options are checked (`check_stored_options`)."""
    given = dict(given)
    if given.get('resume') == RESUME_LATEST and given.get('outdir'):
        given['resume'] = latest_whole_snapshot(given['outdir'], say)
    stored = snapshot_options(given.get('resume'))
    stored_data = stored.get('data')
    if given.get('data') is not None:
        stored.pop('data', None)  # the command line's dataset wins; the stored path is never used
    if stored:
        check_stored_options(stored, given['resume'])
    if stored_data is not None and given.get('data') is None:
        say(f"--data not given: training on the snapshot's dataset '{stored_data}'.")
    elif stored_data is not None and given.get('data') != stored_data:
        say(f"--data={given['data']} differs from the snapshot's dataset '{str(stored_data)[:200]}'; training on "
            f"--data={given['data']}.")
    return given, stored


def latest_whole_snapshot(outdir, say=print):
    """The newest training snapshot under `outdir` that reads (a run killed while copying one, or a
    truncated file, leaves a damaged newest one); OptionError when there is none."""
    skipped = 0
    for path in snapshots.snapshots_newest_first(outdir):
        try:
            payload = snapshots.read_checkpoint_payload(path)
            if payload is not None and isinstance(snapshots.training_state_of(payload), dict):
                return path
            problem = 'it is not a training snapshot'
        except NetworkFileError as error:
            problem = str(error).rstrip('.')
        except Exception as error:  # pylint: disable=broad-except  # any damage of that file, not of the run
            problem = f'{type(error).__name__}: {error}'
        say(f"--resume=latest: skipping '{path}', which cannot be resumed ({problem}).")
        skipped += 1
    damaged = f' ({skipped} damaged one(s) skipped)' if skipped else ''
    raise OptionError(f"--resume=latest found no network-snapshot-*.pt in the run folders of --outdir={outdir}"
                      f" that can be resumed{damaged}.")


def snapshot_options(resume):
    """The TrainOptions a training snapshot was started with (as a dict), or {} for any other file."""
    if resume is None or resume == RESUME_LATEST or not os.path.isfile(resume):
        return {}
    payload = snapshots.read_checkpoint_payload(resume)
    state = snapshots.training_state_of(payload) if payload is not None else None
    if not isinstance(state, dict):
        return {}
    options = state.get('options')
    if options is not None and not isinstance(options, dict):
        raise OptionError(f"snapshot '{resume}' stores its options as a {type(options).__name__}, not a dict; "
                          f"it is damaged or not from this project.")
    return dict(options or {})


def _has_type(value, annotation):
    """Whether a stored value fits a TrainOptions annotation (int, float, bool, str, list, Optional[...])."""
    if typing.get_origin(annotation) is typing.Union:
        return any(_has_type(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation in (int, float):
        return isinstance(value, (int, float) if annotation is float else int) and not isinstance(value, bool)
    if annotation is list:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, annotation)


def check_stored_options(stored, path):
    """Refuse stored options of the wrong type, a stored --desc that is not one folder name, and a
    stored --data that is not a plain path without '..'."""
    annotations = typing.get_type_hints(TrainOptions)
    for key, value in stored.items():
        if key in annotations and key not in ('resume', 'dry_run', 'outdir') and not _has_type(value, annotations[key]):
            raise OptionError(f"snapshot '{path}' stores --{key.replace('_', '-')}={str(value)[:60]!r}, which is not "
                              f"of that option's type; the snapshot is damaged or not from this project.")
    if stored.get('desc') is not None:
        check_desc(stored['desc'], f"the --desc stored in snapshot '{path}'")
    data = stored.get('data')
    if data is not None and (len(data) > MAX_STORED_TEXT or '\0' in data or '..' in re.split(r'[\\/]', data)):
        raise OptionError(f"snapshot '{path}' stores --data={data[:80]!r}, which is not a plain path (it climbs "
                          f"out with '..' or is not a path at all); give --data on the command line.")


def check_desc(desc, what='--desc'):
    """The run folder is `<outdir>/<NNNNN>-<...>-<desc>`: the desc must keep it one folder inside --outdir."""
    if any(c in desc for c in ('/', '\\', '\0')) or '..' in desc:
        raise OptionError(f"{what} {desc[:80]!r} holds a path separator, a NUL or '..'; it names part of one "
                          f"folder, so use letters, digits, '-', '_' or single dots.")


def resolve_resume_path(options):
    """--resume as a file path ('latest' -> the newest whole snapshot under --outdir), or None."""
    if options.resume is None:
        return None
    if options.resume == RESUME_LATEST:
        return latest_whole_snapshot(options.outdir)
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
    records = payload.get('networks')
    record = next((records.get(key) for key in ('G_ema', 'G', 'D') if isinstance(records, dict) and records.get(key)), None)
    kwargs = record.get('init_kwargs') if isinstance(record, dict) else None
    resolution = kwargs.get('img_resolution') if isinstance(kwargs, dict) else None
    if not isinstance(records, dict) or not isinstance(kwargs, dict) or not isinstance(resolution, int):
        raise OptionError(f"--resume={path} is a checkpoint of this project whose 'networks' are not records of "
                          f"networks with an int img_resolution; the file is damaged.")
    return resolution, snapshots.training_state_of(payload) is not None


def resolve_metrics(options):
    """--metrics: None means fid50k_full when the Inception weights are on this machine, else none
    (training never downloads). Named metrics must be known and their weights present."""
    if options.metrics is not None and not options.metrics:
        return []  # none asked for: metrics (and torch-fidelity, absent on some GPU machines) stay unimported
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
    check_run_values(options)
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
    run_name = f'{next_run_id(options.outdir):05d}-{run_description(options, dataset.name, dataset.resolution)}'
    if len(run_name.encode('utf-8', 'surrogateescape')) > MAX_RUN_NAME_BYTES:
        raise OptionError(f'the run folder name {run_name[:40]!r}... would be longer than {MAX_RUN_NAME_BYTES} bytes; '
                          f'give a shorter --desc or dataset file name.')
    config = resolve_config(options, dataset, os.path.join(options.outdir, run_name), resume_path, is_snapshot)
    check_networks_build(config)
    return config, options


def check_run_values(options):
    """Values check_options lets through that would fail only inside the run: a --desc that is not
    part of one folder name, a seed numpy cannot take per rank, an unknown --augpipe, a learning
    rate float32 cannot hold (Adam casts it)."""
    from stylegan.training.augment import AUGPIPE_PRESETS
    if options.desc is not None:
        check_desc(options.desc)
    if options.seed * options.gpus + options.gpus - 1 >= 2 ** 32:
        raise OptionError(f'--seed={options.seed} is too large: each of the {options.gpus} rank(s) seeds numpy with '
                          f'seed * gpus + rank, which must stay below 2**32.')
    if options.aug != 'noaug' and options.augpipe not in AUGPIPE_PRESETS:
        raise OptionError(f"--augpipe={options.augpipe!r} is not a pipeline; choose one of {', '.join(AUGPIPE_PRESETS)}.")
    for name in ('glr', 'dlr', 'gamma'):
        value = getattr(options, name)
        if value is not None and value > float(np.finfo(np.float32).max):
            raise OptionError(f'--{name}={value} is larger than float32 can hold ({np.finfo(np.float32).max:.3g}).')


def check_networks_build(config):
    """Build G and D shape-only (fake tensors, no memory) from the resolved arguments, within the
    limits a network file gets, so that arguments the networks refuse or absurd sizes (a --cmax of
    millions, a --map-depth of thousands) stop here rather than in the run."""
    from stylegan.networks import stylegan2, stylegan3
    from stylegan.safeload import check_network_args, shapes_without_storage
    generator = {'stylegan2': stylegan2.Generator, 'stylegan3': stylegan3.Generator}[config.generator]
    for cls, kwargs, what in ((generator, config.G_kwargs, 'G'), (stylegan2.Discriminator, config.D_kwargs, 'D')):
        try:
            check_network_args(kwargs, f'the {what} these options describe')
            shapes_without_storage(cls, kwargs)
        except NetworkFileError as error:
            raise OptionError(f'{str(error).rstrip(".")}; lower the option that sets it.') from None
        except (TypeError, ValueError, AssertionError, RuntimeError) as error:
            raise OptionError(f'the {what} these options describe cannot be built ({type(error).__name__}: '
                              f'{str(error).splitlines()[0] if str(error) else ""}); check --cbase, --cmax and '
                              f'--map-depth.') from None


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
    outdir = os.path.dirname(config.run_dir) or '.'
    os.makedirs(outdir, exist_ok=True)
    for name in os.listdir(outdir):  # temporaries of a run killed while writing a snapshot or grid
        if snapshots.RUN_DIR_PATTERN.match(name) and os.path.isdir(os.path.join(outdir, name)):
            remove_stale_temporaries(os.path.join(outdir, name))
    os.makedirs(config.run_dir, exist_ok=False)
    with open(os.path.join(config.run_dir, 'training_options.json'), 'x', encoding='utf-8') as file:
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
