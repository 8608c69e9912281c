"""stylegan.load_network on TensorFlow-era pickles (StyleGAN2 `(G, D, Gs)` of `dnnlib.tflib.Network`),
written here in the TF layout from this project's networks: converted by name, the same numbers,
the known TF layouts, and nothing from the file runs."""
import contextlib
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from stylegan import NetworkFileError, load_network
from stylegan.networks import stylegan2

# A tiny StyleGAN2 config F in the TF release's argument names (fmap_base 32 = channel_base 64).
TF_G_KWARGS = dict(latent_size=8, dlatent_size=8, label_size=0, resolution=16, num_channels=3, mapping_layers=2,
                   fmap_base=32, fmap_max=16, architecture='skip', truncation_psi=0.5)
TF_D_KWARGS = dict(label_size=0, resolution=16, num_channels=3, fmap_base=32, fmap_max=16, mbstd_group_size=2)
SHARED = dict(img_resolution=16, img_channels=3, channel_base=64, channel_max=16, num_fp16_res=0, conv_clamp=None)


@contextlib.contextmanager
def fake_tflib():
    """Installs a `dnnlib.tflib.network.Network` that pickles its state as the TF release's does and,
    like it, execs `build_module_src` when unpickled. Yields the class."""
    names = ('dnnlib', 'dnnlib.tflib', 'dnnlib.tflib.network')
    saved = {name: sys.modules.get(name) for name in names}
    modules = {name: types.ModuleType(name) for name in names}

    class Network:
        def __init__(self, **state):
            self._state = state

        def __getstate__(self):
            return self._state

        def __setstate__(self, state):
            exec(state['build_module_src'], {})  # what tflib's Network.__setstate__ does
            self._state = state

    Network.__module__, Network.__qualname__ = 'dnnlib.tflib.network', 'Network'
    modules['dnnlib.tflib.network'].Network = Network
    sys.modules.update(modules)
    try:
        yield Network
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def tf_network(Network, name, variables, static_kwargs, components=None, source='', version=4, func=None):
    return Network(version=version, name=name, static_kwargs=dict(static_kwargs), components=dict(components or {}),
                   build_module_src=source, build_func_name=func or f'training.networks_stylegan2.{name}',
                   variables=[(k, np.asarray(v, dtype=np.float32)) for k, v in variables.items()])


def randomized(module, seed):
    """`module` with every parameter and buffer random, so each conversion rule matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not name.endswith('resample_filter'):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
    return module.eval()


def reference_networks(seed=0):
    G = stylegan2.Generator(z_dim=8, c_dim=0, w_dim=8, mapping_kwargs=dict(num_layers=2), **SHARED)
    D = stylegan2.Discriminator(c_dim=0, epilogue_kwargs=dict(mbstd_group_size=2), **SHARED)
    return randomized(G, seed), randomized(D, seed + 1)


# --- this project's weights written in the TF layout, independently of the converter --------------

def np_(tensor):
    return tensor.detach().numpy().astype(np.float32)


def tf_conv(weight, up=False):
    """[out, in, kh, kw] -> TF [kh, kw, in, out]; an up-sampling conv's TF kernel is flipped."""
    w = np_(weight).transpose(2, 3, 1, 0)
    return w[::-1, ::-1] if up else w


def tf_generator_variables(G):
    s = G.state_dict()
    mapping = {}
    for i in range(2):
        mapping[f'Dense{i}/weight'] = np_(s[f'mapping.fc{i}.weight']).T
        mapping[f'Dense{i}/bias'] = np_(s[f'mapping.fc{i}.bias'])
    synthesis = {'4x4/Const/const': np_(s['synthesis.b4.const'])[None]}
    noise_index = 0
    for res in (4, 8, 16):
        layers = [('conv1', 'Conv')] if res == 4 else [('conv0', 'Conv0_up'), ('conv1', 'Conv1')]
        for ours, theirs in layers:
            p, scope = f'synthesis.b{res}.{ours}.', f'{res}x{res}/{theirs}/'
            synthesis[scope + 'weight'] = tf_conv(s[p + 'weight'], up=(ours == 'conv0'))
            synthesis[scope + 'bias'] = np_(s[p + 'bias'])
            synthesis[scope + 'noise_strength'] = np_(s[p + 'noise_strength'])
            synthesis[scope + 'mod_weight'] = np_(s[p + 'affine.weight']).T
            synthesis[scope + 'mod_bias'] = np_(s[p + 'affine.bias']) - 1
            synthesis[f'noise{noise_index}'] = np_(s[p + 'noise_const'])[None, None]
            noise_index += 1
        p, scope = f'synthesis.b{res}.torgb.', f'{res}x{res}/ToRGB/'
        synthesis[scope + 'weight'] = tf_conv(s[p + 'weight'])
        synthesis[scope + 'bias'] = np_(s[p + 'bias'])
        synthesis[scope + 'mod_weight'] = np_(s[p + 'affine.weight']).T
        synthesis[scope + 'mod_bias'] = np_(s[p + 'affine.bias']) - 1
    top = {'lod': np.float32(0), 'dlatent_avg': np_(s['mapping.w_avg'])}
    return top, mapping, synthesis


