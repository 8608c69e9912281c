"""What a training run is: the command-line options (`TrainOptions`), the base configurations
(`PRESETS`), and their combination into the resolved `TrainingConfig` the loop runs.

    options = TrainOptions(outdir='runs', cfg='stylegan3-t', data='ffhq-256x256.zip', gpus=8, batch=32, gamma=2)
    config = resolve_config(options, describe_dataset(options.data, ...))

Presets `stylegan2`, `stylegan3-t`, `stylegan3-r` are the StyleGAN3 release's `--cfg` values (there
`--batch` and `--gamma` are required); `paper256`, `paper512`, `paper1024`, `cifar` are the
StyleGAN2-ADA release's (they carry their published batch, gamma, learning rate, EMA and kimg, which
the options override), and so are `auto` (computed from the resolution and GPU count, see
`auto_preset`) and `sg2ada-stylegan2` (that release's `stylegan2`, renamed because the StyleGAN3
release's `stylegan2` has other numbers); `tiny` is this project's, for CPU runs and tests. Every number below is the
releases' (StyleGAN3 `train.py`, StyleGAN2-ADA `train.py` `cfg_specs`).
"""
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Union

AUG_MODES = ('ada', 'noaug', 'fixed')
PRECISIONS = ('fp16', 'bf16', 'fp32')
DEVICES = ('cuda', 'cpu')
RESUME_LATEST = 'latest'


class OptionError(ValueError):
    """Options that cannot train; the message is one sentence naming the option and what is accepted."""


@dataclass(frozen=True)
class Preset:
    """A base configuration (`--cfg`): architecture and published hyperparameters."""
    generator: str                   # 'stylegan2' or 'stylegan3'
    release: str                     # which release publishes it (documentation only)
    semantics: str = 'sg3'           # networks follow this release's rules: 'sg3' or 'sg2ada' (stylegan2.py)
    batch: Optional[int] = None      # default --batch; None = the option is required
    gamma: Optional[float] = None    # default --gamma; None = the option is required
    batch_gpu: Optional[int] = None  # default --batch-gpu (StyleGAN2-ADA: batch // reference GPUs)
    kimg: float = 25000
    cbase: int = 32768
    cmax: int = 512
    glr: float = 0.0025
    dlr: float = 0.002
    map_depth: int = 2
    mbstd_group: int = 4
    ema_kimg: Optional[float] = None     # None = batch * 10 / 32 (StyleGAN3 release)
    ema_rampup: Optional[float] = 0.05
    style_mixing_prob: float = 0.0
    pl_weight: float = 0.0
    pl_no_weight_grad: bool = False
    G_reg_interval: Optional[int] = None  # lazy path-length regularisation interval; None = off
    fused_modconv_default: Union[bool, str] = True
    D_architecture: str = 'resnet'
    conv_kernel: int = 3                 # StyleGAN3: 1 for config R
    use_radial_filters: bool = False     # StyleGAN3: True for config R
    G_channel_multiplier: int = 1        # StyleGAN3-R doubles G's channel_base and channel_max (not D's)
    blur_init_sigma: float = 0.0         # StyleGAN3-R blurs D's inputs at the start
    blur_fade_kimg_per_32: float = 0.0   # ... fading over batch * this / 32 kimg
    z_dim: int = 512
    w_dim: int = 512


_SG2 = dict(generator='stylegan2', map_depth=8, style_mixing_prob=0.9, pl_weight=2, G_reg_interval=4)
_SG2ADA = dict(_SG2, release='StyleGAN2-ADA', semantics='sg2ada', ema_rampup=None)

