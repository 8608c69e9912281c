"""What the fused-kernel tests share: the two backends they run against, and comparisons with
the reference ops evaluated in float64 on the CPU.

Backends:
  emulated  ops/*.cu compiled for the CPU with ops/emu (every machine): CPU tensors go through
            the registered ops and the fused kernels, as CUDA tensors do on a GPU;
  cuda      the real kernels on the GPU (skipped without one; strict: a failed build fails).
fp32 is compared to 1e-5 relative to the output's magnitude, fp16/bf16 to a few units of their
rounding error; outputs and first- and second-order gradients.
"""
import dataclasses

import pytest
import torch

from ops import kernels as kernels_module

# Relative tolerance per dtype: 1e-5 for fp32; for fp16/bf16 a few units of their rounding error.
RTOL = {torch.float32: 1e-5, torch.float16: 4 * 2.0 ** -11, torch.bfloat16: 4 * 2.0 ** -8}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    device: torch.device
    kernels: kernels_module.FusedKernels


BACKENDS = ['emulated', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                     reason='needs a CUDA GPU'))]


@pytest.fixture(scope='module', params=BACKENDS)
def backend(request):
    """The kernels under test and the device of their tensors; inside, the public ops
    (bias_act, upfirdn2d, filtered_lrelu with impl='cuda') use them. STYLEGAN_OPS=cuda: an op
    that fails its start-up check (ops/guard.py) raises instead of quietly falling back to the
    reference, which would make every comparison below compare the reference with itself."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('STYLEGAN_OPS', 'cuda')
        if request.param == 'cuda':
            kernels = kernels_module._load_for_mode('cuda')  # strict: a build failure is a test failure
            assert kernels is not None
            yield Backend('cuda', torch.device('cuda'), kernels)
            return
        kernels = kernels_module.emulated_kernels()
        with kernels_module.use_emulated(kernels):
            yield Backend('emulated', torch.device('cpu'), kernels)


def assert_matches(actual, expected, dtype, what=''):
    """`actual` (fused) against `expected` (float64 reference), scaled by its magnitude."""
    assert actual.dtype == dtype and actual.shape == expected.shape, \
        f'{what}: {actual.dtype} {list(actual.shape)} vs {dtype} {list(expected.shape)}'
    assert torch.isfinite(actual).all(), f'{what}: non-finite values'
    scale = float(expected.detach().abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(actual.detach().double().cpu(), expected.detach().cpu(), rtol=RTOL[dtype],
                               atol=RTOL[dtype] * (scale or 1.0), msg=lambda m: f'{what} ({dtype}): {m}')


def as_reference(*tensors):
    """float64 CPU copies that require grad as the originals do (None stays None)."""
    return [None if t is None else t.detach().double().cpu().requires_grad_(t.requires_grad) for t in tensors]


def _second_gradients(total, inputs):
    """Gradients of `total`; None where it does not depend on an input (e.g. linear activations)."""
    if not total.requires_grad:
        return [None] * len(inputs)
    return torch.autograd.grad(total, inputs, allow_unused=True)


def check_gradients(fused_fn, ref_fn, inputs, dtype, second_order=True, what=''):
    """Forward, first-order and (optionally) second-order gradients of fused_fn vs ref_fn."""
    ref_inputs = as_reference(*inputs)
    y, y_ref = fused_fn(*inputs), ref_fn(*ref_inputs)
    assert_matches(y, y_ref, dtype, f'{what} forward')
    differentiable = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    grads = torch.autograd.grad(y, [inputs[i] for i in differentiable], dy.to(y.device), create_graph=second_order)
    grads_ref = torch.autograd.grad(y_ref, [ref_inputs[i] for i in differentiable], dy.double(),
                                    create_graph=second_order)
    for g, g_ref in zip(grads, grads_ref):
        assert_matches(g, g_ref, dtype, f'{what} gradient')
    if not second_order:
        return
    weights = [torch.randn(g.shape, generator=torch.Generator().manual_seed(1)) for g in grads]
    total = sum((g.double() * w.to(g.device).double()).sum() for g, w in zip(grads, weights))
    total_ref = sum((g * w.double()).sum() for g, w in zip(grads_ref, weights))
    seconds = _second_gradients(total, [inputs[i] for i in differentiable])
    seconds_ref = _second_gradients(total_ref, [ref_inputs[i] for i in differentiable])
    for s, s_ref, i in zip(seconds, seconds_ref, differentiable):
        s = torch.zeros_like(inputs[i]) if s is None else s
        s_ref = torch.zeros_like(ref_inputs[i]) if s_ref is None else s_ref
        assert_matches(s, s_ref, dtype, f'{what} second-order gradient')
