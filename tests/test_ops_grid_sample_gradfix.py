"""Specification of ops.grid_sample_gradfix: torch's bilinear/zeros/align_corners=False
grid_sample, with a backward that is differentiable again with respect to the image (what an
R1 penalty through the augmentation pipeline needs)."""
import pytest
import torch
import torch.nn.functional as F

from ops.grid_sample_gradfix import grid_sample


def make_inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn([2, 3, 5, 6], generator=g, dtype=dtype)
    grid = torch.rand([2, 4, 3, 2], generator=g, dtype=dtype) * 2.4 - 1.2  # some samples fall outside
    return image, grid


def reference(image, grid):
    return F.grid_sample(image, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


def test_grid_sample_forward_equals_torch_bilinear_zeros_align_corners_false():
    image, grid = make_inputs(torch.float32)
    assert torch.equal(grid_sample(image, grid), reference(image, grid))


def test_grid_sample_samples_pixel_centres_exactly():
    # With align_corners=False, pixel j of W sits at x = (2j + 1) / W - 1.
    image = torch.arange(12, dtype=torch.float64).reshape(1, 1, 3, 4)
    xs = (2 * torch.arange(4, dtype=torch.float64) + 1) / 4 - 1
    ys = (2 * torch.arange(3, dtype=torch.float64) + 1) / 3 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing='xy'), dim=-1).unsqueeze(0)  # [1, 3, 4, 2]
    torch.testing.assert_close(grid_sample(image, grid), image)


def test_grid_sample_first_order_gradients_equal_torch():
    image, grid = make_inputs()
    image.requires_grad_(True)
    grid.requires_grad_(True)
    weights = torch.randn([2, 3, 4, 3], dtype=torch.float64)
    ours = torch.autograd.grad((grid_sample(image, grid) * weights).sum(), [image, grid])
    theirs = torch.autograd.grad((reference(image, grid) * weights).sum(), [image, grid])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_grid_sample_gradients_match_finite_differences():
    image, grid = make_inputs()
    image.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda image: grid_sample(image, grid), [image])
    assert torch.autograd.gradgradcheck(lambda image: grid_sample(image, grid), [image])


def test_r1_style_penalty_through_grid_sample_is_differentiable():
    image, grid = make_inputs()
    image.requires_grad_(True)
    score = (grid_sample(image, grid) ** 3).sum()  # a nonlinear "discriminator" after the warp
    grad, = torch.autograd.grad(score, image, create_graph=True)
    penalty_grad, = torch.autograd.grad(grad.square().sum(), image)
    # Same penalty gradient through torch's own op (differentiable twice in recent torch).
    score = (reference(image, grid) ** 3).sum()
    grad, = torch.autograd.grad(score, image, create_graph=True)
    expected, = torch.autograd.grad(grad.square().sum(), image)
    torch.testing.assert_close(penalty_grad, expected)


def test_bfloat16_image_under_autocast_trains_through_grid_sample():
    """The generator's bf16 image, warped by ADA under autocast, backpropagates (first and second
    order) and gives the float32 gradients, as grid_sampler runs in float32 under autocast."""
    image, grid = make_inputs(torch.float32)
    image = image.bfloat16().requires_grad_(True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        warped = grid_sample(image, grid)
    assert warped.dtype == torch.float32
    grad, = torch.autograd.grad((warped ** 3).sum(), image, create_graph=True)
    penalty_grad, = torch.autograd.grad(grad.float().square().sum(), image)
    assert grad.dtype == penalty_grad.dtype == torch.bfloat16
    exact = image.detach().float().requires_grad_(True)
    exact_grad, = torch.autograd.grad((reference(exact, grid) ** 3).sum(), exact, create_graph=True)
    exact_penalty, = torch.autograd.grad(exact_grad.square().sum(), exact)
    torch.testing.assert_close(grad.float(), exact_grad, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(penalty_grad.float(), exact_penalty, rtol=2e-2, atol=2e-2)


def test_second_order_gradients_through_the_grid_raise_a_clear_error():
    image, grid = make_inputs()
    image.requires_grad_(True)
    grid.requires_grad_(True)
    grad, = torch.autograd.grad(grid_sample(image, grid).square().sum(), image, create_graph=True)
    with pytest.raises(NotImplementedError, match='input image only'):
        torch.autograd.grad(grad.sum(), grid)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_grid_sample_keeps_dtype(dtype):
    image, grid = make_inputs()
    y = grid_sample(image.to(dtype), grid.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), reference(image, grid), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize('image_shape, grid_shape, message', [
    ([3, 5, 6], [2, 4, 3, 2], 'input of shape'),
    ([2, 3, 5, 6], [2, 4, 3, 3], 'grid of shape'),
    ([2, 3, 5, 6], [1, 4, 3, 2], 'grid of shape'),
], ids=['image-3d', 'grid-last-dim-3', 'grid-batch'])
def test_grid_sample_rejects_bad_shapes(image_shape, grid_shape, message):
    with pytest.raises(ValueError, match=message):
        grid_sample(torch.zeros(image_shape), torch.zeros(grid_shape))
