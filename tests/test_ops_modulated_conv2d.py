"""Specification of ops.modulated_conv2d: per-sample convolution with the style-modulated
(and demodulated) weight, StyleGAN2 eqs. 1-3; the fused and non-fused paths agree."""
import pytest
import torch

from ops.conv2d_resample import conv2d_resample
from ops.modulated_conv2d import modulated_conv2d
from ops.upfirdn2d import setup_filter


def per_sample_definition(x, weight, styles, noise, up, down, padding, f, demodulate, flip_weight):
    """One conv2d_resample per sample with w'[o,i] = w[o,i] * s[i], demodulated per output channel."""
    outputs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        outputs.append(conv2d_resample(x[n:n + 1], w, f, up=up, down=down, padding=padding, flip_weight=flip_weight))
    y = torch.cat(outputs)
    return y if noise is None else y + noise


def make_inputs(dtype=torch.float64, seed=0, kernel=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn([2, 3, 5, 5], generator=g, dtype=dtype)
    weight = torch.randn([4, 3, kernel, kernel], generator=g, dtype=dtype)
    styles = torch.randn([2, 3], generator=g, dtype=dtype) + 1
    return x, weight, styles


RESAMPLING = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1)]  # (up, down, padding)


@pytest.mark.parametrize('up, down, padding', RESAMPLING, ids=['same', 'up2', 'down2', 'up2-down2'])
@pytest.mark.parametrize('demodulate', [True, False], ids=['demod', 'nodemod'])
@pytest.mark.parametrize('fused_modconv', [True, False], ids=['fused', 'nonfused'])
@pytest.mark.parametrize('with_noise', [False, True], ids=['nonoise', 'noise'])
def test_modulated_conv2d_matches_per_sample_convolution(up, down, padding, demodulate, fused_modconv, with_noise):
    x, weight, styles = make_inputs()
    f = setup_filter([1, 3, 3, 1])
    flip_weight = (up == 1)  # as StyleGAN2's synthesis layers call it
    size = 5 * up // down
    noise = torch.randn([2, 1, size, size], dtype=torch.float64) if with_noise else None
    y = modulated_conv2d(x, weight, styles, noise=noise, up=up, down=down, padding=padding, resample_filter=f,
                         demodulate=demodulate, flip_weight=flip_weight, fused_modconv=fused_modconv)
    expected = per_sample_definition(x, weight, styles, noise, up, down, padding, f, demodulate, flip_weight)
    assert y.shape == expected.shape == (2, 4, size, size)
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize('kernel', [1, 3])
@pytest.mark.parametrize('demodulate', [True, False], ids=['demod', 'nodemod'])
def test_fused_and_non_fused_modconv_agree_in_float32(kernel, demodulate):
    x, weight, styles = make_inputs(torch.float32, kernel=kernel)
    noise = torch.randn([2, 1, 5, 5])
    args = dict(noise=noise, padding=kernel // 2, demodulate=demodulate)
    fused = modulated_conv2d(x, weight, styles, fused_modconv=True, **args)
    separate = modulated_conv2d(x, weight, styles, fused_modconv=False, **args)
    torch.testing.assert_close(fused, separate, rtol=1e-5, atol=1e-5)


def test_demodulation_gives_unit_output_variance_for_unit_input():
    g = torch.Generator().manual_seed(0)
    x = torch.randn([4, 64, 16, 16], generator=g)
    weight = torch.randn([32, 64, 3, 3], generator=g)
    styles = torch.rand([4, 64], generator=g) * 5
    y = modulated_conv2d(x, weight, styles, padding=0)
    assert 0.9 < float(y.var()) < 1.1


@pytest.mark.parametrize('fused_modconv', [True, False], ids=['fused', 'nonfused'])
def test_float16_input_survives_weights_and_styles_that_overflow_float16(fused_modconv):
    # Non-fused, the float16 activations x * s convolved with w reach ~1e5 > 65504 (float16's
    # maximum) unless weight and styles are pre-normalised; demodulation cancels their scale.
    x, weight, styles = make_inputs(torch.float32)
    weight, styles = weight * 100, styles * 100
    expected = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=fused_modconv)
    y = modulated_conv2d(x.half(), weight, styles, padding=1, fused_modconv=fused_modconv)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), expected, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize('up, down, padding', RESAMPLING, ids=['same', 'up2', 'down2', 'up2-down2'])
@pytest.mark.parametrize('fused_modconv', [True, False], ids=['fused', 'nonfused'])
def test_modulated_conv2d_first_and_second_order_gradients(up, down, padding, fused_modconv):
    x, weight, styles = make_inputs(seed=1)
    x, weight, styles = x[:, :2, :4, :4], weight[:2, :2], styles[:, :2]
    noise = torch.randn([2, 1, 4 * up // down, 4 * up // down], dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    inputs = [t.clone().requires_grad_(True) for t in (x, weight, styles)]

    def fn(x, weight, styles):
        return modulated_conv2d(x, weight, styles, noise=noise, up=up, down=down, padding=padding,
                                resample_filter=f, flip_weight=(up == 1), fused_modconv=fused_modconv)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float32, torch.float64])
def test_modulated_conv2d_keeps_dtype_and_matches_float64(dtype):
    x, weight, styles = make_inputs()
    expected = modulated_conv2d(x, weight, styles, padding=1)
    y = modulated_conv2d(x.to(dtype), weight.to(dtype), styles.to(dtype), padding=1)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), expected, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize('shapes, message', [
    (([2, 3, 5, 5], [4, 3, 3], [2, 3]), 'weight must have shape'),
    (([2, 2, 5, 5], [4, 3, 3, 3], [2, 3]), r'x must have shape \[N, 3, H, W\]'),
    (([2, 3, 5, 5], [4, 3, 3, 3], [1, 3]), r'styles must have shape \[2, 3\]'),
], ids=['weight-3d', 'x-channels', 'styles-batch'])
def test_modulated_conv2d_rejects_mismatched_shapes(shapes, message):
    x, weight, styles = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        modulated_conv2d(x, weight, styles)
