"""The fused kernels (ops/*.cu) equal their reference implementations, on both backends of
tests/kernel_harness.py: the emulated build on the CPU (every machine) and the real kernels on a
GPU (where there is one).

Each fused op runs through its public function and autograd glue in fp32/fp16/bf16 and is
compared with the reference evaluated in float64 on the same (rounded) inputs: outputs and
first- and second-order gradients. Kernels are also run straight into NaN-filled outputs to
show that every output element is written.
`make gpu-check` runs this file with STYLEGAN_OPS=cuda, so a kernel that fails to build fails here.
"""
import math
import os

import pytest
import torch

from kernel_harness import DTYPES, assert_matches, backend, check_gradients  # noqa: F401 (fixture)
from ops import guard
from ops.bias_act import activation_funcs, bias_act
from ops.filtered_lrelu import filtered_lrelu
from ops.upfirdn2d import kernel_taps, setup_filter, upfirdn2d

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def test_the_public_ops_run_the_fused_kernels(backend, monkeypatch):
    assert guard.approved(backend.kernels, None, backend.device)  # the start-up checks, before counting
    calls = []
    for name in ('bias_act', 'upfirdn2d', 'filtered_lrelu'):
        method = getattr(backend.kernels, name)
        monkeypatch.setattr(backend.kernels, name, lambda *a, _m=method, _n=name, **k: calls.append(_n) or _m(*a, **k))
    x = torch.randn([1, 2, 8, 8], device=backend.device, requires_grad=True)
    f = setup_filter([1, 3, 3, 1], device=backend.device)
    y = bias_act(upfirdn2d(x, f, up=2, padding=2), torch.ones([2], device=backend.device), act='lrelu')
    filtered_lrelu(y, f, f, up=2, down=2, padding=3).sum().backward()
    # Forward: each op once; backward: bias_act's derivative, filtered_lrelu's masked pass, upfirdn2d's adjoint.
    assert sorted(calls) == ['bias_act', 'bias_act', 'filtered_lrelu', 'filtered_lrelu', 'upfirdn2d', 'upfirdn2d']


# ----------------------------------------------------------------------------------------------
# bias_act

@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('act', sorted(activation_funcs))
@pytest.mark.parametrize('clamp', [None, 0.7], ids=['noclamp', 'clamp'])
def test_bias_act_equals_reference(backend, dtype, act, clamp):
    g = torch.Generator().manual_seed(sum(map(ord, act)) + (clamp is not None))
    for shape, dim in (([3, 5, 7, 9], 1), ([6, 33], 0), ([2, 4, 5], 2)):
        x = torch.randn(shape, generator=g).to(backend.device, dtype).requires_grad_()
        b = torch.randn([shape[dim]], generator=g).to(backend.device, dtype).requires_grad_()
        args = dict(dim=dim, act=act, alpha=0.3 if act == 'lrelu' else None, gain=1.7, clamp=clamp)
        check_gradients(lambda x, b: bias_act(x, b, **args), lambda x, b: bias_act(x, b, impl='ref', **args),
                        [x, b], dtype, what=f'bias_act {act} {shape}')


def test_bias_act_without_bias_and_with_default_gain(backend):
    x = torch.randn([4, 8, 3, 3], device=backend.device, requires_grad=True)
    check_gradients(lambda x: bias_act(x, act='lrelu'), lambda x: bias_act(x, act='lrelu', impl='ref'), [x],
                    torch.float32, what='bias_act no bias')


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('offset', [0, 1, 3], ids=lambda o: f'offset{o}')
def test_bias_act_kernel_writes_every_element_past_one_grid_and_off_alignment(backend, dtype, offset):
    # More elements than one grid of the grid-stride loop (8 blocks of 256 threads per SM or
    # core, a vector of 4 per thread), starting `offset` elements into the buffer: the
    # vectorised loads meet a misaligned head and a scalar tail.
    per_grid = 8 * 256 * 4 * (torch.cuda.get_device_properties(0).multi_processor_count
                              if backend.device.type == 'cuda' else (os.cpu_count() or 1))
    n = per_grid * 2 + 1003
    buffer = torch.randn([n + offset], generator=torch.Generator().manual_seed(offset)).to(backend.device, dtype)
    x, b = buffer[offset:], torch.randn([1], generator=torch.Generator().manual_seed(9)).to(backend.device, dtype)
    out = torch.full([n + offset], float('nan'), device=backend.device, dtype=dtype)[offset:]
    backend.kernels.bias_act(out, x, None, b, bias_stride=n, act=activation_funcs['lrelu'].cuda_idx, order=0,
                             alpha=0.2, gain=1.0, clamp=-1.0)
    assert not out.isnan().any()
    expected = torch.nn.functional.leaky_relu(x.double() + b.double(), 0.2)
    assert_matches(out, expected, dtype, 'bias_act into NaN')


