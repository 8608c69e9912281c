"""Specification of ops.upfirdn2d: zero insertion, padding, true 2-D convolution with the
FIR filter, decimation; and the centred wrappers filter2d / upsample2d / downsample2d."""
import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

ASYMMETRIC_TAPS = [1.0, 2.0, 4.0, 3.0]  # asymmetric, so a flip or an axis swap shows


def make_filter(kind):
    """Filters whose height and width differ (for 'full'), so swapped axes are caught."""
    if kind == 'separable':
        return torch.tensor(ASYMMETRIC_TAPS) / 10
    if kind == 'full':
        return torch.rand([3, 4], generator=torch.Generator().manual_seed(1)) + 0.1
    assert kind == 'none'
    return None


def direct_upfirdn2d(x, f, up, down, padding, flip_filter, gain):
    """upfirdn2d from its definition: explicit zero insertion, padding/cropping, valid 2-D
    convolution as an explicit sum over unfolded patches, then striding."""
    upx, upy = up
    downx, downy = down
    x0, x1, y0, y1 = padding
    n, c, h, w = x.shape
    f = torch.ones([1, 1], dtype=x.dtype) if f is None else f.to(x.dtype)
    f2d = (torch.outer(f, f) if f.ndim == 1 else f) * gain  # separable: sqrt(gain) on each pass

    upsampled = torch.zeros([n, c, h * upy, w * upx], dtype=x.dtype)
    upsampled[:, :, ::upy, ::upx] = x
    big = torch.zeros([n, c, h * upy + 2 * 10, w * upx + 2 * 10], dtype=x.dtype)
    big[:, :, 10:10 + h * upy, 10:10 + w * upx] = upsampled
    padded = big[:, :, 10 - y0: big.shape[2] - 10 + y1, 10 - x0: big.shape[3] - 10 + x1]

    fh, fw = f2d.shape
    out_h, out_w = padded.shape[2] - fh + 1, padded.shape[3] - fw + 1
    patches = F.unfold(padded.reshape(n * c, 1, *padded.shape[2:]), (fh, fw))  # [NC, fh*fw, L]
    # Convolution, y[i] = sum_k f[k] x[i + K - 1 - k], is correlation with the flipped taps.
    taps = f2d if flip_filter else f2d.flip([0, 1])
    y = (patches * taps.reshape(1, -1, 1)).sum(dim=1).reshape(n, c, out_h, out_w)
    return y[:, :, ::downy, ::downx]


def as_pair(v):
    return (v, v) if isinstance(v, int) else v


def as_quad(p):
    if isinstance(p, int):
        return (p, p, p, p)
    return (p[0], p[0], p[1], p[1]) if len(p) == 2 else tuple(p)


CASES = {  # id: (up, down, padding)
    'identity':         (1, 1, 0),
    'pad-1':            (1, 1, 1),
    'crop':             (1, 1, (-1, 2, 1, -2)),
    'up2':              (2, 1, (2, 1)),
    'up4':              (4, 1, (3, 2, 1, 0)),
    'down2':            (1, 2, 1),
    'down4':            (1, 4, (2, 3, 0, 1)),
    'up2-down2':        (2, 2, (2, 1, 2, 1)),
    'up4-down2-crop':   (4, 2, (-2, 1, 1, -1)),
    'up2-down4':        (2, 4, 3),
    'anisotropic':      ((2, 1), (1, 2), (1, 2, 2, 1)),
}


@pytest.mark.parametrize('filter_kind', ['separable', 'full', 'none'])
@pytest.mark.parametrize('case', sorted(CASES))
@pytest.mark.parametrize('flip_filter', [False, True], ids=['conv', 'corr'])
def test_upfirdn2d_matches_direct_convolution(case, filter_kind, flip_filter):
    up, down, padding = CASES[case]
    f = make_filter(filter_kind)
    x = torch.randn([2, 3, 5, 6], dtype=torch.float64)
    y = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=4.0)
    expected = direct_upfirdn2d(x, f, as_pair(up), as_pair(down), as_quad(padding), flip_filter, gain=4.0)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize('up, down', [(1, 1), (2, 1), (3, 2), (1, 4)])
def test_separable_upfirdn2d_matches_scipy_upfirdn_on_each_axis(up, down):
    taps = np.array(ASYMMETRIC_TAPS)
    x = np.random.default_rng(0).standard_normal([1, 2, 5, 7])
    expected = scipy.signal.upfirdn(taps, x, up=up, down=down, axis=3)
    expected = scipy.signal.upfirdn(taps, expected, up=up, down=down, axis=2)
    # scipy computes the full convolution of the zero-inserted signal without trailing zeros.
    k = len(taps)
    padding = [k - 1, k - up, k - 1, k - up]
    y = upfirdn2d(torch.from_numpy(x), torch.tensor(taps, dtype=torch.float32), up=up, down=down, padding=padding)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6, atol=1e-6)


GRAD_CASES = ['identity', 'crop', 'up2', 'up4', 'down2', 'down4', 'up2-down2', 'up4-down2-crop']


