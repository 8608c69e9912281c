"""Specification of ops.filtered_lrelu: bias, upsample + filter fu (gain up^2), leaky ReLU
times gain, clamp, filter fd + downsample; the StyleGAN3 release's order, step for step."""
import numpy as np
import pytest
import torch

from ops.filtered_lrelu import filtered_lrelu
from ops.upfirdn2d import setup_filter, upfirdn2d


def composition(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    """The definition, with the leaky ReLU and clamp written out."""
    x = x + b.reshape(1, -1, 1, 1)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2, flip_filter=flip_filter)
    x = torch.where(x > 0, x, slope * x) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter)


def filters(kind, up, down):
    """Low-pass filters as StyleGAN3 uses them: separable when long, full (radial) otherwise."""
    g = torch.Generator().manual_seed(5)
    if kind == 'separable':
        return setup_filter(torch.rand([4 * up], generator=g) + 0.1, separable=True), \
            setup_filter(torch.rand([4 * down], generator=g) + 0.1, separable=True)
    if kind == 'full':
        return setup_filter(torch.rand([3, 4], generator=g) + 0.1), setup_filter(torch.rand([4, 3], generator=g) + 0.1)
    return None, None


def clamp_between_activations(pre_clamp):
    """A clamp level in the widest gap between activation magnitudes (no point on the kink,
    some points clamped)."""
    levels = pre_clamp.abs().flatten().sort().values
    middle = slice(len(levels) // 4, 3 * len(levels) // 4)
    gaps = levels[1:] - levels[:-1]
    i = middle.start + int(gaps[middle].argmax())
    return float((levels[i] + levels[i + 1]) / 2)


CASES = {  # id: (up, down, padding); filters have 4 taps per unit of up/down factor
    'plain': (1, 1, 3),
    'up2-down2': (2, 2, 8),
    'up4-down2': (4, 2, (13, 12, 12, 13)),
    'up1-down2-crop': (1, 2, (-1, 11, 10, 0)),
    'up2-down1': (2, 1, (6, 5)),
    'up2-down4': (2, 4, 10),
}


@pytest.mark.parametrize('case', sorted(CASES))
@pytest.mark.parametrize('filter_kind', ['separable', 'full', 'none'])
@pytest.mark.parametrize('clamped', [False, True], ids=['noclamp', 'clamp'])
@pytest.mark.parametrize('flip_filter', [False, True], ids=['conv', 'corr'])
def test_filtered_lrelu_matches_composition(case, filter_kind, clamped, flip_filter):
    up, down, padding = CASES[case]
    fu, fd = filters(filter_kind, up, down)
    g = torch.Generator().manual_seed(0)
    x = torch.randn([2, 3, 6, 7], generator=g, dtype=torch.float64)
    b = torch.randn([3], generator=g, dtype=torch.float64)
    clamp = 0.5 if clamped else None
    args = dict(up=up, down=down, padding=padding, gain=1.3, slope=0.1, clamp=clamp, flip_filter=flip_filter)
    y = filtered_lrelu(x, fu, fd, b, **args)
    expected = composition(x, fu, fd, b, **args)
    assert y.shape == expected.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize('case', sorted(CASES))
def test_filtered_lrelu_output_size_formula(case):
    up, down, padding = CASES[case]
    fu, fd = filters('full', up, down)
    x = torch.randn([1, 2, 6, 7])
    if isinstance(padding, int):
        padding = (padding, padding)
    px0, px1, py0, py1 = padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])
    out_w = (7 * up + px0 + px1 - (fu.shape[-1] - 1) - (fd.shape[-1] - 1) + down - 1) // down
    out_h = (6 * up + py0 + py1 - (fu.shape[0] - 1) - (fd.shape[0] - 1) + down - 1) // down
    assert filtered_lrelu(x, fu, fd, up=up, down=down, padding=padding).shape == (1, 2, out_h, out_w)


def test_filtered_lrelu_defaults_are_release_defaults():
    x = torch.randn([1, 2, 5, 5], dtype=torch.float64)
    expected = torch.where(x > 0, x, 0.2 * x) * np.sqrt(2)
    torch.testing.assert_close(filtered_lrelu(x), expected)


@pytest.mark.parametrize('case', sorted(CASES))
@pytest.mark.parametrize('filter_kind', ['separable', 'full'])
@pytest.mark.parametrize('clamped', [False, True], ids=['noclamp', 'clamp'])
def test_filtered_lrelu_first_and_second_order_gradients(case, filter_kind, clamped):
    up, down, padding = CASES[case]
    fu, fd = filters(filter_kind, up, down)
    g = torch.Generator().manual_seed(1)
    x = torch.randn([1, 2, 4, 5], generator=g, dtype=torch.float64)
    b = torch.randn([2], generator=g, dtype=torch.float64)
    clamp = None
    if clamped:  # the activations before the clamp, to place the clamp between them
        clamp = clamp_between_activations(filtered_lrelu(x, fu, None, b, up=up, padding=padding))
    x.requires_grad_(True)
    b.requires_grad_(True)

    def fn(x, b):
        return filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, clamp=clamp)

    assert torch.autograd.gradcheck(fn, [x, b])
    assert torch.autograd.gradgradcheck(fn, [x, b])


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_filtered_lrelu_keeps_dtype_and_matches_float64(dtype):
    fu, fd = filters('separable', 2, 2)
    x = torch.randn([1, 2, 6, 6], dtype=torch.float64)
    b = torch.randn([2], dtype=torch.float64)
    expected = filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=7, clamp=1.0)
    y = filtered_lrelu(x.to(dtype), fu, fd, b.to(dtype), up=2, down=2, padding=7, clamp=1.0)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), expected, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize('kwargs, message', [
    (dict(up=0), 'up must be'),
    (dict(down=2.0), 'down must be'),
    (dict(padding=(1, 2, 3)), 'padding must be'),
    (dict(gain=0), 'gain must be'),
    (dict(slope=-0.1), 'slope must be'),
    (dict(clamp=-1), 'clamp must be'),
    (dict(b=torch.zeros(3)), 'bias must be'),
    (dict(b=torch.zeros(2, dtype=torch.float64)), 'bias must be'),
    (dict(impl='cpu'), 'impl must be'),
], ids=['up-zero', 'down-float', 'padding-length-3', 'gain-zero', 'slope-negative', 'clamp-negative',
        'bias-length', 'bias-dtype', 'bad-impl'])
def test_filtered_lrelu_rejects_bad_arguments_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        filtered_lrelu(torch.zeros([1, 2, 4, 4]), **kwargs)
