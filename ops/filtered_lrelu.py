"""Filtered leaky ReLU: StyleGAN3's alias-free nonlinearity (Karras et al. 2021, sec. 3.2).

The activation runs at `up` times the sampling rate, between an upsampling and a
downsampling low-pass filter, so the new frequencies it creates are filtered out before
the signal returns to its own rate. Matches `torch_utils.ops.filtered_lrelu` of the
StyleGAN3 release (its reference path, step for step).
"""

import numbers
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import bias_act as bias_act_module
from . import dispatch
from . import kernels as kernels_module
from . import upfirdn2d as upfirdn2d_module
from .upfirdn2d import adjoint_geometry, kernel_taps, output_size


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
    b = dispatch.bias_under_autocast(x, b)
    if not dispatch.use_registered_op(impl, x):
        # impl='cuda' on CPU tensors: the same composition, upsampling by transposed convolution
        # (upfirdn2d's CPU path, 2-3x faster than zero insertion there).
        return _filtered_lrelu_ref(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain,
                                   slope=slope, clamp=clamp, flip_filter=flip_filter, impl=dispatch.resolve_impl(impl))
    up, down, padding, gain, slope, clamp = _check_arguments(x, b, up, down, padding, gain, slope, clamp)
    fu = upfirdn2d_module._filter_or_identity(fu, x.device)
    fd = upfirdn2d_module._filter_or_identity(fd, x.device)
    middle = output_size(x.shape[2:], fu, (up, up), (1, 1), padding)
    output_size(middle, fd, (1, 1), (down, down), (0, 0, 0, 0))  # validates before tracing the op
    y, _record = torch.ops.stylegan.filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope,
                                                  -1.0 if clamp is None else clamp, bool(flip_filter))
    return y


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
                        clamp=None, flip_filter=False, impl='ref'):
    """The reference path: the composition of `bias_act` and `upfirdn2d` (the upsampling with
    `impl`: 'cuda' lets CPU tensors take upfirdn2d's faster CPU path, with the same result)."""
    up, down, padding, gain, slope, clamp = _check_arguments(x, b, up, down, padding, gain, slope, clamp)
    x = bias_act_module.bias_act(x, b=b, impl='ref')
    # gain=up**2 undoes the 1/up^2 drop in mean caused by zero insertion.
    x = upfirdn2d_module.upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2, flip_filter=flip_filter, impl=impl)
    if impl == 'cuda' and x.dtype in (torch.float32, torch.float64):
        x = _LeakyReluGainClamp.apply(x, slope, gain, -1.0 if clamp is None else clamp)
    else:
        x = bias_act_module.bias_act(x, act='lrelu', alpha=slope, gain=gain, clamp=clamp, impl='ref')
    x = upfirdn2d_module.upfirdn2d(x, fd, down=down, flip_filter=flip_filter, impl='ref')
    return x


class _LeakyReluGainClamp(torch.autograd.Function):
    """clamp(lrelu(v) * gain) for the CPU path: the reference's values, but the backward is one
    multiply by the saved derivative {0, gain, gain * slope} instead of autograd's chain through
    leaky_relu, mul and clamp (six passes over the upsampled tensor). Piecewise linear, so the
    derivative is constant and the backward (dy * derivative) is differentiable again."""

    @staticmethod
    def forward(ctx, v, slope, gain, clamp):
        positive = v > 0
        y = F.leaky_relu(v, slope)
        if gain != 1:
            y = y * gain
        derivative = torch.where(positive, v.new_tensor(gain), v.new_tensor(gain * slope))  # in v's dtype
        if clamp >= 0:
            derivative = derivative.masked_fill_(y.abs() > clamp, 0)  # torch.clamp passes |y| <= clamp
            y = y.clamp_(-clamp, clamp)
        ctx.save_for_backward(derivative)
        return y

    @staticmethod
    def backward(ctx, dy):
        derivative, = ctx.saved_tensors
        return dy * derivative, None, None, None


