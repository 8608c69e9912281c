"""The two releases' rules for StyleGAN2 networks (`semantics`): a network from a StyleGAN2-ADA
pickle or an SG2-ADA preset moves w_avg, fuses the modulated convolution, uses float16 and fills
missing constructor arguments as that release; one from the StyleGAN3 release as that one."""
import copy
import pickle

import pytest
import torch

from conftest import DATA_DIR
from stylegan import load_network, save_network
from stylegan.networks import stylegan2, stylegan3
from stylegan.training.config import AUTO, PRESETS, DatasetInfo, TrainOptions, resolve_config
from stylegan.training.loss import StyleGAN2Loss
from test_fp16 import assert_release_dtype_rules, output_dtypes
from test_load_network import _FakeReleasePersistence

BETA = {'sg2ada': 0.995, 'sg3': 0.998}
SYNTHESIS = dict(channel_base=64, channel_max=16, num_fp16_res=0, conv_clamp=256)


def reference_generator():
    torch.manual_seed(0)
    G = stylegan2.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                            mapping_kwargs=dict(num_layers=2), **SYNTHESIS)
    G.mapping.w_avg.copy_(torch.randn([8]))  # a trained-looking running mean
    return G


def write_release_pickle(path, semantics, G, synthesis=SYNTHESIS, D_kwargs=None):
    """A pickle as the given release writes it, holding G's weights: the StyleGAN2-ADA release
    nests the synthesis arguments in one dict, the StyleGAN3 release passes them flat."""
    kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2))
    kwargs.update(dict(synthesis_kwargs=dict(synthesis)) if semantics == 'sg2ada' else synthesis)
    D_kwargs = D_kwargs or dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=16)
    D = stylegan2.Discriminator(**D_kwargs)
    with _FakeReleasePersistence() as release:
        path.write_bytes(pickle.dumps({'G': release.persistent(G, '', kwargs),
                                       'D': release.persistent(D, '', D_kwargs)}))
    return path


@pytest.fixture
def release_pickles(tmp_path):
    """{semantics: path} of an SG2-ADA-format and an SG3-format pickle of the same weights."""
    G = reference_generator()
    return {s: write_release_pickle(tmp_path / f'{s}.pkl', s, G) for s in ('sg2ada', 'sg3')}


def mean_w(mapping, z):
    """Batch mean of w, computed without touching any running average."""
    return copy.deepcopy(mapping).eval()(z, None)[:, 0].mean(dim=0)


def test_each_release_moves_w_avg_its_own_way_over_training_mode_calls(release_pickles):
    # (mapping keyword arguments, does w_avg move: SG2-ADA, SG3)
    calls = [({}, True, False),                          # a plain training-mode call
             ({'update_emas': True}, True, True),        # StyleGAN3's Dmain call
             ({'skip_w_avg_update': True}, False, False),  # StyleGAN2-ADA's style-mixing call
             ({'update_emas': False}, True, False),
             ({'update_emas': True}, True, True)]
    for semantics, path in release_pickles.items():
        G = load_network(path)['G'].train()
        assert G.semantics == semantics and G.mapping.w_avg_beta == BETA[semantics]
        expected = reference_generator().mapping.w_avg.clone()
        assert torch.equal(G.mapping.w_avg, expected)
        for kwargs, moves_sg2ada, moves_sg3 in calls:
            z = torch.randn([4, 8])
            if moves_sg2ada if semantics == 'sg2ada' else moves_sg3:
                expected = mean_w(G.mapping, z).lerp(expected, BETA[semantics])
            G.mapping(z, None, **kwargs)
            torch.testing.assert_close(G.mapping.w_avg, expected, rtol=0, atol=1e-6)
        G.eval()(torch.randn([4, 8]), None)  # an eval-mode G never moves it
        torch.testing.assert_close(G.mapping.w_avg, expected, rtol=0, atol=1e-6)


def test_the_loss_gives_each_semantics_its_w_avg_rule(release_pickles):
    # SG2-ADA: every training-mode mapping call of Gmain, Greg (half batch) and Dmain moves w_avg,
    # the style-mixing calls do not; StyleGAN3: only Dmain's.
    real, z, c = torch.rand([4, 3, 16, 16]) * 2 - 1, torch.randn([4, 8]), torch.zeros([4, 0])
    for semantics, path in release_pickles.items():
        nets = load_network(path)
        G, D = nets['G'].train().requires_grad_(True), nets['D'].train().requires_grad_(True)
        loss = StyleGAN2Loss(G, D, r1_gamma=1, style_mixing_prob=1, pl_weight=2)
        expected = G.mapping.w_avg.clone()
        for phase, batch, moves in [('Gmain', 4, semantics == 'sg2ada'), ('Greg', 2, semantics == 'sg2ada'),
                                    ('Dmain', 4, True)]:
            if moves:
                expected = mean_w(G.mapping, z[:batch]).lerp(expected, BETA[semantics])
            loss.accumulate_gradients(phase, real, c, z, c, gain=1, cur_nimg=0)
            torch.testing.assert_close(G.mapping.w_avg, expected, rtol=0, atol=1e-6, msg=f'{semantics} {phase}')


def test_missing_arguments_take_each_releases_defaults(tmp_path):
    G = reference_generator()
    bare = dict(channel_base=64, channel_max=16)  # no num_fp16_res, no conv_clamp
    for semantics, fp16_res, clamp in [('sg2ada', 0, None), ('sg3', 4, 256)]:
        nets = load_network(write_release_pickle(tmp_path / f'{semantics}.pkl', semantics, G, synthesis=bare))
        assert nets['G'].synthesis.num_fp16_res == fp16_res
        assert nets['G'].synthesis.b16.conv1.conv_clamp == clamp and nets['D'].b16.conv0.conv_clamp == clamp
        fp16_blocks = [res for res in (8, 16) if getattr(nets['D'], f'b{res}').use_fp16]
        assert fp16_blocks == ([] if fp16_res == 0 else [8, 16])
        assert nets['D'].semantics == semantics


