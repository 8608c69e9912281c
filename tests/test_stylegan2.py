"""Specification of the StyleGAN2 generator and discriminator (stylegan/networks/stylegan2.py)."""
import copy

import pytest
import torch

from stylegan.legacy import read_release_pickle
from stylegan.networks import stylegan2
from stylegan.networks.stylegan2 import Discriminator, Generator, MinibatchStdLayer

STYLEGAN2_FIXTURES = ['sg3repo-sg2-32', 'sg2ada-sg2-32']


def relative_error(out, ref):
    return ((out - ref).norm() / ref.norm()).item()


def tiny_generator(**overrides):
    # Resolutions 4, 8, 16 with 16, 16, 8 channels: num_ws = 6.
    kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=128,
                  channel_max=16, num_fp16_res=0, mapping_kwargs=dict(num_layers=2))
    kwargs.update(overrides)
    return Generator(**kwargs)


def tiny_discriminator(**overrides):
    kwargs = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16, num_fp16_res=0)
    kwargs.update(overrides)
    return Discriminator(**kwargs)


def build_from_release_record(cls, record):
    kwargs = dict(record.init_kwargs)
    kwargs.update(kwargs.pop('synthesis_kwargs', {}))  # the ADA release's Generator nests these
    net = cls(**kwargs).eval()
    net.load_state_dict(record.state_dict(), strict=True)
    return net


@pytest.mark.parametrize('name', STYLEGAN2_FIXTURES)
def test_release_networks_are_reproduced_to_1e5(name, data_dir):
    nets = read_release_pickle(data_dir / f'{name}.pkl')
    expected = torch.load(data_dir / f'{name}.expected.pt', weights_only=True)
    G_ema = build_from_release_record(Generator, nets['G_ema'])
    G = build_from_release_record(Generator, nets['G'])
    D = build_from_release_record(Discriminator, nets['D'])
    z, c = expected['z'], expected['c']
    with torch.no_grad():
        outputs = {
            'img_psi1': G_ema(z, c, truncation_psi=1, noise_mode='const'),
            'img_psi07': G_ema(z, c, truncation_psi=0.7, noise_mode='const'),
            'ws_psi07': G_ema.mapping(z, c, truncation_psi=0.7),
            'g_train_psi1': G(z, c, noise_mode='const'),
            'd_logits': D(expected['img_psi1'], c),
        }
    for key, out in outputs.items():
        assert out.dtype == torch.float32 and out.shape == expected[key].shape, key
        assert relative_error(out, expected[key]) < 1e-5, key


@pytest.mark.parametrize('c_dim', [0, 3])
@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_every_architecture_runs_forward_and_backward(architecture, c_dim):
    torch.manual_seed(0)
    G = tiny_generator(c_dim=c_dim, architecture=architecture)
    D = tiny_discriminator(c_dim=c_dim, architecture=architecture)
    z = torch.randn([4, G.z_dim])
    c = torch.eye(3)[torch.tensor([0, 1, 2, 0])] if c_dim else torch.zeros([4, 0])
    img = G(z, c)
    assert img.shape == (4, 3, 16, 16)
    logits = D(img, c)
    assert logits.shape == (4, 1)
    logits.sum().backward()
    for net in (G, D):
        for name, param in net.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    if c_dim:
        assert D.mapping.fc0.weight.grad.abs().sum() > 0  # the label projection reaches the logits


def test_conditional_discriminator_depends_on_the_label():
    torch.manual_seed(0)
    D = tiny_discriminator(c_dim=3)
    img = torch.randn([2, 3, 16, 16])
    a = D(img, torch.tensor([[1., 0, 0], [1, 0, 0]]))
    b = D(img, torch.tensor([[0., 1, 0], [0, 1, 0]]))
    assert not torch.allclose(a, b)


def test_truncation_psi_zero_maps_every_sample_to_w_avg():
    torch.manual_seed(0)
    G = tiny_generator()
    G.mapping.w_avg.copy_(torch.randn([G.w_dim]))
    ws = G.mapping(torch.randn([5, G.z_dim]), None, truncation_psi=0)
    assert ws.shape == (5, G.num_ws, G.w_dim)
    torch.testing.assert_close(ws, G.mapping.w_avg.expand(5, G.num_ws, -1))


def test_truncation_cutoff_leaves_later_layers_untouched():
    torch.manual_seed(0)
    G = tiny_generator()
    G.mapping.w_avg.copy_(torch.randn([G.w_dim]))
    z = torch.randn([3, G.z_dim])
    ws = G.mapping(z, None)
    ws_cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(ws_cut[:, 2:], ws[:, 2:], rtol=0, atol=0)
    torch.testing.assert_close(ws_cut[:, :2], G.mapping.w_avg + 0.5 * (ws[:, :2] - G.mapping.w_avg))


def test_w_avg_moves_only_with_update_emas():
    torch.manual_seed(0)
    G = tiny_generator()
    z = torch.randn([4, G.z_dim])
    G(z, None)
    G.mapping(z, None)
    assert (G.mapping.w_avg == 0).all()
    w = G.mapping(z, None)[:, 0]
    G(z, None, update_emas=True)
    beta = G.mapping.w_avg_beta
    torch.testing.assert_close(G.mapping.w_avg, (1 - beta) * w.mean(dim=0))


