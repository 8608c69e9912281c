"""Bias, activation, gain and clamp in one call: `y = clamp(act(x + b) * gain)`.

Matches `torch_utils.ops.bias_act` of the StyleGAN2-ADA/StyleGAN3 releases: same arguments,
defaults and activation table, so `activation_funcs[name].def_gain` can be read as there.
"""

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import dispatch
from .kernels import fused_kernels_for


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


SQRT2 = math.sqrt(2)  # a Python float, so torch.compile sees a constant (numpy scalars become tensors)

# Default gains keep the second moment of the output near 1 for unit-variance input:
# relu and lrelu (and roughly swish) halve it, hence sqrt(2).
activation_funcs = {
    'linear':   ActivationSpec(lambda x, **_: x,                          0,   1,          1, '',  False),
    'relu':     ActivationSpec(lambda x, **_: F.relu(x),                  0,   SQRT2, 2, 'y', False),
    'lrelu':    ActivationSpec(lambda x, alpha, **_: F.leaky_relu(x, alpha), 0.2, SQRT2, 3, 'y', False),
    'tanh':     ActivationSpec(lambda x, **_: torch.tanh(x),              0,   1,          4, 'y', True),
    'sigmoid':  ActivationSpec(lambda x, **_: torch.sigmoid(x),           0,   1,          5, 'y', True),
    'elu':      ActivationSpec(lambda x, **_: F.elu(x),                   0,   1,          6, 'y', True),
    'selu':     ActivationSpec(lambda x, **_: F.selu(x),                  0,   1,          7, 'y', True),
    'softplus': ActivationSpec(lambda x, **_: F.softplus(x),              0,   1,          8, 'y', True),
    'swish':    ActivationSpec(lambda x, **_: torch.sigmoid(x) * x,       0,   SQRT2, 9, 'x', True),
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
    b = dispatch.bias_under_autocast(x, b)
    if not dispatch.use_registered_op(impl, x):
        return _bias_act_ref(x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    act, alpha, gain, clamp = _resolve_arguments(act, alpha, gain, clamp)
    if b is not None:
        _check_bias(x, b, dim)
    return torch.ops.stylegan.bias_act(x, b, int(dim), act, alpha, gain, clamp)


def _bias_act_ref(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """The reference path: plain PyTorch ops, differentiable to any order by autograd."""
    act, alpha, gain, clamp = _resolve_arguments(act, alpha, gain, clamp)
    spec = activation_funcs[act]
    if b is not None:
        _check_bias(x, b, dim)
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])  # broadcast along dim
    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def _resolve_arguments(act, alpha, gain, clamp):
    """Defaults filled in: (act, alpha, gain, clamp) with clamp = -1 meaning none."""
    if act not in activation_funcs:
        raise ValueError(f"Unknown activation {act!r}; expected one of {sorted(activation_funcs)}.")
    if clamp is not None and not clamp >= 0:
        raise ValueError(f"clamp must be None or a non-negative number, got {clamp!r}.")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return act, alpha, gain, clamp


def _check_bias(x, b, dim):
    if not isinstance(b, torch.Tensor) or b.ndim != 1:
        raise ValueError(f"bias must be a 1-D tensor, got {getattr(b, 'shape', type(b).__name__)}.")
    if not (isinstance(dim, numbers.Integral) and 0 <= dim < x.ndim):
        raise ValueError(f"dim must be an int in [0, {x.ndim}) for x of shape {list(x.shape)}, got {dim!r}.")
    if b.shape[0] != x.shape[dim]:
        raise ValueError(f"bias has {b.shape[0]} elements but x has {x.shape[dim]} along dim {dim}.")
    if b.dtype != x.dtype:
        raise ValueError(f"bias dtype {b.dtype} differs from x dtype {x.dtype}; cast it with b.to(x.dtype).")


# ----------------------------------------------------------------------------------------------
# The registered op `torch.ops.stylegan.bias_act` and its derivative passes. CUDA tensors of
# fp32/fp16/bf16 run ops/bias_act.cu; everything else runs the same math below in PyTorch.

_SELU_SCALE, _SELU_ALPHA = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
_SOFTPLUS_THRESHOLD = 20.0  # F.softplus is linear above this

# f'(z) and f''(z) of each activation, with the branch conventions of torch's autograd
# (relu'(0) = 0, lrelu'(0) = alpha, elu'(0) = 1). The CUDA kernel implements the same table.
_DERIVATIVES = {
    'linear':   (lambda z, a: torch.ones_like(z), lambda z, a: torch.zeros_like(z)),
    'relu':     (lambda z, a: (z > 0).to(z.dtype), lambda z, a: torch.zeros_like(z)),
    'lrelu':    (lambda z, a: torch.where(z > 0, 1.0, a).to(z.dtype), lambda z, a: torch.zeros_like(z)),
    'tanh':     (lambda z, a: 1 - torch.tanh(z) ** 2,
                 lambda z, a: -2 * torch.tanh(z) * (1 - torch.tanh(z) ** 2)),
    'sigmoid':  (lambda z, a: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
                 lambda z, a: torch.sigmoid(z) * (1 - torch.sigmoid(z)) * (1 - 2 * torch.sigmoid(z))),
    'elu':      (lambda z, a: torch.where(z > 0, 1.0, torch.exp(z)),
                 lambda z, a: torch.where(z < 0, torch.exp(z), 0.0)),  # f''(0) = 0, as torch's double backward
    'selu':     (lambda z, a: _SELU_SCALE * torch.where(z > 0, 1.0, _SELU_ALPHA * torch.exp(z)),
                 lambda z, a: _SELU_SCALE * torch.where(z < 0, _SELU_ALPHA * torch.exp(z), 0.0)),
    'softplus': (lambda z, a: torch.where(z > _SOFTPLUS_THRESHOLD, 1.0, torch.sigmoid(z)),
                 lambda z, a: torch.where(z > _SOFTPLUS_THRESHOLD, 0.0, torch.sigmoid(z) * (1 - torch.sigmoid(z)))),
    'swish':    (lambda z, a: torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z))),
                 lambda z, a: torch.sigmoid(z) * (1 - torch.sigmoid(z)) * (2 + z * (1 - 2 * torch.sigmoid(z)))),
}