def test_sg2ada_fixture_keeps_its_semantics_through_a_checkpoint(tmp_path):
    nets = load_network(DATA_DIR / 'sg2ada-sg2-32.pkl')
    assert nets['G_ema'].semantics == nets['D'].semantics == 'sg2ada'
    assert nets['G_ema'].mapping.w_avg_beta == 0.995
    save_network(tmp_path / 'net.pt', G=nets['G'], D=nets['D'], G_ema=nets['G_ema'])
    loaded = load_network(tmp_path / 'net.pt')
    assert loaded['G'].semantics == loaded['D'].semantics == loaded['G'].synthesis.b32.semantics == 'sg2ada'
    assert loaded['G'].mapping.w_avg_beta == 0.995 and loaded['G'].mapping.semantics == 'sg2ada'
    assert load_network(DATA_DIR / 'sg3repo-sg2-32.pkl')['G_ema'].semantics == 'sg3'


def fused_modconv_calls(monkeypatch, G, batch, **kwargs):
    """The fused_modconv value of every modulated convolution of one forward pass, in order."""
    calls = []

    def spy(*args, fused_modconv, **kw):
        calls.append(fused_modconv)
        return modulated_conv2d(*args, fused_modconv=fused_modconv, **kw)
    modulated_conv2d = stylegan2.modulated_conv2d
    monkeypatch.setattr(stylegan2, 'modulated_conv2d', spy)
    with torch.no_grad():
        G(torch.randn([batch, G.z_dim]), None, **kwargs)
    monkeypatch.setattr(stylegan2, 'modulated_conv2d', modulated_conv2d)
    return calls


def small_generator(semantics, **kwargs):
    return stylegan2.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=64,
                               channel_max=16, semantics=semantics, mapping_kwargs=dict(num_layers=2), **kwargs)


def test_sg2ada_fuses_only_for_inference_and_in_float16_only_for_one_sample(monkeypatch):
    G = small_generator('sg2ada', num_fp16_res=2)  # 4: float32; 8, 16: float16 (on the CPU too)
    # Modulated convs per block: b4 conv1 + toRGB, b8 and b16 conv0 + conv1 + toRGB.
    assert fused_modconv_calls(monkeypatch, G.train(), 2) == [False] * 8
    assert fused_modconv_calls(monkeypatch, G.eval(), 2) == [True] * 2 + [False] * 6
    assert fused_modconv_calls(monkeypatch, G.eval(), 1) == [True] * 8
    assert fused_modconv_calls(monkeypatch, small_generator('sg2ada').eval(), 2) == [True] * 8
    assert fused_modconv_calls(monkeypatch, G.train(), 2, fused_modconv=True) == [True] * 8  # explicit wins
    # StyleGAN3 semantics follows fused_modconv_default, in training too.
    assert fused_modconv_calls(monkeypatch, small_generator('sg3', num_fp16_res=2).train(), 2) == [True] * 8
    sg3_inference_only = small_generator('sg3', fused_modconv_default='inference_only')
    assert fused_modconv_calls(monkeypatch, sg3_inference_only.train(), 2) == [False] * 8


def test_sg2ada_blocks_run_float16_on_the_cpu_without_the_switch():
    torch.manual_seed(0)
    G = small_generator('sg2ada', num_fp16_res=2)
    D = stylegan2.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=16,
                                num_fp16_res=2, semantics='sg2ada')
    seen, img = output_dtypes(G, lambda: G(torch.randn([2, 8]), None, noise_mode='const'))
    assert_release_dtype_rules(G, seen, fp16_active=True)
    seen, _ = output_dtypes(D, lambda: D(img, None))
    assert_release_dtype_rules(D, seen, fp16_active=True)


@pytest.mark.parametrize('build, message', [
    (lambda: small_generator('sg4'), r"semantics='sg4' is not supported; use one of \['sg3', 'sg2ada'\]"),
    (lambda: small_generator('sg2ada', fused_modconv_default='inference_only'),
     r"fused_modconv_default='inference_only' is a StyleGAN3-release option; with semantics='sg2ada'"),
    (lambda: stylegan3.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, semantics='sg2ada'),
     r"semantics='sg2ada' is for StyleGAN2 generators; Generator comes from the StyleGAN3 release only"),
])
def test_bad_semantics_get_one_sentence(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_sg2ada_presets_build_sg2ada_networks():
    dataset = DatasetInfo(name='d', resolution=32, num_channels=3, label_dim=0, size=100)
    sg2ada_presets = [name for name, preset in PRESETS.items() if preset.release == 'StyleGAN2-ADA']
    assert {'paper256', 'paper512', 'paper1024', 'cifar'} <= set(sg2ada_presets)
    for cfg in [*PRESETS, AUTO]:  # auto: StyleGAN2-ADA's --cfg=auto
        options = TrainOptions(outdir='runs', data='d.zip', cfg=cfg, batch=32, gamma=1, batch_gpu=32, mbstd_group=4)
        config = resolve_config(options, dataset, run_dir='runs/x')
        semantics = 'sg2ada' if cfg in sg2ada_presets + [AUTO] else 'sg3'
        assert config.D_kwargs['semantics'] == semantics, cfg
        if config.generator == 'stylegan2':
            G = stylegan2.Generator(**config.G_kwargs)
            assert G.semantics == semantics and G.mapping.w_avg_beta == BETA[semantics], cfg