def test_noise_modes_const_is_deterministic_random_is_not_none_is_zero_strength():
    torch.manual_seed(0)
    G = tiny_generator()
    for name, param in G.named_parameters():
        if name.endswith('noise_strength'):
            param.data.fill_(0.5)
    ws = G.mapping(torch.randn([2, G.z_dim]), None)
    with torch.no_grad():
        const_a, const_b = G.synthesis(ws, noise_mode='const'), G.synthesis(ws, noise_mode='const')
        random_a, random_b = G.synthesis(ws, noise_mode='random'), G.synthesis(ws, noise_mode='random')
        none = G.synthesis(ws, noise_mode='none')
        silent = copy.deepcopy(G)
        for name, param in silent.named_parameters():
            if name.endswith('noise_strength'):
                param.data.zero_()
        zero_strength = silent.synthesis(ws, noise_mode='const')
    torch.testing.assert_close(const_a, const_b, rtol=0, atol=0)
    assert not torch.allclose(random_a, random_b)
    assert not torch.allclose(none, const_a)
    torch.testing.assert_close(none, zero_strength)
    with pytest.raises(ValueError, match='noise_mode'):
        G.synthesis(ws, noise_mode='fixed')


def test_fused_and_unfused_modconv_agree():
    torch.manual_seed(0)
    G = tiny_generator()
    ws = G.mapping(torch.randn([3, G.z_dim]), None)
    with torch.no_grad():
        fused = G.synthesis(ws, noise_mode='const', fused_modconv=True)
        unfused = G.synthesis(ws, noise_mode='const', fused_modconv=False)
    assert relative_error(unfused, fused) < 1e-5


def test_fp16_blocks_stay_float32_on_cpu():
    torch.manual_seed(0)
    G16 = tiny_generator(num_fp16_res=2, conv_clamp=256)
    G32 = tiny_generator(num_fp16_res=0, conv_clamp=256)
    G32.load_state_dict(G16.state_dict())
    D16 = tiny_discriminator(num_fp16_res=2)
    assert G16.synthesis.b16.use_fp16 and G16.synthesis.b8.use_fp16 and not G16.synthesis.b4.use_fp16
    z = torch.randn([2, G16.z_dim])
    with torch.no_grad():
        img = G16(z, None, noise_mode='const')
        assert img.dtype == torch.float32
        torch.testing.assert_close(img, G32(z, None, noise_mode='const'), rtol=0, atol=0)
        assert D16(img, None).dtype == torch.float32


def test_spectral_norm_bounds_largest_singular_value_and_is_off_by_default():
    assert not any('parametrizations' in key for key in tiny_discriminator().state_dict())
    torch.manual_seed(0)
    D = tiny_discriminator(c_dim=3, spectral_norm=True).train()
    img, c = torch.randn([4, 3, 16, 16]), torch.eye(3)[[0, 1, 2, 0]]
    layers = [m for m in D.modules() if isinstance(m, (stylegan2.Conv2dLayer, stylegan2.FullyConnectedLayer))]
    assert len(layers) > 0
    for layer in layers:  # blocks, epilogue and the label mapping network
        assert torch.nn.utils.parametrize.is_parametrized(layer, 'weight')
        assert layer.weight_gain == 1
        for _ in range(100):  # in training mode, each read of the weight runs one power iteration
            layer.weight
    D.eval()
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert abs(sigma.item() - 1) < 1e-3
    D.train()
    D(img, c).sum().backward()
    assert D.b16.conv0.parametrizations.weight.original.grad is not None


def test_minibatch_stddev_matches_per_group_statistic():
    x = torch.randn([4, 6, 2, 2])
    out = MinibatchStdLayer(group_size=2, num_channels=2)(x)
    assert out.shape == (4, 8, 2, 2)
    torch.testing.assert_close(out[:, :6], x)
    for sample in range(4):
        group = x[[sample % 2, sample % 2 + 2]]  # groups interleave: {0, 2} and {1, 3}
        for f in range(2):
            part = group[:, 3 * f: 3 * f + 3]
            stat = (part.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            torch.testing.assert_close(out[sample, 6 + f], stat.expand(2, 2))


def test_minibatch_stddev_rejects_group_size_not_dividing_batch():
    with pytest.raises(ValueError, match='does not divide the batch size 6'):
        MinibatchStdLayer(group_size=4)(torch.randn([6, 4, 2, 2]))
    # A group size above the batch size uses the whole batch.
    assert MinibatchStdLayer(group_size=8)(torch.randn([3, 4, 2, 2])).shape == (3, 5, 2, 2)


def test_init_kwargs_rebuild_the_same_architecture():
    for net in (tiny_generator(c_dim=2, architecture='resnet'), tiny_discriminator(c_dim=2, spectral_norm=True)):
        rebuilt = type(net)(**net.init_kwargs)
        rebuilt.load_state_dict(net.state_dict(), strict=True)
        assert rebuilt.init_kwargs == net.init_kwargs
    assert tiny_generator().synthesis.init_kwargs['channel_base'] == 128  # **kwargs are flattened


def test_bad_arguments_raise_one_clear_sentence():
    with pytest.raises(ValueError, match='img_resolution=24'):
        tiny_generator(img_resolution=24)
    with pytest.raises(ValueError, match="architecture='unet'"):
        tiny_discriminator(architecture='unet')
    with pytest.raises(ValueError, match=r'z has shape \[2, 5\], expected \[\*, 8\]'):
        tiny_generator()(torch.randn([2, 5]), None)
    with pytest.raises(ValueError, match='w_avg_beta=None'):
        stylegan2.MappingNetwork(4, 0, 4, num_ws=2, w_avg_beta=None)(torch.randn([1, 4]), None, truncation_psi=0.5)
