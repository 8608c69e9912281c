"""StyleGAN2Loss: each phase backpropagates exactly the release's objective (checked against
autograd computations written out here), keeps the path-length mean as resumable state, and
returns its statistics as tensors; plus the lazy-regularisation Adam correction."""
import math

import pytest
import torch
import torch.nn.functional as F

from stylegan.networks.stylegan2 import Discriminator, Generator
from stylegan.training.augment import AUGPIPE_PRESETS, AugmentPipe
from stylegan.training.loss import (PHASES, StyleGAN2Loss, blur_sigma_at, gaussian_blur, lazy_regularization_correction,
                           path_lengths)

BATCH = 4


def tiny_networks(seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, channel_base=64, channel_max=8,
                  num_fp16_res=0, mapping_kwargs=dict(num_layers=2))
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=64, channel_max=8, num_fp16_res=0)
    return G, D


def inputs(seed=1):
    generator = torch.Generator().manual_seed(seed)
    real = torch.rand([BATCH, 3, 8, 8], generator=generator) * 2 - 1
    z = torch.randn([BATCH, 8], generator=generator)
    c = torch.zeros([BATCH, 0])
    return real, c, z, c


def grads_of(module):
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return grads


def assert_same_grads(actual, expected):
    assert actual.keys() == expected.keys() and len(actual) > 0
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_gmain_is_the_non_saturating_logistic_loss():
    G, D = tiny_networks()
    loss = StyleGAN2Loss(G, D)
    real, real_c, z, c = inputs()
    torch.manual_seed(5)
    stats = loss.accumulate_gradients('Gmain', real, real_c, z, c, gain=3, cur_nimg=0)
    actual, _ = grads_of(G), grads_of(D)

    torch.manual_seed(5)  # the same synthesis noise
    logits = D(G(z, c), c)
    (-torch.log(torch.sigmoid(logits))).mean().mul(3).backward()
    assert_same_grads(actual, grads_of(G))
    assert set(stats) == {'Loss/scores/fake', 'Loss/signs/fake', 'Loss/G/loss'}
    torch.testing.assert_close(stats['Loss/scores/fake'], logits.detach())
    assert not stats['Loss/G/loss'].requires_grad


def test_dmain_pushes_fake_logits_down_and_real_logits_up():
    G, D = tiny_networks()
    loss = StyleGAN2Loss(G, D, r1_gamma=0)
    real, real_c, z, c = inputs()
    torch.manual_seed(5)
    stats = loss.accumulate_gradients('Dboth', real, real_c, z, c, gain=1, cur_nimg=0)  # r1_gamma=0: Dmain only
    actual = grads_of(D)
    G.zero_grad(set_to_none=True)

    torch.manual_seed(5)
    fake_logits = D(G(z, c).detach(), c)
    real_logits = D(real, c)
    (F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()).backward()
    assert_same_grads(actual, grads_of(D))
    assert 'Loss/r1_penalty' not in stats
    torch.testing.assert_close(stats['Loss/D/loss'], (F.softplus(fake_logits) + F.softplus(-real_logits)).detach())
    torch.testing.assert_close(stats['Loss/signs/real'], real_logits.sign().detach())


def test_r1_matches_a_direct_double_backward():
    G, D = tiny_networks()
    loss = StyleGAN2Loss(G, D, r1_gamma=0.5)
    real, real_c, z, c = inputs()
    stats = loss.accumulate_gradients('Dreg', real, real_c, z, c, gain=16, cur_nimg=0)
    actual = grads_of(D)
    assert G.mapping.fc0.weight.grad is None  # Dreg never runs G

    x = real.clone().requires_grad_(True)
    grad_x, = torch.autograd.grad(D(x, real_c).sum(), x, create_graph=True)
    penalty = grad_x.pow(2).flatten(1).sum(1)
    (penalty * 0.25).mean().mul(16).backward()
    assert_same_grads(actual, grads_of(D))
    torch.testing.assert_close(stats['Loss/r1_penalty'], penalty.detach())
    assert set(stats) == {'Loss/scores/real', 'Loss/signs/real', 'Loss/r1_penalty', 'Loss/D/reg'}


def test_path_lengths_are_norms_of_the_jacobian_projected_on_the_noise():
    # A synthesis with a known Jacobian: img = tanh(ws . A), so J^T y = A (y * (1 - img^2)).
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn([3, 4, 2 * 8 * 8], generator=generator)  # [num_ws, w_dim, C*H*W]
    ws = torch.randn([2, 3, 4], generator=generator, requires_grad=True)
    images = torch.tanh(torch.einsum('nlk,lkp->np', ws, mixing)).reshape(2, 2, 8, 8)
    torch.manual_seed(3)
    lengths = path_lengths(images, ws)
    torch.manual_seed(3)
    noise = torch.randn([2, 2, 8, 8]) / 8  # N(0, I) / sqrt(H * W)
    projected = torch.einsum('lkp,np->nlk', mixing, (noise * (1 - images.detach() ** 2)).reshape(2, -1))
    expected = projected.square().sum(dim=2).mean(dim=1).sqrt()  # |J^T y| averaged over the ws
    torch.testing.assert_close(lengths, expected, rtol=1e-5, atol=1e-6)
    assert lengths.requires_grad  # differentiable, for the penalty's backward