def _check_arguments(x, b, up, down, padding, gain, slope, clamp):
    """Validated (up, down, padding, gain, slope, clamp); clamp stays None when not given."""
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
    return up, down, padding, gain, slope, clamp


# ----------------------------------------------------------------------------------------------
# The registered op `torch.ops.stylegan.filtered_lrelu`: two stages around the leaky ReLU,
#   stage 1  [N, C, H, W] -> middle [N, C, Hm, Wm]: bias, upsample by `up` with fu (gain up^2),
#            then clamp(lrelu(v) * gain), recording per element whether v > 0 and whether it
#            clamped: 2 bits per middle element, packed 16 per int32 word (the record);
#   stage 2  middle -> [N, C, Ho, Wo]: filter fd, downsample by `down`.
# On CUDA (and the emulated build) both stages and the activation are ONE kernel
# (ops/filtered_lrelu.cu) and the middle never reaches memory; elsewhere the same steps run in
# PyTorch. Given the record the map is linear, and its gradient is the same two stages on the
# adjoint geometry (filters swapped and flipped) times the recorded derivative:
# `filtered_lrelu_masked`, whose adjoint is the masked op on the forward geometry again, so
# every order of gradient is available and each reads the 2-bit record, nothing larger.
# A stage is [up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1].

def _stage(up, down, padding):
    return [*up, *down, *padding]


def _geometry(stage):
    return tuple(stage[0:2]), tuple(stage[2:4]), tuple(stage[4:8])


def _adjoint_stage(stage, in_size, out_size, f):
    return _stage(*adjoint_geometry(in_size, out_size, f, *_geometry(stage)))


_CODE_SHIFTS = torch.arange(0, 2 * kernels_module.CODES_PER_WORD, 2)


def pack_codes(codes):
    """int8 codes [N, C, Hm, Wm] -> the int32 record [ceil(numel / 16)] (2 bits each, element
    e in word e // 16 at bits 2 * (e % 16), as ops/filtered_lrelu.cu packs them)."""
    flat = codes.reshape(-1).to(torch.int64)
    flat = F.pad(flat, [0, -flat.numel() % kernels_module.CODES_PER_WORD]).reshape(-1, kernels_module.CODES_PER_WORD)
    words = (flat << _CODE_SHIFTS.to(flat.device)).sum(1)  # disjoint bits: the sum is their OR, < 2^32
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)


def unpack_codes(record, shape):
    """The int32 record -> int64 codes of `shape` (inverse of pack_codes)."""
    words = record.to(torch.int64) & 0xffffffff
    codes = (words.unsqueeze(1) >> _CODE_SHIFTS.to(record.device)) & 3
    count = int(np.prod(shape))
    return codes.reshape(-1)[:count].reshape(shape)


def _leaky_relu_epilogue(v, slope, gain, clamp):
    """v -> (clamp(lrelu(v) * gain), int8 codes), in the reference's order of operations."""
    y = F.leaky_relu(v, slope)
    if gain != 1:
        y = y * gain
    codes = torch.where(v > 0, kernels_module.CODE_POSITIVE, kernels_module.CODE_NEGATIVE).to(torch.int8)
    if clamp >= 0:
        codes = torch.where(y.abs() > clamp, torch.full_like(codes, kernels_module.CODE_CLAMPED), codes)
        y = y.clamp(-clamp, clamp)
    return y, codes


def _masked_gain(codes, gain, slope, dtype):
    """The leaky ReLU's derivative from the codes: {0, gain, gain * slope, 0}[code]."""
    table = torch.tensor([0.0, gain, gain * slope, 0.0], dtype=dtype, device=codes.device)
    return table[codes.long()]


