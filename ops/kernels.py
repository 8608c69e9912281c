"""Calling the fused CUDA kernels: ctypes mirrors of the parameter structs in ops/fused_ops.h,
launches on the current stream of the tensors' device, and the process-wide choice between
the kernels and the reference ops (STYLEGAN_OPS, see ops/build.py).

Callers allocate outputs; every kernel writes every element of its output.

The same kernels also run on the CPU (the emulated build, see ops/build.py), on CPU tensors
through the same methods:

    kernels = emulated_kernels()            # compiles ops/*.cu with ops/emu once, then cached
    kernels.bias_act(out, x, None, b, ...)  # CPU tensors; same arguments as on CUDA
    with use_emulated(kernels):             # the registered ops (and so bias_act(), upfirdn2d(),
        y = upfirdn2d(x_cpu, f, up=2)       # filtered_lrelu() on CPU tensors) call `kernels`

Every fused op is checked against the reference the first time it runs in a process
(ops/guard.py); an op that fails its check is not used.
"""

import contextlib
import ctypes
import functools
import os
import sys
from typing import Optional, Sequence

import torch

from . import build

# Storage types the kernels support; other dtypes (float64) run the reference math.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

# LeakyReluCode of ops/fused_ops.h: the 2-bit record filtered_lrelu keeps per middle element,
# CODES_PER_WORD to an int32 word (flat over [N, C, mid_h, mid_w]).
CODE_CLAMPED, CODE_POSITIVE, CODE_NEGATIVE = 0, 1, 2
CODES_PER_WORD = 16


class BiasActParams(ctypes.Structure):
    _fields_ = [('num_elements', ctypes.c_int64), ('bias_stride', ctypes.c_int64), ('bias_size', ctypes.c_int64),
                ('act', ctypes.c_int32), ('order', ctypes.c_int32),
                ('alpha', ctypes.c_float), ('gain', ctypes.c_float), ('clamp', ctypes.c_float),
                ('num_sms', ctypes.c_int32)]


class UpfirdnParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ('batch', 'channels', 'in_h', 'in_w', 'out_h', 'out_w')] + \
               [(name, ctypes.c_int32) for name in ('up_x', 'up_y', 'down_x', 'down_y', 'pad_x0', 'pad_y0',
                                                    'filter_h', 'filter_w', 'separable')]


class FilteredLreluParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ('batch', 'channels', 'in_h', 'in_w', 'mid_h', 'mid_w', 'out_h',
                                                    'out_w')] + \
               [(name, ctypes.c_int32) for name in ('up', 'down', 'pad1_x0', 'pad1_y0', 'pad2_x0', 'pad2_y0', 'f1_h',
                                                    'f1_w', 'f2_h', 'f2_w', 'f1_separable', 'f2_separable',
                                                    'masked')] + \
               [(name, ctypes.c_float) for name in ('slope', 'gain', 'clamp')]


