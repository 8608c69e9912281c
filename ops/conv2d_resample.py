"""2-D convolution combined with FIR up/downsampling (`torch_utils.ops.conv2d_resample` of the
releases: same arguments, same numbers).

Conceptually: upsample by `up` with filter `f` (zero insertion, gain up^2), pad, convolve with
`w`, then filter with `f` and keep every `down`-th pixel. Padding happens once, at the start,
relative to the upsampled image. The fast paths below reorder these steps (strided and
transposed convolutions) without changing the result.
"""

import numbers

import torch
import torch.nn.functional as F

from . import upfirdn2d as upfirdn2d_module
from .upfirdn2d import _get_filter_size, _parse_padding


def _conv2d(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d / conv_transpose2d; flip_weight=False flips the kernel to get true convolution
    (torch's conv2d is correlation). A 1x1 kernel is its own flip."""
    kh, kw = w.shape[2], w.shape[3]
    if not flip_weight and (kw > 1 or kh > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def _transpose_weight_for_conv_transpose(w, groups):
    """[O, I/g, kh, kw] (conv2d layout) -> [I, O/g, kh, kw] (conv_transpose2d layout)."""
    out_channels, in_channels_per_group, kh, kw = w.shape
    if groups == 1:
        return w.transpose(0, 1)
    w = w.reshape(groups, out_channels // groups, in_channels_per_group, kh, kw)
    w = w.transpose(1, 2)
    return w.reshape(groups * in_channels_per_group, out_channels // groups, kh, kw)


def _check_arguments(x, w, f, up, down, groups):
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError(f"conv2d_resample expects x of shape [N, C, H, W], got {getattr(x, 'shape', type(x).__name__)}.")
    if not (isinstance(w, torch.Tensor) and w.ndim == 4):
        raise ValueError(f"conv2d_resample expects w of shape [O, I/groups, kh, kw], got {getattr(w, 'shape', type(w).__name__)}.")
    if w.dtype != x.dtype:
        raise ValueError(f"weight dtype {w.dtype} differs from x dtype {x.dtype}; cast it with w.to(x.dtype).")
    if f is not None and not (isinstance(f, torch.Tensor) and f.ndim in (1, 2)):
        raise ValueError(f"f must be None or a 1-D/2-D filter from setup_filter, got {getattr(f, 'shape', type(f).__name__)}.")
    for name, value in (('up', up), ('down', down), ('groups', groups)):
        if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}.")


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """2-D convolution with optional FIR up/downsampling.

    Args:
        x:           [N, I, H, W] input.
        w:           [O, I/groups, kh, kw] weight, same dtype as `x`.
        f:           Low-pass filter from `upfirdn2d.setup_filter`, or None (identity).
        up, down:    Integer up- and downsampling factors.
        padding:     Padding of the upsampled image: int, (x, y) or (x0, x1, y0, y1).
        groups:      Number of channel groups.
        flip_weight: True = correlation (as torch's conv2d), False = true convolution.
        flip_filter: False = true convolution with `f`, True = correlation.

    Returns [N, O, out_h, out_w].
    """
    _check_arguments(x, w, f, up, down, groups)
    out_channels, in_channels_per_group, kh, kw = w.shape
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Extra padding that keeps the image centred through the up/downsampling filters.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    pad = [px0, px1, py0, py1]

    # 1x1 kernel, downsampling only: a pointwise conv commutes with the filter, so shrink first.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d_module.upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, impl='ref')
        return _conv2d(x, w, groups=groups, flip_weight=flip_weight)

    # 1x1 kernel, upsampling only: convolve at the low resolution, then upsample.
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv2d(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d_module.upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter, impl='ref')

    # Downsampling only: filter, then a strided convolution computes only the kept pixels.
    if down > 1 and up == 1:
        x = upfirdn2d_module.upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, impl='ref')
        return _conv2d(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling (optionally followed by downsampling): a stride-`up` transposed convolution
    # equals zero insertion followed by convolution with the flipped kernel; the filter follows.
    if up > 1:
        w = _transpose_weight_for_conv_transpose(w, groups)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        # Any padding both sides still need is done by conv_transpose2d's (cropping) padding.
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv2d(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d_module.upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2,
                                       flip_filter=flip_filter, impl='ref')
        if down > 1:
            x = upfirdn2d_module.upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl='ref')
        return x

    # No resampling and symmetric non-negative padding: plain conv2d does it all.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv2d(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # General case (asymmetric or negative padding): pad/crop with upfirdn2d, then convolve.
    x = upfirdn2d_module.upfirdn2d(x, None, padding=pad, impl='ref')
    return _conv2d(x, w, groups=groups, flip_weight=flip_weight)
