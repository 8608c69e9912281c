"""Equivariance metrics EQ-T, EQ-T_frac and EQ-R of StyleGAN3 ("Alias-Free Generative Adversarial
Networks", Karras et al. 2021, Sec. 3 and Appendix E).

For a latent w, the generator is asked for its image under a transform of the input grid (through
`G.synthesis.input.transform`, the inverse of the image transform), and the result is compared with
the untransformed image transformed after the fact. The score is a PSNR in dB over all valid pixels
of all samples, for images in [-1, 1] (peak-to-peak 2):

    PSNR = 20 log10(2) - 10 log10( sum (ref - img)^2 mask / sum mask )

| metric | transform | operator applied to the reference image |
| --- | --- | --- |
| EQ-T (`eqt*_int`) | translation by whole pixels, up to 1/8 of the image | pixel shift, vacated pixels masked |
| EQ-T_frac (`eqt*_frac`) | translation by fractions of a pixel, up to 1/8 | separable Lanczos (a=3) interpolation |
| EQ-R (`eqr*`) | rotation by an angle in [-pi, pi] | band-limited rotation; the generated image gets the same band limit ("pseudo-rotation") |
"""
import copy

import numpy as np
import torch

from metrics import sharding
from metrics.features import random_labels, randomize_noise_buffers
from ops import upfirdn2d


def sinc(x):
    """sin(pi x) / (pi x), 1 at 0."""
    y = (x * np.pi).abs()
    return torch.where(y < 1e-30, torch.ones_like(x), torch.sin(y) / y.clamp(1e-30, float('inf')))


def lanczos_window(x, a):
    """sinc(x / a) inside |x| < a, 0 outside."""
    x = x.abs() / a
    return torch.where(x < 1, sinc(x), torch.zeros_like(x))


def rotation_matrix(angle):
    """[3, 3] homogeneous 2D rotation by `angle` radians, in the layout of `input.transform`."""
    angle = torch.as_tensor(angle, dtype=torch.float32)
    cos, sin = angle.cos(), angle.sin()
    matrix = torch.eye(3, device=angle.device)
    matrix[0, 0], matrix[0, 1], matrix[1, 0], matrix[1, 1] = cos, sin, -sin, cos
    return matrix


def _shift_slices(shift, size):
    """(source, destination) slices that move a length-`size` axis by `shift` whole pixels."""
    return slice(max(-shift, 0), size + min(-shift, 0)), slice(max(shift, 0), size + min(shift, 0))


def integer_translation(x, tx, ty):
    """Shift [N, C, H, W] by (tx W, ty H) rounded to whole pixels (operator T_x, Appendix E.1).
    Returns (shifted image, mask of the pixels that have a source pixel)."""
    _, _, height, width = x.shape
    ix, iy = int(round(float(tx) * width)), int(round(float(ty) * height))
    shifted, mask = torch.zeros_like(x), torch.zeros_like(x)
    if abs(ix) < width and abs(iy) < height:
        (src_x, dst_x), (src_y, dst_y) = _shift_slices(ix, width), _shift_slices(iy, height)
        shifted[:, :, dst_y, dst_x] = x[:, :, src_y, src_x]
        mask[:, :, dst_y, dst_x] = 1
    return shifted, mask


def fractional_translation(x, tx, ty, a=3):
    """Shift [N, C, H, W] by (tx W, ty H) pixels with a separable Lanczos-windowed sinc of support
    2a taps (operator T_x, Appendix E.2). Returns (shifted image, mask of the pixels whose whole
    filter support lies inside the source image)."""
    _, _, height, width = x.shape
    tx, ty = float(tx) * width, float(ty) * height
    ix, iy = int(np.floor(tx)), int(np.floor(ty))
    fx, fy = tx - ix, ty - iy
    b = a - 1
    shifted = torch.zeros_like(x)
    x0, y0, x1, y1 = max(ix - b, 0), max(iy - b, 0), min(ix + a, 0) + width, min(iy + a, 0) + height
    if x0 < x1 and y0 < y1:
        taps = torch.arange(a * 2, device=x.device, dtype=torch.float32) - b
        filter_x = (sinc(taps - fx) * sinc((taps - fx) / a)).unsqueeze(0)  # [1, 2a]
        filter_y = (sinc(taps - fy) * sinc((taps - fy) / a)).unsqueeze(1)  # [2a, 1]
        y = upfirdn2d.filter2d(x, filter_x / filter_x.sum(), padding=[b, a, 0, 0])
        y = upfirdn2d.filter2d(y, filter_y / filter_y.sum(), padding=[0, 0, b, a])
        y = y[:, :, max(b - iy, 0):height + b + a + min(-iy - a, 0), max(b - ix, 0):width + b + a + min(-ix - a, 0)]
        shifted[:, :, y0:y1, x0:x1] = y
    mask = torch.zeros_like(x)
    mx0, my0, mx1, my1 = max(ix + a, 0), max(iy + a, 0), min(ix - b, 0) + width, min(iy - b, 0) + height
    if mx0 < mx1 and my0 < my1:
        mask[:, :, my0:my1, mx0:mx1] = 1
    return shifted, mask