def record_words(shape) -> int:
    """int32 words of filtered_lrelu's record for a middle of `shape` [N, C, mid_h, mid_w]."""
    count = 1
    for size in shape:
        count *= int(size)
    return -(-count // CODES_PER_WORD)


@functools.lru_cache(maxsize=None)
def multiprocessor_count(device) -> int:
    """SMs of a CUDA device (the fused bias_act sizes its grid to them); the cores on the CPU."""
    if device.type == 'cuda':
        return torch.cuda.get_device_properties(device).multi_processor_count
    return os.cpu_count() or 1


def _pointer(tensor: Optional[torch.Tensor]):
    return None if tensor is None else ctypes.c_void_p(tensor.data_ptr())


def _check_operands(device, *tensors):
    for t in tensors:
        if t is not None and (t.device != device or not t.is_contiguous()):
            raise ValueError(f"fused kernels need contiguous tensors on {device}, got one on {t.device} "
                             f"(contiguous={t.is_contiguous()}).")


class FusedKernels:
    """The loaded library of ops/*.cu."""

    def __init__(self, library: ctypes.CDLL, emulated: bool = False):
        self.library = library
        self.emulated = emulated  # the host build: runs on CPU tensors
        library.stylegan_bias_act.restype = ctypes.c_int
        library.stylegan_bias_act.argtypes = [ctypes.c_int32] + [ctypes.c_void_p] * 4 + \
            [ctypes.POINTER(BiasActParams), ctypes.c_void_p]
        library.stylegan_upfirdn2d.restype = ctypes.c_int
        library.stylegan_upfirdn2d.argtypes = [ctypes.c_int32] + [ctypes.c_void_p] * 3 + \
            [ctypes.POINTER(UpfirdnParams), ctypes.c_void_p]
        library.stylegan_filtered_lrelu.restype = ctypes.c_int
        library.stylegan_filtered_lrelu.argtypes = [ctypes.c_int32] + [ctypes.c_void_p] * 6 + \
            [ctypes.POINTER(FilteredLreluParams), ctypes.c_void_p]
        library.stylegan_ops_error_string.restype = ctypes.c_char_p
        library.stylegan_ops_error_string.argtypes = [ctypes.c_int]

    def _run(self, name, device, function, *args):
        if device.type == 'cpu':
            if not self.emulated:
                raise ValueError(f"the CUDA build of the fused {name} kernel got CPU tensors.")
            error = function(*args, None)  # the emulation ignores the stream
        else:
            with torch.cuda.device(device):
                error = function(*args, ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream))
        if error != 0:
            message = self.library.stylegan_ops_error_string(error).decode()
            if self.emulated:
                self.library.stylegan_emu_last_message.restype = ctypes.c_char_p
                message += f": {self.library.stylegan_emu_last_message().decode()}"
            raise RuntimeError(f"fused {name} kernel failed on {device}: {message} (CUDA error {error}).")

    def bias_act(self, out, x, grad, bias, *, bias_stride, act, order, alpha, gain, clamp):
        """out = clamp(act(x + bias) * gain) (order 0) or grad times its 1st/2nd derivative."""
        _check_operands(x.device, out, x, grad, bias)
        params = BiasActParams(num_elements=x.numel(), bias_stride=bias_stride,
                               bias_size=0 if bias is None else bias.numel(), act=act, order=order,
                               alpha=alpha, gain=gain, clamp=clamp, num_sms=multiprocessor_count(x.device))
        self._run('bias_act', x.device, self.library.stylegan_bias_act, DTYPE_CODES[x.dtype], _pointer(out),
                  _pointer(x), _pointer(grad), _pointer(bias), ctypes.byref(params))

    def upfirdn2d(self, out, x, taps, *, up, down, pad_x0, pad_y0, separable=False):
        """out[N, C, oh, ow] = correlate(upsample(x[N, C, h, w]), taps)[::down].

        `up`, `down` are (x, y) pairs; taps are fp32, flipped and scaled by the caller
        (ops/upfirdn2d.py kernel_taps): [fh, fw], or separable [fw + fh] (x-taps then y-taps).
        """
        _check_operands(x.device, out, x, taps)
        filter_h, filter_w = _taps_shape(taps, separable, 'upfirdn2d')
        batch, channels, in_h, in_w = x.shape
        params = UpfirdnParams(batch=batch, channels=channels, in_h=in_h, in_w=in_w, out_h=out.shape[2],
                               out_w=out.shape[3], up_x=up[0], up_y=up[1], down_x=down[0], down_y=down[1],
                               pad_x0=pad_x0, pad_y0=pad_y0, filter_h=filter_h, filter_w=filter_w,
                               separable=int(separable))
        self._run('upfirdn2d', x.device, self.library.stylegan_upfirdn2d, DTYPE_CODES[x.dtype], _pointer(out),
                  _pointer(x), _pointer(taps), ctypes.byref(params))

    def filtered_lrelu(self, out, x, bias, taps1, taps2, record, *, mid_size, up, down, pad1, pad2, separable1,
                       separable2, masked, slope, gain, clamp):
        """One fused filtered_lrelu pass (ops/filtered_lrelu.cu), x [N, C, H, W] -> middle
        [N, C, *mid_size] (stage 1: upsample by `up`, leading padding pad1 = (x0, y0), taps1) ->
        out (stage 2: leading padding pad2, taps2, downsample by `down`). masked=False: bias, leaky
        ReLU, gain, clamp, writing the 2-bit record into the zeroed int32 `record`; masked=True:
        times the derivative read from it. Taps as for upfirdn2d."""
        _check_operands(x.device, out, x, bias, taps1, taps2, record)
        f1_h, f1_w = _taps_shape(taps1, separable1, 'filtered_lrelu')
        f2_h, f2_w = _taps_shape(taps2, separable2, 'filtered_lrelu')
        mid_h, mid_w = mid_size
        batch, channels, in_h, in_w = x.shape
        if record.dtype != torch.int32 or record.numel() < record_words([batch, channels, mid_h, mid_w]):
            raise ValueError(f"filtered_lrelu record must be int32 with {record_words([batch, channels, mid_h, mid_w])} "
                             f"words, got {record.dtype} with {record.numel()}.")
        params = FilteredLreluParams(batch=batch, channels=channels, in_h=in_h, in_w=in_w, mid_h=mid_h, mid_w=mid_w,
                                     out_h=out.shape[2], out_w=out.shape[3], up=up, down=down, pad1_x0=pad1[0],
                                     pad1_y0=pad1[1], pad2_x0=pad2[0], pad2_y0=pad2[1], f1_h=f1_h, f1_w=f1_w,
                                     f2_h=f2_h, f2_w=f2_w, f1_separable=int(separable1),
                                     f2_separable=int(separable2), masked=int(masked), slope=slope, gain=gain,
                                     clamp=clamp)
        self._run('filtered_lrelu', x.device, self.library.stylegan_filtered_lrelu, DTYPE_CODES[x.dtype],
                  _pointer(out), _pointer(x), _pointer(bias), _pointer(taps1), _pointer(taps2), _pointer(record),
                  ctypes.byref(params))


