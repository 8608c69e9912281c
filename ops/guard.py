"""The run-time guard of the fused kernels: the first time a fused op runs in a process (per
device and loaded library), it is run on a few small cases that cover its code paths
(specialised and generic tiles, separable and full filters, fp32/fp16/bf16, clamp, backward)
and compared with the reference ops evaluated in float64 on the CPU. An op that disagrees, or
whose kernel fails to launch, is disabled for the process: the reference ops compute it
instead, and one paragraph names the op, the case and the error. STYLEGAN_OPS=cuda makes that
an error (KernelCheckError). A wrong fused result can therefore never reach a training run
silently; the checks take a few milliseconds on a GPU.

The checks run in a helper thread: the registered ops call `approved` from inside their
implementations, where autograd is switched off for the calling thread, and the cases need it.
"""

import sys
import threading
from typing import Callable, Dict, List, NamedTuple, Optional

import torch

from . import build

# Relative tolerance per storage dtype, scaled by the output's magnitude: fp32 kernels sum in a
# different order than the reference; fp16/bf16 round once at the end (a few units of rounding).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 8 * 2.0 ** -11, torch.bfloat16: 8 * 2.0 ** -8}


class KernelCheckError(RuntimeError):
    """A fused op disagreed with the reference in its start-up check under STYLEGAN_OPS=cuda."""


class Case(NamedTuple):
    name: str
    dtype: torch.dtype
    # (device) -> [(what, fused result on device, reference result in float64 on the CPU)]
    run: Callable[[torch.device], List[tuple]]


def _inputs(seed, device, dtype, *shapes):
    """Random tensors of `shapes` rounded to `dtype`: (on `device`, float64 CPU copies), both leaves
    that require grad."""
    generator = torch.Generator().manual_seed(seed)
    values = [torch.randn(shape, generator=generator).to(dtype) for shape in shapes]
    return ([v.to(device).requires_grad_() for v in values], [v.double().requires_grad_() for v in values])


def _with_gradients(function, device, dtype, seed, shapes, second_order=False):
    """Outputs and input gradients of `function(*inputs, impl)` on `device` and in float64."""
    fused_inputs, ref_inputs = _inputs(seed, device, dtype, *shapes)
    results = []
    for inputs, impl in ((fused_inputs, 'cuda'), (ref_inputs, 'ref')):
        y = function(*inputs, impl=impl)
        dy = torch.linspace(-1, 1, y.numel()).to(dtype).reshape(y.shape).to(y)  # the same values for both
        grads = torch.autograd.grad(y, inputs, dy, create_graph=second_order)
        outputs = [y, *grads]
        if second_order:
            outputs += list(torch.autograd.grad(sum((g.double() ** 2).sum() for g in grads), inputs[0]))
        results.append(outputs)
    names = ['output'] + [f'gradient of input {i}' for i in range(len(shapes))] + ['second-order gradient'] * second_order
    return [(name, f, r) for name, f, r in zip(names, *results)]


def _upfirdn2d_case(name, dtype, up, down, padding, taps, separable, seed, shape=(1, 3, 9, 11)):
    def run(device):
        from .upfirdn2d import setup_filter, upfirdn2d
        f = setup_filter(torch.rand([taps], generator=torch.Generator().manual_seed(seed)) + 0.2,
                         separable=separable)
        return _with_gradients(lambda x, impl: upfirdn2d(x, f.to(x.device), up=up, down=down, padding=padding,
                                                         gain=1.5, impl=impl), device, dtype, seed, [list(shape)])
    return Case(name, dtype, run)


def _bias_act_case(name, dtype, act, clamp, shape, second_order, seed):
    def run(device):
        from .bias_act import bias_act
        return _with_gradients(lambda x, b, impl: bias_act(x, b, act=act, clamp=clamp, impl=impl), device, dtype,
                               seed, [shape, [shape[1]]], second_order=second_order)
    return Case(name, dtype, run)


def _filtered_lrelu_case(name, dtype, up, down, padding, taps, clamp, seed, separable=(True, True)):
    def run(device):
        from .filtered_lrelu import filtered_lrelu
        from .upfirdn2d import setup_filter
        generator = torch.Generator().manual_seed(seed)
        fu, fd = (setup_filter(torch.rand([taps], generator=generator) + 0.2, separable=s) for s in separable)
        return _with_gradients(lambda x, b, impl: filtered_lrelu(
            x, fu.to(x.device), fd.to(x.device), b, up=up, down=down, padding=padding, gain=1.4, slope=0.2,
            clamp=clamp, impl=impl), device, dtype, seed, [[1, 3, 8, 9], [3]])
    return Case(name, dtype, run)