def _bias_shape(x, dim):
    return [-1 if i == dim else 1 for i in range(x.ndim)]


def _bias_act_derivative_torch(g, x, b, dim, act, alpha, gain, clamp, order):
    """g * gain * f^(order)(x + b), zero where the forward clamp is active (|y| > clamp)."""
    z = x if b is None else x + b.reshape(_bias_shape(x, dim))
    derivative = _DERIVATIVES[act][order - 1](z, alpha)
    result = g * derivative * gain
    if clamp >= 0:
        y = activation_funcs[act].func(z, alpha=alpha) * gain
        result = torch.where(y.abs() <= clamp, result, torch.zeros_like(result))
    return result


def _bias_stride(x, dim):
    """Elements between consecutive entries of the bias in contiguous x: prod(shape[dim+1:])."""
    return int(np.prod(x.shape[dim + 1:], dtype=np.int64)) if x.ndim > dim + 1 else 1


def _run_kernel(kernels, x, g, b, dim, act, alpha, gain, clamp, order):
    x = x.contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    kernels.bias_act(out, x, None if g is None else g.contiguous(), None if b is None else b.contiguous(),
                     bias_stride=_bias_stride(x, dim), act=activation_funcs[act].cuda_idx, order=order,
                     alpha=alpha, gain=gain, clamp=clamp)
    return out


@torch.library.custom_op('stylegan::bias_act', mutates_args=())
def _bias_act_op(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha: float, gain: float,
                 clamp: float) -> torch.Tensor:
    kernels = fused_kernels_for(x, 'bias_act')
    if kernels is not None:
        return _run_kernel(kernels, x, None, b, dim, act, alpha, gain, clamp, order=0)
    y = _bias_act_ref(x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=None if clamp < 0 else clamp)
    return dispatch.fresh_output(y, x)


@torch.library.custom_op('stylegan::bias_act_grad', mutates_args=())
def _bias_act_grad_op(g: torch.Tensor, x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str,
                      alpha: float, gain: float, clamp: float, order: int) -> torch.Tensor:
    """g * d^order/dx^order of bias_act (order 1 or 2)."""
    kernels = fused_kernels_for(x, 'bias_act')
    if kernels is not None and g.dtype == x.dtype:
        return _run_kernel(kernels, x, g, b, dim, act, alpha, gain, clamp, order=order)
    return _bias_act_derivative_torch(g, x, b, dim, act, alpha, gain, clamp, order)


@_bias_act_op.register_fake
def _bias_act_fake(x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(x)


@_bias_act_grad_op.register_fake
def _bias_act_grad_fake(g, x, b, dim, act, alpha, gain, clamp, order):
    return torch.empty_like(x)


def _sum_to_bias(dx, dim):
    return dx.sum([i for i in range(dx.ndim) if i != dim])


def _bias_act_setup_context(ctx, inputs, output):
    x, b, dim, act, alpha, gain, clamp = inputs
    ctx.save_for_backward(x, b)
    ctx.arguments = (dim, act, alpha, gain, clamp)


def _bias_act_backward(ctx, dy):
    x, b = ctx.saved_tensors
    dim = ctx.arguments[0]
    dx = _bias_act_grad_op(dy, x, b, *ctx.arguments, 1)
    db = _sum_to_bias(dx, dim) if b is not None and ctx.needs_input_grad[1] else None
    return dx, db, None, None, None, None, None


def _bias_act_grad_setup_context(ctx, inputs, output):
    g, x, b, dim, act, alpha, gain, clamp, order = inputs
    ctx.save_for_backward(g, x, b)
    ctx.arguments = (dim, act, alpha, gain, clamp)
    ctx.order = order


def _bias_act_grad_backward(ctx, d_out):
    """Second order: d/dg is the first derivative again, d/dx the second derivative."""
    if ctx.order != 1:
        raise RuntimeError("bias_act: third-order gradients are not implemented by the registered op; "
                           "pass impl='ref' (or set STYLEGAN_OPS=ref) for them.")
    g, x, b = ctx.saved_tensors
    dim, act = ctx.arguments[:2]
    dg = _bias_act_grad_op(d_out, x, b, *ctx.arguments, 1) if ctx.needs_input_grad[0] else None
    dx = db = None
    if activation_funcs[act].has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
        dx = _bias_act_grad_op(d_out * g, x, b, *ctx.arguments, 2)
        db = _sum_to_bias(dx, dim) if b is not None and ctx.needs_input_grad[2] else None
    return dg, dx, db, None, None, None, None, None, None


_bias_act_op.register_autograd(_bias_act_backward, setup_context=_bias_act_setup_context)
_bias_act_grad_op.register_autograd(_bias_act_grad_backward, setup_context=_bias_act_grad_setup_context)

# Under autocast the op keeps x's dtype (it is elementwise) and casts the bias to it.
dispatch.register_autocast('stylegan::bias_act', lambda args, dtype: (
    args[0], None if args[1] is None else args[1].to(args[0].dtype), *args[2:]))