def _fused_geometry(stage1, stage2):
    """(up, down) when the stages fit the fused kernel (stage 1 only upsamples, stage 2 only
    downsamples, square factors: every stage pair this module builds), else None."""
    (up1, down1, _), (up2, down2, _) = _geometry(stage1), _geometry(stage2)
    if up1[0] == up1[1] and down2[0] == down2[1] and tuple(down1) == (1, 1) and tuple(up2) == (1, 1):
        return up1[0], down2[0]
    return None


def _two_stages(x, f1, f2, bias, record, stage1, stage2, gain1, gain2, act_gain, slope, clamp, flip_filter):
    """Stage 1, then the leaky ReLU epilogue (record is None: forward) or the recorded
    derivative (masked), then stage 2. Returns (y, the record the forward wrote, or None)."""
    kernels = kernels_module.fused_kernels_for(x, 'filtered_lrelu')
    factors = _fused_geometry(stage1, stage2)
    middle, out_size = _two_stage_sizes(x, f1, f2, stage1, stage2)
    shape = [x.shape[0], x.shape[1]]
    if kernels is not None and factors is not None:
        (_, _, pad1), (_, _, pad2) = _geometry(stage1), _geometry(stage2)
        record_out = None
        if record is None:  # the kernel ORs each block's codes into whole words: start from zero
            record_out = torch.zeros([kernels_module.record_words(shape + list(middle))], dtype=torch.int32,
                                     device=x.device)
        y = x.new_empty(shape + list(out_size))
        kernels.filtered_lrelu(y, x.contiguous(), None if bias is None else bias.contiguous(),
                               kernel_taps(f1, flip_filter, gain1), kernel_taps(f2, flip_filter, gain2),
                               record_out if record is None else record.contiguous(), mid_size=middle,
                               up=factors[0], down=factors[1], pad1=(pad1[0], pad1[2]), pad2=(pad2[0], pad2[2]),
                               separable1=f1.ndim == 1, separable2=f2.ndim == 1, masked=record is not None,
                               slope=slope, gain=act_gain, clamp=clamp)
        return y, record_out

    if bias is not None:
        x = x + bias.reshape(1, -1, 1, 1)
    v = upfirdn2d_module._upfirdn2d_ref(x, f1, *_geometry(stage1), flip_filter=flip_filter, gain=gain1)
    if record is None:
        v, codes = _leaky_relu_epilogue(v, slope, act_gain, clamp)
        record_out = pack_codes(codes)
    else:
        v, record_out = v * _masked_gain(unpack_codes(record, v.shape), act_gain, slope, v.dtype), None
    y = upfirdn2d_module._upfirdn2d_ref(v, f2, *_geometry(stage2), flip_filter=flip_filter, gain=gain2)
    return y.contiguous(), record_out


def _forward_stages(up, down, padding):
    return _stage((up, up), (1, 1), padding), _stage((1, 1), (down, down), (0, 0, 0, 0))


