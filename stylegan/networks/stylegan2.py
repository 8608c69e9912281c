"""StyleGAN2 generator and discriminator ("Analyzing and Improving the Image Quality of StyleGAN",
Karras et al. 2020), configs E/F, as in the official StyleGAN2-ADA and StyleGAN3 releases.

Constructor arguments, defaults, forward signatures and `state_dict` keys follow the StyleGAN3
release's `training/networks_stylegan2.py`, so a release state_dict loads with `strict=True` and
the networks compute the same numbers. Every module keeps the keyword arguments it was built with
in `init_kwargs`, so a checkpoint can rebuild it by calling the class.

The shared layers (equalised learning rate, spectral norm) live in `layers.py`.

Mixed precision: blocks among the `num_fp16_res` highest resolutions run in float16 unless
`force_fp32`; off CUDA they run in float32 as in the StyleGAN3 release, unless the network follows the
StyleGAN2-ADA release (`semantics='sg2ada'`, no device check) or the forward call passes
`fp16_off_cuda=True` (how the tests run the float16 path on the CPU). Inside a float16 block every
activation stays float16; biases, noise and weights are cast (or added in place) to it, and only
the toRGB output is turned to float32 before it joins the float32 image.

Release semantics (`semantics`, a constructor argument of Generator, MappingNetwork,
SynthesisNetwork/Block and Discriminator, kept in `init_kwargs`):
  'sg3'    (default) the StyleGAN3 release: w_avg moves with beta 0.998 only when the mapping is
           called with `update_emas=True` (the loss does so in Dmain); the modulated convolution is
           fused per `fused_modconv_default`; float16 only on CUDA.
  'sg2ada' the StyleGAN2-ADA release: w_avg moves with beta 0.995 on every training-mode mapping
           call without `skip_w_avg_update=True`; fused only in eval mode, and in float16 blocks only
           for a batch of one; float16 on every device; missing constructor arguments take that
           release's defaults (`SG2ADA_DEFAULTS`).
"""

import numpy as np
import torch

from ops import bias_act, upfirdn2d
from ops.modulated_conv2d import modulated_conv2d
from stylegan.networks.layers import (ARCHITECTURES, DEFAULT_RESAMPLE_FILTER, NOISE_MODES, SEMANTICS, Conv2dLayer,
                                      FullyConnectedLayer, block_dtype_and_format, check_choice, assert_shape,
                                      keeps_init_kwargs, normalize_2nd_moment, spectral_normalize_layers)

# The StyleGAN2-ADA release's constructor defaults where they differ from the StyleGAN3 release's
# (this project's). `Generator(semantics='sg2ada')` fills missing mapping/synthesis arguments with
# them; the Discriminator's signature keeps one set of defaults, so the release-pickle loader fills
# the 'discriminator' ones for an SG2-ADA D.
SG2ADA_DEFAULTS = {
    'mapping': dict(w_avg_beta=0.995),
    'synthesis': dict(num_fp16_res=0, conv_clamp=None),
    'discriminator': dict(num_fp16_res=0, conv_clamp=None),
}

# ------------------------------------------------------------------------------------------------
# Mapping network: z (and label c) -> w, broadcast to num_ws, with truncation.


