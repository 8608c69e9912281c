"""One training iteration: the phases (Gmain, Greg, Dmain, Dreg), their optimizers, gradient
averaging over ranks with non-finite steps skipped, and the generator EMA.

How a global batch is shared out, so that any --gpus/--batch-gpu split computes the same thing:
rank r of N takes samples r, r+N, r+2N, ... of the global batch (the sampler's interleaving), and
within a rank, accumulation round k of K takes every K-th sample from k. Minibatch-stddev groups
are interleaved the same way (sample i in group i % (n / G)), so every split forms the same groups.
Each round's loss is scaled by 1/K, so accumulated gradients are the mean over the batch (the
releases summed the rounds, which Adam almost hides).
"""
import contextlib
from dataclasses import dataclass, field
from typing import Optional

import torch

from stylegan.training import distributed
from stylegan.training.loss import lazy_regularization_correction


@dataclass
class Phase:
    name: str                       # 'Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg' or 'Dboth'
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int                   # run when batch_idx % interval == 0


@dataclass
class NonFiniteCounter:
    """Optimizer steps skipped because the averaged gradients held NaN or Inf."""
    streak: int = 0                 # consecutive skipped steps (any phase)
    total: int = 0
    per_phase: dict = field(default_factory=dict)

    def state_dict(self):
        return {'streak': self.streak, 'total': self.total, 'per_phase': dict(self.per_phase)}

    def load_state_dict(self, state):
        self.streak, self.total, self.per_phase = int(state['streak']), int(state['total']), dict(state['per_phase'])


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive optimizer steps had non-finite gradients."""


def build_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval):
    """[Phase] in the releases' order: G then D, main (every step) then reg (every `interval`)."""
    phases = []
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval),
                                                   ('D', D, D_opt_kwargs, D_reg_interval)]:
        # Lazy regularisation: lr and betas corrected so main + reg steps act as one step per minibatch.
        lr, betas = lazy_regularization_correction(opt_kwargs['lr'], opt_kwargs['betas'], reg_interval)
        opt = torch.optim.Adam(module.parameters(), **dict(opt_kwargs, lr=lr, betas=tuple(float(b) for b in betas)))
        if reg_interval is None:
            phases.append(Phase(name + 'both', module, opt, 1))
        else:
            phases += [Phase(name + 'main', module, opt, 1), Phase(name + 'reg', module, opt, reg_interval)]
    return phases


def optimizers_of(phases):
    """{'G_opt': Adam, 'D_opt': Adam}: one optimizer per network, shared by its main and reg phases."""
    return {phase.name[0] + '_opt': phase.opt for phase in phases}


@dataclass
class StepBatch:
    """One rank's share of a global minibatch: reals [n, C, H, W] in [-1, 1], real labels [n, c_dim],
    and per phase latents [n, z_dim] and labels [n, c_dim]."""
    real_img: torch.Tensor
    real_c: torch.Tensor
    gen_z: list
    gen_c: list


def draw_latents(generator, num_phases, batch_size, z_dim, label_table, rank, num_gpus, device):
    """Latents and labels for every phase of one step, drawn for the *global* batch from a generator
    that every rank seeds alike, then rank `rank`'s share taken; so the run does not depend on
    the number of GPUs. `label_table` is float32 [len(dataset), c_dim] (c_dim may be 0)."""
    z = torch.randn([num_phases, batch_size, z_dim], generator=generator)
    picks = torch.randint(label_table.shape[0], [num_phases, batch_size], generator=generator)
    gen_z = [phase_z[rank::num_gpus].to(device) for phase_z in z]
    gen_c = [label_table[phase_picks[rank::num_gpus]].to(device) for phase_picks in picks]
    return gen_z, gen_c


def split_rounds(tensor, rounds):
    """[n, ...] -> `rounds` interleaved parts: part k holds samples k, k + rounds, ..."""
    return [tensor[k::rounds] for k in range(rounds)]


