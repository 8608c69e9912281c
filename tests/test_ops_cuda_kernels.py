"""The fused CUDA kernels equal their reference implementations (needs a GPU; skipped without).

Each fused op runs on CUDA in fp32/fp16/bf16 and is compared with the reference evaluated in
float64 on the same (rounded) inputs: fp32 to 1e-5 relative, fp16/bf16 to a few units of their
rounding error, outputs and first- and second-order gradients. Kernels are also run straight
into NaN-filled outputs to show that every output element is written.
`make gpu-check` runs this file with STYLEGAN_OPS=cuda, so a kernel that fails to build fails here.
"""
import math

import pytest
import torch

from ops import kernels as kernels_module
from ops.bias_act import activation_funcs, bias_act
from ops.filtered_lrelu import filtered_lrelu
from ops.upfirdn2d import kernel_taps, setup_filter, upfirdn2d

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Relative tolerance per dtype: 1e-5 for fp32; for fp16/bf16 a few units of their rounding error.
RTOL = {torch.float32: 1e-5, torch.float16: 4 * 2.0 ** -11, torch.bfloat16: 4 * 2.0 ** -8}


@pytest.fixture(scope='module')
def fused():
    kernels = kernels_module._load_for_mode('cuda')  # strict: a build failure is a test failure
    assert kernels is not None
    return kernels


def assert_matches(actual, expected, dtype, what=''):
    """`actual` (fused, on CUDA) against `expected` (float64 reference), scaled by its magnitude."""
    assert actual.dtype == dtype and actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f'{what}: non-finite values'
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(actual.double().cpu(), expected.cpu(), rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               msg=lambda m: f'{what} ({dtype}): {m}')


def as_reference(*tensors):
    """float64 CPU copies that require grad (None stays None)."""
    return [None if t is None else t.detach().double().cpu().requires_grad_(t.requires_grad) for t in tensors]


def second_gradients(total, inputs):
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
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [inputs[i] for i in differentiable], dy, create_graph=second_order)
    grads_ref = torch.autograd.grad(y_ref, [ref_inputs[i] for i in differentiable], dy.double().cpu(),
                                    create_graph=second_order)
    for g, g_ref in zip(grads, grads_ref):
        assert_matches(g, g_ref, dtype, f'{what} gradient')
    if not second_order:
        return
    weights = [torch.randn_like(g) for g in grads]
    total = sum((g.float() * w.float()).sum() for g, w in zip(grads, weights))
    total_ref = sum((g * w.double().cpu()).sum() for g, w in zip(grads_ref, weights))
    seconds = second_gradients(total, [inputs[i] for i in differentiable])
    seconds_ref = second_gradients(total_ref, [ref_inputs[i] for i in differentiable])
    for s, s_ref, i in zip(seconds, seconds_ref, differentiable):
        s = torch.zeros_like(inputs[i]) if s is None else s
        s_ref = torch.zeros_like(ref_inputs[i]) if s_ref is None else s_ref
        assert_matches(s, s_ref, dtype, f'{what} second-order gradient')


# ----------------------------------------------------------------------------------------------
# bias_act

@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('act', sorted(activation_funcs))
@pytest.mark.parametrize('clamp', [None, 0.7], ids=['noclamp', 'clamp'])
def test_bias_act_equals_reference(fused, dtype, act, clamp):
    g = torch.Generator(device='cuda').manual_seed(sum(map(ord, act)) + (clamp is not None))
    for shape, dim in (([3, 5, 7, 9], 1), ([6, 33], 0), ([2, 4, 5], 2)):
        x = torch.randn(shape, generator=g, device='cuda').to(dtype).requires_grad_()
        b = torch.randn([shape[dim]], generator=g, device='cuda').to(dtype).requires_grad_()
        args = dict(dim=dim, act=act, alpha=0.3 if act == 'lrelu' else None, gain=1.7, clamp=clamp)
        check_gradients(lambda x, b: bias_act(x, b, **args), lambda x, b: bias_act(x, b, impl='ref', **args),
                        [x, b], dtype, what=f'bias_act {act} {shape}')