@keeps_init_kwargs
class MappingNetwork(torch.nn.Module):
    def __init__(self,
        z_dim,                  # Latent z dimensionality; 0 = no latent (D's label mapping).
        c_dim,                  # Label c dimensionality; 0 = unconditional.
        w_dim,                  # Intermediate latent w dimensionality.
        num_ws,                 # Number of copies of w to output; None = return [N, w_dim].
        num_layers=8,           # Number of fully connected layers.
        embed_features=None,    # Label embedding size; None = w_dim.
        layer_features=None,    # Hidden layer size; None = w_dim.
        activation='lrelu',     # Activation of the hidden layers.
        lr_multiplier=0.01,     # Learning-rate multiplier of the layers.
        w_avg_beta=0.998,       # Decay of the running mean of w; None = do not track it.
        semantics='sg3',        # When w_avg moves: 'sg3' or 'sg2ada' (see the module docstring).
    ):
        check_choice(semantics, SEMANTICS, 'semantics')
        super().__init__()
        self.semantics = semantics
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f'fc{idx}', FullyConnectedLayer(features[idx], features[idx + 1],
                                                          activation=activation, lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, skip_w_avg_update=False):
        # z: [N, z_dim], c: [N, c_dim] -> ws: [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None)
        # `update_emas` is the StyleGAN3 release's switch, `skip_w_avg_update` the StyleGAN2-ADA
        # release's; each semantics reads its own, so a caller passing both gets either release.
        x = None
        if self.z_dim > 0:
            assert_shape(z, [None, self.z_dim], 'z')
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f'the label c is None, but this mapping network has c_dim={self.c_dim}; '
                                 f'pass c of shape [N, {self.c_dim}].')
            assert_shape(c, [None, self.c_dim], 'c')
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        if self.semantics == 'sg2ada':
            update_w_avg = self.training and not skip_w_avg_update
        else:
            update_w_avg = update_emas
        if update_w_avg and self.w_avg_beta is not None:
            # w_avg <- beta * w_avg + (1 - beta) * batch mean of w
            self.w_avg.copy_(x.detach().mean(dim=0).to(self.w_avg.dtype).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, w_dim] -> [N, num_ws, w_dim]

        if truncation_psi != 1:
            # Truncation trick: w <- w_avg + psi * (w - w_avg), on the first truncation_cutoff ws.
            if self.w_avg_beta is None:
                raise ValueError(f'truncation_psi={truncation_psi} needs the running mean w_avg, '
                                 'but this mapping network was built with w_avg_beta=None.')
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)
            else:
                head = self.w_avg.to(x.dtype).lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self):
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'


# ------------------------------------------------------------------------------------------------
# Synthesis network.