def _taps_shape(taps, separable, op):
    """(filter_h, filter_w) of the kernel taps: [fh, fw], or [fw + fh] separable with fw == fh."""
    if taps.dtype != torch.float32 or taps.ndim != (1 if separable else 2) or (separable and taps.numel() % 2):
        raise ValueError(f"{op} taps must be float32 of shape {'[2 * taps]' if separable else '[fh, fw]'}, "
                         f"got {taps.dtype} {list(taps.shape)}.")
    return (taps.numel() // 2,) * 2 if separable else tuple(taps.shape)


def check_kernels_run(kernels: FusedKernels):
    """Launch one tiny kernel on the current GPU: a library built for other architectures, or
    for a newer driver than the installed one, fails here rather than in the middle of training."""
    try:
        x = torch.tensor([-1.0, 2.0], device='cuda')
        out = torch.empty_like(x)
        kernels.bias_act(out, x, None, None, bias_stride=1, act=3,  # 3: lrelu
                         order=0, alpha=0.5, gain=2.0, clamp=-1.0)
        result = out.tolist()  # synchronizes
    except RuntimeError as error:
        raise build.OpsBuildError(f"the compiled kernels do not run on {torch.cuda.get_device_name()} ({error})")
    if result != [-1.0, 4.0]:
        raise build.OpsBuildError(f"the compiled kernels computed {result} instead of [-1.0, 4.0] for a leaky ReLU")


@functools.lru_cache(maxsize=None)
def _load_for_mode(mode: str) -> Optional[FusedKernels]:
    """Build or load once per process; in 'auto' a failure prints one paragraph and returns None."""
    if mode == 'ref':
        return None
    try:
        kernels = FusedKernels(build.load_kernel_library(os.environ))
        if torch.cuda.is_available():
            check_kernels_run(kernels)
        return kernels
    except (build.OpsBuildError, OSError) as error:
        if not isinstance(error, build.OpsBuildError):
            error = build.OpsBuildError(f"loading the compiled library failed ({error})")
        if mode == 'cuda':
            raise build.OpsBuildError(build.fallback_message(error).replace(
                'Continuing with the reference ops (same results, slower).',
                'STYLEGAN_OPS=cuda asks for the fused kernels, so this is an error.'), error.log_path) from error
        print(build.fallback_message(error), file=sys.stderr)
        return None


@functools.lru_cache(maxsize=None)
def emulated_kernels(source_dir=None, defines: Sequence[str] = (), cache_root=None) -> FusedKernels:
    """The kernels of ops/*.cu compiled for the CPU (ops/emu); they take CPU tensors.
    `source_dir`: a copy of ops/ to build instead; `defines`: extra -D flags (both for tests)."""
    try:
        library = build.load_emulated_library(os.environ, cache_root, source_dir, tuple(defines))
    except build.OpsBuildError as error:
        raise build.OpsBuildError(build.emulated_failure_message(error), error.log_path) from error
    return FusedKernels(library, emulated=True)


# The emulated kernels that the registered ops use on CPU tensors, when set (use_emulated).
_emulated_for_cpu: Optional[FusedKernels] = None


@contextlib.contextmanager
def use_emulated(kernels: Optional[FusedKernels]):
    """Within the block, the registered ops run CPU tensors through the emulated `kernels`, and
    the public ops (bias_act, upfirdn2d, filtered_lrelu) send CPU tensors to the registered ops.
    For tests and bench/ops.py: the emulation is far slower than the reference ops."""
    global _emulated_for_cpu
    if kernels is not None and not kernels.emulated:
        raise ValueError("use_emulated expects the emulated kernels (emulated_kernels()), got the CUDA build.")
    previous, _emulated_for_cpu = _emulated_for_cpu, kernels
    try:
        yield kernels
    finally:
        _emulated_for_cpu = previous


def emulation_active() -> bool:
    """Whether CPU tensors go through the emulated kernels (inside use_emulated)."""
    return _emulated_for_cpu is not None


def fused_kernels_for(x: torch.Tensor, op: Optional[str] = None) -> Optional[FusedKernels]:
    """The kernels when they apply to `x` (a CUDA tensor of a supported dtype, or a CPU tensor
    inside use_emulated) and `op` passed its start-up check (ops/guard.py; op None: every op
    the library has must pass), else None."""
    if x.dtype not in DTYPE_CODES:
        return None
    if x.device.type == 'cuda':
        kernels = _load_for_mode(build.ops_mode())
    elif x.device.type == 'cpu':
        kernels = _emulated_for_cpu
    else:
        return None
    if kernels is None:
        return None
    from . import guard  # imports the ops, which import this module
    return kernels if guard.approved(kernels, op, x.device) else None


def kernels_available() -> bool:
    """Whether the fused kernels are loaded or can be built (builds them if needed)."""
    return _load_for_mode(build.ops_mode()) is not None