# The cases per op: the specialised paths (up/down 2 with 4 and 12 taps, up 1 down 1), the
# generic path (other factors, negative padding), separable and full filters, each dtype.
CASES: Dict[str, List[Case]] = {
    'upfirdn2d': [
        _upfirdn2d_case('up 2, 4x4 filter, float32', torch.float32, 2, 1, (2, 1, 2, 1), 4, False, 1),
        _upfirdn2d_case('down 2, 12-tap separable filter, float16', torch.float16, 1, 2, 5, 12, True, 2),
        # 24 planes of 16x16: more plane groups than blocks in the emulation (STYLEGAN_MAX_GRID_Z=2).
        _upfirdn2d_case('up 1 down 1, 3x3 filter, 24 planes, bfloat16', torch.bfloat16, 1, 1, 1, 3, False, 3,
                        shape=(3, 8, 16, 16)),
        _upfirdn2d_case('up 4 down 2, 5-tap separable filter, negative padding, float32', torch.float32, 4, 2,
                        (3, -2, -1, 4), 5, True, 4),
    ],
    'bias_act': [
        _bias_act_case('lrelu with clamp, float32', torch.float32, 'lrelu', 0.8, [2, 5, 3, 7], False, 5),
        _bias_act_case('tanh, second order, float16', torch.float16, 'tanh', None, [3, 4, 5], True, 6),
        _bias_act_case('swish, 1 + 4k elements, bfloat16', torch.bfloat16, 'swish', None, [3, 7, 3], False, 7),
    ],
    'filtered_lrelu': [
        _filtered_lrelu_case('up 2 down 2, 12-tap filters, clamp, float32', torch.float32, 2, 2, 10, 12, 0.5, 8),
        _filtered_lrelu_case('up 4 down 2, 8-tap filters, float16', torch.float16, 4, 2, (7, 6, 6, 7), 8, None, 9),
        _filtered_lrelu_case('up 1 down 1, 3x3 filters, bfloat16', torch.bfloat16, 1, 1, 2, 3, None, 10,
                             separable=(False, False)),
        _filtered_lrelu_case('up 2 down 2, separable up and 2-D down filters (StyleGAN3-R), float32', torch.float32,
                             2, 2, 5, 6, None, 11, separable=(True, False)),
    ],
}


def check_op(op: str, device: torch.device) -> Optional[str]:
    """None if every case of `op` matches the reference on `device`, else what went wrong."""
    for case in CASES[op]:
        try:
            results = case.run(device)
        except Exception as error:  # a launch failure, a shape error in new kernel glue, ...
            return f"case '{case.name}': the kernel failed ({type(error).__name__}: {error})"
        for what, fused, reference in results:
            fused = fused.detach().double().cpu()
            reference = reference.detach()
            if fused.shape != reference.shape:
                return f"case '{case.name}', {what}: shape {list(fused.shape)} instead of {list(reference.shape)}"
            bad = int((~torch.isfinite(fused) & torch.isfinite(reference)).sum())
            if bad:
                return f"case '{case.name}', {what}: {bad} of {fused.numel()} values are NaN or infinite"
            scale = float(reference.abs().max()) if reference.numel() else 0.0
            scale = scale or 1.0
            tolerance = TOLERANCE[case.dtype]
            excess = ((fused - reference).abs() - tolerance * reference.abs()).nan_to_num(float('inf'))
            error = float(excess.max()) / scale if excess.numel() else 0.0
            if error > tolerance:
                return (f"case '{case.name}', {what}: error {error:.3g} of the output's magnitude {scale:.3g} "
                        f"(tolerance {tolerance:.3g})")
    return None


def failure_paragraph(op: str, device, problem: str, strict: bool) -> str:
    ending = ("STYLEGAN_OPS=cuda asks for the fused kernels, so this is an error." if strict else
              f"The fused {op} is disabled for this process; the reference ops compute it instead (same "
              f"results, slower). Set STYLEGAN_OPS=ref to skip the fused ops, or STYLEGAN_OPS=cuda to make "
              f"this an error.")
    return (f"stylegan ops: the fused {op} kernel disagrees with the reference op in its start-up check on "
            f"{device}: {problem}. Please report it with your GPU, driver and CUDA versions; "
            f"`python -m pytest tests/test_ops_cuda_kernels.py` shows the failing cases. {ending}")


# (op, device, id(library)) -> 'checking', 'ok', or what went wrong (the op is disabled)
_status: Dict[tuple, str] = {}
_condition = threading.Condition()
_in_check = threading.local()  # set in the helper thread: its own calls use the kernels under check


def approved(kernels, op: Optional[str], device: torch.device) -> bool:
    """Whether `kernels` may compute `op` (None: every op) on `device`; checks it on first use."""
    if getattr(_in_check, 'active', False):
        return True
    return all(_approve(kernels, name, device) for name in ([op] if op else CASES))


def _approve(kernels, op, device):
    key = (op, str(device), id(kernels.library))
    if _status.get(key) == 'ok':  # every call after the first: no lock
        return True
    with _condition:
        while _status.get(key) == 'checking':  # another thread checks it: wait for its verdict
            _condition.wait()
        first = key not in _status
        if first:
            _status[key] = 'checking'
    if first:
        problem = 'the check was interrupted'
        try:
            problem = verify(op, device)
        finally:
            with _condition:
                _status[key] = 'ok' if problem is None else problem
                _condition.notify_all()
    if _status[key] == 'ok':
        return True
    strict = build.ops_mode() == 'cuda'
    if strict:  # every call, not only the first: strict mode never falls back
        raise KernelCheckError(failure_paragraph(op, device, _status[key], strict))
    if first:
        print(failure_paragraph(op, device, _status[key], strict), file=sys.stderr)
    return False


def verify(op: str, device: torch.device) -> Optional[str]:
    """check_op(op, device) in a helper thread, whose own calls use the kernels under check
    (whatever fused_kernels_for returns there: the loaded CUDA build, or use_emulated's)."""
    outcome = {}

    def check():
        _in_check.active = True
        try:
            outcome['problem'] = check_op(op, device)
        except BaseException as error:  # never leave the caller without a verdict
            outcome['problem'] = f"the check itself failed ({type(error).__name__}: {error})"

    thread = threading.Thread(target=check, name=f'stylegan-ops-guard-{op}')
    thread.start()
    thread.join()
    return outcome['problem']


def reset():
    """Forget every verdict (tests)."""
    with _condition:
        _status.clear()