@keeps_init_kwargs
class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution (optionally 2x upsampling), per-pixel noise, bias, activation."""

    def __init__(self,
        in_channels,            # Number of input channels.
        out_channels,           # Number of output channels.
        w_dim,                  # Intermediate latent w dimensionality.
        resolution,             # Output resolution of this layer.
        kernel_size=3,          # Convolution kernel size.
        up=1,                   # Integer upsampling factor.
        use_noise=True,         # Add per-pixel noise?
        activation='lrelu',     # Activation name understood by ops.bias_act.
        resample_filter=DEFAULT_RESAMPLE_FILTER,  # Low-pass FIR filter used when upsampling.
        conv_clamp=None,        # Clamp the output to +-conv_clamp; None = no clamping.
        channels_last=False,    # Store the weight in channels_last memory format?
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)  # styles start around 1
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        # x: [N, in_channels, R / up, R / up], w: [N, w_dim] -> [N, out_channels, R, R]
        check_choice(noise_mode, NOISE_MODES, 'noise_mode')
        in_resolution = self.resolution // self.up
        assert_shape(x, [None, self.in_channels, in_resolution, in_resolution], 'SynthesisLayer input')
        styles = self.affine(w)  # [N, in_channels]

        noise = None
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        if self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength  # [R, R], broadcast over batch and channels

        flip_weight = (self.up == 1)  # equivalent either way; correlation is faster without upsampling
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, up=self.up,
                             padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=flip_weight, fused_modconv=fused_modconv)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation,
                                 gain=self.act_gain * gain, clamp=act_clamp)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, '
                f'resolution={self.resolution}, up={self.up}, activation={self.activation}')


@keeps_init_kwargs
class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv=True):
        # x: [N, in_channels, R, R], w: [N, w_dim] -> [N, out_channels, R, R]
        styles = self.affine(w) * self.weight_gain  # no demodulation, so the equalised gain goes here
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self):
        return f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}'


@keeps_init_kwargs
class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: [const or 2x-upsampling conv0], conv1, [toRGB]."""

    def __init__(self,
        in_channels,            # Number of input channels; 0 = first block (learned constant input).
        out_channels,           # Number of output channels.
        w_dim,                  # Intermediate latent w dimensionality.
        resolution,             # Resolution of this block.
        img_channels,           # Number of image channels.
        is_last,                # Is this the highest-resolution block?
        architecture='skip',    # 'orig', 'skip' or 'resnet'.
        resample_filter=DEFAULT_RESAMPLE_FILTER,  # Low-pass FIR filter used when upsampling.
        conv_clamp=256,         # Clamp conv outputs to +-conv_clamp; None = no clamping.
        use_fp16=False,         # Run this block in float16 (off CUDA only with sg2ada semantics)?
        fp16_channels_last=False,  # Use channels_last memory format with float16?
        fused_modconv_default=True,  # Default fused_modconv; 'inference_only' = fused only in eval mode.
        semantics='sg3',        # 'sg3' or 'sg2ada': fused_modconv and float16 rules (module docstring).
        **layer_kwargs,         # Further arguments for SynthesisLayer.
    ):
        check_choice(architecture, ARCHITECTURES, 'architecture')
        check_choice(semantics, SEMANTICS, 'semantics')
        if semantics == 'sg2ada' and fused_modconv_default is not True:
            raise ValueError(f'fused_modconv_default={fused_modconv_default!r} is a StyleGAN3-release option; '
                             "with semantics='sg2ada' leave it at True (that release's own rule decides).")
        super().__init__()
        self.semantics = semantics
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, update_emas=False, fp16_off_cuda=False,
                **layer_kwargs):
        # x: [N, in_channels, R/2, R/2] or None, img: [N, img_channels, R/2, R/2] or None,
        # ws: [N, num_conv + num_torgb, w_dim] -> x: [N, out_channels, R, R], img: [N, img_channels, R, R]
        del update_emas  # accepted for a uniform call signature; nothing to update here
        assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim], 'SynthesisBlock ws')
        w_iter = iter(ws.unbind(dim=1))
        dtype, memory_format = block_dtype_and_format(self.use_fp16, self.channels_last, force_fp32, ws.device,
                                                      fp16_off_cuda=fp16_off_cuda or self.semantics == 'sg2ada')
        if fused_modconv is None and self.semantics == 'sg2ada':
            # That release's rule: one grouped convolution only for inference, and in a float16
            # block only for a single sample.
            fused_modconv = not self.training and (dtype == torch.float32 or ws.shape[0] == 1)
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == 'inference_only':
            fused_modconv = not self.training

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # [C, R, R] -> [N, C, R, R]
        else:
            half = self.resolution // 2
            assert_shape(x, [None, self.in_channels, half, half], 'SynthesisBlock input')
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == 'resnet':
            # Residual sum scaled by sqrt(1/2) to keep the variance of the sum.
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), **layer_kwargs)
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        if img is not None:
            half = self.resolution // 2
            assert_shape(img, [None, self.img_channels, half, half], 'SynthesisBlock img')
            img = upfirdn2d.upsample2d(img, self.resample_filter)  # [N, C, R/2, R/2] -> [N, C, R, R]
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}'


