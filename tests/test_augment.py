"""AugmentPipe: the release's augmentations, buffers and presets; each transform does what its
name says, p=0 leaves images alone, the geometric path is twice differentiable (R1 through the
pipe), and the ADA heuristic moves p the right way within [0, 1] and resumes exactly."""
import math

import numpy as np
import pytest
import torch

from conftest import DATA_DIR
from stylegan.legacy import read_release_pickle
from stylegan.training.augment import AUGPIPE_PRESETS, AdaptiveAugment, AugmentPipe

ALL_AUGMENTATIONS = AUGPIPE_PRESETS['bgcfnc']
GEOMETRIC = ['xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac']


def smooth_images(batch=2, channels=3, size=32):
    """Low-frequency test images in [-0.8, 0.8]: the resampling filters pass them almost unchanged."""
    y, x = torch.meshgrid(torch.arange(size) / size, torch.arange(size) / size, indexing='ij')
    planes = [torch.sin(2 * math.pi * (x + 2 * y)), torch.cos(2 * math.pi * (2 * x - y)),
              torch.sin(2 * math.pi * x) * torch.cos(2 * math.pi * y), torch.cos(2 * math.pi * y)]
    image = torch.stack(planes[:channels]) * 0.8
    return torch.stack(([image, image.flip(1)] * batch)[:batch])