@torch.library.custom_op('stylegan::filtered_lrelu', mutates_args=())
def _filtered_lrelu_op(x: torch.Tensor, fu: torch.Tensor, fd: torch.Tensor, b: Optional[torch.Tensor], up: int,
                       down: int, padding: Sequence[int], gain: float, slope: float, clamp: float,
                       flip_filter: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """-> (y [N, C, Ho, Wo], the int32 record [ceil(N * C * Hm * Wm / 16)] the backward reads)."""
    stage1, stage2 = _forward_stages(up, down, padding)
    return _two_stages(x, fu, fd, b, None, stage1, stage2, float(up ** 2), 1.0, gain, slope, clamp, flip_filter)


@torch.library.custom_op('stylegan::filtered_lrelu_masked', mutates_args=())
def _filtered_lrelu_masked_op(x: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor, record: torch.Tensor,
                              stage1: Sequence[int], stage2: Sequence[int], gain1: float, gain2: float,
                              act_gain: float, slope: float, flip_filter: bool) -> torch.Tensor:
    """Stage 1, times the leaky ReLU's derivative recorded in `record`, stage 2: linear in x."""
    y, _ = _two_stages(x, f1, f2, None, record, stage1, stage2, gain1, gain2, act_gain, slope, -1.0, flip_filter)
    return y


def _two_stage_sizes(x, f1, f2, stage1, stage2):
    middle = output_size(x.shape[2:], f1, *_geometry(stage1))
    return middle, output_size(middle, f2, *_geometry(stage2))


@_filtered_lrelu_op.register_fake
def _filtered_lrelu_fake(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    middle, out = _two_stage_sizes(x, fu, fd, *_forward_stages(up, down, padding))
    words = kernels_module.record_words([x.shape[0], x.shape[1], *middle])
    return x.new_empty([x.shape[0], x.shape[1], *out]), x.new_empty([words], dtype=torch.int32)


@_filtered_lrelu_masked_op.register_fake
def _filtered_lrelu_masked_fake(x, f1, f2, record, stage1, stage2, gain1, gain2, act_gain, slope, flip_filter):
    _, out = _two_stage_sizes(x, f1, f2, stage1, stage2)
    return x.new_empty([x.shape[0], x.shape[1], *out])


def _backward_through_stages(ctx, dy):
    """The masked op on the adjoint geometry: filters swapped, stages reversed, flip toggled."""
    f1, f2, record = ctx.saved_tensors
    in_size, middle, out_size = ctx.sizes
    stage1 = _adjoint_stage(ctx.stage2, middle, out_size, f2)
    stage2 = _adjoint_stage(ctx.stage1, in_size, middle, f1)
    return _filtered_lrelu_masked_op(dy, f2, f1, record, stage1, stage2, ctx.gain2, ctx.gain1, ctx.act_gain,
                                     ctx.slope, not ctx.flip_filter)


def _save_stages(ctx, x, f1, f2, record, stage1, stage2, gain1, gain2, act_gain, slope, flip_filter):
    ctx.save_for_backward(f1, f2, record)  # the 2-bit record: the only activation-sized state kept
    ctx.sizes = (tuple(x.shape[2:]), *_two_stage_sizes(x, f1, f2, stage1, stage2))
    ctx.stage1, ctx.stage2, ctx.gain1, ctx.gain2 = list(stage1), list(stage2), gain1, gain2
    ctx.act_gain, ctx.slope, ctx.flip_filter = act_gain, slope, flip_filter


def _filtered_lrelu_setup_context(ctx, inputs, output):
    x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter = inputs
    stage1, stage2 = _forward_stages(up, down, padding)
    _save_stages(ctx, x, fu, fd, output[1], stage1, stage2, float(up ** 2), 1.0, gain, slope, flip_filter)
    ctx.has_bias = b is not None


def _filtered_lrelu_backward(ctx, dy, _d_record):
    dx = _backward_through_stages(ctx, dy)
    db = dx.sum([0, 2, 3]) if ctx.has_bias and ctx.needs_input_grad[3] else None
    return dx, None, None, db, None, None, None, None, None, None, None


def _filtered_lrelu_masked_setup_context(ctx, inputs, output):
    x, f1, f2, record, stage1, stage2, gain1, gain2, act_gain, slope, flip_filter = inputs
    _save_stages(ctx, x, f1, f2, record, stage1, stage2, gain1, gain2, act_gain, slope, flip_filter)


def _filtered_lrelu_masked_backward(ctx, dy):
    return (_backward_through_stages(ctx, dy),) + (None,) * 10


_filtered_lrelu_op.register_autograd(_filtered_lrelu_backward, setup_context=_filtered_lrelu_setup_context)
_filtered_lrelu_masked_op.register_autograd(_filtered_lrelu_masked_backward,
                                            setup_context=_filtered_lrelu_masked_setup_context)

# Under autocast the op runs in the autocast dtype, as its reference (convolutions) does.
dispatch.register_autocast('stylegan::filtered_lrelu', lambda args, dtype: (
    dispatch.cast_floating(args[0], dtype), args[1], args[2], dispatch.cast_floating(args[3], dtype), *args[4:]))