# ----------------------------------------------------------------------------------------------
# upfirdn2d

def random_filter(kind, taps, generator):
    """kind 'separable' (1-D taps), 'full' (2-D), or 'none' (identity)."""
    if kind == 'none':
        return None
    if kind == 'separable':
        return setup_filter(torch.rand([taps], generator=generator) + 0.1, separable=True)
    return setup_filter(torch.rand([taps, taps + 1], generator=generator) + 0.1)


UPFIRDN_CASES = {  # id: (up, down, padding, taps)
    'filter': (1, 1, (2, 1, 1, 2), 4),
    'one-tap': (1, 1, (0, 1, 1, 0), 1),
    'two-taps': (1, 1, (1, 0, 0, 1), 2),
    'up2': (2, 1, (2, 1, 2, 1), 4),
    'up2-12': (2, 1, (6, 5, 6, 5), 12),
    'up4': (4, 1, (5, 4, 5, 4), 8),
    'down2': (1, 2, (1, 1, 1, 1), 4),
    'down2-12': (1, 2, (5, 5, 5, 5), 12),
    'down4': (1, 4, (3, 3, 4, 2), 8),
    'up2-down2': (2, 2, 3, 6),
    'up4-down4': (4, 4, (4, 3, 3, 4), 7),
    'up3x-down2y': ((3, 1), (1, 2), (2, 2, 1, 1), 3),
    'crop': (1, 1, (-2, 1, 3, -1), 3),
    'up2-crop': (2, 1, (-3, 2, -1, -2), 5),
}


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('kind', ['separable', 'full', 'none'])
@pytest.mark.parametrize('case', sorted(UPFIRDN_CASES))
@pytest.mark.parametrize('flip_filter', [False, True], ids=['conv', 'corr'])
def test_upfirdn2d_equals_reference(backend, dtype, kind, case, flip_filter):
    up, down, padding, taps = UPFIRDN_CASES[case]
    g = torch.Generator().manual_seed(sum(map(ord, case + kind)))
    f = random_filter(kind, taps, g)
    x = torch.randn([2, 3, 11, 13], generator=g).to(backend.device, dtype).requires_grad_()
    args = dict(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.5)
    check_gradients(lambda x: upfirdn2d(x, None if f is None else f.to(x.device), **args),
                    lambda x: upfirdn2d(x, f, impl='ref', **args), [x], dtype, what=f'upfirdn2d {case} {kind}')


