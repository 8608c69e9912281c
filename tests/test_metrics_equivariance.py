"""EQ-T, EQ-T_frac and EQ-R behave as defined: an exactly equivariant StyleGAN3 (Fourier features and
a per-pixel linear map, nothing that aliases) scores far higher than a random StyleGAN3, and one that
ignores the requested transform scores low."""
import copy

import pytest
import torch

import stylegan
from conftest import DATA_DIR
from metrics import equivariance
from metrics.equivariance import compute_equivariance_metrics
from metrics.features import MetricOptions
from stylegan.networks.stylegan3 import SynthesisInput


class FourierOnlySynthesis(torch.nn.Module):
    """StyleGAN3's Fourier-feature input followed by a fixed 1x1 projection to RGB: the continuous
    image is a sum of band-limited sinusoids moved analytically by `input.transform`, so the
    sampled output is exactly translation- and rotation-equivariant."""

    def __init__(self, w_dim, resolution, channels=16):
        super().__init__()
        self.input = SynthesisInput(w_dim=w_dim, channels=channels, size=resolution, sampling_rate=resolution,
                                    bandwidth=resolution / 8)
        self.register_buffer('to_rgb', torch.randn([3, channels], generator=torch.Generator().manual_seed(0)) / 4)

    def forward(self, ws, **_layer_kwargs):
        features = self.input(ws[:, 0])  # [N, C, H, W]
        return torch.einsum('oc,nchw->nohw', self.to_rgb, features)


class TransformIgnoringSynthesis(torch.nn.Module):
    """Has a `input.transform` like StyleGAN3 but never reads it: not equivariant at all."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.input = copy.deepcopy(inner.input)

    def forward(self, ws, **_layer_kwargs):
        return self.inner(ws)


@pytest.fixture(scope='module')
def generators():
    random_g = stylegan.load_network(DATA_DIR / 'sg3repo-sg3t-32.pkl')['G_ema']
    exact = copy.deepcopy(random_g)
    exact.synthesis = FourierOnlySynthesis(random_g.w_dim, random_g.img_resolution)
    ignoring = copy.deepcopy(exact)
    ignoring.synthesis = TransformIgnoringSynthesis(exact.synthesis)
    return dict(random=random_g, exact=exact, ignoring=ignoring)


def psnr(G, kind, num_samples=8):
    return compute_equivariance_metrics(MetricOptions(G=G), num_samples=num_samples, batch_size=4, kinds=(kind,))[0]


def test_exactly_translation_equivariant_generator_scores_far_higher_eqt_than_a_random_one(generators):
    exact = psnr(generators['exact'], 'int')
    assert exact > 100
    assert exact > psnr(generators['random'], 'int', num_samples=4) + 30


@pytest.mark.parametrize('kind', ['int', 'frac', 'rot'])
def test_equivariant_generator_scores_high_and_transform_ignoring_generator_low(generators, kind):
    assert psnr(generators['exact'], kind) > 45
    assert psnr(generators['ignoring'], kind) < 20


def test_integer_translation_moves_pixels_and_masks_the_vacated_ones():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    shifted, mask = equivariance.integer_translation(image, tx=1 / 4, ty=-2 / 4)  # 1 right, 2 up
    assert torch.equal(shifted[0, 0, :2, 1:], image[0, 0, 2:, :3])
    assert mask[0, 0].sum() == 2 * 3 and torch.all(shifted[mask == 0] == 0)


def test_fractional_translation_by_whole_pixels_equals_integer_translation_inside_its_mask():
    image = torch.randn([2, 3, 16, 16], generator=torch.Generator().manual_seed(0))
    shifted, mask = equivariance.fractional_translation(image, tx=3 / 16, ty=-2 / 16)
    expected, _ = equivariance.integer_translation(image, tx=3 / 16, ty=-2 / 16)
    assert mask.sum() > 0
    torch.testing.assert_close(shifted * mask, expected * mask, atol=1e-5, rtol=0)


def test_generator_without_input_transform_is_refused():
    G = stylegan.load_network(DATA_DIR / 'sg3repo-sg2-32.pkl')['G_ema']
    with pytest.raises(ValueError, match='user transform'):
        psnr(G, 'int', num_samples=1)
