"""TensorFlow-era network pickles (the NVlabs StyleGAN2 release, `stylegan2-ffhq-config-f.pkl` and
the rest, and the TensorFlow StyleGAN2-ADA), converted by variable name into this project's
StyleGAN2 networks without TensorFlow and without running code from the file.

Such a pickle holds `(G, D, Gs)`, or `Gs` alone, each a `dnnlib.tflib.network.Network` pickled by
its `__getstate__`: {'version', 'name', 'static_kwargs', 'components', 'build_module_src',
'build_func_name', 'variables': [(name, ndarray), ...]}. The original's `__setstate__` execs
`build_module_src`; `stylegan.legacy` reads it into an inert `TFNetwork` record instead, and this
module maps the records' variables onto `stylegan2.Generator` / `stylegan2.Discriminator`, with the
names, layouts and constructor defaults of the StyleGAN2-ADA release's converter (which gives
networks with that release's rules, `semantics='sg2ada'`):

    TF dense weight [in, out]            -> [out, in]                  (transpose)
    TF conv weight [kh, kw, in, out]     -> [out, in, kh, kw]          (transpose 3, 2, 0, 1)
    TF up-sampling conv (Conv0_up, Skip) -> flipped in kh and kw first: TF runs it as a transposed
                                            convolution, which flips the kernel
    TF mod_bias                          -> affine.bias = mod_bias + 1 (TF adds the 1 at run time)
    TF const [1, C, 4, 4] -> [C, 4, 4];  TF noise{i} [1, 1, R, R] -> noise_const [R, R]

StyleGAN (v1) pickles are refused: their generator normalises activations with AdaIN and adds
per-channel noise, which this project's StyleGAN2 layers (weight demodulation) cannot compute; the
StyleGAN2-ADA converter refuses them too, as it does configs A-D (progressive growing).
"""
import re

import numpy as np
import torch

from stylegan import networks
from stylegan.legacy import NetworkFileError, TFNetwork
from stylegan.safeload import check_network_args, shapes_without_storage

TF_NETWORK_KEYS = ('G', 'D', 'G_ema')  # the order of the (G, D, Gs) tuple
MIN_TF_VERSION = 4                     # StyleGAN2 writes 4, TensorFlow StyleGAN2-ADA 5; StyleGAN v1 3
MAX_COMPONENT_DEPTH = 4                # G -> mapping/synthesis is one level

# Static kwargs of the TF networks that do not change the weights or the computation of a network
# (run-time defaults of the TF graph), accepted and ignored as the converter does.
_IGNORED_KWARGS = ('truncation_psi', 'truncation_cutoff', 'truncation_psi_val', 'truncation_cutoff_val',
                   'style_mixing_prob', 'structure', 'conditioning', 'fused_modconv')


def tf_network_records(data, path):
    """{'G', 'D', 'G_ema'} (or only 'G_ema' for a lone Gs) -> checkpoint records (architecture,
    init_kwargs, state_dict) for `stylegan.checkpoint.build_network`. Raises `NetworkFileError`."""
    named = dict(zip(TF_NETWORK_KEYS, data)) if isinstance(data, tuple) else {'G_ema': data}
    records = {}
    for key, net in named.items():
        what = f"{key} in '{path}'"
        variables = tf_variables(net, what)
        _check_version(net, variables, what)
        convert = _convert_discriminator if key == 'D' else _convert_generator
        records[key] = convert(dict(net.state.get('static_kwargs') or {}), variables, what)
    return records


def _check_version(net, variables, what):
    version = net.state.get('version')
    func = str(net.state.get('build_func_name'))
    # StyleGAN's G_style / G_synthesis / D_basic; its AdaIN layers hold StyleMod variables.
    if func.endswith(('G_style', 'G_synthesis', 'D_basic')) or any('/StyleMod/' in name for name in variables):
        raise NetworkFileError(
            f"{what} is a StyleGAN (v1) TensorFlow network ({func}, version {version}), whose AdaIN layers "
            f"this project's StyleGAN2 networks cannot represent; convert StyleGAN2 TensorFlow pickles only")
    if not isinstance(version, int) or version < MIN_TF_VERSION:
        raise NetworkFileError(
            f"{what} is a TensorFlow network of version {version!r}; this project converts the StyleGAN2 "
            f"ones (version {MIN_TF_VERSION} or later)")