def tf_discriminator_variables(D):
    s = D.state_dict()
    tf = {'16x16/FromRGB/weight': tf_conv(s['b16.fromrgb.weight']), '16x16/FromRGB/bias': np_(s['b16.fromrgb.bias'])}
    for res in (16, 8):
        tf[f'{res}x{res}/Conv0/weight'] = tf_conv(s[f'b{res}.conv0.weight'])
        tf[f'{res}x{res}/Conv0/bias'] = np_(s[f'b{res}.conv0.bias'])
        tf[f'{res}x{res}/Conv1_down/weight'] = tf_conv(s[f'b{res}.conv1.weight'])
        tf[f'{res}x{res}/Conv1_down/bias'] = np_(s[f'b{res}.conv1.bias'])
        tf[f'{res}x{res}/Skip/weight'] = tf_conv(s[f'b{res}.skip.weight'])
    tf.update({'4x4/Conv/weight': tf_conv(s['b4.conv.weight']), '4x4/Conv/bias': np_(s['b4.conv.bias']),
               '4x4/Dense0/weight': np_(s['b4.fc.weight']).T, '4x4/Dense0/bias': np_(s['b4.fc.bias']),
               'Output/weight': np_(s['b4.out.weight']).T, 'Output/bias': np_(s['b4.out.bias'])})
    return tf


def tf_generator(Network, G, name='G', source='', **kwargs):
    top, mapping, synthesis = tf_generator_variables(G)
    components = {'mapping': tf_network(Network, 'G_mapping', mapping, {}, source=source),
                  'synthesis': tf_network(Network, 'G_synthesis', synthesis, {}, source=source)}
    return tf_network(Network, name, top, dict(TF_G_KWARGS, **kwargs), components, source=source, func='G_main')


def write_tf_pickle(path, G, D, source='', gs_only=False, **g_kwargs):
    with fake_tflib() as Network:
        Gs = tf_generator(Network, G, 'Gs', source, **g_kwargs)
        data = Gs if gs_only else (tf_generator(Network, G, 'G', source, **g_kwargs),
                                   tf_network(Network, 'D', tf_discriminator_variables(D), TF_D_KWARGS,
                                              source=source, func='D_stylegan2'), Gs)
        path.write_bytes(pickle.dumps(data, protocol=3))  # TF-era Python 3.6 wrote protocol 3


# --- tests ---------------------------------------------------------------------------------------

def test_tf_pickle_converts_to_networks_that_compute_the_same(tmp_path):
    G, D = reference_networks()
    write_tf_pickle(tmp_path / 'stylegan2-tiny-config-f.pkl', G, D)
    nets = load_network(tmp_path / 'stylegan2-tiny-config-f.pkl')
    assert set(nets) == {'G', 'D', 'G_ema', 'augment_p', 'training_set_kwargs'} and nets['augment_p'] is None
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    for key in ('G', 'G_ema'):
        assert type(nets[key]) is stylegan2.Generator
        for psi in (1, 0.7):  # 0.7 reads w_avg, which comes from TF's dlatent_avg
            out = nets[key](z, None, truncation_psi=psi, noise_mode='const')
            ref = G(z, None, truncation_psi=psi, noise_mode='const')
            assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5), (key, psi, (out - ref).abs().max())
    img = G(z, None, noise_mode='const')
    assert torch.allclose(nets['D'](img, None), D(img, None), atol=1e-5, rtol=1e-5)
    # The StyleGAN2-ADA converter's defaults: TF's w_avg_beta 0.995, float32, no clamping; D's
    # mbstd group from the file.
    assert nets['G_ema'].mapping.w_avg_beta == 0.995 and nets['G_ema'].init_kwargs['num_fp16_res'] == 0
    assert nets['D'].b4.mbstd.group_size == 2 and nets['D'].init_kwargs['conv_clamp'] is None
    assert nets['G_ema'].semantics == nets['G'].semantics == nets['D'].init_kwargs['semantics'] == 'sg2ada'


