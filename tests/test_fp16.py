"""Mixed precision as in the releases: the `num_fp16_res` highest-resolution blocks run in float16
and stay float16 inside (no float32 tensor promotes them), the image and D's epilogue stay float32.

torch runs float16 convolutions on the CPU, so these tests exercise the float16 path there through
the forward option `fp16_off_cuda=True` (the StyleGAN3 release forces float32 off CUDA; networks
with `semantics='sg2ada'` need no option, that release has no device check)."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import DATA_DIR
from stylegan import load_network
from stylegan.networks.layers import Conv2dLayer
from stylegan.networks.stylegan2 import (Discriminator, DiscriminatorBlock, DiscriminatorEpilogue, Generator,
                                         SynthesisBlock, SynthesisLayer, ToRGBLayer)

BLOCKS = (SynthesisBlock, DiscriminatorBlock, DiscriminatorEpilogue)
LAYERS = (SynthesisLayer, ToRGBLayer, Conv2dLayer)


def relative_error(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def small_networks(architecture, num_fp16_res=2, **kwargs):
    # Resolutions 4..16: with num_fp16_res=2 the 8 and 16 blocks are float16, 4 is float32.
    common = dict(img_resolution=16, img_channels=3, channel_base=128, channel_max=16, num_fp16_res=num_fp16_res,
                  architecture=architecture, c_dim=0, **kwargs)
    torch.manual_seed(0)
    G = Generator(z_dim=8, w_dim=8, mapping_kwargs=dict(num_layers=2), **common)
    D = Discriminator(**common)
    with torch.no_grad():  # non-zero noise strengths, so the noise really is added
        for name, param in G.named_parameters():
            if name.endswith('noise_strength'):
                param.fill_(0.1)
    return G, D


def output_dtypes(net, run):
    """Run `run()` and return {name: dtypes of the outputs} of every block and layer of `net`."""
    seen, hooks = {}, []
    for name, module in net.named_modules():
        if isinstance(module, BLOCKS + LAYERS):
            def record(module, inputs, output, name=name):
                outputs = output if isinstance(output, tuple) else (output,)
                seen[name] = tuple(None if t is None else t.dtype for t in outputs)
            hooks.append(module.register_forward_hook(record))
    try:
        result = run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen, result


def owning_block(net, name):
    """The block (synthesis block, D block or epilogue) that module `name` belongs to."""
    parts = name.split('.')
    for end in range(len(parts), 0, -1):
        module = net.get_submodule('.'.join(parts[:end]))
        if isinstance(module, BLOCKS):
            return module
    raise AssertionError(f'{name} is in no block')


def assert_release_dtype_rules(net, seen, fp16_active):
    """The releases' rules: a block computes in float16 iff use_fp16 (and float16 is active); all
    its layers output that dtype; G's image is float32 after every toRGB; D's image follows the
    block; the epilogue is float32."""
    assert seen, 'no block or layer ran'
    for name, dtypes in seen.items():
        block = owning_block(net, name)
        dtype = torch.float16 if getattr(block, 'use_fp16', False) and fp16_active else torch.float32
        if isinstance(net.get_submodule(name), SynthesisBlock):
            assert dtypes[0] == dtype and dtypes[1] in (None, torch.float32), name  # img: None before toRGB
        elif isinstance(net.get_submodule(name), DiscriminatorBlock):
            assert dtypes[0] == dtype and dtypes[1] in (None, dtype), name
        else:
            assert dtypes == (dtype,), f'{name} outputs {dtypes[0]}, its block computes in {dtype}'


@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
@pytest.mark.parametrize('training', [False, True])  # eval: fused modconv; training: fused_modconv=False below
def test_fp16_blocks_stay_float16_in_G_and_D(architecture, training):
    G, D = small_networks(architecture)
    G.train(training)
    z = torch.randn([2, G.z_dim])
    noise_mode = 'random' if training else 'const'
    fused = False if training else None  # eval uses the default, fused
    seen, img = output_dtypes(G, lambda: G(z, None, noise_mode=noise_mode, fused_modconv=fused, fp16_off_cuda=True))
    assert_release_dtype_rules(G, seen, fp16_active=True)
    assert img.dtype == torch.float32
    assert any(dtypes[0] == torch.float16 for dtypes in seen.values())
    seen, logits = output_dtypes(D, lambda: D(img, None, fp16_off_cuda=True))
    assert_release_dtype_rules(D, seen, fp16_active=True)
    assert logits.dtype == torch.float32


class MixedPrecisionOps(TorchDispatchMode):
    """Records every aten op that reads float16 and float32 tensors together (a float32 bias,
    noise or scale that would promote float16 activations), except in-place ops that write into a
    float16 tensor: the releases' fused convolution adds its float32 noise that way, rounding once."""

    def __init__(self):
        super().__init__()
        self.mixed = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor) and t.ndim > 0]
        dtypes = {t.dtype for t in tensors}
        in_place_into_half = func._schema.name.endswith('_') and tensors and tensors[0].dtype == torch.float16
        if {torch.float16, torch.float32} <= dtypes and not in_place_into_half:
            self.mixed.append(f'{func} on {[(t.dtype, tuple(t.shape)) for t in tensors]}')
        return func(*args, **kwargs)


