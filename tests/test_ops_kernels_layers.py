"""The fused kernels at the real geometries of StyleGAN2's and StyleGAN3's layers, on both
backends of tests/kernel_harness.py (the emulation on the CPU everywhere, the GPU where present),
at small channel counts.

StyleGAN3: every SynthesisLayer's filtered_lrelu (sizes, factors, padding, filters, gain, slope,
clamp) read off a generator built at 64x64 (-T: separable filters; -R: radial, i.e. full 2-D,
downsampling filters); 256x256 with --runslow. StyleGAN2: every upfirdn2d and bias_act call a
32x32 generator and discriminator make, recorded while they run and replayed.
"""
import pytest
import torch

from kernel_harness import DTYPES, backend, check_gradients  # noqa: F401 (fixture)
import ops.bias_act
import ops.upfirdn2d
from ops.bias_act import bias_act
from ops.filtered_lrelu import filtered_lrelu
from ops.upfirdn2d import upfirdn2d
from stylegan.networks import stylegan2, stylegan3


def stylegan3_layers(resolution, radial):
    """[(name, filtered_lrelu keyword arguments, input shape [1, C, H, W])] of a generator's
    synthesis layers, with at most 3 channels."""
    synthesis = stylegan3.SynthesisNetwork(w_dim=4, img_resolution=resolution, img_channels=3, channel_base=64,
                                           channel_max=2, use_radial_filters=radial)
    layers = []
    for name, layer in synthesis.named_children():
        if not isinstance(layer, stylegan3.SynthesisLayer):
            continue
        in_w, in_h = (int(s) + layer.conv_kernel - 1 for s in layer.in_size)
        args = dict(fu=layer.up_filter, fd=layer.down_filter, up=layer.up_factor, down=layer.down_factor,
                    padding=layer.padding, gain=1 if layer.is_torgb else 2 ** 0.5, slope=1 if layer.is_torgb else 0.2,
                    clamp=layer.conv_clamp)
        layers.append((name, args, [1, layer.out_channels, in_h, in_w]))
    return layers


def check_stylegan3_layers(backend, resolution, radial, dtype):
    layers = stylegan3_layers(resolution, radial)
    assert any(args['fd'] is not None and args['fd'].ndim == 2 for _, args, _ in layers) == radial  # radial: 2-D
    g = torch.Generator().manual_seed(resolution + radial)
    for name, args, shape in layers:
        x = torch.randn(shape, generator=g).to(backend.device, dtype).requires_grad_()
        b = torch.randn(shape[1:2], generator=g).to(backend.device, dtype).requires_grad_()
        device_args = {**args, **{k: args[k].to(backend.device) for k in ('fu', 'fd') if args[k] is not None}}
        check_gradients(lambda x, b: filtered_lrelu(x, b=b, **device_args),
                        lambda x, b: filtered_lrelu(x, b=b, impl='ref', **args), [x, b], dtype,
                        second_order=False, what=f'StyleGAN3 {resolution} {name}')


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize('radial', [False, True], ids=['sg3-t', 'sg3-r'])
def test_stylegan3_layers_at_64(backend, radial, dtype):
    check_stylegan3_layers(backend, 64, radial, dtype)


@pytest.mark.slow
@pytest.mark.parametrize('radial', [False, True], ids=['sg3-t', 'sg3-r'])
def test_stylegan3_layers_at_256(backend, radial):
    check_stylegan3_layers(backend, 256, radial, torch.float16)


@pytest.fixture(scope='module')
def stylegan2_calls():
    """Arguments of every upfirdn2d and bias_act call of a 32x32 StyleGAN2 G (skip) and D
    (resnet) forward pass, deduplicated: [(op, args, kwargs)] with tensors as shapes/filters."""
    calls = {}

    def recorder(op, function):
        def record(x, *args, **kwargs):
            key = (op, tuple(x.shape), repr([(a.shape, a.sum().item()) if torch.is_tensor(a) else a for a in args]),
                   repr(sorted((k, (v.shape, v.sum().item()) if torch.is_tensor(v) else v) for k, v in kwargs.items()
                               if k != 'impl')))
            calls.setdefault(key, (op, tuple(x.shape), args, {k: v for k, v in kwargs.items() if k != 'impl'}))
            return function(x, *args, **kwargs)
        return record

    G = stylegan2.Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=32, img_channels=3, channel_base=64,
                            channel_max=4)
    D = stylegan2.Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=64, channel_max=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ops.upfirdn2d, 'upfirdn2d', recorder('upfirdn2d', ops.upfirdn2d.upfirdn2d))
        patch.setattr(ops.bias_act, 'bias_act', recorder('bias_act', ops.bias_act.bias_act))
        with torch.no_grad():
            D(G(torch.randn([1, 4]), None), None)
    return list(calls.values())


def test_stylegan2_generator_and_discriminator_calls(backend, stylegan2_calls):
    ops_seen = {op for op, *_ in stylegan2_calls}
    assert ops_seen == {'upfirdn2d', 'bias_act'}, ops_seen
    factors = {(kw.get('up', 1), kw.get('down', 1)) for op, _, _, kw in stylegan2_calls if op == 'upfirdn2d'}
    assert {(2, 1), (1, 2), (1, 1)} <= factors, factors  # ToRGB upsampling, D's downsampling, conv padding
    g = torch.Generator().manual_seed(2)
    for dtype in DTYPES:
        for op, shape, args, kwargs in stylegan2_calls:
            shape = (1, min(shape[1], 3), *shape[2:]) if len(shape) == 4 else (min(shape[0], 2), *shape[1:])
            x = torch.randn(shape, generator=g).to(backend.device, dtype).requires_grad_()
            if op == 'upfirdn2d':
                f = args[0] if args else kwargs.get('f')
                extra = {k: v for k, v in kwargs.items() if k != 'f'}
                check_gradients(lambda x: upfirdn2d(x, None if f is None else f.to(x.device), **extra),
                                lambda x: upfirdn2d(x, f, impl='ref', **extra), [x], dtype,
                                what=f'StyleGAN2 upfirdn2d {shape} {extra}')
            else:
                dim = kwargs.get('dim', 1)
                b = torch.randn([shape[dim]], generator=g).to(backend.device, dtype).requires_grad_()
                extra = {k: v for k, v in kwargs.items() if k not in ('b', 'dim')}
                check_gradients(lambda x, b: bias_act(x, b, dim=dim, **extra),
                                lambda x, b: bias_act(x, b, dim=dim, impl='ref', **extra), [x, b], dtype,
                                what=f'StyleGAN2 bias_act {shape} {extra}')