@pytest.mark.parametrize('kind', ['separable', 'full'])
@pytest.mark.parametrize('up, down', [(1, 1), (2, 1), (1, 2), (4, 2)])
def test_upfirdn2d_filters_of_1_to_12_taps(backend, kind, up, down):
    g = torch.Generator().manual_seed(up * 10 + down)
    for taps in range(1, 13):
        f = random_filter(kind, taps, g)
        x = torch.randn([1, 2, 7, 10], generator=g).to(backend.device).requires_grad_()
        args = dict(up=up, down=down, padding=(taps // 2, taps - 1 - taps // 2, taps - 1, 1))
        check_gradients(lambda x: upfirdn2d(x, f.to(x.device), **args), lambda x: upfirdn2d(x, f, impl='ref', **args),
                        [x], torch.float32, second_order=False, what=f'upfirdn2d {taps} taps')


@pytest.mark.parametrize('kind', ['separable', 'full'])
def test_upfirdn2d_blocks_that_loop_over_plane_groups(backend, kind):
    # 24 planes of 16x16 make 3 groups of 8 planes; the emulated build has 2 z-blocks
    # (STYLEGAN_MAX_GRID_Z=2), so a block runs a second pass over the shared tile.
    g = torch.Generator().manual_seed(5)
    f = random_filter(kind, 3, g)
    x = torch.randn([3, 8, 16, 16], generator=g).to(backend.device).requires_grad_()
    check_gradients(lambda x: upfirdn2d(x, f.to(x.device), padding=1), lambda x: upfirdn2d(x, f, padding=1, impl='ref'),
                    [x], torch.float32, second_order=False, what=f'upfirdn2d 24 planes {kind}')


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_upfirdn2d_kernel_writes_every_element(backend, dtype):
    x = torch.randn([3, 5, 37, 29]).to(backend.device, dtype)
    taps = kernel_taps(setup_filter([1, 3, 3, 1]).to(backend.device), flip_filter=False, gain=4)
    out = torch.full([3, 5, 75, 59], float('nan'), device=backend.device, dtype=dtype)
    backend.kernels.upfirdn2d(out, x, taps, up=(2, 2), down=(1, 1), pad_x0=2, pad_y0=2)
    assert not out.isnan().any()
    expected = upfirdn2d(x.double().cpu(), setup_filter([1, 3, 3, 1]), up=2, padding=2, gain=4, impl='ref')
    assert_matches(out, expected, dtype, 'upfirdn2d into NaN')


# ----------------------------------------------------------------------------------------------
# filtered_lrelu

FLRELU_CASES = {  # id: (up, down, padding, fu taps, fd taps); as StyleGAN3's layers use them
    'up2-down2': (2, 2, 8, 12, 12),
    'up4-down2': (4, 2, (13, 12, 12, 13), 16, 8),
    'up2-down1': (2, 1, (6, 5, 5, 6), 8, 4),
    'up1-down2-crop': (1, 2, (-1, 11, 10, 0), 4, 8),
    'up1-down4': (1, 4, (3, 4, 4, 3), 1, 8),
    'plain': (1, 1, 3, 3, 3),
}


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('case', sorted(FLRELU_CASES))
@pytest.mark.parametrize('clamp', [None, 0.6], ids=['noclamp', 'clamp'])
@pytest.mark.parametrize('kind', ['separable', 'full', 'separable-full'])
def test_filtered_lrelu_equals_reference(backend, dtype, case, clamp, kind):
    up, down, padding, taps_u, taps_d = FLRELU_CASES[case]
    g = torch.Generator().manual_seed(sum(map(ord, case + kind)))
    kind_u, kind_d = kind.split('-') if '-' in kind else (kind, kind)  # separable-full: StyleGAN3-R's
    fu, fd = random_filter(kind_u, taps_u, g), random_filter(kind_d, taps_d, g)
    x = torch.randn([2, 4, 9, 10], generator=g).to(backend.device, dtype).requires_grad_()
    b = torch.randn([4], generator=g).to(backend.device, dtype).requires_grad_()
    args = dict(up=up, down=down, padding=padding, gain=1.3, slope=0.15, clamp=clamp, flip_filter=(case == 'plain'))
    check_gradients(lambda x, b: filtered_lrelu(x, fu.to(x.device), fd.to(x.device), b, **args),
                    lambda x, b: filtered_lrelu(x, fu, fd, b, impl='ref', **args),
                    [x, b], dtype, what=f'filtered_lrelu {case} {kind}')


def test_filtered_lrelu_without_bias_or_filters(backend):
    x = torch.randn([1, 3, 8, 8], device=backend.device, requires_grad=True)
    check_gradients(lambda x: filtered_lrelu(x, up=2, down=2, padding=1),
                    lambda x: filtered_lrelu(x, up=2, down=2, padding=1, impl='ref'), [x], torch.float32,
                    what='filtered_lrelu identity filters')


# ----------------------------------------------------------------------------------------------
# Dispatch on the GPU.

@needs_gpu
@pytest.mark.parametrize('autocast_dtype', [torch.float16, torch.bfloat16], ids=str)
def test_autocast_runs_the_fused_ops_in_the_autocast_dtype(autocast_dtype):
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


@needs_gpu
def test_float64_on_the_gpu_uses_the_reference_math():
    x = torch.randn([2, 3, 6, 6], device='cuda', dtype=torch.float64)
    f = setup_filter([1, 2, 1], device='cuda')
    torch.testing.assert_close(upfirdn2d(x, f, up=2, padding=1), upfirdn2d(x, f, up=2, padding=1, impl='ref'))


@needs_gpu
def test_generator_layers_run_fused_on_a_second_gpu_stream():
    x = torch.randn([2, 8, 16, 16], device='cuda')
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = bias_act(x, torch.ones(8, device='cuda'), act='lrelu')
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(y, bias_act(x, torch.ones(8, device='cuda'), act='lrelu', impl='ref'),
                               rtol=1e-5, atol=1e-5)
    assert math.isfinite(float(y.sum()))