def affine_bandlimit_filter(matrix, a=3, amax=16, aflt=64, up=4, cutoff_in=1, cutoff_out=1):
    """Oriented low-pass FIR filter [2 amax up - 1, 2 amax up - 1] that band-limits a signal both in
    the input coordinates and in the output coordinates of the 2D affine `matrix`: the convolution of
    the two oriented sinc filters, windowed by the convolution of the two oriented Lanczos windows,
    normalised so that each of the up x up polyphase components sums to 1 / up^2."""
    assert a <= amax < aflt
    matrix = torch.as_tensor(matrix, dtype=torch.float32)
    # Taps at multiples of 1/up over (-aflt, aflt), rolled so that tap 0 sits at index 0 (FFT layout).
    taps = ((torch.arange(aflt * up * 2 - 1, device=matrix.device) + 1) / up - aflt).roll(1 - aflt * up)
    yi, xi = torch.meshgrid(taps, taps, indexing='ij')
    xo, yo = (torch.stack([xi, yi], dim=2) @ matrix[:2, :2].t()).unbind(2)
    sinc_in, sinc_out = sinc(xi * cutoff_in) * sinc(yi * cutoff_in), sinc(xo * cutoff_out) * sinc(yo * cutoff_out)
    window_in, window_out = lanczos_window(xi, a) * lanczos_window(yi, a), lanczos_window(xo, a) * lanczos_window(yo, a)
    filt = _fft_convolve(sinc_in, sinc_out) * _fft_convolve(window_in, window_out)
    crop = (aflt - amax) * up
    filt = filt.roll([aflt * up - 1] * 2, dims=[0, 1])[crop:-crop, crop:-crop]
    filt = torch.nn.functional.pad(filt, [0, 1, 0, 1]).reshape(amax * 2, up, amax * 2, up)
    filt = filt / filt.sum([0, 2], keepdim=True) / (up ** 2)
    return filt.reshape(amax * 2 * up, amax * 2 * up)[:-1, :-1]


def _fft_convolve(a, b):
    """Circular 2D convolution of two equally shaped arrays."""
    return torch.fft.ifftn(torch.fft.fftn(a) * torch.fft.fftn(b)).real