@pytest.mark.parametrize('architecture', ['skip', 'resnet'])
def test_no_float32_tensor_meets_a_float16_activation_forward_or_backward(architecture):
    G, D = small_networks(architecture)
    for training, fused in [(False, True), (True, False)]:
        G.train(training)
        with MixedPrecisionOps() as ops:
            img = G(torch.randn([2, G.z_dim]), None, noise_mode='random', fused_modconv=fused, fp16_off_cuda=True)
            D(img, None, fp16_off_cuda=True).sum().backward()
        assert ops.mixed == [], ops.mixed[:3]


def test_fp16_training_step_gives_finite_float32_gradients():
    G, D = small_networks('skip')
    G.train()
    img = G(torch.randn([2, G.z_dim]), None, fused_modconv=False, fp16_off_cuda=True)
    D(img, None, fp16_off_cuda=True).sum().backward()
    for net in (G, D):
        for name, param in net.named_parameters():
            assert param.grad.dtype == torch.float32 and torch.isfinite(param.grad).all(), name


def test_float16_is_off_the_cpu_unless_asked_and_force_fp32_wins():
    G, D = small_networks('resnet')
    z = torch.randn([2, G.z_dim])
    seen, img = output_dtypes(G, lambda: G(z, None, noise_mode='const'))  # StyleGAN3 rule: float32 off CUDA
    assert_release_dtype_rules(G, seen, fp16_active=False)
    seen, _ = output_dtypes(D, lambda: D(img, None))
    assert_release_dtype_rules(D, seen, fp16_active=False)
    seen, _ = output_dtypes(G, lambda: G(z, None, noise_mode='const', force_fp32=True, fp16_off_cuda=True))
    assert_release_dtype_rules(G, seen, fp16_active=False)


def rebuilt_with_fp16(net, num_fp16_res):
    """The same weights in a network whose `num_fp16_res` highest resolutions are float16."""
    fp16_net = type(net)(**dict(net.init_kwargs, num_fp16_res=num_fp16_res)).eval()
    fp16_net.load_state_dict(net.state_dict())
    return fp16_net


@pytest.mark.parametrize('name', ['sg3repo-sg2-32', 'sg2ada-sg2-32', 'sg3repo-sg3t-32', 'sg3repo-sg3r-32'])
def test_fp16_release_networks_match_the_fixtures_in_fp16_tolerance(name):
    # The fixtures were computed in float32; the float16 blocks (16 and 32 for StyleGAN2, every
    # layer above 8 samples per unit for StyleGAN3) move the result by a few 1e-4 relative.
    nets = load_network(DATA_DIR / f'{name}.pkl')
    expected = torch.load(DATA_DIR / f'{name}.expected.pt', weights_only=True)
    G_ema, D = rebuilt_with_fp16(nets['G_ema'], 2), rebuilt_with_fp16(nets['D'], 2)
    z, c = expected['z'], expected['c']
    with torch.no_grad():
        outputs = {
            'img_psi1': G_ema(z, c, noise_mode='const', fp16_off_cuda=True),
            'img_psi07': G_ema(z, c, truncation_psi=0.7, noise_mode='const', fp16_off_cuda=True),
            'd_logits': D(expected['img_psi1'], c, fp16_off_cuda=True),
        }
    for key, out in outputs.items():
        assert out.dtype == torch.float32, key
        assert 1e-5 < relative_error(out, expected[key]) < 5e-3, key  # > 1e-5: float16 really ran