def tf_variables(net, what, prefix='', depth=0):
    """{'synthesis/8x8/Conv0_up/weight': float32 ndarray, ...}: the variables of `net` and of its
    components, named by path as the TF graph scopes them."""
    if depth > MAX_COMPONENT_DEPTH:
        raise NetworkFileError(f'{what} nests its TensorFlow components deeper than {MAX_COMPONENT_DEPTH} levels')
    result = {}
    for entry in net.state.get('variables') or ():
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], (np.ndarray, np.generic))):
            raise NetworkFileError(f'{what} has a TensorFlow variable that is not a (name, numpy array) pair')
        result[prefix + entry[0]] = np.asarray(entry[1], dtype=np.float32)
    for name, component in (net.state.get('components') or {}).items():
        if not isinstance(component, TFNetwork):
            raise NetworkFileError(f"{what} has a component '{name}' that is not a TensorFlow network")
        result.update(tf_variables(component, what, f'{prefix}{name}/', depth + 1))
    return result


class _KwargReader:
    """Reads TF static kwargs with the converter's defaults and remembers which it used."""

    def __init__(self, static_kwargs, what):
        self.static_kwargs, self.what, self.used = static_kwargs, what, set(_IGNORED_KWARGS)

    def __call__(self, name, default=None, none=None):
        self.used.add(name)
        value = self.static_kwargs.get(name, default)
        return none if value is None else value

    def check_all_used(self):
        unknown = sorted(set(self.static_kwargs) - self.used)
        if unknown:
            raise NetworkFileError(f"{self.what} has TensorFlow arguments {unknown} that this converter does not "
                                   f"know (StyleGAN2 configs E/F are converted), so it would compute something else")


def _dense(array):
    return array.T                                   # [in, out] -> [out, in]


def _conv(array):
    return array.transpose(3, 2, 0, 1)               # [kh, kw, in, out] -> [out, in, kh, kw]


def _conv_flipped(array):
    return array[::-1, ::-1].transpose(3, 2, 0, 1)   # transposed-convolution kernel, flipped


def _scope(match):
    return f'{match.group(1)}x{match.group(1)}'  # 'b64...' -> TF scope '64x64'


def _generator_rules():
    """(regex over this project's state_dict keys, function(match, variables) -> array), in order."""
    r = _scope
    def conv_rules(layer, tf_layer, noise_index, conv):
        return [
            (rf'synthesis\.b(\d+)\.{layer}\.weight', lambda m, v: conv(v[f'synthesis/{r(m)}/{tf_layer(m)}/weight'])),
            (rf'synthesis\.b(\d+)\.{layer}\.bias', lambda m, v: v[f'synthesis/{r(m)}/{tf_layer(m)}/bias']),
            (rf'synthesis\.b(\d+)\.{layer}\.noise_strength',
             lambda m, v: v[f'synthesis/{r(m)}/{tf_layer(m)}/noise_strength']),
            (rf'synthesis\.b(\d+)\.{layer}\.noise_const', lambda m, v: v[f'synthesis/noise{noise_index(m)}'][0, 0]),
            (rf'synthesis\.b(\d+)\.{layer}\.affine\.weight',
             lambda m, v: _dense(v[f'synthesis/{r(m)}/{tf_layer(m)}/mod_weight'])),
            (rf'synthesis\.b(\d+)\.{layer}\.affine\.bias',
             lambda m, v: v[f'synthesis/{r(m)}/{tf_layer(m)}/mod_bias'] + 1),
        ]
    log2 = lambda m: int(np.log2(int(m.group(1))))
    return [
        (r'mapping\.w_avg', lambda m, v: v['dlatent_avg']),
        (r'mapping\.embed\.weight', lambda m, v: _dense(v['mapping/LabelEmbed/weight'])),
        (r'mapping\.embed\.bias', lambda m, v: v['mapping/LabelEmbed/bias']),
        (r'mapping\.fc(\d+)\.weight', lambda m, v: _dense(v[f'mapping/Dense{m.group(1)}/weight'])),
        (r'mapping\.fc(\d+)\.bias', lambda m, v: v[f'mapping/Dense{m.group(1)}/bias']),
        (r'synthesis\.b4\.const', lambda m, v: v['synthesis/4x4/Const/const'][0]),
        # 4x4 has one conv ('Conv', noise0); from 8x8 on, 'Conv0_up' (noise 2*log2(R)-5) and 'Conv1'.
        *conv_rules('conv1', lambda m: 'Conv' if m.group(1) == '4' else 'Conv1',
                    lambda m: 0 if m.group(1) == '4' else 2 * log2(m) - 4, _conv),
        *conv_rules('conv0', lambda m: 'Conv0_up', lambda m: 2 * log2(m) - 5, _conv_flipped),
        (r'synthesis\.b(\d+)\.torgb\.weight', lambda m, v: _conv(v[f'synthesis/{r(m)}/ToRGB/weight'])),
        (r'synthesis\.b(\d+)\.torgb\.bias', lambda m, v: v[f'synthesis/{r(m)}/ToRGB/bias']),
        (r'synthesis\.b(\d+)\.torgb\.affine\.weight', lambda m, v: _dense(v[f'synthesis/{r(m)}/ToRGB/mod_weight'])),
        (r'synthesis\.b(\d+)\.torgb\.affine\.bias', lambda m, v: v[f'synthesis/{r(m)}/ToRGB/mod_bias'] + 1),
        (r'synthesis\.b(\d+)\.skip\.weight', lambda m, v: _conv_flipped(v[f'synthesis/{r(m)}/Skip/weight'])),
    ]


