"""Specification of ops.conv2d_resample: its fast paths (strided, transposed and 1x1
convolutions) compute upsample -> pad -> convolve -> filter -> downsample done step by step."""
import pytest
import torch
import torch.nn.functional as F

from ops.conv2d_resample import conv2d_resample
from ops.upfirdn2d import setup_filter, upfirdn2d


def as_quad(p):
    if isinstance(p, int):
        return [p, p, p, p]
    return [p[0], p[0], p[1], p[1]] if len(p) == 2 else list(p)


def step_by_step(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """The definition, one operation at a time, all at the upsampled resolution."""
    fh, fw = (1, 1) if f is None else (f.shape[0], f.shape[-1])
    x0, x1, y0, y1 = as_quad(padding)
    # Extra padding that centres the image under the up- and downsampling filters.
    if up > 1:
        x0, x1, y0, y1 = x0 + (fw + up - 1) // 2, x1 + (fw - up) // 2, y0 + (fh + up - 1) // 2, y1 + (fh - up) // 2
    if down > 1:
        x0, x1 = x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2
        y0, y1 = y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2
    # 1. zero insertion + padding + interpolation filter (gain up^2 restores the mean)
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[x0, x1, y0, y1], gain=up ** 2, flip_filter=flip_filter)
    # 2. the convolution itself (conv2d is correlation; flip_weight=False means true convolution)
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    # 3. anti-aliasing filter + keep every down-th pixel
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


def asymmetric_filter(kind):
    g = torch.Generator().manual_seed(3)
    if kind == 'full':
        return torch.rand([4, 4], generator=g) + 0.1  # non-separable and not symmetric
    return torch.rand([8], generator=g) + 0.1  # 8 taps: kept separable by setup_filter


RESAMPLING = [(1, 1), (2, 1), (4, 1), (1, 2), (1, 4), (2, 2)]
PADDINGS = [0, 1, (2, 1), (1, 0, 2, 1), (-1, 0, 0, -1)]


@pytest.mark.parametrize('up, down', RESAMPLING, ids=[f'up{u}-down{d}' for u, d in RESAMPLING])
@pytest.mark.parametrize('kernel', [1, 3])
@pytest.mark.parametrize('groups', [1, 2])
@pytest.mark.parametrize('padding', PADDINGS, ids=['pad0', 'pad1', 'pad2-1', 'pad-asym', 'pad-neg'])
@pytest.mark.parametrize('flip_weight', [True, False], ids=['corr', 'conv'])
def test_conv2d_resample_matches_step_by_step_definition(up, down, kernel, groups, padding, flip_weight):
    g = torch.Generator().manual_seed(0)
    x = torch.randn([2, 4, 8, 9], generator=g, dtype=torch.float64)
    w = torch.randn([6, 4 // groups, kernel, kernel + 1], generator=g, dtype=torch.float64)
    if kernel == 1:
        w = w[:, :, :, :1]  # 1x1: the pointwise fast paths
    f = asymmetric_filter('full')
    y = conv2d_resample(x, w, f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight)
    expected = step_by_step(x, w, f, up, down, padding, groups, flip_weight, flip_filter=False)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize('up, down', RESAMPLING, ids=[f'up{u}-down{d}' for u, d in RESAMPLING])
@pytest.mark.parametrize('filter_kind', ['full', 'separable'])
def test_conv2d_resample_flip_filter_and_separable_filters_match_definition(up, down, filter_kind):
    x = torch.randn([1, 2, 6, 6], dtype=torch.float64)
    w = torch.randn([3, 2, 3, 2], dtype=torch.float64)
    f = asymmetric_filter(filter_kind)
    y = conv2d_resample(x, w, f, up=up, down=down, padding=1, flip_filter=True)
    expected = step_by_step(x, w, f, up, down, 1, 1, True, flip_filter=True)
    torch.testing.assert_close(y, expected)


def test_stylegan2_layer_shapes_double_and_halve_resolution():
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn([2, 3, 8, 8])
    w = torch.randn([5, 3, 3, 3])
    assert conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False).shape == (2, 5, 16, 16)
    assert conv2d_resample(x, w, f, down=2, padding=1).shape == (2, 5, 4, 4)
    assert conv2d_resample(x, w[:, :, :1, :1], f, down=2).shape == (2, 5, 4, 4)
    assert conv2d_resample(x, w, padding=1).shape == (2, 5, 8, 8)


@pytest.mark.parametrize('up, down, kernel', [(1, 1, 3), (2, 1, 3), (1, 2, 3), (2, 2, 2), (1, 2, 1), (2, 1, 1)])
def test_conv2d_resample_first_and_second_order_gradients(up, down, kernel):
    x = torch.randn([1, 2, 4, 4], dtype=torch.float64, requires_grad=True)
    w = torch.randn([2, 2, kernel, kernel], dtype=torch.float64, requires_grad=True)
    f = setup_filter([1, 3, 3, 1])

    def fn(x, w):
        return conv2d_resample(x, w, f, up=up, down=down, padding=kernel // 2, flip_weight=(up == 1))

    assert torch.autograd.gradcheck(fn, [x, w])
    assert torch.autograd.gradgradcheck(fn, [x, w])


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize('up, down', [(1, 1), (2, 1), (1, 2)])
def test_conv2d_resample_keeps_dtype_and_matches_float64(dtype, up, down):
    x = torch.randn([1, 3, 6, 6], dtype=torch.float64)
    w = torch.randn([2, 3, 3, 3], dtype=torch.float64) / 3
    f = setup_filter([1, 3, 3, 1])
    expected = conv2d_resample(x, w, f, up=up, down=down, padding=1)
    y = conv2d_resample(x.to(dtype), w.to(dtype), f, up=up, down=down, padding=1)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), expected, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize('kwargs, message', [
    (dict(up=0), 'up must be'),
    (dict(down=1.5), 'down must be'),
    (dict(groups=0), 'groups must be'),
    (dict(padding=(1, 1, 1)), 'padding must be'),
    (dict(w=torch.zeros([2, 3, 3, 3], dtype=torch.float64)), 'dtype'),
    (dict(w=torch.zeros([2, 3, 3])), 'w of shape'),
], ids=['up-zero', 'down-float', 'groups-zero', 'padding-length-3', 'weight-dtype', 'weight-3d'])
def test_conv2d_resample_rejects_bad_arguments_with_a_clear_message(kwargs, message):
    args = dict(x=torch.zeros([1, 3, 4, 4]), w=torch.zeros([2, 3, 3, 3]), f=setup_filter([1, 3, 3, 1]))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        conv2d_resample(**args)
