"""Calling the fused CUDA kernels: ctypes mirrors of the parameter structs in ops/fused_ops.h,
launches on the current stream of the tensors' device, and the process-wide choice between
the kernels and the reference ops (STYLEGAN_OPS, see ops/build.py).

Callers allocate outputs; every kernel writes every element of its output.
"""

import ctypes
import functools
import os
import sys
from typing import Optional

import torch

from . import build

# Storage types the kernels support; other dtypes (float64) run the reference math.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

# EpilogueKind and LeakyReluCode of ops/fused_ops.h.
EPILOGUE_NONE, EPILOGUE_LEAKY_RELU, EPILOGUE_MASKED_GAIN = 0, 1, 2
CODE_CLAMPED, CODE_POSITIVE, CODE_NEGATIVE = 0, 1, 2


class BiasActParams(ctypes.Structure):
    _fields_ = [('num_elements', ctypes.c_int64), ('bias_stride', ctypes.c_int64), ('bias_size', ctypes.c_int64),
                ('act', ctypes.c_int32), ('order', ctypes.c_int32),
                ('alpha', ctypes.c_float), ('gain', ctypes.c_float), ('clamp', ctypes.c_float)]


class UpfirdnParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ('batch', 'channels', 'in_h', 'in_w', 'out_h', 'out_w')] + \
               [(name, ctypes.c_int32) for name in ('up_x', 'up_y', 'down_x', 'down_y', 'pad_x0', 'pad_y0',
                                                    'filter_h', 'filter_w', 'epilogue')] + \
               [(name, ctypes.c_float) for name in ('slope', 'gain', 'clamp')]


def _pointer(tensor: Optional[torch.Tensor]):
    return None if tensor is None else ctypes.c_void_p(tensor.data_ptr())


def _check_operands(device, *tensors):
    for t in tensors:
        if t is not None and (t.device != device or not t.is_contiguous()):
            raise ValueError(f"fused kernels need contiguous tensors on {device}, got one on {t.device} "
                             f"(contiguous={t.is_contiguous()}).")


class FusedKernels:
    """The loaded library of ops/*.cu."""

    def __init__(self, library: ctypes.CDLL):
        self.library = library
        library.stylegan_bias_act.restype = ctypes.c_int
        library.stylegan_bias_act.argtypes = [ctypes.c_int32] + [ctypes.c_void_p] * 4 + \
            [ctypes.POINTER(BiasActParams), ctypes.c_void_p]
        library.stylegan_upfirdn2d.restype = ctypes.c_int
        library.stylegan_upfirdn2d.argtypes = [ctypes.c_int32, ctypes.c_int32] + [ctypes.c_void_p] * 6 + \
            [ctypes.POINTER(UpfirdnParams), ctypes.c_void_p]
        library.stylegan_ops_error_string.restype = ctypes.c_char_p
        library.stylegan_ops_error_string.argtypes = [ctypes.c_int]

    def _run(self, name, device, function, *args):
        with torch.cuda.device(device):
            error = function(*args, ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream))
        if error != 0:
            message = self.library.stylegan_ops_error_string(error).decode()
            raise RuntimeError(f"fused {name} kernel failed on {device}: {message} (CUDA error {error}).")

    def bias_act(self, out, x, grad, bias, *, bias_stride, act, order, alpha, gain, clamp):
        """out = clamp(act(x + bias) * gain) (order 0) or grad times its 1st/2nd derivative."""
        _check_operands(x.device, out, x, grad, bias)
        params = BiasActParams(num_elements=x.numel(), bias_stride=bias_stride,
                               bias_size=0 if bias is None else bias.numel(), act=act, order=order,
                               alpha=alpha, gain=gain, clamp=clamp)
        self._run('bias_act', x.device, self.library.stylegan_bias_act, DTYPE_CODES[x.dtype], _pointer(out),
                  _pointer(x), _pointer(grad), _pointer(bias), ctypes.byref(params))

    def upfirdn2d(self, out, x, taps, *, up, down, pad_x0, pad_y0, bias=None, codes_in=None, codes_out=None,
                  epilogue=EPILOGUE_NONE, slope=0.0, gain=1.0, clamp=-1.0):
        """out[N, C, oh, ow] = correlate(upsample(x[N, C, h, w] + bias), taps[fh, fw])[::down] + epilogue.

        `up`, `down` are (x, y) pairs; taps are fp32, flipped and scaled by the caller.
        """
        _check_operands(x.device, out, x, taps, bias, codes_in, codes_out)
        if taps.dtype != torch.float32 or taps.ndim != 2:
            raise ValueError(f"upfirdn2d taps must be a 2-D float32 tensor, got {taps.dtype} {list(taps.shape)}.")
        batch, channels, in_h, in_w = x.shape
        params = UpfirdnParams(batch=batch, channels=channels, in_h=in_h, in_w=in_w, out_h=out.shape[2],
                               out_w=out.shape[3], up_x=up[0], up_y=up[1], down_x=down[0], down_y=down[1],
                               pad_x0=pad_x0, pad_y0=pad_y0, filter_h=taps.shape[0], filter_w=taps.shape[1],
                               epilogue=epilogue, slope=slope, gain=gain, clamp=clamp)
        self._run('upfirdn2d', x.device, self.library.stylegan_upfirdn2d, DTYPE_CODES[x.dtype],
                  DTYPE_CODES[out.dtype], _pointer(out), _pointer(x), _pointer(bias), _pointer(taps),
                  _pointer(codes_in), _pointer(codes_out), ctypes.byref(params))


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


def fused_kernels_for(x: torch.Tensor) -> Optional[FusedKernels]:
    """The kernels when they apply to `x` (a CUDA tensor of a supported dtype), else None."""
    if x.device.type != 'cuda' or x.dtype not in DTYPE_CODES:
        return None
    return _load_for_mode(build.ops_mode())


def kernels_available() -> bool:
    """Whether the fused kernels are loaded or can be built (builds them if needed)."""
    return _load_for_mode(build.ops_mode()) is not None