def test_known_tf_layouts_land_where_they_belong(tmp_path):
    G, D = reference_networks(seed=3)
    write_tf_pickle(tmp_path / 'net.pkl', G, D)
    with fake_tflib() as Network:
        top, mapping, synthesis = tf_generator_variables(G)
    converted = load_network(tmp_path / 'net.pkl')['G_ema']
    # Dense: TF computes x @ W[in, out] (times the equalised-lr gain lrmul/sqrt(in)), then lrelu * sqrt(2).
    x = torch.randn(5, 8)
    gain, lrmul = 0.01 / np.sqrt(8), 0.01
    tf_dense = x @ torch.from_numpy(mapping['Dense0/weight']) * gain + torch.from_numpy(mapping['Dense0/bias']) * lrmul
    tf_dense = torch.nn.functional.leaky_relu(tf_dense, 0.2) * np.sqrt(2)
    assert torch.allclose(converted.mapping.fc0(x), tf_dense, atol=1e-6)
    # Conv [kh, kw, in, out] -> [out, in, kh, kw]; Conv0_up is flipped in kh and kw as well.
    conv1, conv0 = synthesis['8x8/Conv1/weight'], synthesis['8x8/Conv0_up/weight']
    assert converted.synthesis.b8.conv1.weight[2, 1, 0, 2].item() == conv1[0, 2, 1, 2]
    assert converted.synthesis.b8.conv1.weight[2, 1, 2, 0].item() == conv1[2, 0, 1, 2]
    assert converted.synthesis.b8.conv0.weight[3, 1, 0, 2].item() == conv0[2, 0, 1, 3]
    # mod_bias + 1 (TF adds the 1 at run time); const and noise lose their leading 1-dims.
    assert torch.allclose(converted.synthesis.b16.torgb.affine.bias,
                          torch.from_numpy(synthesis['16x16/ToRGB/mod_bias']) + 1)
    assert torch.equal(converted.synthesis.b8.conv0.noise_const, torch.from_numpy(synthesis['noise1'][0, 0]))
    assert torch.equal(converted.synthesis.b16.conv1.noise_const, torch.from_numpy(synthesis['noise4'][0, 0]))
    assert torch.equal(converted.mapping.w_avg, torch.from_numpy(top['dlatent_avg']))


def test_build_module_src_never_runs(tmp_path):
    marker = tmp_path / 'marker'
    source = f"open({str(marker)!r}, 'w').write('build_module_src ran')\n"
    G, D = reference_networks()
    write_tf_pickle(tmp_path / 'trap.pkl', G, D, source=source)
    with fake_tflib():
        pickle.loads((tmp_path / 'trap.pkl').read_bytes())  # TensorFlow's own loader would run it: the trap is live
    assert marker.exists()
    marker.unlink()
    nets = load_network(tmp_path / 'trap.pkl')
    assert not marker.exists()
    z = torch.randn(2, 8)
    assert torch.allclose(nets['G_ema'](z, None, noise_mode='const'), G(z, None, noise_mode='const'), atol=1e-5)


def test_a_lone_gs_loads_as_g_ema(tmp_path):
    G, D = reference_networks()
    write_tf_pickle(tmp_path / 'gs.pkl', G, D, gs_only=True)
    nets = load_network(tmp_path / 'gs.pkl')
    assert 'G_ema' in nets and 'G' not in nets and 'D' not in nets


def test_stylegan_v1_is_refused_in_one_sentence(tmp_path):
    with fake_tflib() as Network:
        synthesis = tf_network(Network, 'G_synthesis', {'4x4/Const/StyleMod/weight': np.zeros([512, 1024])}, {},
                               version=3, func='training.networks_stylegan.G_synthesis')
        Gs = tf_network(Network, 'Gs', {'dlatent_avg': np.zeros(512)}, {'resolution': 1024},
                        {'synthesis': synthesis}, version=3, func='training.networks_stylegan.G_style')
        (tmp_path / 'karras2019stylegan-ffhq-1024x1024.pkl').write_bytes(pickle.dumps((Gs, Gs, Gs), protocol=3))
    with pytest.raises(NetworkFileError, match=r'is a StyleGAN \(v1\) TensorFlow network .* cannot represent'):
        load_network(tmp_path / 'karras2019stylegan-ffhq-1024x1024.pkl')