def affine_transformation(x, matrix, up=4, **filter_kwargs):
    """Resample [N, C, H, W] under the 2D affine `matrix` (output-to-input coordinates in units of
    half the image): upsample by `up` with `affine_bandlimit_filter`, then bilinear sampling.
    Returns (image, mask of the pixels whose filter support lies inside the source image)."""
    _, _, height, width = x.shape
    matrix = torch.as_tensor(matrix, dtype=torch.float32, device=x.device)
    filt = affine_bandlimit_filter(matrix, up=up, **filter_kwargs)
    assert filt.ndim == 2 and filt.shape[0] == filt.shape[1] and filt.shape[0] % 2 == 1
    pad = filt.shape[0] // 2
    theta = matrix.inverse()
    theta[:2, 2] *= 2  # grid_sample coordinates span [-1, 1]
    theta[0, 2] += 1 / up / width  # centre of the upsampled pixels
    theta[1, 2] += 1 / up / height
    theta[0, :] *= width / (width + pad / up * 2)  # the upsampled image carries `pad` extra pixels per side
    theta[1, :] *= height / (height + pad / up * 2)
    theta = theta[:2, :3].unsqueeze(0).repeat([x.shape[0], 1, 1])
    grid = torch.nn.functional.affine_grid(theta, x.shape, align_corners=False)
    upsampled = upfirdn2d.upsample2d(x=x, f=filt, up=up, padding=pad)
    resampled = torch.nn.functional.grid_sample(upsampled, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    valid = torch.zeros_like(upsampled)
    border = pad * 2 + 1
    valid[:, :, border:-border, border:-border] = 1
    mask = torch.nn.functional.grid_sample(valid, grid, mode='nearest', padding_mode='zeros', align_corners=False)
    return resampled, mask


def fractional_rotation(x, angle, a=3):
    """Rotate [N, C, H, W] by `angle` with band limiting (operator R_alpha, Appendix E.3)."""
    return affine_transformation(x, rotation_matrix(angle), a=a, amax=a * 2)


def fractional_pseudo_rotation(x, angle, a=3):
    """Give [N, C, H, W] the frequency content a rotation by `angle` would, without rotating it
    (operator R*_alpha, Appendix E.3). Returns (image, mask of the pixels away from the border)."""
    filt = affine_bandlimit_filter(rotation_matrix(-angle), a=a, amax=a * 2, up=1)
    filtered = upfirdn2d.filter2d(x=x, f=filt.to(x.device))
    mask = torch.zeros_like(filtered)
    border = filt.shape[0] // 2
    mask[:, :, border:-border, border:-border] = 1
    return filtered, mask


def _synthesize(G, ws, transform, G_kwargs):
    G.synthesis.input.transform.copy_(transform)
    return G.synthesis(ws=ws, **dict(G_kwargs, noise_mode='const', force_fp32=True))


def equivariance_errors(G, ws, kinds, translate_max, rotate_max, G_kwargs):
    """[2 len(kinds)] float64: (sum of masked squared errors, sum of mask) per kind in
    ('int', 'frac', 'rot'), for one batch of latents ws [N, num_ws, w_dim]."""
    identity = torch.eye(3, device=ws.device)
    reference = _synthesize(G, ws, identity, G_kwargs)
    sums = []
    for kind in kinds:
        transform = identity.clone()
        if kind == 'rot':
            angle = (torch.rand([], device=ws.device) * 2 - 1) * (rotate_max * np.pi)
            image = _synthesize(G, ws, rotation_matrix(-angle).to(ws.device), G_kwargs)
            target, target_mask = fractional_rotation(reference, angle)
            image, image_mask = fractional_pseudo_rotation(image, angle)
            mask = target_mask * image_mask
        else:
            t = (torch.rand(2, device=ws.device) * 2 - 1) * translate_max
            if kind == 'int':
                t = (t * G.img_resolution).round() / G.img_resolution
            transform[:2, 2] = -t
            image = _synthesize(G, ws, transform, G_kwargs)
            shift = integer_translation if kind == 'int' else fractional_translation
            target, mask = shift(reference, t[0], t[1])
        sums += [((target - image).square() * mask).double().sum(), mask.double().sum()]
    return torch.stack(sums)


@torch.no_grad()
def compute_equivariance_metrics(opts, num_samples, batch_size, kinds, translate_max=0.125, rotate_max=1.0):
    """PSNRs (dB) for `kinds`, a tuple of 'int' (EQ-T), 'frac' (EQ-T_frac), 'rot' (EQ-R), over
    `num_samples` latents. Rank 0 returns the tuple, other ranks NaNs."""
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    if getattr(getattr(getattr(G, 'synthesis', None), 'input', None), 'transform', None) is None:
        raise ValueError('equivariance metrics need a generator whose synthesis.input has a user transform '
                         '(StyleGAN3); this generator has none')
    local = []
    for k, start, stop in sharding.rank_batches(num_samples, batch_size, opts.rank, opts.num_gpus):
        with sharding.batch_rng(opts.seed, k, opts.device):
            randomize_noise_buffers(G)
            z = torch.randn([stop - start, G.z_dim], device=opts.device)
            ws = G.mapping(z=z, c=random_labels(opts, stop - start))
            local.append(equivariance_errors(G, ws, kinds, translate_max, rotate_max, opts.G_kwargs)[None])
    local = torch.cat(local) if local else torch.zeros([0, 2 * len(kinds)], dtype=torch.float64, device=opts.device)
    num_batches = -(-num_samples // batch_size)
    per_batch = sharding.gather_rows(local, num_batches, 1, opts.rank, opts.num_gpus)
    if opts.rank != 0:
        return tuple(float('nan') for _ in kinds)
    sums = per_batch.sum(dim=0).cpu()
    mses = sums[0::2] / sums[1::2]
    return tuple(float(v) for v in np.log10(2) * 20 - mses.log10() * 10)