def test_greg_penalises_distance_to_the_moving_mean_of_path_lengths():
    G, D = tiny_networks()
    loss = StyleGAN2Loss(G, D, pl_weight=2, pl_batch_shrink=2, pl_decay=0.01)
    real, real_c, z, c = inputs()
    loss.pl_mean.fill_(0.3)
    torch.manual_seed(7)
    stats = loss.accumulate_gradients('Greg', real, real_c, z, c, gain=4, cur_nimg=0)
    actual = grads_of(G)
    assert all(p.grad is None for p in D.parameters())  # Greg never runs D

    torch.manual_seed(7)
    ws = G.mapping(z[:BATCH // 2], c[:BATCH // 2])
    images = G.synthesis(ws)
    lengths = path_lengths(images, ws)
    new_mean = 0.3 + 0.01 * (lengths.mean() - 0.3)
    ((lengths - new_mean).square() * 2).mean().mul(4).backward()
    assert_same_grads(actual, grads_of(G))
    assert stats['Loss/pl_penalty'].shape == (BATCH // 2,)
    torch.testing.assert_close(loss.pl_mean, new_mean.detach())


def test_pl_mean_is_saved_and_restored_for_exact_resume():
    G, D = tiny_networks()
    loss = StyleGAN2Loss(G, D, pl_weight=2)
    real, real_c, z, c = inputs()
    loss.accumulate_gradients('Greg', real, real_c, z, c, gain=1, cur_nimg=0)
    saved = loss.state_dict()
    assert float(saved['pl_mean']) > 0
    resumed = StyleGAN2Loss(G, D, pl_weight=2)
    resumed.load_state_dict(saved)
    torch.testing.assert_close(resumed.pl_mean, loss.pl_mean, rtol=0, atol=0)


def test_disabled_regularisers_turn_their_phases_into_no_ops():
    G, D = tiny_networks()
    loss = StyleGAN2Loss(G, D, r1_gamma=0, pl_weight=0)
    real, real_c, z, c = inputs()
    assert loss.accumulate_gradients('Greg', real, real_c, z, c, gain=1, cur_nimg=0) == {}
    assert loss.accumulate_gradients('Dreg', real, real_c, z, c, gain=1, cur_nimg=0) == {}
    assert all(p.grad is None for p in list(G.parameters()) + list(D.parameters()))
    with pytest.raises(ValueError, match="unknown loss phase 'Dfake'"):
        loss.accumulate_gradients('Dfake', real, real_c, z, c, gain=1, cur_nimg=0)
    assert PHASES == ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')


def test_style_mixing_switches_later_layers_to_other_latents():
    G, D = tiny_networks()
    z, c = inputs()[2:]
    plain = G.mapping(z, c)
    torch.manual_seed(0)
    _images, ws = StyleGAN2Loss(G, D, style_mixing_prob=0).run_G(z, c)
    torch.testing.assert_close(ws, plain)
    mixed_counts = set()
    for seed in range(6):
        torch.manual_seed(seed)
        _images, ws = StyleGAN2Loss(G, D, style_mixing_prob=1).run_G(z, c)
        same = torch.isclose(ws, plain).all(dim=2).all(dim=0)  # [num_ws]
        cutoff = int(same.sum())
        assert 1 <= cutoff < ws.shape[1] and same[:cutoff].all() and not same[cutoff:].any()
        mixed_counts.add(cutoff)
    assert len(mixed_counts) > 1  # the cutoff layer is random


def test_blur_fades_linearly_and_d_sees_blurred_images():
    assert blur_sigma_at(0, blur_init_sigma=10, blur_fade_kimg=200) == 10
    assert blur_sigma_at(100_000, blur_init_sigma=10, blur_fade_kimg=200) == pytest.approx(5)
    assert blur_sigma_at(300_000, blur_init_sigma=10, blur_fade_kimg=200) == 0
    assert blur_sigma_at(0, blur_init_sigma=10, blur_fade_kimg=0) == 0
    images = inputs()[0]
    blurred = gaussian_blur(images, 1.0)
    assert blurred.std() < 0.7 * images.std()
    torch.testing.assert_close(gaussian_blur(torch.ones(1, 1, 8, 8), 1.0)[..., 3:5, 3:5], torch.ones(1, 1, 2, 2))
    assert torch.equal(gaussian_blur(images, 0.3), images)  # under one tap of radius
    G, D = tiny_networks()
    loss = StyleGAN2Loss(G, D, blur_init_sigma=1.0, blur_fade_kimg=10)
    torch.testing.assert_close(loss.run_D(images, None, blur_sigma=1.0), D(blurred, None))


def test_r1_flows_through_the_augmentation_pipe():
    G, D = tiny_networks()
    pipe = AugmentPipe(**AUGPIPE_PRESETS['bgc'])
    pipe.p.fill_(0.5)
    loss = StyleGAN2Loss(G, D, augment_pipe=pipe, r1_gamma=1)
    real, real_c, z, c = inputs()
    stats = loss.accumulate_gradients('Dboth', real, real_c, z, c, gain=1, cur_nimg=0)
    grads = grads_of(D)
    assert all(torch.isfinite(g).all() for g in grads.values()) and len(grads) > 0
    assert float(stats['Loss/r1_penalty'].mean()) > 0


def test_lazy_regularisation_correction_is_the_papers_formula():
    c = 16
    lr, betas = lazy_regularization_correction(0.0025, (0, 0.99), reg_interval=c)
    assert lr == pytest.approx(0.0025 * c / (c + 1))
    assert betas == pytest.approx((0, 0.99 ** (c / (c + 1))))
    assert betas[1] ** (c + 1) == pytest.approx(0.99 ** c)  # momentum decays as much over c+1 steps as over c
    assert lazy_regularization_correction(0.002, [0, 0.99], None) == (0.002, (0, 0.99))
    lr4, _ = lazy_regularization_correction(1.0, (0.9,), 4)
    assert lr4 == pytest.approx(0.8) and math.isclose(lr4, 4 / 5)