@pytest.mark.parametrize('change, message', [
    (dict(g_kwargs=dict(fmap_decay=0.5)), r"TensorFlow arguments \['fmap_decay'\] that this converter does not know"),
    (dict(drop='synthesis/8x8/Conv0_up/mod_bias'),
     "has no TensorFlow variable 'synthesis/8x8/Conv0_up/mod_bias' for synthesis.b8.conv0.affine.bias"),
    (dict(rename=('synthesis/16x16/ToRGB/weight', 'synthesis/ToRGB_lod0/weight')), 'progressive-growing'),
    (dict(version=2), 'TensorFlow network of version 2'),
])
def test_tf_pickles_this_project_cannot_convert_are_refused(tmp_path, change, message):
    G, _D = reference_networks()
    with fake_tflib() as Network:
        top, mapping, synthesis = tf_generator_variables(G)
        synthesis = {f'synthesis/{k}': v for k, v in synthesis.items()}
        synthesis.pop(change.get('drop'), None)
        if 'rename' in change:
            old, new = change['rename']
            synthesis[new] = synthesis.pop(old)
        variables = {**top, **{f'mapping/{k}': v for k, v in mapping.items()}, **synthesis}
        Gs = tf_network(Network, 'Gs', variables, dict(TF_G_KWARGS, **change.get('g_kwargs', {})),
                        version=change.get('version', 4))
        (tmp_path / 'bad.pkl').write_bytes(pickle.dumps(Gs, protocol=3))
    with pytest.raises(NetworkFileError, match=message):
        load_network(tmp_path / 'bad.pkl')


def test_code_hidden_among_the_variables_is_refused(tmp_path):
    import os

    class Reduce:
        def __reduce__(self):
            return os.system, (f'touch {tmp_path / "marker"}',)
    with fake_tflib() as Network:
        Gs = tf_network(Network, 'Gs', {}, TF_G_KWARGS)
        Gs._state['variables'] = [('dlatent_avg', Reduce())]
        (tmp_path / 'evil.pkl').write_bytes(pickle.dumps(Gs, protocol=3))
    with pytest.raises(NetworkFileError, match="refusing to load it: it references 'posix.system'"):
        load_network(tmp_path / 'evil.pkl')
    assert not (tmp_path / 'marker').exists()


def test_a_tf_pickle_resumes_a_stylegan2_run(tmp_path):
    # Fine-tuning from a TensorFlow-era model: --resume takes the converted weights (tiny preset shapes).
    from stylegan.training import launch
    from stylegan.training.config import TrainOptions
    from stylegan.training.loop import build_run, resume
    from test_train_helpers import make_image_folder
    shapes = dict(img_resolution=16, img_channels=3, channel_base=1024, channel_max=64)
    G = randomized(stylegan2.Generator(z_dim=64, c_dim=0, w_dim=64, mapping_kwargs=dict(num_layers=2), **shapes), 5)
    D = randomized(stylegan2.Discriminator(c_dim=0, **shapes), 6)
    tf_sizes = dict(fmap_base=512, fmap_max=64)
    with fake_tflib() as Network:
        tf_nets = (tf_generator(Network, G, 'G', latent_size=64, dlatent_size=64, **tf_sizes),
                   tf_network(Network, 'D', tf_discriminator_variables(D), dict(TF_D_KWARGS, **tf_sizes)),
                   tf_generator(Network, G, 'Gs', latent_size=64, dlatent_size=64, **tf_sizes))
        (tmp_path / 'tf.pkl').write_bytes(pickle.dumps(tf_nets, protocol=3))
    folder = make_image_folder(tmp_path / 'faces', count=4, size=16)
    options = TrainOptions(outdir=str(tmp_path / 'runs'), cfg='tiny', data=str(folder), device='cpu', workers=0,
                           metrics=[], resume=str(tmp_path / 'tf.pkl'))
    config, _options = launch.prepare_training(options)
    run = build_run(config, rank=0, local_rank=0, options={})
    resume(run, config.resume)
    run.monitor.close()
    for key, reference in (('G', G), ('G_ema', G), ('D', D)):
        ours = getattr(run, key).state_dict()
        for name, value in reference.state_dict().items():
            assert torch.allclose(ours[name], value, rtol=0, atol=1e-6), (key, name)  # mod_bias - 1 + 1 rounds