PRESETS = {
    # StyleGAN3 release.
    'stylegan2': Preset(**_SG2, release='StyleGAN3', glr=0.002, pl_no_weight_grad=True,
                        fused_modconv_default='inference_only'),
    'stylegan3-t': Preset(generator='stylegan3', release='StyleGAN3'),
    'stylegan3-r': Preset(generator='stylegan3', release='StyleGAN3', conv_kernel=1, use_radial_filters=True,
                          G_channel_multiplier=2, blur_init_sigma=10, blur_fade_kimg_per_32=200),
    # StyleGAN2-ADA release (cfg_specs: ref_gpus, kimg, mb, mbstd, fmaps, lrate, gamma, ema, ramp, map).
    'paper256': Preset(**_SG2ADA, batch=64, batch_gpu=8, mbstd_group=8, cbase=16384, glr=0.0025, dlr=0.0025,
                       gamma=1, ema_kimg=20),
    'paper512': Preset(**_SG2ADA, batch=64, batch_gpu=8, mbstd_group=8, cbase=32768, glr=0.0025, dlr=0.0025,
                       gamma=0.5, ema_kimg=20),
    'paper1024': Preset(**_SG2ADA, batch=32, batch_gpu=4, mbstd_group=4, cbase=32768, glr=0.002, dlr=0.002,
                        gamma=2, ema_kimg=10),
    'cifar': Preset(**dict(_SG2ADA, map_depth=2, style_mixing_prob=0, pl_weight=0, ema_rampup=0.05),
                    kimg=100000, batch=64, batch_gpu=32, mbstd_group=32, glr=0.0025, dlr=0.0025, gamma=0.01,
                    ema_kimg=500, D_architecture='orig'),
    # StyleGAN2-ADA's 'stylegan2' (ref_gpus 8, mb 32, mbstd 4, fmaps 1, lrate 0.002, gamma 10, ema 10, no ramp).
    'sg2ada-stylegan2': Preset(**_SG2ADA, batch=32, batch_gpu=4, mbstd_group=4, cbase=32768, glr=0.002, dlr=0.002,
                               gamma=10, ema_kimg=10),
    # This project: a StyleGAN2 small enough to train on a laptop CPU (smoke runs, tests, benchmarks).
    'tiny': Preset(generator='stylegan2', release='this project', batch=8, gamma=0.1, kimg=2, cbase=1024,
                   cmax=64, glr=0.0025, dlr=0.0025, map_depth=2, mbstd_group=2, ema_kimg=0.5, ema_rampup=0.05,
                   style_mixing_prob=0.9, pl_weight=2, G_reg_interval=4, z_dim=64, w_dim=64),
}


AUTO = 'auto'  # StyleGAN2-ADA's --cfg=auto: a preset computed from the dataset's resolution and --gpus
CONFIG_NAMES = (*PRESETS, AUTO)


