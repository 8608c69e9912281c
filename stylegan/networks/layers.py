"""Building blocks shared by the StyleGAN2 and StyleGAN3 networks: equalised-learning-rate layers,
shape checks, pixel norm, spectral normalisation, and the `init_kwargs` recorder checkpoints rely on.

Equalised learning rate (ProGAN paper, sec. 4.1): parameters are stored at unit scale (`randn`)
and multiplied at run time by `weight_gain = lr_multiplier / sqrt(fan_in)`.
"""

import copy
import functools
import inspect

import numpy as np
import torch

from ops import bias_act, conv2d_resample, upfirdn2d

ARCHITECTURES = ('orig', 'skip', 'resnet')
NOISE_MODES = ('random', 'const', 'none')
DEFAULT_RESAMPLE_FILTER = (1, 3, 3, 1)
# Which release's rules a StyleGAN2 network follows where the two releases differ (w_avg update,
# fused modulated convolution, float16 off CUDA, constructor defaults): see stylegan2.Generator.
SEMANTICS = ('sg3', 'sg2ada')

# ------------------------------------------------------------------------------------------------
# Helpers shared by the modules below (and by the StyleGAN3 network file).


def keeps_init_kwargs(cls):
    """Class decorator: after `__init__`, store the arguments it was called with (positional ones by
    name, `**kwargs` flattened) as the plain dict `self.init_kwargs`, so `cls(**m.init_kwargs)`
    rebuilds an identical architecture."""
    original_init = cls.__init__
    signature = inspect.signature(original_init)

    @functools.wraps(original_init)
    def init(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        original_init(self, *args, **kwargs)
        recorded = {}
        for name, value in list(bound.arguments.items())[1:]:  # [1:] drops `self`
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                recorded.update(value)
            else:
                recorded[name] = value
        self.init_kwargs = copy.deepcopy(recorded)

    cls.__init__ = init
    return cls


def assert_shape(tensor, expected, name):
    """Raise a ValueError unless `tensor.shape` matches `expected` (None = any size)."""
    if tensor.ndim != len(expected) or any(e is not None and s != e for s, e in zip(tensor.shape, expected)):
        wanted = '[' + ', '.join('*' if e is None else str(e) for e in expected) + ']'
        raise ValueError(f'{name} has shape {list(tensor.shape)}, expected {wanted} (* = any size).')


def check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f'{name}={value!r} is not supported; use one of {list(choices)}.')


def block_dtype_and_format(use_fp16, channels_last, force_fp32, device, fp16_off_cuda=False):
    """Compute dtype and memory format of a block: float16 when `use_fp16` and not `force_fp32`.
    Off CUDA the StyleGAN3 release forces float32; `fp16_off_cuda=True` keeps float16 there (the
    StyleGAN2-ADA release has no device check, and tests run the float16 path on the CPU)."""
    if device.type != 'cuda' and not fp16_off_cuda:
        force_fp32 = True
    dtype = torch.float16 if use_fp16 and not force_fp32 else torch.float32
    memory_format = torch.channels_last if channels_last and not force_fp32 else torch.contiguous_format
    return dtype, memory_format


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Scale `x` to unit root-mean-square along `dim` (pixel norm; applied to z and label embeddings)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ------------------------------------------------------------------------------------------------
# Equalised-learning-rate layers.


@keeps_init_kwargs
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: y = act(x @ (W * lr_mult / sqrt(in)).T + b * lr_mult)."""

    def __init__(self,
        in_features,            # Number of input features.
        out_features,           # Number of output features.
        bias=True,              # Add a learned bias before the activation?
        activation='linear',    # Activation name understood by ops.bias_act: 'linear', 'lrelu', ...
        lr_multiplier=1,        # Learning-rate multiplier: parameters are stored divided by it.
        weight_init=1,          # Standard deviation of the effective initial weight (times sqrt(in)).
        bias_init=0,            # Initial bias: a scalar or one value per output feature.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        bias_values = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
        self.bias = torch.nn.Parameter(torch.from_numpy(bias_values / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        # [N, in_features] -> [N, out_features]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self):
        return f'in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}'


@keeps_init_kwargs
class Conv2dLayer(torch.nn.Module):
    """Convolution with equalised learning rate, optional FIR up/downsampling, bias, activation, clamp."""

    def __init__(self,
        in_channels,            # Number of input channels.
        out_channels,           # Number of output channels.
        kernel_size,            # Width and height of the (square) kernel.
        bias=True,              # Add a learned bias before the activation?
        activation='linear',    # Activation name understood by ops.bias_act.
        up=1,                   # Integer upsampling factor.
        down=1,                 # Integer downsampling factor.
        resample_filter=DEFAULT_RESAMPLE_FILTER,  # Low-pass FIR filter used when resampling.
        conv_clamp=None,        # Clamp the output to +-conv_clamp; None = no clamping.
        channels_last=False,    # Store the weight in channels_last memory format?
        trainable=True,         # False = weight and bias are buffers (Freeze-D).
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer('weight', weight)
            self.register_buffer('bias', bias)

    def forward(self, x, gain=1):
        # [N, in_channels, H, W] -> [N, out_channels, H * up / down, W * up / down]
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        flip_weight = (self.up == 1)  # equivalent either way; correlation is faster without upsampling
        x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=self.resample_filter, up=self.up,
                                            down=self.down, padding=self.padding, flip_weight=flip_weight)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, '
                f'activation={self.activation}, up={self.up}, down={self.down}')


def spectral_normalize_layers(module):
    """Put the weight of every Conv2dLayer and FullyConnectedLayer inside `module` through
    `torch.nn.utils.parametrizations.spectral_norm`, so its effective weight (conv weights
    flattened to [out, in*k*k]) has largest singular value 1.

    Composition with the equalised learning rate: the effective weight is normally
    `weight * weight_gain`, and sigma(g * W) = g * sigma(W), so normalising the effective weight
    equals normalising the stored parameter and dropping the constant gain. The parameter keeps its
    equalised init (randn / lr_multiplier), so an optimiser step on it moves the effective weight by
    about lr / sigma(weight) ~ lr * lr_multiplier / sqrt(fan), the role the gain played before.
    Biases, activation gains and clamps are unchanged.
    """
    for layer in module.modules():
        if isinstance(layer, (Conv2dLayer, FullyConnectedLayer)):
            torch.nn.utils.parametrizations.spectral_norm(layer, name='weight')
            layer.weight_gain = 1