def run_phase(phase, loss, batch, phase_idx, rounds, cur_nimg, precision, stats, device_type):
    """Accumulate one phase's gradients over `rounds` rounds; returns the loss's statistics."""
    phase.opt.zero_grad(set_to_none=True)
    phase.module.requires_grad_(True)
    parts = zip(split_rounds(batch.real_img, rounds), split_rounds(batch.real_c, rounds),
                split_rounds(batch.gen_z[phase_idx], rounds), split_rounds(batch.gen_c[phase_idx], rounds))
    for real_img, real_c, gen_z, gen_c in parts:
        with _autocast(precision, device_type, phase.name):
            # gain: lazy reg scales by its interval; 1/rounds makes the accumulated gradient a mean.
            values = loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z,
                                               gen_c=gen_c, gain=phase.interval / rounds, cur_nimg=cur_nimg)
        for name, value in (values or {}).items():
            stats.add(name, value)
    phase.module.requires_grad_(False)


def _autocast(precision, device_type, phase_name):
    # bf16: autocast the main loss terms only; the lazy regularisers (R1, path length) take gradients
    # of gradients, which bfloat16's 8-bit mantissa would mostly round away, so they stay float32.
    if precision == 'bf16' and not phase_name.endswith('reg'):
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def average_gradients(module):
    """Average the gradients of `module` over ranks in one all_reduce. Returns False (and leaves the
    gradients alone) when the average holds NaN or Inf; every rank sees the same average, so
    every rank makes the same decision."""
    params = [p for p in module.parameters() if p.numel() > 0 and p.grad is not None]
    if not params:
        return True
    flat = torch.cat([p.grad.flatten() for p in params])
    distributed.all_reduce_mean_(flat)
    if not bool(torch.isfinite(flat).all()):
        return False
    for param, grad in zip(params, flat.split([p.numel() for p in params])):
        param.grad = grad.reshape(param.shape)
    return True


def step_phase(phase, counter, max_nonfinite, stats, cur_nimg):
    """Apply the averaged gradients of a phase, or skip the step when they are not finite."""
    if average_gradients(phase.module):
        phase.opt.step()
        counter.streak = 0
        stats.add(f'Progress/nonfinite_{phase.name}', 0.0)
        return
    phase.opt.zero_grad(set_to_none=True)
    counter.streak += 1
    counter.total += 1
    counter.per_phase[phase.name] = counter.per_phase.get(phase.name, 0) + 1
    stats.add(f'Progress/nonfinite_{phase.name}', 1.0)
    if max_nonfinite and counter.streak >= max_nonfinite:
        raise NonFiniteTrainingError(
            f'{counter.streak} optimizer steps in a row had NaN or Inf gradients (last in phase {phase.name} '
            f'at kimg {cur_nimg / 1e3:.3f}); stopped, the last snapshot is intact: lower --glr/--dlr, '
            f'raise --gamma or use --precision=fp32.')


def ema_beta(batch_size, cur_nimg, ema_kimg, ema_rampup):
    """Per-step decay of G_ema: half-life ema_kimg thousand images, shortened to cur_nimg * ema_rampup
    early in training (the releases' ramp-up)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema, G, beta):
    """Parameters: G_ema <- beta * G_ema + (1 - beta) * G. Buffers (w_avg, magnitude EMAs, filters)
    are copied: G keeps its own running averages, as in the releases."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def training_iteration(phases, loss, batch, batch_idx, cur_nimg, config, counter, stats, device_type,
                       ada=None):
    """Every phase due at `batch_idx`, in order. ADA collects D's real-image signs from every D phase
    that reports them (the release's collector also counts Dreg's)."""
    rounds = config.batch_size // (config.num_gpus * config.batch_gpu)
    for phase_idx, phase in enumerate(phases):
        if batch_idx % phase.interval != 0:
            continue
        phase_stats = _PhaseStats(stats, ada if phase.name.startswith('D') else None)
        run_phase(phase, loss, batch, phase_idx, rounds, cur_nimg, config.precision, phase_stats, device_type)
        step_phase(phase, counter, config.max_nonfinite_steps, stats, cur_nimg)


class _PhaseStats:
    """Forwards a phase's loss statistics to the collector, and D's real signs to ADA."""

    def __init__(self, stats, ada: Optional[object]):
        self.stats, self.ada = stats, ada

    def add(self, name, value):
        self.stats.add(name, value)
        if self.ada is not None and name == 'Loss/signs/real':
            self.ada.accumulate(value)