@pytest.mark.parametrize('filter_kind', ['separable', 'full'])
@pytest.mark.parametrize('case', GRAD_CASES)
def test_upfirdn2d_first_and_second_order_gradients(case, filter_kind):
    up, down, padding = CASES[case]
    f = make_filter(filter_kind)
    x = torch.randn([1, 2, 5, 6], dtype=torch.float64, requires_grad=True)

    def fn(x):
        return upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=True, gain=2.0)

    assert torch.autograd.gradcheck(fn, [x])
    assert torch.autograd.gradgradcheck(fn, [x])


# Interpolation filters for each factor: the factor's polyphase components have equal sums
# (convolving any filter with a box of `factor` taps ensures it), so a constant stays constant.
INTERPOLATORS = {
    '2-cubic': ([1, 3, 3, 1], 2),
    '2-linear': ([1, 2, 1], 2),
    '2-separable-12': (np.convolve(np.ones(2), np.ones(11)), 2),
    '4-linear': ([1, 2, 3, 4, 3, 2, 1], 4),
    '4-separable-9': (np.convolve(np.ones(4), np.ones(6)), 4),
}


@pytest.mark.parametrize('name', sorted(INTERPOLATORS))
def test_upsample2d_and_downsample2d_keep_image_size_ratio_and_constant_level(name):
    taps, factor = INTERPOLATORS[name]
    f = setup_filter(taps)
    x = torch.full([1, 2, 24, 24], 3.0, dtype=torch.float64)
    up = upsample2d(x, f, up=factor)
    down = downsample2d(x, f, down=factor)
    assert up.shape == (1, 2, 24 * factor, 24 * factor)
    assert down.shape == (1, 2, 24 // factor, 24 // factor)
    # Away from the zero-padded border, a constant image stays constant (DC gain 1).
    up_inside, down_inside = up[:, :, 8:-8, 8:-8], down[:, :, 3:-3, 3:-3]
    torch.testing.assert_close(up_inside, torch.full_like(up_inside, 3.0))
    torch.testing.assert_close(down_inside, torch.full_like(down_inside, 3.0))


@pytest.mark.parametrize('taps', [[1, 3, 3, 1], [1, 2, 1], [[1, 2], [3, 4], [5, 6]]], ids=['even', 'odd', 'full-3x2'])
def test_filter2d_keeps_size_and_user_padding_adds_on_top(taps):
    f = setup_filter(taps)
    x = torch.randn([1, 1, 6, 7])
    assert filter2d(x, f).shape == x.shape
    assert filter2d(x, f, padding=(1, 2, -1, 0)).shape == (1, 1, 5, 10)


def test_filter2d_with_identity_filter_returns_input():
    x = torch.randn([2, 3, 4, 5])
    torch.testing.assert_close(filter2d(x, None), x)
    torch.testing.assert_close(filter2d(x, setup_filter(None)), x)


def test_upsample2d_by_one_dimensional_filter_matches_full_outer_product_filter():
    x = torch.randn([1, 2, 5, 5], dtype=torch.float64)
    separable = setup_filter([1, 3, 3, 1], separable=True)
    full = setup_filter([1, 3, 3, 1], separable=False)
    torch.testing.assert_close(upsample2d(x, separable), upsample2d(x, full))


def test_setup_filter_normalizes_flips_and_spreads_gain():
    f = setup_filter([1, 2, 3, 4], flip_filter=True, gain=4)
    assert f.shape == (4, 4) and f.dtype == torch.float32
    assert float(f.sum()) == pytest.approx(4.0)
    torch.testing.assert_close(f, torch.outer(torch.tensor([4., 3, 2, 1]), torch.tensor([4., 3, 2, 1])) / 100 * 4)
    long = setup_filter(np.ones(8), gain=4)
    assert long.shape == (8,)  # 8+ taps stay separable
    assert float(long.sum()) == pytest.approx(2.0)  # sqrt(gain) per pass
    assert setup_filter(None).tolist() == [[1.0]]
    assert setup_filter([2.0], normalize=False).tolist() == [[4.0]]


def test_setup_filter_does_not_modify_the_callers_tensor():
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    setup_filter(taps, separable=True)
    assert taps.tolist() == [1.0, 3.0, 3.0, 1.0]


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_upfirdn2d_keeps_dtype_and_matches_float64(dtype):
    x = torch.randn([1, 2, 6, 6], dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    expected = upfirdn2d(x, f, up=2, down=2, padding=2)
    y = upfirdn2d(x.to(dtype), f, up=2, down=2, padding=2)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), expected, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize('kwargs, message', [
    (dict(padding=(1, 2, 3)), 'padding must be'),
    (dict(padding=1.5), 'padding must be'),
    (dict(up=0), 'up must be'),
    (dict(down=(2, 2, 2)), 'down must be'),
    (dict(impl='triton'), 'impl must be'),
    (dict(padding=-3), 'smaller than the filter'),
], ids=['padding-length-3', 'padding-float', 'up-zero', 'down-triple', 'bad-impl', 'cropped-too-much'])
def test_upfirdn2d_rejects_bad_arguments_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        upfirdn2d(torch.zeros([1, 1, 4, 4]), setup_filter([1, 3, 3, 1]), **kwargs)


def test_upfirdn2d_rejects_non_image_input():
    with pytest.raises(ValueError, match=r'\[N, C, H, W\]'):
        upfirdn2d(torch.zeros([4, 4]), None)
