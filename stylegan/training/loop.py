"""The training loop of one rank: dataset -> augment -> loss(G, D) -> optimizer step -> EMA ->
ticks (status line, image grids, snapshots, metrics).

`training_loop(config, rank)` runs on every rank; rank 0 alone writes to the run folder. Ticks,
snapshots and resume follow the releases (a tick every `kimg_per_tick`, tick 0 after the first
minibatch, a snapshot every `network_snapshot_ticks` and at the end), plus what an exact resume needs:
latents come from a generator shared by all ranks, the sampler continues where it stopped, and the
snapshot holds every RNG state (see `snapshot.py`).
"""
import itertools
import math
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from stylegan.checkpoint import load_network, load_state_strictly
from stylegan.data.dataset import ImageDataset, InfiniteSampler
from stylegan.networks import stylegan2, stylegan3
from stylegan.training import distributed
from stylegan.training import snapshot as snapshots
from stylegan.training.augment import AUGPIPE_PRESETS, AdaptiveAugment, AugmentPipe
from stylegan.training.loss import StyleGAN2Loss
from stylegan.training.monitor import RunMonitor, StatsCollector, setup_snapshot_image_grid
from stylegan.training.step import (NonFiniteCounter, NonFiniteTrainingError, StepBatch, build_phases,
                                    draw_latents, ema_beta, optimizers_of, training_iteration, update_ema)

GRID_CHUNK_PIXELS = 2 ** 20
GENERATORS = {'stylegan2': stylegan2.Generator, 'stylegan3': stylegan3.Generator}


@dataclass
class LoopState:
    """Where the run is; saved in snapshots."""
    cur_nimg: int = 0        # images shown to D so far (global)
    cur_tick: int = 0
    batch_idx: int = 0       # minibatches so far; lazy regularisation runs when batch_idx % interval == 0
    data_position: int = 0   # positions of the global sampler stream consumed

    def state_dict(self):
        return dict(vars(self))


@dataclass
class Run:
    """Everything one rank trains with, built once by `setup_run`."""
    config: object
    rank: int
    device: torch.device
    dataset: ImageDataset
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    augment_pipe: object
    ada: object
    loss: object
    phases: list
    state: LoopState
    nonfinite: NonFiniteCounter
    latent_generator: torch.Generator
    label_table: torch.Tensor
    stats: StatsCollector
    monitor: RunMonitor
    options: dict
    grid: object = None     # rank 0: (grid size, reals, latents, labels) of the image snapshots


def training_loop(config, rank=0, local_rank=0, options=None):
    """Train until `config.total_kimg`; every rank calls this, inside a process group when several.
    `options` (the TrainOptions as a dict) is stored in snapshots, so a resume can reuse them."""
    run = setup_run(config, rank, local_rank, options or {})
    try:
        train_until_done(run)
    finally:
        run.monitor.close()


def train_until_done(run):
    config, state = run.config, run.state
    total_nimg = _nimg(config.total_kimg)
    batches = real_batches(run.dataset, config, run.rank, state.data_position, run.device)
    if state.cur_nimg >= total_nimg:
        run.monitor.log(f'The run is already at kimg {state.cur_nimg / 1e3:g} of --kimg={config.total_kimg:g}; '
                        f'give a larger --kimg to continue it.')
        return
    tick_start_nimg = state.cur_nimg
    run.monitor.begin_tick(state.cur_nimg)
    while True:
        training_step(run, next(batches))
        done = state.cur_nimg >= total_nimg
        if not done and state.cur_tick != 0 and state.cur_nimg < tick_start_nimg + _nimg(config.kimg_per_tick):
            continue
        end_tick(run, done)
        state.cur_tick += 1
        tick_start_nimg = state.cur_nimg
        run.monitor.begin_tick(state.cur_nimg)
        if done:
            return


def _nimg(kimg):
    # kimg may be fractional (tests, tiny runs): 0.012 kimg is 12 images, not 12.000000000000002.
    return int(math.ceil(round(kimg * 1000, 6)))


def training_step(run, reals):
    """One minibatch: every due phase, the EMA, the counters and the ADA heuristic."""
    config, state = run.config, run.state
    real_img, real_c = reals
    gen_z, gen_c = draw_latents(run.latent_generator, len(run.phases), config.batch_size, run.G.z_dim,
                                run.label_table, run.rank, config.num_gpus, run.device)
    batch = StepBatch(real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c)
    training_iteration(run.phases, run.loss, batch, state.batch_idx, state.cur_nimg, config, run.nonfinite,
                       run.stats, run.device.type, ada=run.ada)
    distributed.average_running_buffers_(run.G)
    update_ema(run.G_ema, run.G, ema_beta(config.batch_size, state.cur_nimg, config.ema_kimg, config.ema_rampup))
    state.cur_nimg += config.batch_size
    state.batch_idx += 1
    state.data_position += config.batch_size
    if run.ada is not None:
        run.ada.end_minibatch(config.batch_size, all_reduce=distributed.all_reduce_sum_ if config.num_gpus > 1 else None)