def _channels_per_resolution(resolutions, channel_base, channel_max):
    return {res: min(channel_base // res, channel_max) for res in resolutions}


def _fp16_min_resolution(img_resolution_log2, num_fp16_res):
    """Lowest resolution that runs in float16: the num_fp16_res highest ones, never below 8."""
    return max(2 ** (img_resolution_log2 + 1 - num_fp16_res), 8)


@keeps_init_kwargs
class SynthesisNetwork(torch.nn.Module):
    def __init__(self,
        w_dim,                  # Intermediate latent w dimensionality.
        img_resolution,         # Output resolution (a power of two >= 4).
        img_channels,           # Number of image channels.
        channel_base=32768,     # Channels at resolution R are min(channel_base // R, channel_max).
        channel_max=512,        # Maximum number of channels of any layer.
        num_fp16_res=4,         # Run the N highest resolutions in float16 (CUDA only).
        **block_kwargs,         # Further arguments for SynthesisBlock.
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f'img_resolution={img_resolution} is not supported; use a power of two >= 4.')
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = _channels_per_resolution(self.block_resolutions, channel_base, channel_max)
        fp16_resolution = _fp16_min_resolution(self.img_resolution_log2, num_fp16_res)

        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = (res == img_resolution)
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                   resolution=res, img_channels=img_channels, is_last=is_last,
                                   use_fp16=(res >= fp16_resolution), **block_kwargs)
            # Consecutive blocks share a w: a block's toRGB uses the w of the next block's conv0.
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f'b{res}', block)

    def forward(self, ws, update_emas=False, **block_kwargs):
        # ws: [N, num_ws, w_dim] -> img: [N, img_channels, img_resolution, img_resolution]
        assert_shape(ws, [None, self.num_ws, self.w_dim], 'ws')
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, update_emas=update_emas, **block_kwargs)
        return img

    def extra_repr(self):
        return (f'w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, '
                f'img_channels={self.img_channels}, num_fp16_res={self.num_fp16_res}')