def auto_preset(resolution, gpus):
    """StyleGAN2-ADA's `--cfg=auto` for a `resolution`x`resolution` dataset on `gpus` GPUs: the batch
    grows with the GPU count up to 64 (fewer images per GPU at high resolution), the minibatch-stddev
    group stays at most 4, gamma = 0.0002 * resolution^2 / batch, EMA half-life batch * 10 / 32 kimg."""
    batch = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    lr = 0.002 if resolution >= 1024 else 0.0025
    return Preset(**dict(_SG2ADA, map_depth=2, ema_rampup=0.05), batch=batch, batch_gpu=batch // gpus,
                  mbstd_group=min(batch // gpus, 4), cbase=32768 if resolution >= 512 else 16384, glr=lr, dlr=lr,
                  gamma=0.0002 * resolution ** 2 / batch, ema_kimg=batch * 10 / 32)


@dataclass
class TrainOptions:
    """The command line of train.py, one field per option (`--batch-gpu` is `batch_gpu`). None means
    'the preset's value' where the preset has one."""
    outdir: Optional[str] = None
    cfg: Optional[str] = None
    data: Optional[str] = None
    gpus: Optional[int] = None        # None = 1, or the world size under torchrun
    batch: Optional[int] = None
    gamma: Optional[float] = None
    cond: bool = False
    subset: Optional[int] = None      # train on a fixed random subset of this many images (seeded by --seed)
    mirror: bool = False
    aug: str = 'ada'
    augpipe: str = 'bgc'
    resume: Optional[str] = None      # snapshot, release pickle, network checkpoint, or 'latest'
    freezed: int = 0
    p: float = 0.2
    target: float = 0.6
    batch_gpu: Optional[int] = None
    cbase: Optional[int] = None
    cmax: Optional[int] = None
    glr: Optional[float] = None
    dlr: Optional[float] = None
    map_depth: Optional[int] = None
    mbstd_group: Optional[int] = None
    desc: Optional[str] = None
    metrics: Optional[list] = None    # None = fid50k_full if its weights are on this machine, else none
    kimg: Optional[float] = None
    tick: float = 4
    snap: int = 50
    img_snap: Optional[int] = None    # image grid every N ticks; None = --snap (the releases), 0 = no grids
    snap_keep: int = 0                # keep only the newest K network snapshots; 0 = keep all
    seed: int = 0
    fp32: bool = False
    precision: Optional[str] = None   # None = 'fp32' with --fp32, else 'fp16'
    sn: bool = False
    nobench: bool = False
    allow_tf32: bool = False          # let matmul and cuDNN convolutions use TF32 (off in the releases)
    nhwc: bool = False                # channels-last memory format in the float16 blocks
    workers: int = 3
    device: str = 'cuda'
    max_nonfinite: int = 20           # stop after this many optimizer steps in a row with non-finite gradients
    dry_run: bool = False


@dataclass
class TrainingConfig:
    """Everything the training loop needs, resolved from options, preset and dataset; written to the
    run folder as training_options.json."""
    run_dir: str
    cfg: str
    generator: str                    # 'stylegan2' or 'stylegan3'
    dataset_kwargs: dict              # ImageDataset arguments
    G_kwargs: dict                    # Generator arguments
    D_kwargs: dict                    # stylegan2.Discriminator arguments
    G_opt_kwargs: dict                # Adam: lr, betas, eps
    D_opt_kwargs: dict
    loss_kwargs: dict                 # StyleGAN2Loss arguments besides G, D, augment_pipe
    augpipe: Optional[str]            # augment preset name; None = no augmentation
    augment_p: float
    ada_target: Optional[float]
    ada_interval: int
    ada_kimg: float
    G_reg_interval: Optional[int]
    D_reg_interval: Optional[int]
    ema_kimg: float
    ema_rampup: Optional[float]
    num_gpus: int
    batch_size: int
    batch_gpu: int
    total_kimg: float
    kimg_per_tick: float
    network_snapshot_ticks: int
    image_snapshot_ticks: int         # 0 = no fakes grids
    snapshot_keep: int
    random_seed: int
    metrics: list
    precision: str
    cudnn_benchmark: bool
    allow_tf32: bool
    num_workers: int
    device: str
    resume: Optional[str]             # resolved path, or None
    max_nonfinite_steps: int

    def to_json_dict(self):
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DatasetInfo:
    """What resolving the options needs to know about the training set."""
    name: str
    resolution: int
    num_channels: int
    label_dim: int
    size: int


def preset_of(cfg, resolution=None, gpus=1):
    """The Preset of --cfg; `auto` is computed from the dataset's `resolution` and the GPU count."""
    _check_cfg_name(cfg)
    if cfg == AUTO:
        if resolution is None:
            raise ValueError('--cfg=auto needs the dataset resolution')  # a caller's bug, not the user's
        return auto_preset(resolution, gpus)
    return PRESETS[cfg]


def _check_cfg_name(cfg):
    if cfg not in CONFIG_NAMES:
        raise OptionError(f"--cfg={cfg!r} is not a known configuration; choose one of {', '.join(CONFIG_NAMES)}.")


def _pick(value, default):
    return default if value is None else value


def check_options(options, resolution=None):
    """Checks that need no dataset: choices, ranges and the batch arithmetic (for --cfg=auto the
    latter waits for the dataset's `resolution`)."""
    if not options.cfg:
        raise OptionError(f"--cfg is required; choose one of {', '.join(CONFIG_NAMES)}.")
    _check_cfg_name(options.cfg)
    for name in ('outdir', 'data'):
        if not getattr(options, name):
            raise OptionError(f'--{name} is required.')
    _check_choice('aug', options.aug, AUG_MODES)
    _check_choice('device', options.device, DEVICES)
    if options.precision is not None:
        _check_choice('precision', options.precision, PRECISIONS)
        if options.fp32 and options.precision != 'fp32':
            raise OptionError(f'--fp32 contradicts --precision={options.precision}; give one of them.')
    for name in ('p', 'target'):
        value = getattr(options, name)
        if not 0 <= value <= 1:
            raise OptionError(f'--{name}={value} is outside [0, 1].')
    for name in ('gpus', 'batch', 'batch_gpu', 'cbase', 'cmax', 'map_depth', 'mbstd_group', 'snap', 'subset'):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise OptionError(f"--{name.replace('_', '-')}={value} must be a positive integer.")
    for name in ('freezed', 'snap_keep', 'img_snap', 'workers', 'seed', 'max_nonfinite'):
        if (getattr(options, name) or 0) < 0:
            raise OptionError(f"--{name.replace('_', '-')}={getattr(options, name)} must be zero or more.")
    for name in ('gamma', 'glr', 'dlr'):
        value = getattr(options, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise OptionError(f'--{name}={value} must be a finite number >= 0.')
    for name in ('kimg', 'tick'):
        value = getattr(options, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise OptionError(f'--{name}={value} must be a positive number of kimg.')
    if options.cfg == AUTO and resolution is None:
        return  # auto's batch and groups depend on the resolution; resolve_config checks them
    preset = preset_of(options.cfg, resolution, _pick(options.gpus, 1))
    if _pick(options.batch, preset.batch) is None:
        raise OptionError(f'--batch is required with --cfg={options.cfg} (the total batch size over all GPUs).')
    if _pick(options.gamma, preset.gamma) is None:
        raise OptionError(f'--gamma is required with --cfg={options.cfg} (the R1 regularization weight).')
    _check_batch(options, preset)


def _check_choice(name, value, choices):
    if value not in choices:
        raise OptionError(f"--{name}={value!r} is not accepted; choose one of {', '.join(choices)}.")


def default_batch_gpu(options, preset):
    """--batch-gpu when not given: batch // gpus, capped by the preset's per-GPU batch (StyleGAN2-ADA)."""
    if options.batch_gpu is not None:
        return options.batch_gpu
    per_gpu = _pick(options.batch, preset.batch) // _pick(options.gpus, 1)
    if options.batch is None and preset.batch_gpu is not None:
        return min(per_gpu, preset.batch_gpu)
    return per_gpu


def _check_batch(options, preset):
    batch, gpus = _pick(options.batch, preset.batch), _pick(options.gpus, 1)
    if batch % gpus != 0:
        raise OptionError(f'--batch={batch} is not divisible by --gpus={gpus}; give a multiple of {gpus}.')
    batch_gpu = default_batch_gpu(options, preset)
    if batch % (gpus * batch_gpu) != 0:
        raise OptionError(f'--batch={batch} is not a multiple of --gpus={gpus} times --batch-gpu={batch_gpu}.')
    mbstd_group = _pick(options.mbstd_group, preset.mbstd_group)
    if batch_gpu < mbstd_group or batch_gpu % mbstd_group != 0:
        raise OptionError(f'--batch-gpu={batch_gpu} must be a multiple of --mbstd-group={mbstd_group} '
                          f'(each minibatch-stddev group is taken within one GPU batch).')


def run_description(options, dataset_name, resolution=None):
    """The release's run folder name after the number: 'stylegan3-t-ffhq-256x256-gpus8-batch32-gamma2'
    (with '-subset1000' after it when --subset is given, as StyleGAN2-ADA marks it)."""
    preset = preset_of(options.cfg, resolution, _pick(options.gpus, 1))
    desc = (f'{options.cfg}-{dataset_name}-gpus{_pick(options.gpus, 1)}-batch{_pick(options.batch, preset.batch)}'
            f'-gamma{_pick(options.gamma, preset.gamma):g}')
    if options.subset is not None:
        desc += f'-subset{options.subset}'
    return desc if options.desc is None else f'{desc}-{options.desc}'


def resolve_config(options, dataset, run_dir, resume=None, resume_is_snapshot=False):
    """Options + preset + dataset -> TrainingConfig, as the releases' train.py builds its config.
    `resume` is the resolved path; a bare network (not a training snapshot) restarts the schedules
    the way the releases do when fine-tuning (faster ADA, no EMA ramp-up, no blur)."""
    check_options(options, dataset.resolution)
    preset = preset_of(options.cfg, dataset.resolution, _pick(options.gpus, 1))
    if options.subset is not None and options.subset > dataset.size:
        raise OptionError(f"--subset={options.subset} is more than the {dataset.size} images of --data={options.data}; "
                          f"give 1 to {dataset.size}.")
    if options.cond and dataset.label_dim == 0:
        raise OptionError(f"--cond=True needs labels, but dataset '{options.data}' has no labels in dataset.json.")
    batch = _pick(options.batch, preset.batch)
    precision = _pick(options.precision, 'fp32' if options.fp32 else 'fp16')
    fine_tune = resume is not None and not resume_is_snapshot
    loss_kwargs = dict(
        r1_gamma=float(_pick(options.gamma, preset.gamma)), style_mixing_prob=preset.style_mixing_prob,
        pl_weight=preset.pl_weight, pl_no_weight_grad=preset.pl_no_weight_grad,
        blur_init_sigma=0 if fine_tune else preset.blur_init_sigma,
        blur_fade_kimg=batch * preset.blur_fade_kimg_per_32 / 32)
    return TrainingConfig(
        run_dir=run_dir, cfg=options.cfg, generator=preset.generator,
        dataset_kwargs=dict(path=options.data, resolution=dataset.resolution, use_labels=options.cond,
                            max_size=_pick(options.subset, dataset.size), xflip=options.mirror,
                            random_seed=options.seed),
        G_kwargs=generator_kwargs(options, preset, dataset, batch, precision),
        D_kwargs=discriminator_kwargs(options, preset, dataset, precision),
        G_opt_kwargs=dict(lr=_pick(options.glr, preset.glr), betas=[0, 0.99], eps=1e-8),
        D_opt_kwargs=dict(lr=_pick(options.dlr, preset.dlr), betas=[0, 0.99], eps=1e-8),
        loss_kwargs=loss_kwargs,
        augpipe=None if options.aug == 'noaug' else options.augpipe,
        augment_p=options.p if options.aug == 'fixed' else 0.0,
        ada_target=options.target if options.aug == 'ada' else None,
        ada_interval=4, ada_kimg=100 if fine_tune else 500,
        G_reg_interval=preset.G_reg_interval, D_reg_interval=16,
        ema_kimg=_pick(preset.ema_kimg, batch * 10 / 32),
        ema_rampup=None if fine_tune else preset.ema_rampup,
        num_gpus=_pick(options.gpus, 1), batch_size=batch, batch_gpu=default_batch_gpu(options, preset),
        total_kimg=_pick(options.kimg, preset.kimg), kimg_per_tick=options.tick,
        network_snapshot_ticks=options.snap, image_snapshot_ticks=_pick(options.img_snap, options.snap), snapshot_keep=options.snap_keep,
        random_seed=options.seed, metrics=list(options.metrics or []), precision=precision,
        cudnn_benchmark=not options.nobench, allow_tf32=options.allow_tf32, num_workers=options.workers,
        device=options.device,
        resume=resume, max_nonfinite_steps=options.max_nonfinite)


def _precision_kwargs(precision):
    # fp16: the releases' scheme, float16 in the 4 highest resolutions with activations clamped to
    # +-256 (CUDA only in StyleGAN3-release networks; on every device with semantics='sg2ada').
    # bf16 and fp32 need no clamp.
    if precision == 'fp16':
        return dict(num_fp16_res=4, conv_clamp=256)
    return dict(num_fp16_res=0, conv_clamp=None)


def generator_kwargs(options, preset, dataset, batch, precision):
    kwargs = dict(
        z_dim=preset.z_dim, w_dim=preset.w_dim, c_dim=dataset.label_dim if options.cond else 0,
        img_resolution=dataset.resolution, img_channels=dataset.num_channels,
        mapping_kwargs=dict(num_layers=_pick(options.map_depth, preset.map_depth)),
        channel_base=_pick(options.cbase, preset.cbase) * preset.G_channel_multiplier,
        channel_max=_pick(options.cmax, preset.cmax) * preset.G_channel_multiplier,
        **_precision_kwargs(precision))
    if preset.generator == 'stylegan2':
        if preset.semantics == 'sg2ada':
            kwargs.update(semantics='sg2ada')  # that release's own fused_modconv rule, w_avg beta and update
        else:
            kwargs.update(fused_modconv_default=preset.fused_modconv_default)
        if options.nhwc:
            kwargs.update(fp16_channels_last=True)  # StyleGAN3's layers have no channels-last variant
    else:
        # Magnitude EMA half-life of 20 kimg, whatever the batch (StyleGAN3 release).
        kwargs.update(magnitude_ema_beta=0.5 ** (batch / (20 * 1e3)), conv_kernel=preset.conv_kernel,
                      use_radial_filters=preset.use_radial_filters)
    return kwargs


def discriminator_kwargs(options, preset, dataset, precision):
    return dict(
        c_dim=dataset.label_dim if options.cond else 0, img_resolution=dataset.resolution,
        img_channels=dataset.num_channels, architecture=preset.D_architecture,
        channel_base=_pick(options.cbase, preset.cbase), channel_max=_pick(options.cmax, preset.cmax),
        block_kwargs=dict(freeze_layers=options.freezed, **(dict(fp16_channels_last=True) if options.nhwc else {})),
        epilogue_kwargs=dict(mbstd_group_size=_pick(options.mbstd_group, preset.mbstd_group)),
        spectral_norm=options.sn, semantics=preset.semantics, **_precision_kwargs(precision))
