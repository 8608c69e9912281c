"""Upsample, pad, FIR-filter and downsample a batch of images: the resampling primitive of
StyleGAN2/StyleGAN3 (`torch_utils.ops.upfirdn2d` of the releases, same arguments and numbers).

`upfirdn2d` performs, per channel, as `scipy.signal.upfirdn` does in 1-D:
  1. upsample by inserting `up - 1` zeros after each pixel,
  2. pad with zeros (negative padding crops),
  3. convolve with the FIR filter `f`, keeping only outputs whose footprint lies inside,
  4. downsample by keeping every `down`-th pixel.
`filter2d`, `upsample2d` and `downsample2d` choose the padding that keeps the image centred.
"""

import numbers
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import dispatch
from .kernels import fused_kernels_for


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _parse_scaling(scaling, name='scaling'):
    """int or (x, y) -> (sx, sy), each >= 1."""
    if _is_int(scaling):
        scaling = [scaling, scaling]
    if not (isinstance(scaling, (list, tuple)) and len(scaling) == 2 and all(_is_int(s) and s >= 1 for s in scaling)):
        raise ValueError(f"{name} must be a positive int or a pair (x, y) of positive ints, got {scaling!r}.")
    return int(scaling[0]), int(scaling[1])


def _parse_padding(padding):
    """int, (x, y) or (x0, x1, y0, y1) -> (x0, x1, y0, y1); negative values crop."""
    if _is_int(padding):
        padding = [padding, padding]
    if not (isinstance(padding, (list, tuple)) and len(padding) in (2, 4) and all(_is_int(p) for p in padding)):
        raise ValueError(f"padding must be an int, a pair (x, y) or a 4-tuple (x0, x1, y0, y1) of ints, got {padding!r}.")
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    return tuple(int(p) for p in padding)


def _get_filter_size(f):
    """Filter (or None) -> (width, height); a 1-D filter is separable, so both are its length."""
    if f is None:
        return 1, 1
    if not (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.numel() > 0):
        raise ValueError(f"filter must be None or a non-empty 1-D or 2-D tensor, got {getattr(f, 'shape', type(f).__name__)}.")
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    """Turn a list/array/tensor of taps into the float32 filter tensor that `upfirdn2d` takes.

    Args:
        f:           Taps of shape [fh, fw] (full), [taps] (separable), [] (impulse), or None (identity).
        device:      Device of the result.
        normalize:   Divide by the sum so that a constant (DC) signal keeps its magnitude.
        flip_filter: Flip the taps.
        gain:        Overall signal gain, spread evenly over the filter's axes.
        separable:   Keep a 1-D filter separable? None = only when it has at least 8 taps
                     (shorter ones are faster as a full 2-D filter, the outer product).

    Returns a float32 tensor of shape [fh, fw] or [taps].
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f"filter taps must be a scalar, a 1-D or a 2-D array with at least one tap, got shape {list(f.shape)}.")
    if f.ndim == 0:
        f = f.reshape([1])
    if separable is None:
        separable = (f.ndim == 1 and f.numel() >= 8)
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)  # [taps] -> [taps, taps]
    if f.ndim != (1 if separable else 2):
        raise ValueError(f"a 2-D filter of shape {list(f.shape)} cannot be made separable.")
    if normalize:
        f = f / f.sum()  # out of place: torch.as_tensor may share memory with the caller's array
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample (zero insertion), pad, convolve with `f`, downsample (keep every N-th pixel).

    Args:
        x:           [N, C, H, W] tensor (float16, bfloat16, float32 or float64).
        f:           Filter from `setup_filter`: [fh, fw] (full), [taps] (separable, applied
                     along x then y), or None (identity).
        up, down:    Integer factors, or pairs (x, y).
        padding:     Padding of the upsampled image: int, (x, y) or (x0, x1, y0, y1).
        flip_filter: False = true convolution, True = correlation.
        gain:        Signal gain; the filter is scaled by gain ** (f.ndim / 2) per pass.
        impl:        'cuda' (default) or 'ref'.

    Returns [N, C, (H * up + pad - fh + 1) // down (rounded up), same for W].
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"upfirdn2d expects x to be a torch.Tensor, got {type(x).__name__}.")
    if not dispatch.use_registered_op(impl, x):
        path = _upfirdn2d_cpu if dispatch.resolve_impl(impl) == 'cuda' else _upfirdn2d_ref
        return path(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {list(x.shape)}.")
    f = _filter_or_identity(f, x.device)
    up, down, padding = _parse_scaling(up, 'up'), _parse_scaling(down, 'down'), _parse_padding(padding)
    output_size(x.shape[2:], f, up, down, padding)  # validates the geometry before tracing the op
    return torch.ops.stylegan.upfirdn2d(x, f, up, down, padding, bool(flip_filter), float(gain))


def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """The reference path: reshape/pad for zero insertion, depthwise conv2d, strided slicing."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {list(x.shape)}.")
    f = _filter_or_identity(f, x.device)
    upx, upy = _parse_scaling(up, 'up')
    downx, downy = _parse_scaling(down, 'down')
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    output_size(x.shape[2:], f, (upx, upy), (downx, downy), (padx0, padx1, pady0, pady1))
    batch_size, num_channels, in_height, in_width = x.shape

    # Zero insertion: [N, C, H, 1, W, 1] -> pad -> [N, C, H*upy, W*upx].
    x = x.reshape([batch_size, num_channels, in_height, 1, in_width, 1])
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([batch_size, num_channels, in_height * upy, in_width * upx])

    # Pad the positive sides, then crop the negative ones.
    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0): x.shape[2] - max(-pady1, 0), max(-padx0, 0): x.shape[3] - max(-padx1, 0)]

    # conv2d computes correlation, so the taps are flipped to get a true convolution.
    # Gain is applied before the cast, in the filter's dtype, as the release does.
    f = f * (gain ** (f.ndim / 2))
    f = f.to(device=x.device, dtype=x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))

    # Depthwise convolution: one copy of the filter per channel, groups=C.
    f = f[np.newaxis, np.newaxis].expand([num_channels, 1] + list(f.shape))
    # Downsampling is the convolution's stride: only the kept outputs are computed.
    if f.ndim == 4:
        return F.conv2d(x, f, stride=(downy, downx), groups=num_channels)  # [C, 1, fh, fw]
    x = F.conv2d(x, f.unsqueeze(2), stride=(1, downx), groups=num_channels)  # along x: [C, 1, 1, taps]
    return F.conv2d(x, f.unsqueeze(3), stride=(downy, 1), groups=num_channels)  # along y: [C, 1, taps, 1]


