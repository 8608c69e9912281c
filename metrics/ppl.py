"""Perceptual Path Length (Karras et al. 2019, "A Style-Based Generator Architecture", Sec. 3),
with the releases' definitions:

    PPL = E[ d(G(lerp(w0, w1, t)), G(lerp(w0, w1, t + eps))) / eps^2 ]

over pairs of latents, with d the LPIPS distance, eps = 1e-4, t ~ U(0, 1) ('full') or t = 0
('end'), interpolating in W (lerp of mapped latents) or Z (slerp, then mapping). Images are
optionally centre-cropped to the face region ('crop', the original FFHQ metric), box-downsampled
by R // 256 for resolution R > 256, scaled to [0, 255]; the mean drops the values below the 1st and above the
99th percentile. Noise inputs are re-drawn per batch and held constant within it.

| name | space | sampling | crop |
| --- | --- | --- | --- |
| ppl_zfull | z | full | yes |
| ppl_wfull | w | full | yes |
| ppl_zend | z | end | yes |
| ppl_wend | w | end | yes |
| ppl2_wend | w | end | no |
"""
import copy

import numpy as np
import torch

from metrics import sharding
from metrics.features import random_labels, randomize_noise_buffers
from metrics.lpips import load_lpips


def slerp(a, b, t):
    """Spherical interpolation of directions: a, b [N, D], t [N, 1] -> unit vectors [N, D]."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos_angle = (a * b).sum(dim=-1, keepdim=True)
    angle = t * torch.acos(cos_angle)
    orthogonal = b - cos_angle * a
    orthogonal = orthogonal / orthogonal.norm(dim=-1, keepdim=True)
    result = a * torch.cos(angle) + orthogonal * torch.sin(angle)
    return result / result.norm(dim=-1, keepdim=True)


def interpolated_ws(G, c, epsilon, space, sampling):
    """The two ends of each path step: ([N, num_ws, w_dim], [N, num_ws, w_dim]) at t and t + eps."""
    n = c.shape[0]
    t = torch.rand([n], device=c.device) * (1 if sampling == 'full' else 0)
    z0, z1 = torch.randn([n * 2, G.z_dim], device=c.device).chunk(2)
    if space == 'w':
        w0, w1 = G.mapping(z=torch.cat([z0, z1]), c=torch.cat([c, c])).chunk(2)
        t = t[:, None, None]
        return w0.lerp(w1, t), w0.lerp(w1, t + epsilon)
    t = t[:, None]
    z_start, z_end = slerp(z0, z1, t), slerp(z0, z1, t + epsilon)
    return G.mapping(z=torch.cat([z_start, z_end]), c=torch.cat([c, c])).chunk(2)


def images_for_distance(images, crop):
    """G's [-1, 1] images [2N, C, R, R] -> the float [0, 255] RGB images LPIPS compares. The box
    downsampling factor is R // 256 also after cropping, as in the releases."""
    factor = images.shape[3] // 256
    if crop:  # the face region of FFHQ-aligned images: rows 3/8..7/8, columns 2/8..6/8
        eighth = images.shape[2] // 8
        images = images[:, :, eighth * 3:eighth * 7, eighth * 2:eighth * 6]
    if factor > 1:  # box filter, factor x factor pixels into one
        n, ch, h, w = images.shape
        images = images.reshape([n, ch, h // factor, factor, w // factor, factor]).mean([3, 5])
    images = (images + 1) * (255 / 2)
    return images.repeat([1, 3, 1, 1]) if images.shape[1] == 1 else images


def path_step_lengths(G, c, distance, epsilon, space, sampling, crop, G_kwargs):
    """[N] values d(image at t, image at t + eps) / eps^2 for N = len(c) random paths."""
    ws_start, ws_end = interpolated_ws(G, c, epsilon, space, sampling)
    randomize_noise_buffers(G)
    images = G.synthesis(ws=torch.cat([ws_start, ws_end]), **dict(G_kwargs, noise_mode='const', force_fp32=True))
    images = images_for_distance(images, crop)
    start, end = images.chunk(2)
    return distance(start, end) / epsilon ** 2


def trimmed_mean(values, lower_percentile=1, upper_percentile=99):
    """Mean of the values between the lower ('lower' rounding) and upper ('higher') percentiles."""
    lo = np.percentile(values, lower_percentile, method='lower')
    hi = np.percentile(values, upper_percentile, method='higher')
    return float(values[(values >= lo) & (values <= hi)].mean())


@torch.no_grad()
def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size, distance=None):
    """PPL of opts.G; `distance(a, b) -> [N]` on float [0, 255] images, LPIPS when None. Every rank
    runs its batches; rank 0 returns the value, other ranks NaN."""
    assert space in ('z', 'w') and sampling in ('full', 'end')
    if distance is None:
        distance = load_lpips(opts.device, opts.weights_dir, opts.download, opts.verbose and opts.rank == 0)
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    local = []
    for k, start, stop in sharding.rank_batches(num_samples, batch_size, opts.rank, opts.num_gpus):
        with sharding.batch_rng(opts.seed, k, opts.device):
            c = random_labels(opts, stop - start)
            local.append(path_step_lengths(G, c, distance, epsilon, space, sampling, crop, opts.G_kwargs).double())
    local = torch.cat(local) if local else torch.zeros([0], dtype=torch.float64, device=opts.device)
    lengths = sharding.gather_rows(local, num_samples, batch_size, opts.rank, opts.num_gpus)
    if opts.rank != 0:
        return float('nan')
    return trimmed_mean(lengths.cpu().numpy())