# --- set-up -----------------------------------------------------------------------------------------

def setup_run(config, rank, local_rank, options):
    """Build everything, resume if asked, synchronise the ranks, write the initial image grids."""
    run = build_run(config, rank, local_rank, options)
    if config.resume is not None:
        resume(run, config.resume)
    for module in (run.G, run.D, run.G_ema) + ((run.augment_pipe,) if run.augment_pipe is not None else ()):
        distributed.broadcast_module_(module)
    log_start(run)
    save_initial_grids(run)
    return run


def build_run(config, rank, local_rank, options):
    """Dataset, networks, augmentation, loss, phases and monitor of one rank, freshly initialised."""
    device = torch.device('cuda', local_rank) if config.device == 'cuda' else torch.device('cpu')
    configure_backends(config.cudnn_benchmark, config.allow_tf32)
    seed_rank(config.random_seed, config.num_gpus, rank)
    dataset = ImageDataset(**config.dataset_kwargs)
    G = GENERATORS[config.generator](**config.G_kwargs).train().requires_grad_(False).to(device)
    D = stylegan2.Discriminator(**config.D_kwargs).train().requires_grad_(False).to(device)
    G_ema = GENERATORS[config.generator](**config.G_kwargs).eval().requires_grad_(False).to(device)
    G_ema.load_state_dict(G.state_dict())
    augment_pipe, ada = build_augment(config, device)
    loss = StyleGAN2Loss(G=G, D=D, augment_pipe=augment_pipe, **config.loss_kwargs)
    phases = build_phases(G, D, config.G_opt_kwargs, config.D_opt_kwargs, config.G_reg_interval, config.D_reg_interval)
    monitor = RunMonitor(config.run_dir, enabled=(rank == 0), total_kimg=config.total_kimg,
                         ada_target=config.ada_target, device=device)
    return Run(config=config, rank=rank, device=device, dataset=dataset, G=G, D=D, G_ema=G_ema,
               augment_pipe=augment_pipe, ada=ada, loss=loss, phases=phases, state=LoopState(),
               nonfinite=NonFiniteCounter(), latent_generator=torch.Generator().manual_seed(config.random_seed),
               label_table=label_table(dataset, G.c_dim), stats=StatsCollector(), monitor=monitor, options=options)


def configure_backends(cudnn_benchmark, allow_tf32=False):
    torch.backends.cudnn.benchmark = cudnn_benchmark
    # The releases train without TF32 unless --allow-tf32: it changes results visibly at these learning rates.
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


def seed_rank(random_seed, num_gpus, rank):
    """Per-rank seeds, as the releases: noise inputs, style mixing and augmentation differ by rank."""
    seed = random_seed * num_gpus + rank
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)


def build_augment(config, device):
    """(AugmentPipe or None, AdaptiveAugment or None), as the releases: a pipe when --aug is not noaug
    and p can be non-zero (fixed p > 0, or ADA)."""
    if config.augpipe is None or (config.augment_p == 0 and config.ada_target is None):
        return None, None
    pipe = AugmentPipe(**AUGPIPE_PRESETS[config.augpipe]).train().requires_grad_(False).to(device)
    pipe.p.copy_(torch.as_tensor(config.augment_p))
    ada = None
    if config.ada_target is not None:
        ada = AdaptiveAugment(pipe, ada_target=config.ada_target, ada_interval=config.ada_interval,
                              ada_kimg=config.ada_kimg)
    return pipe, ada


def label_table(dataset, c_dim):
    """float32 [len(dataset), c_dim]: the labels that generated images are conditioned on."""
    if c_dim == 0:
        return torch.zeros([len(dataset), 0])
    return torch.from_numpy(np.stack([dataset.get_label(i) for i in range(len(dataset))]))


class _SkipSampler(torch.utils.data.Sampler):
    """The sampler's stream with its first `skip` indices dropped: a resumed run continues the
    data order exactly where the snapshot left it."""

    def __init__(self, sampler, skip):
        super().__init__()
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)