def test_bias_act_without_bias_and_with_default_gain(fused):
    x = torch.randn([4, 8, 3, 3], device='cuda', requires_grad=True)
    check_gradients(lambda x: bias_act(x, act='lrelu'), lambda x: bias_act(x, act='lrelu', impl='ref'), [x],
                    torch.float32, what='bias_act no bias')


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_bias_act_kernel_writes_every_element_even_past_one_grid(fused, dtype):
    n = 256 * (1 << 20) + 1000  # more elements than one grid of the grid-stride loop
    x = torch.randn([n // 1000, 1000], device='cuda').to(dtype)
    b = torch.randn([1000], device='cuda').to(dtype)
    out = torch.full_like(x, float('nan'))
    fused.bias_act(out, x, None, b, bias_stride=1, act=activation_funcs['lrelu'].cuda_idx, order=0, alpha=0.2,
                   gain=1.0, clamp=-1.0)
    assert not out.isnan().any()
    expected = torch.nn.functional.leaky_relu(x.float() + b.float(), 0.2)
    torch.testing.assert_close(out.float(), expected, rtol=RTOL[dtype], atol=RTOL[dtype] * 4)


# ----------------------------------------------------------------------------------------------
# upfirdn2d

def random_filter(kind, taps, generator):
    if kind == 'none':
        return None
    if kind == 'separable':
        return setup_filter(torch.rand([taps], generator=generator) + 0.1, separable=True)
    return setup_filter(torch.rand([taps, taps + 1], generator=generator) + 0.1)


UPFIRDN_CASES = {  # id: (up, down, padding, taps)
    'filter': (1, 1, (2, 1, 1, 2), 4),
    'up2': (2, 1, (2, 1, 2, 1), 4),
    'up4': (4, 1, (5, 4, 5, 4), 8),
    'down2': (1, 2, (1, 1, 1, 1), 4),
    'down4': (1, 4, (3, 3, 4, 2), 8),
    'up2-down2': (2, 2, 3, 6),
    'up3x-down2y': ((3, 1), (1, 2), (2, 2, 1, 1), 3),
    'crop': (1, 1, (-2, 1, 3, -1), 3),
    'up2-crop': (2, 1, (-3, 2, -1, -2), 5),
}


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('kind', ['separable', 'full', 'none'])
@pytest.mark.parametrize('case', sorted(UPFIRDN_CASES))
@pytest.mark.parametrize('flip_filter', [False, True], ids=['conv', 'corr'])
def test_upfirdn2d_equals_reference(fused, dtype, kind, case, flip_filter):
    up, down, padding, taps = UPFIRDN_CASES[case]
    g = torch.Generator().manual_seed(sum(map(ord, case + kind)))
    f = random_filter(kind, taps, g)
    f = None if f is None else f.cuda()
    x = torch.randn([2, 3, 11, 13], generator=g).to(device='cuda', dtype=dtype).requires_grad_()
    args = dict(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.5)
    check_gradients(lambda x: upfirdn2d(x, f, **args), lambda x: upfirdn2d(x, None if f is None else f.cpu(),
                                                                            impl='ref', **args),
                    [x], dtype, what=f'upfirdn2d {case} {kind}')


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_upfirdn2d_kernel_writes_every_element(fused, dtype):
    x = torch.randn([3, 5, 37, 29], device='cuda').to(dtype)
    taps = kernel_taps(setup_filter([1, 3, 3, 1]).cuda(), flip_filter=False, gain=4)
    out = torch.full([3, 5, 75, 59], float('nan'), device='cuda', dtype=dtype)
    fused.upfirdn2d(out, x, taps, up=(2, 2), down=(1, 1), pad_x0=2, pad_y0=2)
    assert not out.isnan().any()
    expected = upfirdn2d(x.double().cpu(), setup_filter([1, 3, 3, 1]), up=2, padding=(2, 1, 2, 1), gain=4, impl='ref')
    assert_matches(out, expected, dtype, 'upfirdn2d into NaN')


# ----------------------------------------------------------------------------------------------
# filtered_lrelu

FLRELU_CASES = {  # id: (up, down, padding, fu taps, fd taps); as StyleGAN3's layers use them
    'up2-down2': (2, 2, 8, 12, 12),
    'up4-down2': (4, 2, (13, 12, 12, 13), 16, 8),
    'up2-down1': (2, 1, (6, 5, 5, 6), 8, 4),
    'up1-down2-crop': (1, 2, (-1, 11, 10, 0), 4, 8),
    'plain': (1, 1, 3, 3, 3),
}


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('case', sorted(FLRELU_CASES))
@pytest.mark.parametrize('clamp', [None, 0.6], ids=['noclamp', 'clamp'])
@pytest.mark.parametrize('kind', ['separable', 'full'])
def test_filtered_lrelu_equals_reference(fused, dtype, case, clamp, kind):
    up, down, padding, taps_u, taps_d = FLRELU_CASES[case]
    g = torch.Generator().manual_seed(sum(map(ord, case + kind)))
    fu, fd = random_filter(kind, taps_u, g), random_filter(kind, taps_d, g)
    x = torch.randn([2, 4, 9, 10], generator=g).to(device='cuda', dtype=dtype).requires_grad_()
    b = torch.randn([4], generator=g).to(device='cuda', dtype=dtype).requires_grad_()
    args = dict(up=up, down=down, padding=padding, gain=1.3, slope=0.15, clamp=clamp, flip_filter=(case == 'plain'))
    check_gradients(lambda x, b: filtered_lrelu(x, fu.cuda(), fd.cuda(), b, **args),
                    lambda x, b: filtered_lrelu(x, fu, fd, b, impl='ref', **args),
                    [x, b], dtype, what=f'filtered_lrelu {case} {kind}')


def test_filtered_lrelu_without_bias_or_filters(fused):
    x = torch.randn([1, 3, 8, 8], device='cuda', requires_grad=True)
    check_gradients(lambda x: filtered_lrelu(x, up=2, down=2, padding=1),
                    lambda x: filtered_lrelu(x, up=2, down=2, padding=1, impl='ref'), [x], torch.float32,
                    what='filtered_lrelu identity filters')


# ----------------------------------------------------------------------------------------------
# Dispatch on the GPU.

@pytest.mark.parametrize('autocast_dtype', [torch.float16, torch.bfloat16], ids=str)
def test_autocast_runs_the_fused_ops_in_the_autocast_dtype(fused, autocast_dtype):
    x = torch.randn([2, 4, 8, 8], device='cuda')
    b = torch.randn([4], device='cuda')
    f = setup_filter([1, 3, 3, 1], device='cuda')
    with torch.autocast('cuda', dtype=autocast_dtype):
        assert upfirdn2d(x, f, up=2, padding=2).dtype == autocast_dtype
        assert filtered_lrelu(x, f, f, b, up=2, down=2, padding=3).dtype == autocast_dtype
        half = x.to(autocast_dtype)
        y = bias_act(half, b, act='lrelu')
    assert y.dtype == autocast_dtype
    assert_matches(y, bias_act(half.double().cpu(), b.to(autocast_dtype).double().cpu(), act='lrelu', impl='ref'),
                   autocast_dtype, 'bias_act under autocast')


def test_float64_on_the_gpu_uses_the_reference_math(fused):
    x = torch.randn([2, 3, 6, 6], device='cuda', dtype=torch.float64)
    f = setup_filter([1, 2, 1], device='cuda')
    torch.testing.assert_close(upfirdn2d(x, f, up=2, padding=1), upfirdn2d(x, f, up=2, padding=1, impl='ref'))


def test_generator_layers_run_fused_on_a_second_gpu_stream(fused):
    x = torch.randn([2, 8, 16, 16], device='cuda')
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = bias_act(x, torch.ones(8, device='cuda'), act='lrelu')
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(y, bias_act(x, torch.ones(8, device='cuda'), act='lrelu', impl='ref'),
                               rtol=1e-5, atol=1e-5)
    assert math.isfinite(float(y.sum()))