def _discriminator_rules():
    r = _scope
    return [
        (r'b(\d+)\.fromrgb\.weight', lambda m, v: _conv(v[f'{r(m)}/FromRGB/weight'])),
        (r'b(\d+)\.fromrgb\.bias', lambda m, v: v[f'{r(m)}/FromRGB/bias']),
        (r'b(\d+)\.conv0\.weight', lambda m, v: _conv(v[f'{r(m)}/Conv0/weight'])),
        (r'b(\d+)\.conv0\.bias', lambda m, v: v[f'{r(m)}/Conv0/bias']),
        # The down-sampling conv is a plain correlation in TF too: no flip.
        (r'b(\d+)\.conv1\.weight', lambda m, v: _conv(v[f'{r(m)}/Conv1_down/weight'])),
        (r'b(\d+)\.conv1\.bias', lambda m, v: v[f'{r(m)}/Conv1_down/bias']),
        (r'b(\d+)\.skip\.weight', lambda m, v: _conv(v[f'{r(m)}/Skip/weight'])),
        (r'mapping\.embed\.weight', lambda m, v: _dense(v['LabelEmbed/weight'])),
        (r'mapping\.embed\.bias', lambda m, v: v['LabelEmbed/bias']),
        (r'mapping\.fc(\d+)\.weight', lambda m, v: _dense(v[f'Mapping{m.group(1)}/weight'])),
        (r'mapping\.fc(\d+)\.bias', lambda m, v: v[f'Mapping{m.group(1)}/bias']),
        (r'b4\.conv\.weight', lambda m, v: _conv(v['4x4/Conv/weight'])),
        (r'b4\.conv\.bias', lambda m, v: v['4x4/Conv/bias']),
        (r'b4\.fc\.weight', lambda m, v: _dense(v['4x4/Dense0/weight'])),
        (r'b4\.fc\.bias', lambda m, v: v['4x4/Dense0/bias']),
        (r'b4\.out\.weight', lambda m, v: _dense(v['Output/weight'])),
        (r'b4\.out\.bias', lambda m, v: v['Output/bias']),
    ]


def _generator_kwargs(kwarg):
    return dict(
        z_dim=kwarg('latent_size', 512), c_dim=kwarg('label_size', 0), w_dim=kwarg('dlatent_size', 512),
        img_resolution=kwarg('resolution', 1024), img_channels=kwarg('num_channels', 3),
        mapping_kwargs=dict(
            num_layers=kwarg('mapping_layers', 8), embed_features=kwarg('label_fmaps'),
            layer_features=kwarg('mapping_fmaps'), activation=kwarg('mapping_nonlinearity', 'lrelu'),
            lr_multiplier=kwarg('mapping_lrmul', 0.01),
            # StyleGAN2 calls it dlatent_avg_beta, TF StyleGAN2-ADA w_avg_beta; None (no tracking) = 1.
            w_avg_beta=kwarg('w_avg_beta', kwarg('dlatent_avg_beta', 0.995), none=1)),
        # TF counts feature maps as fmap_base / 2^(log2(R) - 1), i.e. (2 * fmap_base) / R.
        channel_base=kwarg('fmap_base', 16384) * 2, channel_max=kwarg('fmap_max', 512),
        num_fp16_res=kwarg('num_fp16_res', 0), conv_clamp=kwarg('conv_clamp'),
        architecture=kwarg('architecture', 'skip'), resample_filter=kwarg('resample_kernel', [1, 3, 3, 1]),
        use_noise=kwarg('use_noise', True), activation=kwarg('nonlinearity', 'lrelu'))


