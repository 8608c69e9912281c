"""SWD: the Laplacian pyramid, the patch descriptors, the sliced distance and the metric end to end."""
import math
import os

import numpy as np
import PIL.Image
import pytest
import torch

from metrics import calc_metric
from metrics.swd import (PATCH_SIZE, LaplacianPatchExtractor, laplacian_pyramid, pyramid_resolutions,
                         sliced_wasserstein)
from ops import upfirdn2d


def test_laplacian_pyramid_reconstructs_the_image_exactly():
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 255
    levels = laplacian_pyramid(images, len(pyramid_resolutions(32)))
    assert [level.shape[-1] for level in levels] == [32, 16]
    f = upfirdn2d.setup_filter([1, 4, 6, 4, 1], device=images.device)
    f = f.double()
    rebuilt = levels[-1]
    for band in reversed(levels[:-1]):
        rebuilt = band + upfirdn2d.upsample2d(rebuilt, f)
    assert torch.allclose(rebuilt, images, atol=1e-9)


def test_pyramid_stops_at_16():
    assert pyramid_resolutions(128) == [128, 64, 32, 16]
    assert pyramid_resolutions(16) == [16]


def test_patch_descriptors_are_the_pixels_at_the_fixed_positions():
    extractor = LaplacianPatchExtractor(16)  # one level: the image itself
    images = torch.randint(0, 256, [3, 1, 16, 16], dtype=torch.uint8)
    features = extractor(images).reshape(3, 1, 1, -1, PATCH_SIZE, PATCH_SIZE)  # [N, levels, C, P, 7, 7]
    top, left = extractor.patch_rows[0][5, 0, 0].item(), extractor.patch_cols[0][5, 0, 0].item()
    assert torch.equal(features[:, 0, 0, 5], images[:, 0, top:top + PATCH_SIZE, left:left + PATCH_SIZE].float())
    # The same positions for every call: an image's descriptors do not depend on its batch.
    assert torch.equal(extractor(images[1:2]), extractor(images)[1:2])


def test_sliced_wasserstein_is_zero_for_equal_sets_and_grows_with_a_shift():
    torch.manual_seed(0)
    a = torch.randn(4000, 8, dtype=torch.float64)
    assert sliced_wasserstein(a, a[torch.randperm(len(a))]) == pytest.approx(0, abs=1e-12)
    shift = torch.zeros(8, dtype=torch.float64)
    shift[0] = 1.0
    # A shift by v moves every projection by v.d: the distance is E|v.d| over unit directions d in
    # D dimensions, |v| * Gamma(D/2) / (sqrt(pi) * Gamma((D+1)/2)).
    expected = math.gamma(4) / (math.sqrt(math.pi) * math.gamma(4.5))
    assert sliced_wasserstein(a, a + shift) == pytest.approx(expected, rel=0.1)


class ReplayGenerator(torch.nn.Module):
    """A stand-in generator whose images are drawn from a fixed set (real images or noise)."""

    def __init__(self, images):
        super().__init__()
        self.images = images  # float [-1, 1] [M, C, R, R]
        self.z_dim, self.c_dim, self.img_channels, self.img_resolution = 4, 0, images.shape[1], images.shape[-1]

    def forward(self, z, c, **kwargs):
        indices = (z[:, 0].abs() * 1e4).long() % len(self.images)
        return self.images[indices]


def write_blob_dataset(folder, count=64, resolution=32):
    """Smooth random colour blobs: images with structure at several scales."""
    os.makedirs(folder)
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[:resolution, :resolution]
    images = []
    for i in range(count):
        cy, cx, radius = rng.uniform(8, 24), rng.uniform(8, 24), rng.uniform(3, 10)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2)[..., None]
        image = np.where(mask, rng.randint(0, 256, 3), 255 - rng.randint(0, 64, 3)).astype(np.uint8)
        PIL.Image.fromarray(image).save(os.path.join(folder, f'{i:03d}.png'))
        images.append(image)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_swd_metric_scores_real_looking_images_far_below_noise(tmp_path):
    images = write_blob_dataset(tmp_path / 'data')
    dataset_kwargs = {'path': str(tmp_path / 'data')}
    like_data = calc_metric('swd64', ReplayGenerator(images), dataset_kwargs, cache=False)['results']
    noise = calc_metric('swd64', ReplayGenerator(torch.rand_like(images) * 2 - 1), dataset_kwargs, cache=False)['results']
    assert set(like_data) == {'swd64', 'swd64_32', 'swd64_16'}
    assert like_data['swd64'] * 3 < noise['swd64']
    assert like_data['swd64'] == pytest.approx(np.mean([like_data['swd64_32'], like_data['swd64_16']]))
