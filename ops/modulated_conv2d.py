"""Modulated (and demodulated) convolution: StyleGAN2's style injection (Karras et al. 2020,
sec. 2.2, eqs. 1-3). Same arguments and numbers as `modulated_conv2d` in the releases'
`networks_stylegan2.py`.

Each sample n gets its own weight w'[n,o,i] = w[o,i] * s[n,i] (modulation); with
`demodulate`, each output channel is rescaled by 1 / sqrt(sum_{i,k} w'[n,o,i,k]^2 + 1e-8)
so that unit-variance input gives unit-variance output.
"""

import numpy as np
import torch

from .conv2d_resample import conv2d_resample


def _check_shapes(x, weight, styles):
    if not (isinstance(weight, torch.Tensor) and weight.ndim == 4):
        raise ValueError(f"weight must have shape [O, I, kh, kw], got {getattr(weight, 'shape', type(weight).__name__)}.")
    in_channels = weight.shape[1]
    if not (isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] == in_channels):
        raise ValueError(f"x must have shape [N, {in_channels}, H, W] to match weight, got {getattr(x, 'shape', type(x).__name__)}.")
    if not (isinstance(styles, torch.Tensor) and list(styles.shape) == [x.shape[0], in_channels]):
        raise ValueError(f"styles must have shape [{x.shape[0]}, {in_channels}], got {getattr(styles, 'shape', type(styles).__name__)}.")


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, flip_weight=True, fused_modconv=True):
    """Convolve each sample of `x` with `weight` modulated by its row of `styles`.

    Args:
        x:               [N, I, H, W] input.
        weight:          [O, I, kh, kw] shared weight.
        styles:          [N, I] per-sample modulation coefficients.
        noise:           Tensor added to the output (broadcast to [N, O, H', W']), or None.
        up, down:        Integer resampling factors (see `conv2d_resample`).
        padding:         Padding of the upsampled image.
        resample_filter: Filter from `upfirdn2d.setup_filter`, or None.
        demodulate:      Normalise each output channel's weight (eq. 3)?
        flip_weight:     True = correlation (as torch's conv2d), False = true convolution.
        fused_modconv:   One grouped convolution over the batch with per-sample weights (True),
                         or scale the activations before and after a shared convolution (False).

    Returns [N, O, H', W'] in the dtype of `x`.
    """
    _check_shapes(x, weight, styles)
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape

    # In float16 the modulated weights and their squares can overflow; demodulation makes the
    # result invariant to the scale of `weight` rows and of `styles`, so normalise them first.
    if x.dtype == torch.float16 and demodulate:
        weight_max = torch.linalg.vector_norm(weight, ord=float('inf'), dim=[1, 2, 3], keepdim=True)  # [O111]
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight_max)
        styles = styles / torch.linalg.vector_norm(styles, ord=float('inf'), dim=1, keepdim=True)  # [NI]

    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)  # [N, O, I, kh, kw]

    if not fused_modconv:
        # Modulating the input channels and demodulating the output channels around one shared
        # convolution is the same linear map as convolving with the per-sample weight.
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight)
        if demodulate and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        if noise is not None:
            return x + noise.to(x.dtype)
        return x

    # Fused: fold the batch into channel groups, [N, I, H, W] -> [1, N*I, H, W], and give
    # each group its own weight, [N, O, I, kh, kw] -> [N*O, I, kh, kw].
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                        groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])  # [N, O, H', W']
    if noise is not None:
        # In place, as the releases: the float32 noise is added in float32 and the sum rounded once
        # to x's dtype, so a float16 block stays float16 (`x + noise` would promote it to float32).
        x = x.add_(noise)
    return x