def _discriminator_kwargs(kwarg):
    return dict(
        c_dim=kwarg('label_size', 0), img_resolution=kwarg('resolution', 1024), img_channels=kwarg('num_channels', 3),
        architecture=kwarg('architecture', 'resnet'), channel_base=kwarg('fmap_base', 16384) * 2,
        channel_max=kwarg('fmap_max', 512), num_fp16_res=kwarg('num_fp16_res', 0), conv_clamp=kwarg('conv_clamp'),
        cmap_dim=kwarg('mapping_fmaps'),
        block_kwargs=dict(activation=kwarg('nonlinearity', 'lrelu'), freeze_layers=kwarg('freeze_layers', 0),
                          resample_filter=kwarg('resample_kernel', [1, 3, 3, 1])),
        mapping_kwargs=dict(num_layers=kwarg('mapping_layers', 0), embed_features=kwarg('mapping_fmaps'),
                            layer_features=kwarg('mapping_fmaps'), activation=kwarg('nonlinearity', 'lrelu'),
                            lr_multiplier=kwarg('mapping_lrmul', 0.1)),
        # The converter leaves mbstd_group_size None (whole minibatch) when the file does not give it.
        epilogue_kwargs=dict(mbstd_group_size=kwarg('mbstd_group_size'), mbstd_num_channels=kwarg('mbstd_num_features', 1),
                             activation=kwarg('nonlinearity', 'lrelu')))


def _refuse_progressive(variables, scope, what):
    # Configs A-D grow progressively: one ToRGB/FromRGB per level of detail.
    if any(re.fullmatch(rf'(.*/)?{scope}_lod\d+/.*', name) for name in variables):
        raise NetworkFileError(f"{what} has {scope}_lod* layers (a progressive-growing StyleGAN2 config A-D), "
                               f"which the StyleGAN2-ADA converter and this project do not convert")


def _convert_generator(static_kwargs, variables, what):
    kwarg = _KwargReader(static_kwargs, what)
    kwargs = _generator_kwargs(kwarg)
    kwarg.check_all_used()
    _refuse_progressive(variables, 'ToRGB', what)
    if 'mapping/LabelConcat/weight' in variables:
        raise NetworkFileError(f"{what} concatenates labels to z (the original StyleGAN2's conditioning), which "
                               f"this project's label embedding cannot represent")
    return _record('stylegan2.Generator', kwargs, _generator_rules(), variables, what)


def _convert_discriminator(static_kwargs, variables, what):
    kwarg = _KwargReader(static_kwargs, what)
    kwargs = _discriminator_kwargs(kwarg)
    kwarg.check_all_used()
    _refuse_progressive(variables, 'FromRGB', what)
    return _record('stylegan2.Discriminator', kwargs, _discriminator_rules(), variables, what)


def _record(architecture, kwargs, rules, variables, what):
    """This project's checkpoint record {'architecture', 'init_kwargs', 'state_dict'} of one network,
    its weights converted from the TF variables by `rules`."""
    cls = networks.ARCHITECTURES[architecture]
    kwargs = dict(kwargs, semantics='sg2ada')  # the StyleGAN2-ADA converter builds that release's networks
    check_network_args(kwargs, what)
    expected = _built(lambda: shapes_without_storage(cls, kwargs), architecture, kwargs, what)  # no allocation
    state = {}
    for key, (shape, _dtype) in expected.items():
        rule = next(((match, fn) for match, fn in ((re.fullmatch(p, key), fn) for p, fn in rules) if match), None)
        if rule is None:
            if key.endswith('resample_filter'):
                continue  # made by the constructor, taken from a real build below
            raise NetworkFileError(f"{what}: this converter has no TensorFlow variable for {key} of {architecture}")
        try:
            value = np.array(rule[1](rule[0], variables), dtype=np.float32)  # a contiguous copy, 0-d kept
        except KeyError as missing:
            raise NetworkFileError(f"{what} has no TensorFlow variable {missing} for {key}, so it is not a "
                                   f"StyleGAN2 config E/F network of its arguments") from None
        if value.shape != shape:
            raise NetworkFileError(f"{what}: the TensorFlow variable for {key} converts to shape {value.shape}, "
                                   f"but {architecture} of its arguments needs {shape}")
        state[key] = torch.from_numpy(value)
    # Every other tensor now matches a variable the file holds, so a real build is as large as the file.
    built = _built(lambda: cls(**kwargs).state_dict(), architecture, kwargs, what)
    filters = {k: v for k, v in built.items() if k not in state}
    return {'architecture': architecture, 'init_kwargs': kwargs, 'state_dict': {**filters, **state}}


def _built(build, architecture, kwargs, what):
    try:
        return build()
    except (TypeError, ValueError, AssertionError, RuntimeError, ZeroDivisionError) as error:
        raise NetworkFileError(f"{what} cannot be built as {architecture} from its TensorFlow arguments "
                               f"{kwargs} ({type(error).__name__}: {error})") from None
