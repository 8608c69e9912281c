"""Filtered leaky ReLU: StyleGAN3's alias-free nonlinearity (Karras et al. 2021, sec. 3.2).

The activation runs at `up` times the sampling rate, between an upsampling and a
downsampling low-pass filter, so the new frequencies it creates are filtered out before
the signal returns to its own rate. Matches `torch_utils.ops.filtered_lrelu` of the
StyleGAN3 release (its reference path, step for step).
"""

import numbers

import numpy as np
import torch

from . import bias_act as bias_act_module
from . import upfirdn2d as upfirdn2d_module
from .dispatch import resolve_impl


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2,
                   clamp=None, flip_filter=False, impl='cuda'):
    """Bias, upsample + filter `fu`, leaky ReLU * gain, clamp, filter `fd` + downsample.

    Args:
        x:           [N, C, H, W] tensor.
        fu, fd:      Up- and downsampling filters from `upfirdn2d.setup_filter`
                     ([fh, fw] full, [taps] separable, or None for identity).
        b:           Bias of shape [C] and the dtype of `x`, or None.
        up, down:    Integer up- and downsampling factors.
        padding:     Padding of the upsampled image: int, (x, y) or (x0, x1, y0, y1).
        gain:        Multiplies the leaky ReLU output (default sqrt(2)).
        slope:       Negative-side slope of the leaky ReLU (default 0.2).
        clamp:       Clamp the activation to [-clamp, clamp] before `fd`; None = no clamping.
        flip_filter: False = true convolution, True = correlation.
        impl:        'cuda' (default) or 'ref'.

    Returns [N, C, out_h, out_w] with
    out_w = (W * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down, likewise out_h.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"filtered_lrelu expects x to be a torch.Tensor, got {type(x).__name__}.")
    resolve_impl(impl)
    return _filtered_lrelu_ref(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain,
                               slope=slope, clamp=clamp, flip_filter=flip_filter)


def _check_factor(value, name):
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def _check_number(value, name, accepted, is_valid):
    """Python, numpy or 0-d tensor scalar -> float, or one clear error."""
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        number = None
    if number is None or not is_valid(number):
        raise ValueError(f"{name} must be {accepted}, got {value!r}.")
    return number


def _filtered_lrelu_ref(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2,
                        clamp=None, flip_filter=False):
    """The reference path: the composition of `bias_act` and `upfirdn2d`."""
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu expects x of shape [N, C, H, W], got {list(x.shape)}.")
    if b is not None and not (isinstance(b, torch.Tensor) and list(b.shape) == [x.shape[1]] and b.dtype == x.dtype):
        raise ValueError(f"bias must be a tensor of shape [{x.shape[1]}] and dtype {x.dtype}, "
                         f"got {getattr(b, 'shape', type(b).__name__)} {getattr(b, 'dtype', '')}.")
    up = _check_factor(up, 'up')
    down = _check_factor(down, 'down')
    padding = upfirdn2d_module._parse_padding(padding)
    gain = _check_number(gain, 'gain', 'a positive number', lambda v: v > 0)
    slope = _check_number(slope, 'slope', 'a non-negative number', lambda v: v >= 0)
    if clamp is not None:
        clamp = _check_number(clamp, 'clamp', 'None or a non-negative number', lambda v: v >= 0)

    x = bias_act_module.bias_act(x, b=b, impl='ref')
    # gain=up**2 undoes the 1/up^2 drop in mean caused by zero insertion.
    x = upfirdn2d_module.upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2, flip_filter=flip_filter, impl='ref')
    x = bias_act_module.bias_act(x, act='lrelu', alpha=slope, gain=gain, clamp=clamp, impl='ref')
    x = upfirdn2d_module.upfirdn2d(x, fd, down=down, flip_filter=flip_filter, impl='ref')
    return x
