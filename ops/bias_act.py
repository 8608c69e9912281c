"""Bias, activation, gain and clamp in one call: `y = clamp(act(x + b) * gain)`.

Matches `torch_utils.ops.bias_act` of the StyleGAN2-ADA/StyleGAN3 releases: same arguments,
defaults and activation table, so `activation_funcs[name].def_gain` can be read as there.
"""

import numbers
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .dispatch import resolve_impl


@dataclass(frozen=True)
class ActivationSpec:
    """One activation function and the defaults `bias_act` uses for it.

    `cuda_idx`, `ref` ('x' or 'y': which tensor the fused backward reads) and `has_2nd_grad`
    describe the release's fused kernel; they are kept so that kernel can plug in unchanged.
    """
    func: Callable
    def_alpha: float
    def_gain: float
    cuda_idx: int
    ref: str
    has_2nd_grad: bool


# Default gains keep the second moment of the output near 1 for unit-variance input:
# relu and lrelu (and roughly swish) halve it, hence sqrt(2).
activation_funcs = {
    'linear':   ActivationSpec(lambda x, **_: x,                          0,   1,          1, '',  False),
    'relu':     ActivationSpec(lambda x, **_: F.relu(x),                  0,   np.sqrt(2), 2, 'y', False),
    'lrelu':    ActivationSpec(lambda x, alpha, **_: F.leaky_relu(x, alpha), 0.2, np.sqrt(2), 3, 'y', False),
    'tanh':     ActivationSpec(lambda x, **_: torch.tanh(x),              0,   1,          4, 'y', True),
    'sigmoid':  ActivationSpec(lambda x, **_: torch.sigmoid(x),           0,   1,          5, 'y', True),
    'elu':      ActivationSpec(lambda x, **_: F.elu(x),                   0,   1,          6, 'y', True),
    'selu':     ActivationSpec(lambda x, **_: F.selu(x),                  0,   1,          7, 'y', True),
    'softplus': ActivationSpec(lambda x, **_: F.softplus(x),              0,   1,          8, 'y', True),
    'swish':    ActivationSpec(lambda x, **_: torch.sigmoid(x) * x,       0,   np.sqrt(2), 9, 'x', True),
}


def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl='cuda'):
    """Add bias `b` along `dim`, apply activation `act`, multiply by `gain`, clamp to +-`clamp`.

    Args:
        x:     Tensor of any shape.
        b:     1-D bias of length `x.shape[dim]` and the dtype of `x`, or None.
        dim:   The dimension of `x` that `b` runs along (ignored without `b`).
        act:   A key of `activation_funcs`.
        alpha: Shape parameter (the negative slope of 'lrelu'); None = the activation's default.
        gain:  Output scale; None = the activation's default (e.g. sqrt(2) for 'lrelu').
        clamp: Clamp the output to [-clamp, clamp]; None = no clamping.
        impl:  'cuda' (default) or 'ref'.

    Returns a tensor of the shape and dtype of `x`.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bias_act expects x to be a torch.Tensor, got {type(x).__name__}.")
    resolve_impl(impl)
    return _bias_act_ref(x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def _bias_act_ref(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """The reference path: plain PyTorch ops, differentiable to any order by autograd."""
    if act not in activation_funcs:
        raise ValueError(f"Unknown activation {act!r}; expected one of {sorted(activation_funcs)}.")
    if clamp is not None and not clamp >= 0:
        raise ValueError(f"clamp must be None or a non-negative number, got {clamp!r}.")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)

    if b is not None:
        _check_bias(x, b, dim)
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])  # broadcast along dim
    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def _check_bias(x, b, dim):
    if not isinstance(b, torch.Tensor) or b.ndim != 1:
        raise ValueError(f"bias must be a 1-D tensor, got {getattr(b, 'shape', type(b).__name__)}.")
    if not (isinstance(dim, numbers.Integral) and 0 <= dim < x.ndim):
        raise ValueError(f"dim must be an int in [0, {x.ndim}) for x of shape {list(x.shape)}, got {dim!r}.")
    if b.shape[0] != x.shape[dim]:
        raise ValueError(f"bias has {b.shape[0]} elements but x has {x.shape[dim]} along dim {dim}.")
    if b.dtype != x.dtype:
        raise ValueError(f"bias dtype {b.dtype} differs from x dtype {x.dtype}; cast it with b.to(x.dtype).")