def _upfirdn2d_cpu(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """What impl='cuda' runs on CPU tensors (eager): the reference's result, computed faster.

    Upsampling (up > 1, down 1, fp32/fp64) is one transposed convolution per axis instead of
    zero insertion + convolution: it never multiplies the inserted zeros (up^2 fewer products
    for a 2-D filter) nor copies the upsampled image, 2-3x faster forward and backward on the
    CPU (StyleGAN3's filtered_lrelu spends most of its CPU time there). Everything else is
    the reference. Same math: the results agree to rounding.
    """
    if x.ndim != 4 or f is None or x.dtype not in (torch.float32, torch.float64) or not isinstance(f, torch.Tensor):
        return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    upx, upy = _parse_scaling(up, 'up')
    if (upx, upy) == (1, 1) or _parse_scaling(down, 'down') != (1, 1):
        return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    padding = _parse_padding(padding)
    out_h, out_w = output_size(x.shape[2:], f, (upx, upy), (1, 1), padding)
    channels = x.shape[1]
    # Transposed convolution is a true convolution of the zero-inserted input with its weight;
    # the reference correlates with f flipped unless flip_filter, i.e. convolves with w below.
    w = (f * (gain ** (f.ndim / 2))).to(device=x.device, dtype=x.dtype)
    if flip_filter:
        w = w.flip(list(range(w.ndim)))

    def crop_to(t, dim, taps, pad0, size):
        # Full transposed output T (length (n - 1) * up + taps); out[o] = T[o + taps - 1 - pad0],
        # zero outside T (F.pad crops with negative amounts).
        start = taps - 1 - pad0
        amounts = [-start, size - (t.shape[dim] - start)]
        return F.pad(t, amounts if dim == 3 else [0, 0] + amounts)

    if w.ndim == 2:  # [fh, fw] -> [C, 1, fh, fw]
        y = F.conv_transpose2d(x, w[None, None].expand(channels, 1, *w.shape), stride=(upy, upx), groups=channels)
        return crop_to(crop_to(y, 3, w.shape[1], padding[0], out_w), 2, w.shape[0], padding[2], out_h)
    taps = w.shape[0]
    y = F.conv_transpose2d(x, w.reshape(1, 1, 1, taps).expand(channels, 1, 1, taps), stride=(1, upx), groups=channels)
    y = crop_to(y, 3, taps, padding[0], out_w)
    y = F.conv_transpose2d(y, w.reshape(1, 1, taps, 1).expand(channels, 1, taps, 1), stride=(upy, 1), groups=channels)
    return crop_to(y, 2, taps, padding[2], out_h)


def _filter_or_identity(f, device):
    return torch.ones([1, 1], dtype=torch.float32, device=device) if f is None else f


def output_size(in_size, f, up, down, padding):
    """(out_h, out_w) of upfirdn2d for an input of size (h, w); rejects a filter larger than
    the upsampled, padded image."""
    in_h, in_w = int(in_size[0]), int(in_size[1])
    fw, fh = _get_filter_size(f)
    padded_w = in_w * up[0] + padding[0] + padding[1]
    padded_h = in_h * up[1] + padding[2] + padding[3]
    if padded_w < fw or padded_h < fh:
        raise ValueError(f"the upsampled and padded image ({padded_h}x{padded_w}) is smaller than the filter ({fh}x{fw}).")
    return (padded_h - fh) // down[1] + 1, (padded_w - fw) // down[0] + 1


def adjoint_geometry(in_size, out_size, f, up, down, padding):
    """(up, down, padding) of the upfirdn2d that maps a gradient of size `out_size` back to
    `in_size`: the adjoint of this linear map is upfirdn2d with up and down swapped, the filter
    flipped (flip_filter toggled) and this padding."""
    fw, fh = _get_filter_size(f)
    (in_h, in_w), (out_h, out_w) = in_size, out_size
    padx0, _, pady0, _ = padding
    adjoint_padding = (fw - padx0 - 1, in_w * up[0] - out_w * down[0] + padx0 - up[0] + 1,
                       fh - pady0 - 1, in_h * up[1] - out_h * down[1] + pady0 - up[1] + 1)
    return tuple(down), tuple(up), adjoint_padding


def kernel_taps(f, flip_filter, gain):
    """The fp32 taps the CUDA kernels correlate with, the gain folded in, flipped unless
    flip_filter (true convolution): a 2-D filter as [fh, fw]; a separable (1-D) one as
    [2 * taps], the x-taps then the y-taps, each scaled by gain ** 0.5 as the reference does.
    The kernels run a separable filter as two 1-D passes (see ops/upfirdn2d.cu)."""
    f = f.to(torch.float32) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    return (torch.cat([f, f]) if f.ndim == 1 else f).contiguous()


# ----------------------------------------------------------------------------------------------
# The registered op `torch.ops.stylegan.upfirdn2d`: ops/upfirdn2d.cu on CUDA tensors of
# fp32/fp16/bf16, the reference elsewhere. Its gradient is itself on the adjoint geometry, so
# it is differentiable to any order.

@torch.library.custom_op('stylegan::upfirdn2d', mutates_args=())
def _upfirdn2d_op(x: torch.Tensor, f: torch.Tensor, up: Sequence[int], down: Sequence[int],
                  padding: Sequence[int], flip_filter: bool, gain: float) -> torch.Tensor:
    kernels = fused_kernels_for(x, 'upfirdn2d')
    if kernels is None:
        y = _upfirdn2d_ref(x, f, up=tuple(up), down=tuple(down), padding=tuple(padding), flip_filter=flip_filter,
                           gain=gain)
        return dispatch.fresh_output(y.contiguous(), x)
    x = x.contiguous()
    out = x.new_empty([x.shape[0], x.shape[1], *output_size(x.shape[2:], f, up, down, padding)])
    kernels.upfirdn2d(out, x, kernel_taps(f, flip_filter, gain), up=up, down=down, pad_x0=padding[0],
                      pad_y0=padding[2], separable=f.ndim == 1)
    return out


@_upfirdn2d_op.register_fake
def _upfirdn2d_fake(x, f, up, down, padding, flip_filter, gain):
    return x.new_empty([x.shape[0], x.shape[1], *output_size(x.shape[2:], f, up, down, padding)])


def _upfirdn2d_setup_context(ctx, inputs, output):
    x, f, up, down, padding, flip_filter, gain = inputs
    ctx.save_for_backward(f)
    ctx.geometry = adjoint_geometry(x.shape[2:], output.shape[2:], f, up, down, padding)
    ctx.flip_filter, ctx.gain = flip_filter, gain


def _upfirdn2d_backward(ctx, dy):
    f, = ctx.saved_tensors
    up, down, padding = ctx.geometry
    dx = _upfirdn2d_op(dy, f, up, down, padding, not ctx.flip_filter, ctx.gain) if ctx.needs_input_grad[0] else None
    return dx, None, None, None, None, None, None


_upfirdn2d_op.register_autograd(_upfirdn2d_backward, setup_context=_upfirdn2d_setup_context)

# Under autocast the op runs in the autocast dtype, as its reference (a convolution) does.
dispatch.register_autocast('stylegan::upfirdn2d', lambda args, dtype: (dispatch.cast_floating(args[0], dtype),
                                                                       *args[1:]))


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Filter each channel with `f`; by default the output has the input's size.

    `padding` is applied on top of the size-preserving padding (negative values crop).
    """
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample by `up` with the interpolation filter `f`: [N, C, H, W] -> [N, C, H*up, W*up].

    The gain is multiplied by upx * upy because zero insertion leaves 1 / (upx * upy) of the
    signal's mean. `padding` is relative to the output (negative values crop).
    """
    upx, upy = _parse_scaling(up, 'up')
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Downsample by `down` after the anti-aliasing filter `f`: [N, C, H, W] -> [N, C, H/down, W/down].

    `padding` is relative to the input (negative values crop).
    """
    downx, downy = _parse_scaling(down, 'down')
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