def random_images(batch=2, channels=3, size=32, seed=0):
    return torch.rand([batch, channels, size, size], generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_presets_are_the_releases_augpipe_choices():
    assert list(AUGPIPE_PRESETS) == ['blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc']
    assert set(ALL_AUGMENTATIONS) == {'xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac', 'brightness',
                                      'contrast', 'lumaflip', 'hue', 'saturation', 'imgfilter', 'noise', 'cutout'}
    assert AUGPIPE_PRESETS['bgc'] == {**AUGPIPE_PRESETS['blit'], **AUGPIPE_PRESETS['geom'], **AUGPIPE_PRESETS['color']}


def test_default_strengths_are_the_releases():
    pipe = AugmentPipe()
    assert (pipe.xint_max, pipe.scale_std, pipe.rotate_max, pipe.aniso_std, pipe.xfrac_std) == (0.125, 0.2, 1, 0.2, 0.125)
    assert (pipe.brightness_std, pipe.contrast_std, pipe.hue_max, pipe.saturation_std) == (0.2, 0.5, 1, 1)
    assert (pipe.imgfilter_bands, pipe.imgfilter_std, pipe.noise_std, pipe.cutout_size) == ([1, 1, 1, 1], 1, 0.1, 0.5)
    assert float(pipe.p) == 1


@pytest.mark.parametrize('fixture', ['sg3repo-sg2-32', 'sg2ada-sg2-32'])
def test_release_pickle_augment_pipe_state_loads_and_matches_our_filters(fixture):
    release = read_release_pickle(DATA_DIR / f'{fixture}.pkl')['augment_pipe']
    state = release.state_dict()
    assert set(state) == {'p', 'Hz_geom', 'Hz_fbank'}
    pipe = AugmentPipe(**release.init_kwargs)
    torch.testing.assert_close(pipe.Hz_geom, state['Hz_geom'], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(pipe.Hz_fbank, state['Hz_fbank'], rtol=1e-6, atol=1e-7)
    pipe.load_state_dict(state)
    assert float(pipe.p) == 0.25


def test_imgfilter_bands_sum_to_a_unit_impulse():
    bank = AugmentPipe().Hz_fbank.double()
    impulse = torch.zeros(bank.shape[1], dtype=torch.float64)
    impulse[bank.shape[1] // 2] = 1
    torch.testing.assert_close(bank.sum(dim=0), impulse, atol=1e-6, rtol=0)


@pytest.mark.parametrize('preset', list(AUGPIPE_PRESETS))
def test_p_zero_is_the_identity(preset):
    pipe = AugmentPipe(**AUGPIPE_PRESETS[preset])
    pipe.p.zero_()
    images = random_images()
    torch.testing.assert_close(pipe(images), images, atol=2e-5, rtol=0)


# Bounds on |output| for smooth inputs in [-0.8, 0.8] at p=1: geometric resampling overshoots a little
# (the wavelet has negative taps); colour and noise transforms widen the range by their strength.
VALUE_BOUND = {**{name: 1.6 for name in GEOMETRIC}, 'brightness': 2, 'contrast': 6, 'lumaflip': 1.8, 'hue': 1.8,
               'saturation': 6, 'imgfilter': 6, 'noise': 2, 'cutout': 1}


@pytest.mark.parametrize('name', list(ALL_AUGMENTATIONS))
@pytest.mark.parametrize('channels', [1, 3, 4])
def test_each_augmentation_keeps_shape_dtype_and_value_range(name, channels):
    torch.manual_seed(1)
    pipe = AugmentPipe(**{name: 1})
    images = smooth_images(batch=4, channels=channels)
    out = pipe(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.isfinite(out).all()
    assert out.abs().max() <= VALUE_BOUND[name]
    assert not torch.equal(out, images) or (name in ('hue', 'saturation') and channels == 1)


def test_xflip_mirrors_and_rotate90_rotates_counterclockwise():
    images = smooth_images()
    flipped = AugmentPipe(xflip=1)(images, debug_percentile=0.75)
    torch.testing.assert_close(flipped, images.flip(3), atol=0.05, rtol=0)  # sym6 is only nearly symmetric
    rotated = AugmentPipe(rotate90=1)(images, debug_percentile=0.3)  # one quarter turn
    torch.testing.assert_close(rotated, images.rot90(1, dims=[2, 3]), atol=0.05, rtol=0)


def test_integer_translation_shifts_by_whole_pixels_exactly():
    images = random_images()
    shifted = AugmentPipe(xint=1)(images, debug_percentile=0.75)  # (2 * 0.75 - 1) * 0.125 * 32 = 2 pixels
    torch.testing.assert_close(shifted[:, :, 2:, 2:], images[:, :, :-2, :-2], atol=2e-5, rtol=0)


def test_isotropic_scaling_at_the_median_is_the_identity_and_otherwise_zooms():
    images = smooth_images()
    torch.testing.assert_close(AugmentPipe(scale=1)(images, debug_percentile=0.5), images, atol=2e-5, rtol=0)
    zoomed = AugmentPipe(scale=1)(images, debug_percentile=0.9)  # scale factor 2^(1.28 * 0.2) > 1
    center = images.shape[-1] // 2
    torch.testing.assert_close(zoomed[..., center - 1:center + 1, center - 1:center + 1],
                               images[..., center - 1:center + 1, center - 1:center + 1], atol=0.1, rtol=0)
    assert (zoomed - images).abs().max() > 0.1


def _luma(images):
    return images[:, :3].mean(dim=1)


def test_colour_transforms_act_on_luma_and_chroma_as_the_paper_says():
    images = random_images(channels=3)
    brighter = AugmentPipe(brightness=1)(images, debug_percentile=0.9)
    offset = brighter - images
    torch.testing.assert_close(offset, torch.full_like(offset, 0.2 * float(torch.erfinv(torch.tensor(0.8)))))
    stronger = AugmentPipe(contrast=1)(images, debug_percentile=0.9)
    torch.testing.assert_close(stronger, images * 2 ** (0.5 * float(torch.erfinv(torch.tensor(0.8)))))
    flipped = AugmentPipe(lumaflip=1)(images, debug_percentile=0.75)
    torch.testing.assert_close(_luma(flipped), -_luma(images), atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped - _luma(flipped)[:, None], images - _luma(images)[:, None], atol=1e-5, rtol=0)
    for name in ('hue', 'saturation'):
        changed = AugmentPipe(**{name: 1})(images, debug_percentile=0.8)
        torch.testing.assert_close(_luma(changed), _luma(images), atol=1e-5, rtol=0)
        assert (changed - images).abs().max() > 0.1
    rotated = AugmentPipe(hue=1)(images, debug_percentile=0.8)
    torch.testing.assert_close(rotated.norm(dim=1), images.norm(dim=1), atol=1e-5, rtol=0)


def test_colour_transforms_leave_alpha_alone_and_treat_grey_as_luma():
    rgba = random_images(channels=4)
    out = AugmentPipe(**AUGPIPE_PRESETS['color'])(rgba)
    torch.testing.assert_close(out[:, 3], rgba[:, 3], atol=0, rtol=0)
    grey = random_images(channels=1)
    flipped = AugmentPipe(lumaflip=1)(grey, debug_percentile=0.75)
    torch.testing.assert_close(flipped, -grey, atol=1e-6, rtol=0)


def test_imgfilter_at_unit_gains_is_the_identity():
    images = random_images()
    torch.testing.assert_close(AugmentPipe(imgfilter=1)(images, debug_percentile=0.5), images, atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match='32x32 or more'):
        AugmentPipe(imgfilter=1)(random_images(size=16))


def test_noise_has_the_drawn_standard_deviation():
    torch.manual_seed(0)
    images = random_images(batch=4)
    noisy = AugmentPipe(noise=1)(images, debug_percentile=0.5)
    sigma = 0.1 * float(torch.erfinv(torch.tensor(0.5)))
    assert abs(float((noisy - images).std()) / sigma - 1) < 0.05


def test_cutout_zeroes_a_centred_square_of_half_the_size():
    images = random_images(size=16) + 2  # no zeros of its own
    out = AugmentPipe(cutout=1)(images, debug_percentile=0.5)
    assert (out[:, :, 4:12, 4:12] == 0).all()
    mask = torch.ones(16, 16, dtype=torch.bool)
    mask[4:12, 4:12] = False
    torch.testing.assert_close(out[:, :, mask], images[:, :, mask], atol=0, rtol=0)


def test_geometric_transforms_are_twice_differentiable():
    pipe = AugmentPipe(**AUGPIPE_PRESETS['bg'])
    images = torch.rand([1, 1, 8, 8], dtype=torch.float64, requires_grad=True)

    def augment(x):
        torch.manual_seed(0)  # the same transform at every evaluation
        return pipe(x, debug_percentile=0.3)
    assert torch.autograd.gradgradcheck(augment, (images,), atol=1e-6)


def test_r1_penalty_backpropagates_through_the_full_pipe():
    pipe = AugmentPipe(**AUGPIPE_PRESETS['bgcfnc'])
    weight = torch.randn([1, 3, 3, 3], requires_grad=True)
    real = random_images().requires_grad_(True)
    logits = torch.nn.functional.conv2d(pipe(real), weight).square().sum()  # a D with nonzero second derivative
    grad, = torch.autograd.grad(logits, real, create_graph=True)
    grad.square().sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def _run_ada(ada, signs, batch_size=64):
    trace = []
    for sign in signs:
        ada.accumulate(torch.full([batch_size // 2, 1], float(sign)))
        ada.end_minibatch(batch_size)
        trace.append(float(ada.p))
    return trace


def test_ada_raises_p_when_d_overfits_and_lowers_it_otherwise_within_0_and_1():
    pipe = AugmentPipe(**AUGPIPE_PRESETS['bgc'])
    pipe.p.zero_()
    ada = AdaptiveAugment(pipe, ada_target=0.6, ada_interval=4, ada_kimg=1)  # step 64 * 4 / 1000
    step = 64 * 4 / 1000
    rising = _run_ada(ada, [1] * 20)
    assert rising[:3] == [0.0, 0.0, 0.0]  # adjusts after the 4th minibatch, the 8th, ... as the releases
    assert rising[3] == pytest.approx(step) and rising[6] == pytest.approx(step) and rising[7] == pytest.approx(2 * step)
    assert rising[-1] == 1.0 and max(rising) <= 1.0
    falling = _run_ada(ada, [1, -1, 0.5, 0.5] * 10)  # mean sign 0.25 < 0.6: D generalises
    assert falling[-1] == 0.0 and min(falling) >= 0.0
    assert all(b <= a for a, b in zip(falling, falling[1:]))
    assert ada.last_rt == pytest.approx(0.25)


def test_ada_target_and_speed_are_the_releases_defaults():
    ada = AdaptiveAugment(AugmentPipe())
    assert (ada.ada_target, ada.ada_interval, ada.ada_kimg) == (0.6, 4, 500)


def test_ada_resumes_exactly_from_its_state_dict():
    signs = list(np.random.RandomState(0).choice([-1.0, 1.0], size=30, p=[0.15, 0.85]))
    reference = AdaptiveAugment(AugmentPipe(), ada_kimg=2)
    reference.p.zero_()
    _run_ada(reference, signs[:13])
    saved = reference.state_dict()
    resumed = AdaptiveAugment(AugmentPipe(), ada_kimg=2)
    resumed.load_state_dict(saved)
    assert _run_ada(resumed, signs[13:]) == _run_ada(reference, signs[13:])