def real_batches(dataset, config, rank, data_position, device):
    """Endless (real images float [n, C, H, W] in [-1, 1], labels [n, c_dim]) of this rank's share."""
    sampler = InfiniteSampler(dataset, rank=rank, num_replicas=config.num_gpus, seed=config.random_seed)
    loader = torch.utils.data.DataLoader(
        dataset, sampler=_SkipSampler(sampler, data_position // config.num_gpus),
        batch_size=config.batch_size // config.num_gpus, num_workers=config.num_workers,
        pin_memory=(device.type == 'cuda'), prefetch_factor=2 if config.num_workers > 0 else None,
        generator=torch.Generator())  # its own: the loader's worker seed must not draw from the training RNG
    for images, labels in loader:
        yield (images.to(device).to(torch.float32) / 127.5 - 1), labels.to(device)


# --- resume -----------------------------------------------------------------------------------------

def resume(run, path):
    """Load networks from a snapshot, a network checkpoint or a release pickle; from a snapshot also
    the optimizers, ADA, loss state, counters and RNG states, so the run continues exactly."""
    payload = snapshots.read_checkpoint_payload(path)
    states = _network_state_dicts(path, payload)
    for key, module in (('G', run.G), ('D', run.D), ('G_ema', run.G_ema)):
        source = states.get(key, states.get('G') if key == 'G_ema' else None)
        if source is not None:
            load_state_strictly(module, source, f"{key} in '{path}'")
    training_state = snapshots.training_state_of(payload) if payload is not None else None
    if training_state is None:
        return
    for name, opt in optimizers_of(run.phases).items():
        snapshots.check_optimizer_state(opt, training_state.get(name), f"{name} in '{path}'")
        opt.load_state_dict(training_state[name])
    if run.ada is not None and training_state.get('ada') is not None:
        run.ada.load_state_dict(training_state['ada'])
    elif run.augment_pipe is not None and payload.get('augment_p') is not None and run.config.ada_target is not None:
        run.augment_pipe.p.fill_(payload['augment_p'])
    load_loss_state(run.loss, training_state.get('loss') or {})
    run.nonfinite.load_state_dict(training_state['nonfinite'])
    for key, value in training_state['loop'].items():
        setattr(run.state, key, int(value))
    run.state.cur_tick += 1  # the snapshot was written at the end of that tick
    _restore_rngs(run, training_state['rng'])


def _network_state_dicts(path, payload):
    if payload is None:  # a release pickle
        return {key: module.state_dict() for key, module in load_network(path).items()
                if isinstance(module, torch.nn.Module)}
    return {key: record['state_dict'] for key, record in (payload.get('networks') or {}).items()}


def _restore_rngs(run, rng):
    run.latent_generator.set_state(rng['latents'])
    ranks = rng['ranks']
    if run.rank < len(ranks):
        snapshots.restore_rng_state(ranks[run.rank], run.device)
    else:
        run.monitor.log(f'The snapshot holds RNG states of {len(ranks)} ranks; rank {run.rank} starts from its seed.')


def loss_state_dict(loss):
    if hasattr(loss, 'state_dict'):
        return loss.state_dict()
    return {'pl_mean': loss.pl_mean.detach().cpu().clone()} if hasattr(loss, 'pl_mean') else {}


def load_loss_state(loss, state):
    if hasattr(loss, 'load_state_dict'):
        loss.load_state_dict(state)
    elif 'pl_mean' in state:
        loss.pl_mean.copy_(state['pl_mean'])


# --- ticks ------------------------------------------------------------------------------------------

def end_tick(run, done):
    """Status line, image grid, snapshot and metrics, stats.jsonl: the release's tick maintenance."""
    config, state = run.config, run.state
    summary = run.stats.summarize()
    run.stats.reset()
    augment_p = float(run.augment_pipe.p) if run.augment_pipe is not None else 0.0
    progress = run.monitor.tick_line(state.cur_tick, state.cur_nimg, augment_p=augment_p, stats=summary)
    if config.image_snapshot_ticks and (done or state.cur_tick % config.image_snapshot_ticks == 0):
        save_fakes(run)
    snapshot_path = None
    if done or state.cur_tick % config.network_snapshot_ticks == 0:
        snapshot_path = write_snapshot(run)
    if snapshot_path is not None and config.metrics:
        evaluate_metrics(run, snapshot_path)
    run.monitor.record({**summary, **progress}, state.cur_nimg)
    run.monitor.draw_plots()


def write_snapshot(run):
    """All ranks: gather RNG states; rank 0 writes the snapshot and prunes old ones."""
    check_finite_networks(run)
    rng_states = distributed.all_gather_objects(snapshots.capture_rng_state(run.device))
    path = os.path.join(run.config.run_dir, snapshots.snapshot_name(run.state.cur_nimg))
    if run.rank != 0:
        return path
    training_state = {
        'loop': run.state.state_dict(),
        **{name: _to_cpu(opt.state_dict()) for name, opt in optimizers_of(run.phases).items()},
        'ada': run.ada.state_dict() if run.ada is not None else None,
        'loss': _to_cpu(loss_state_dict(run.loss)),
        'nonfinite': run.nonfinite.state_dict(),
        'rng': {'latents': run.latent_generator.get_state(), 'ranks': [_to_cpu(s) for s in rng_states]},
        'options': dict(run.options),
        'config': run.config.to_json_dict(),
    }
    augment_p = float(run.augment_pipe.p) if run.augment_pipe is not None else None
    snapshots.save_training_snapshot(path, run.G, run.D, run.G_ema, training_state, augment_p=augment_p,
                                     training_set_kwargs=run.config.dataset_kwargs)
    for removed in snapshots.prune_snapshots(run.config.run_dir, run.config.snapshot_keep):
        run.monitor.log(f'Removed old snapshot {os.path.basename(removed)} (--snap-keep={run.config.snapshot_keep}).')
    return path


def check_finite_networks(run):
    """Stop rather than snapshot networks holding NaN or Inf (same outcome on every rank)."""
    for key, module in (('G', run.G), ('D', run.D), ('G_ema', run.G_ema)):
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NonFiniteTrainingError(
                    f'{key}.{name} holds NaN or Inf at kimg {run.state.cur_nimg / 1e3:.3f}; stopped without '
                    f'writing a snapshot, the previous one is intact.')


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value


def evaluate_metrics(run, snapshot_path):
    """Every rank computes its share of each metric on G_ema; rank 0 appends metric-<name>.jsonl."""
    from metrics import metric_main
    for name in run.config.metrics:
        result = metric_main.calc_metric(name, run.G_ema, run.config.dataset_kwargs, num_gpus=run.config.num_gpus,
                                         rank=run.rank, device=run.device, download=False)
        run.monitor.record_metric(name, result['results'], run.state.cur_nimg, snapshot_pkl=snapshot_path,
                                  total_time=result['total_time'], num_gpus=run.config.num_gpus)


# --- images and log ---------------------------------------------------------------------------------

def _grid(run):
    """(grid size, reals uint8 [N, C, H, W], latents [N, z_dim], labels [N, c_dim]) of the snapshot grid,
    with latents from their own generator so that saving images never moves the training RNGs."""
    grid_size, images, labels = setup_snapshot_image_grid(run.dataset, random_seed=run.config.random_seed)
    generator = torch.Generator().manual_seed(run.config.random_seed)
    grid_z = torch.randn([images.shape[0], run.G.z_dim], generator=generator)
    grid_c = torch.from_numpy(labels).float() if run.G.c_dim > 0 else torch.zeros([images.shape[0], 0])
    return grid_size, images, grid_z, grid_c


def generate_grid_images(run):
    grid_size, _reals, grid_z, grid_c = run.grid
    # Chunks of about GRID_CHUNK_PIXELS output pixels, at least --batch-gpu images (the release's chunk).
    chunk = max(run.config.batch_gpu, GRID_CHUNK_PIXELS // run.G.img_resolution ** 2)
    with torch.no_grad():
        images = [run.G_ema(z.to(run.device), c.to(run.device), noise_mode='const').cpu()
                  for z, c in zip(grid_z.split(chunk), grid_c.split(chunk))]
    return torch.cat(images), grid_size


def save_initial_grids(run):
    run.grid = _grid(run) if run.rank == 0 else None
    if run.rank == 0:
        grid_size, reals, _grid_z, _grid_c = run.grid
        run.monitor.save_reals(reals, grid_size)
        if run.config.image_snapshot_ticks:
            images, grid_size = generate_grid_images(run)
            run.monitor.save_fakes_init(images, grid_size)


def save_fakes(run):
    if run.rank == 0:
        images, grid_size = generate_grid_images(run)
        run.monitor.save_fakes(images, run.state.cur_nimg, grid_size)


def log_start(run):
    config = run.config
    run.monitor.log(f'Training set: {len(run.dataset)} images at {run.dataset.resolution}x{run.dataset.resolution}, '
                    f'labels {run.dataset.label_dim}, from {config.dataset_kwargs["path"]}')
    for key, module in (('G', run.G), ('D', run.D)):
        count = sum(p.numel() for p in module.parameters())
        run.monitor.log(f'{key}: {type(module).__module__.rsplit(".", 1)[-1]}.{type(module).__name__}, {count:,} parameters')
    if config.resume is not None:
        run.monitor.log(f'Resumed from {config.resume} at kimg {run.state.cur_nimg / 1e3:.3f}')
    run.monitor.log(f'Training for {config.total_kimg} kimg on {config.num_gpus} {config.device} process(es)...')