@keeps_init_kwargs
class Generator(torch.nn.Module):
    """`mapping` (z, c -> ws) followed by `synthesis` (ws -> image). StyleGAN3's generator is this
    class with its own two networks (see `stylegan3.Generator`)."""

    mapping_class = MappingNetwork
    synthesis_class = SynthesisNetwork

    def __init__(self,
        z_dim,                  # Latent z dimensionality.
        c_dim,                  # Label c dimensionality; 0 = unconditional.
        w_dim,                  # Intermediate latent w dimensionality.
        img_resolution,         # Output resolution.
        img_channels,           # Number of image channels.
        mapping_kwargs=None,    # Arguments for MappingNetwork (None = {}).
        semantics='sg3',        # Release rules, 'sg3' or 'sg2ada' (module docstring); StyleGAN3: 'sg3'.
        **synthesis_kwargs,     # Arguments for SynthesisNetwork.
    ):
        check_choice(semantics, SEMANTICS, 'semantics')
        mapping_kwargs = dict(mapping_kwargs or {})
        if semantics == 'sg2ada':
            if self.synthesis_class is not SynthesisNetwork:
                raise ValueError(f"semantics='sg2ada' is for StyleGAN2 generators; {type(self).__name__} "
                                 "comes from the StyleGAN3 release only, so use semantics='sg3'.")
            mapping_kwargs = {**SG2ADA_DEFAULTS['mapping'], **mapping_kwargs, 'semantics': semantics}
            synthesis_kwargs = {**SG2ADA_DEFAULTS['synthesis'], **synthesis_kwargs, 'semantics': semantics}
        super().__init__()
        self.semantics = semantics
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = self.synthesis_class(w_dim=w_dim, img_resolution=img_resolution,
                                              img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = self.mapping_class(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                          **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        # z: [N, z_dim], c: [N, c_dim] -> img: [N, img_channels, img_resolution, img_resolution]
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)


# ------------------------------------------------------------------------------------------------
# Discriminator.


@keeps_init_kwargs
class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: [fromRGB], conv0, 2x-downsampling conv1, [resnet skip]."""

    def __init__(self,
        in_channels,            # Number of input channels; 0 = first block (reads the image).
        tmp_channels,           # Number of channels inside the block.
        out_channels,           # Number of output channels.
        resolution,             # Resolution of this block.
        img_channels,           # Number of image channels.
        first_layer_idx,        # Index of this block's first layer in D (for Freeze-D).
        architecture='resnet',  # 'orig', 'skip' or 'resnet'.
        activation='lrelu',     # Activation name understood by ops.bias_act.
        resample_filter=DEFAULT_RESAMPLE_FILTER,  # Low-pass FIR filter used when downsampling.
        conv_clamp=None,        # Clamp conv outputs to +-conv_clamp; None = no clamping.
        use_fp16=False,         # Run this block in float16 (off CUDA only with sg2ada semantics)?
        fp16_channels_last=False,  # Use channels_last memory format with float16?
        freeze_layers=0,        # Freeze-D: layers with index below this are not trained.
        semantics='sg3',        # 'sg2ada' = float16 off CUDA too, as that release.
    ):
        if in_channels not in (0, tmp_channels):
            raise ValueError(f'in_channels={in_channels} is not supported; use 0 or tmp_channels={tmp_channels}.')
        check_choice(architecture, ARCHITECTURES, 'architecture')
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.semantics = semantics
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(list(resample_filter)))

        self.num_layers = 0

        def next_layer_trainable():
            trainable = (self.first_layer_idx + self.num_layers >= freeze_layers)
            self.num_layers += 1
            return trainable

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1,
                                       trainable=next_layer_trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=next_layer_trainable(), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=2, resample_filter=resample_filter,
                                 trainable=next_layer_trainable(), **common)
        if architecture == 'resnet':
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter, trainable=next_layer_trainable(),
                                    channels_last=self.channels_last)

    def forward(self, x, img, force_fp32=False, fp16_off_cuda=False):
        # x: [N, in_channels, R, R] or None, img: [N, img_channels, R, R] or None
        # -> x: [N, out_channels, R/2, R/2], img: [N, img_channels, R/2, R/2] ('skip') or None
        device = (x if x is not None else img).device
        dtype, memory_format = block_dtype_and_format(self.use_fp16, self.channels_last, force_fp32, device,
                                                      fp16_off_cuda=fp16_off_cuda or self.semantics == 'sg2ada')
        if x is not None:
            assert_shape(x, [None, self.in_channels, self.resolution, self.resolution], 'DiscriminatorBlock input')
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0 or self.architecture == 'skip':
            assert_shape(img, [None, self.img_channels, self.resolution, self.resolution], 'DiscriminatorBlock img')
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}'


@keeps_init_kwargs
class MinibatchStdLayer(torch.nn.Module):
    """Append the standard deviation across groups of samples as extra feature maps (ProGAN sec. 3)."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size      # Samples per group; None = the whole minibatch.
        self.num_channels = num_channels  # Number of appended feature maps (channel groups).

    def forward(self, x):
        # [N, C, H, W] -> [N, C + num_channels, H, W]
        N, C, H, W = x.shape
        G = N if self.group_size is None else min(self.group_size, N)
        F = self.num_channels
        if N % G != 0:
            raise ValueError(f'minibatch-stddev group size {G} does not divide the batch size {N}; '
                             f'use a batch size that is a multiple of mbstd_group_size={self.group_size}.')
        if C % F != 0:
            raise ValueError(f'mbstd_num_channels={F} does not divide the {C} input channels; use a divisor of {C}.')
        # Sample i belongs to group i % (N // G): groups interleave across the minibatch.
        y = x.reshape(G, -1, F, C // F, H, W)  # [G, n, F, c, H, W]
        y = y - y.mean(dim=0)                  # deviation from the group mean
        y = y.square().mean(dim=0)             # [n, F, c, H, W] variance over the group
        y = (y + 1e-8).sqrt()                  # standard deviation
        y = y.mean(dim=[2, 3, 4])              # [n, F] average over channels and pixels
        y = y.reshape(-1, F, 1, 1).repeat(G, 1, H, W)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self):
        return f'group_size={self.group_size}, num_channels={self.num_channels}'


@keeps_init_kwargs
class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 end of D: [fromRGB], minibatch stddev, conv, fc, output (projected on the label map)."""

    def __init__(self,
        in_channels,            # Number of input channels.
        cmap_dim,               # Size of the mapped label; 0 = unconditional (one logit).
        resolution,             # Resolution of this block (4).
        img_channels,           # Number of image channels.
        architecture='resnet',  # 'orig', 'skip' or 'resnet'.
        mbstd_group_size=4,     # Minibatch-stddev group size; None = the whole minibatch.
        mbstd_num_channels=1,   # Minibatch-stddev feature maps; 0 = no minibatch stddev.
        activation='lrelu',     # Activation name understood by ops.bias_act.
        conv_clamp=None,        # Clamp conv outputs to +-conv_clamp; None = no clamping.
    ):
        check_choice(architecture, ARCHITECTURES, 'architecture')
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False):
        # x: [N, in_channels, 4, 4], cmap: [N, cmap_dim] or None -> logits: [N, 1]
        del force_fp32  # the epilogue always runs in float32
        assert_shape(x, [None, self.in_channels, self.resolution, self.resolution], 'DiscriminatorEpilogue input')
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            assert_shape(img, [None, self.img_channels, self.resolution, self.resolution], 'DiscriminatorEpilogue img')
            img = img.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            x = x + self.fromrgb(img)

        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))  # [N, C * 16] -> [N, C]
        x = self.out(x)            # [N, C] -> [N, max(cmap_dim, 1)]

        if self.cmap_dim > 0:
            # Projection discriminator (Miyato & Koyama 2018): logit = <features, label map> / sqrt(cmap_dim).
            assert_shape(cmap, [None, self.cmap_dim], 'cmap')
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}'


@keeps_init_kwargs
class Discriminator(torch.nn.Module):
    def __init__(self,
        c_dim,                  # Label c dimensionality; 0 = unconditional.
        img_resolution,         # Input resolution (a power of two >= 4).
        img_channels,           # Number of image channels.
        architecture='resnet',  # 'orig', 'skip' or 'resnet'.
        channel_base=32768,     # Channels at resolution R are min(channel_base // R, channel_max).
        channel_max=512,        # Maximum number of channels of any layer.
        num_fp16_res=4,         # Run the N highest resolutions in float16 (CUDA only).
        conv_clamp=256,         # Clamp conv outputs to +-conv_clamp; None = no clamping.
        cmap_dim=None,          # Size of the mapped label; None = channels at 4x4.
        block_kwargs=None,      # Arguments for DiscriminatorBlock (None = {}).
        mapping_kwargs=None,    # Arguments for the label MappingNetwork (None = {}).
        epilogue_kwargs=None,   # Arguments for DiscriminatorEpilogue (None = {}).
        spectral_norm=False,    # Spectrally normalise every conv and FC weight of D (not in the releases)?
        semantics='sg3',        # 'sg2ada' = float16 blocks off CUDA too, as that release.
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f'img_resolution={img_resolution} is not supported; use a power of two >= 4.')
        check_choice(semantics, SEMANTICS, 'semantics')
        super().__init__()
        self.semantics = semantics
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = _channels_per_resolution(self.block_resolutions + [4], channel_base, channel_max)
        fp16_resolution = _fp16_min_resolution(self.img_resolution_log2, num_fp16_res)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res], channels[res // 2],
                                       resolution=res, first_layer_idx=layer_idx, use_fp16=(res >= fp16_resolution),
                                       semantics=semantics, **(block_kwargs or {}), **common)
            setattr(self, f'b{res}', block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **(epilogue_kwargs or {}),
                                        **common)
        if spectral_norm:
            spectral_normalize_layers(self)

    def forward(self, img, c, update_emas=False, **block_kwargs):
        # img: [N, img_channels, R, R], c: [N, c_dim] -> logits: [N, 1]
        del update_emas  # accepted for a uniform call signature; D keeps no running averages
        assert_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution], 'img')
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None  # [N, cmap_dim]
        return self.b4(x, img, cmap)

    def extra_repr(self):
        return f'c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}'
