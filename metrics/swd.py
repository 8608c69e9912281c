"""Sliced Wasserstein distance (SWD) between Laplacian-pyramid patches of real and generated images.

The metric of the Progressive GAN paper (Karras et al. 2018, sec. 5): from every image, 128 patches
of 7x7 pixels are taken at each level of its Laplacian pyramid (down to 16x16); each level's
descriptors are normalised per channel, and the SWD between the real and the generated set is the
mean, over 4 x 128 random unit directions, of the 1-D Wasserstein-1 distance between the two sets
projected on that direction (sorted projections, mean absolute difference). Reported x 1e3, per
level (`swd1k_32`, `swd1k_16`, ...) and averaged (`swd1k`): lower is better.

It needs no downloaded weights, so it is the metric that always works offline (the demo uses it
when the Inception weights for FID are absent). Here the patch positions are the same for every
image (drawn once per level from a fixed seed), so the descriptors of an image do not depend on
which rank or batch processed it.
"""
import dataclasses

import numpy as np
import torch

from metrics.features import generated_features, real_features
from ops import upfirdn2d

PATCH_SIZE = 7
PATCHES_PER_LEVEL = 128
MIN_RESOLUTION = 16
DIRECTION_REPEATS = 4
DIRECTIONS_PER_REPEAT = 128
BINOMIAL_FILTER = [1, 4, 6, 4, 1]


def pyramid_resolutions(resolution):
    """Resolutions of the Laplacian pyramid levels of a square image, finest first."""
    levels = [resolution]
    while levels[-1] > MIN_RESOLUTION:
        levels.append(levels[-1] // 2)
    return levels


def laplacian_pyramid(images, num_levels):
    """float [N, C, H, W] -> list of num_levels tensors: band-pass levels, then the low-pass residual."""
    f = upfirdn2d.setup_filter(BINOMIAL_FILTER, device=images.device)
    levels, current = [], images
    for _ in range(num_levels - 1):
        coarser = upfirdn2d.downsample2d(current, f)      # [N, C, H, W] -> [N, C, H/2, W/2]
        levels.append(current - upfirdn2d.upsample2d(coarser, f))
        current = coarser
    levels.append(current)
    return levels


class LaplacianPatchExtractor:
    """uint8 images [N, C, R, R] -> float32 [N, levels * 128 * C * 49]: each image's 7x7 patches of
    every pyramid level, at positions fixed per level. Called like a feature extractor by
    `metrics.features`, so generation and extraction are shared across ranks like the other metrics."""

    def __init__(self, resolution):
        self.resolutions = pyramid_resolutions(resolution)
        self.identity = f'swd-laplacian-{resolution}-{PATCH_SIZE}x{PATCH_SIZE}-{PATCHES_PER_LEVEL}'
        generator = torch.Generator().manual_seed(0)
        offsets = torch.arange(PATCH_SIZE)
        self.patch_rows, self.patch_cols = [], []
        for res in self.resolutions:
            top = torch.randint(res - PATCH_SIZE + 1, [PATCHES_PER_LEVEL], generator=generator)
            left = torch.randint(res - PATCH_SIZE + 1, [PATCHES_PER_LEVEL], generator=generator)
            self.patch_rows.append((top[:, None, None] + offsets[None, :, None]).expand(-1, PATCH_SIZE, PATCH_SIZE))
            self.patch_cols.append((left[:, None, None] + offsets[None, None, :]).expand(-1, PATCH_SIZE, PATCH_SIZE))

    def __call__(self, images):
        levels = laplacian_pyramid(images.to(torch.float32), len(self.resolutions))
        patches = [level[:, :, rows, cols]  # [N, C, P, 7, 7]
                   for level, rows, cols in zip(levels, self.patch_rows, self.patch_cols)]
        return torch.stack(patches, dim=1).flatten(1)  # [N, levels, C, P, 7, 7] -> [N, levels*C*P*49]

    def descriptors(self, features, num_channels):
        """[N, levels*C*P*49] -> per level float64 [N*P, C*49], normalised per channel."""
        shaped = features.double().reshape(len(features), len(self.resolutions), num_channels, PATCHES_PER_LEVEL,
                                           PATCH_SIZE * PATCH_SIZE)
        result = []
        for level in range(len(self.resolutions)):
            desc = shaped[:, level].permute(0, 2, 1, 3)  # [N, P, C, 49]
            mean = desc.mean(dim=(0, 1, 3), keepdim=True)
            std = desc.std(dim=(0, 1, 3), keepdim=True).clamp_min(1e-8)
            result.append(((desc - mean) / std).reshape(-1, num_channels * PATCH_SIZE * PATCH_SIZE))
        return result


def sliced_wasserstein(a, b, seed=0):
    """Mean 1-D Wasserstein-1 distance of point sets a, b [M, D] (same M) over random unit directions."""
    generator = torch.Generator().manual_seed(seed)
    distances = []
    for _ in range(DIRECTION_REPEATS):
        directions = torch.randn([a.shape[1], DIRECTIONS_PER_REPEAT], generator=generator, dtype=a.dtype)
        directions /= directions.norm(dim=0, keepdim=True)
        projected_a = (a @ directions).sort(dim=0).values  # [M, directions]
        projected_b = (b @ directions).sort(dim=0).values
        distances.append((projected_a - projected_b).abs().mean(dim=0))
    return torch.cat(distances).mean().item()


def compute_swd(opts, name, num_images):
    """{name: mean over levels, f'{name}_{res}': per level}, x 1e3, `num_images` real vs generated.
    Every rank holds all descriptors after the gather and computes the same (cheap) result."""
    num_images = min(num_images, len(opts.dataset))
    extractor = LaplacianPatchExtractor(opts.G.img_resolution)
    no_cache = dataclasses.replace(opts, cache=False)  # patches are large and cheap to recompute
    real = real_features(no_cache, extractor, num_images)['features']
    fake = generated_features(opts, extractor, num_images)
    channels = opts.G.img_channels
    per_level = [sliced_wasserstein(r, f, seed=opts.seed) * 1e3
                 for r, f in zip(extractor.descriptors(real, channels), extractor.descriptors(fake, channels))]
    results = {f'{name}_{res}': value for res, value in zip(extractor.resolutions, per_level)}
    results[name] = float(np.mean(per_level))
    return results
