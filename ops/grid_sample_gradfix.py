"""`grid_sample` (bilinear, zero padding, align_corners=False) with a backward that is itself
differentiable with respect to the image, as `torch_utils.ops.grid_sample_gradfix` of the
releases provides.

The releases needed this because torch's grid_sample backward kernel had no derivative in
the torch versions they targeted, so a gradient penalty (R1) taken through the augmentation
pipeline's geometric transforms could not be backpropagated; this keeps that guarantee on
any torch version. The gradient with respect to the image is linear in the incoming
gradient, and its derivative with respect to that gradient is grid_sample itself.
Second-order derivatives that involve the grid are not provided (the augmentation grid is a
constant) and raise an error.
"""

import torch
import torch.nn.functional as F

# Kept for code written against the release, which sets `grid_sample_gradfix.enabled = True`;
# the twice-differentiable path is always used here.
enabled = True

_ZEROS_PADDING = 0      # aten's padding_mode codes: 0 = zeros
_BILINEAR = 0           # aten's interpolation_mode codes: 0 = bilinear


def grid_sample(input, grid):  # noqa: A002 (the release's argument name)
    """Sample `input` [N, C, H, W] at `grid` [N, Ho, Wo, 2] (x, y in [-1, 1]) -> [N, C, Ho, Wo]."""
    if not (isinstance(input, torch.Tensor) and input.ndim == 4):
        raise ValueError(f"grid_sample expects input of shape [N, C, H, W], got {getattr(input, 'shape', type(input).__name__)}.")
    if not (isinstance(grid, torch.Tensor) and grid.ndim == 4 and grid.shape[-1] == 2 and grid.shape[0] == input.shape[0]):
        raise ValueError(f"grid_sample expects grid of shape [{input.shape[0]}, Ho, Wo, 2], got {getattr(grid, 'shape', type(grid).__name__)}.")
    if torch.is_autocast_enabled(input.device.type):
        # Autocast runs grid_sampler in float32. Cast here, outside the Function, so that the
        # tensors saved for backward have the dtypes the forward used (a bfloat16 image under
        # autocast would otherwise meet a float32 gradient in grid_sampler_2d_backward).
        input, grid = input.float(), grid.float()
    return _GridSample2dForward.apply(input, grid)


class _GridSample2dForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, grid):
        ctx.save_for_backward(input, grid)
        return F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)

    @staticmethod
    def backward(ctx, grad_output):
        input, grid = ctx.saved_tensors
        grad_input, grad_grid = _GridSample2dBackward.apply(grad_output, input, grid)
        return grad_input, grad_grid


class _GridSample2dBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_output, input, grid):
        # Unused outputs arrive as None in backward instead of zero tensors.
        ctx.set_materialize_grads(False)
        output_mask = [ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        grad_input, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
            grad_output, input, grid, _BILINEAR, _ZEROS_PADDING, False, output_mask)
        ctx.save_for_backward(grid)
        return grad_input, grad_grid

    @staticmethod
    def backward(ctx, grad2_grad_input, grad2_grad_grid):
        grid, = ctx.saved_tensors
        if grad2_grad_grid is not None or ctx.needs_input_grad[2]:
            raise NotImplementedError(
                "grid_sample_gradfix supports second-order gradients with respect to the input image only, "
                "not through the sampling grid; detach the grid or use torch.nn.functional.grid_sample.")
        grad2_grad_output = None
        if ctx.needs_input_grad[0] and grad2_grad_input is not None:
            # d(grad_input)/d(grad_output) applied to grad2_grad_input is grid_sample itself.
            grad2_grad_output = _GridSample2dForward.apply(grad2_grad_input, grid)
        # grad_input does not depend on input (the op is linear in it), so no term for input.
        return grad2_grad_output, None, None
