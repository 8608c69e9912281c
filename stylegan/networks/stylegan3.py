"""StyleGAN3 generator ("Alias-Free Generative Adversarial Networks", Karras et al. 2021).

Configurations of the paper:
  StyleGAN3-T (translation equivariant): the defaults, `conv_kernel=3`.
  StyleGAN3-R (rotation equivariant):    `conv_kernel=1, use_radial_filters=True`
                                         (the release's train.py also doubles channel_base/max).

Constructor arguments, defaults, forward signatures and `state_dict` keys follow the NVlabs
StyleGAN3 release (`training/networks_stylegan3.py`), so a release state_dict loads with
`strict=True` and computes the same numbers. The discriminator of every StyleGAN3 config is the
StyleGAN2 one; it is re-exported here. Every module keeps the keyword arguments it was built
with in `init_kwargs`, so `type(m)(**m.init_kwargs)` rebuilds it.

Sampling-theory vocabulary (paper Sec. 3): a layer's signal lives on a grid with sampling rate
`s` (samples per unit length; the final image spans one unit), carries content up to the cutoff
`f_c`, and has a transition band of half-width `f_h` above it.
"""
import numpy as np
import scipy.signal
import scipy.special
import torch

from ops.filtered_lrelu import filtered_lrelu
from stylegan.networks import stylegan2
from stylegan.networks.layers import NOISE_MODES, FullyConnectedLayer, assert_shape, keeps_init_kwargs
from stylegan.networks.stylegan2 import Discriminator

__all__ = [
    "modulated_conv2d",
    "design_lowpass_filter",
    "synthesis_layer_schedule",
    "MappingNetwork",
    "SynthesisInput",
    "SynthesisLayer",
    "SynthesisNetwork",
    "Generator",
    "Discriminator",
]



def _width_height(size):
    """An int or [width, height] -> (width, height) as Python ints: plain Python values keep
    torch.compile(fullgraph=True) free of data-dependent numpy arithmetic."""
    width, height = np.broadcast_to(np.asarray(size), [2]).tolist()
    return int(width), int(height)

def modulated_conv2d(x, w, s, demodulate=True, padding=0, input_gain=None):
    """Convolve each sample with its own style-modulated weights (StyleGAN3 variant).

    x: [N, I, H, W] input; w: [O, I, kh, kw] weight; s: [N, I] styles;
    input_gain: None, a scalar tensor, [I] or [N, I] scale applied to the input channels.
    Returns [N, O, H + 2*padding - kh + 1, W + 2*padding - kw + 1].

    Unlike StyleGAN2, the weight and the styles are first scaled to unit RMS when demodulating.
    This does not change the result (demodulation divides the scale out again, up to its 1e-8
    epsilon) but keeps intermediate values in range for FP16. The style RMS is taken over the
    whole batch, as in the release.
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = w.shape
    assert_shape(x, [None, in_channels, None, None], "modulated_conv2d input x")
    assert_shape(s, [batch_size, in_channels], "modulated_conv2d styles s")

    if demodulate:
        w = w * w.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        s = s * s.square().mean().rsqrt()

    # [1, O, I, kh, kw] * [N, 1, I, 1, 1] -> [N, O, I, kh, kw]
    w = w.unsqueeze(0) * s.reshape(batch_size, 1, in_channels, 1, 1)
    if demodulate:
        # Scale each output filter to unit L2 norm: [N, O] -> [N, O, 1, 1, 1]
        demod = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * demod.reshape(batch_size, out_channels, 1, 1, 1)
    if input_gain is not None:
        input_gain = input_gain.expand(batch_size, in_channels)
        w = w * input_gain.reshape(batch_size, 1, in_channels, 1, 1)

    # One grouped convolution, one group per sample:
    # [N, I, H, W] -> [1, N*I, H, W] (*) [N*O, I, kh, kw] -> [1, N*O, H', W'] -> [N, O, H', W']
    x = x.reshape(1, batch_size * in_channels, *x.shape[2:])
    w = w.reshape(batch_size * out_channels, in_channels, kh, kw)
    x = torch.nn.functional.conv2d(x, w.to(x.dtype), padding=padding, groups=batch_size)
    return x.reshape(batch_size, out_channels, *x.shape[2:])


@keeps_init_kwargs
class MappingNetwork(stylegan2.MappingNetwork):
    """StyleGAN3's mapping network: StyleGAN2's with 2 layers by default, hidden and embedding
    widths equal to w_dim, and w_avg always tracked (same math, same state_dict keys)."""

    def __init__(self,
        z_dim,                  # Input latent (Z) dimensionality.
        c_dim,                  # Conditioning label (C) dimensionality, 0 = no labels.
        w_dim,                  # Intermediate latent (W) dimensionality.
        num_ws,                 # Number of intermediate latents to output.
        num_layers=2,           # Number of mapping layers.
        lr_multiplier=0.01,     # Learning rate multiplier for the mapping layers.
        w_avg_beta=0.998,       # Decay of the running average of W, tracked during training.
    ):
        super().__init__(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, num_layers=num_layers,
                         lr_multiplier=lr_multiplier, w_avg_beta=w_avg_beta)


@keeps_init_kwargs
class SynthesisInput(torch.nn.Module):
    """The constant input of StyleGAN2 replaced by Fourier features (paper Sec. 3.1).

    Each channel is a sinusoid with a fixed random frequency inside the disc of radius
    `bandwidth`, evaluated on a grid of `size` samples at `sampling_rate` (so the grid is
    continuous-coordinate: translating it translates the whole image). A learned affine layer
    maps w to a per-sample rotation and translation of the features.

    `transform` ([3, 3], identity by default) is for the user: set it to the *inverse* of the
    desired 2D affine transform of the output image, e.g. a translation by (tx, ty) image widths
    is `transform[0, 2] = -tx, transform[1, 2] = -ty`.
    """

    def __init__(self,
        w_dim,          # Intermediate latent (W) dimensionality.
        channels,       # Number of output channels.
        size,           # Output spatial size: int or [width, height].
        sampling_rate,  # Output sampling rate.
        bandwidth,      # Output bandwidth (the cutoff of the first layer).
    ):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = _width_height(size)
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth

        # Frequencies: a Gaussian direction, rescaled radially so that they fill the disc of
        # radius `bandwidth`; phases uniform in [-0.5, 0.5) cycles.
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs /= radii * radii.square().exp().pow(0.25)
        freqs *= bandwidth
        phases = torch.rand([channels]) - 0.5

        self.weight = torch.nn.Parameter(torch.randn([channels, channels]))
        # Starts as the identity transform: (cos, sin, tx, ty) = (1, 0, 0, 0).
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)    # [C, 2] (x, y) cycles per unit length
        self.register_buffer("phases", phases)  # [C] cycles

    def forward(self, w):
        """w: [N, w_dim] -> Fourier features [N, channels, height, width]."""
        assert_shape(w, [None, self.w_dim], "SynthesisInput w")
        batch_size = w.shape[0]

        # Learned rotation and translation, as inverse transforms of the image:
        # t = (cos, sin, tx, ty), normalized so that (cos, sin) is a unit vector.
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rotation = torch.eye(3, device=w.device).unsqueeze(0).repeat([batch_size, 1, 1])
        rotation[:, 0, 0] = t[:, 0]
        rotation[:, 0, 1] = -t[:, 1]
        rotation[:, 1, 0] = t[:, 1]
        rotation[:, 1, 1] = t[:, 0]
        translation = torch.eye(3, device=w.device).unsqueeze(0).repeat([batch_size, 1, 1])
        translation[:, 0, 2] = -t[:, 2]
        translation[:, 1, 2] = -t[:, 3]
        # Rotate the image first, then translate it, then apply the user's transform.
        transforms = rotation @ translation @ self.transform.unsqueeze(0)  # [N, 3, 3]

        # sin(2 pi (f . (A x + b) + p)) = sin(2 pi ((f A) . x + (f . b + p)))
        freqs = self.freqs.unsqueeze(0)  # [1, C, 2]
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)  # [N, C]
        freqs = freqs @ transforms[:, :2, :2]  # [N, C, 2]

        # A user transform that scales up can push frequencies past the band: fade them out
        # linearly, reaching zero at the Nyquist frequency.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)  # [N, C]

        # Sample positions in image units, centred on the image: [1, H, W, 2] (x, y).
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = 0.5 * self.size[0] / self.sampling_rate
        theta[1, 1] = 0.5 * self.size[1] / self.sampling_rate
        grids = torch.nn.functional.affine_grid(theta.unsqueeze(0),
            [1, 1, int(self.size[1]), int(self.size[0])], align_corners=False)

        # [1, H, W, 1, 2] @ [N, 1, 1, 2, C] -> [N, H, W, C]
        x = (grids.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)
        x = x + phases.unsqueeze(1).unsqueeze(2)
        x = torch.sin(x * (np.pi * 2))
        x = x * amplitudes.unsqueeze(1).unsqueeze(2)

        # Learned channel mixing, then [N, H, W, C] -> [N, C, H, W].
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)

    def extra_repr(self):
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={list(self.size)}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")


def design_lowpass_filter(numtaps, cutoff, width, fs, radial=False):
    """Kaiser-windowed low-pass filter as a float32 tensor, or None for the identity (1 tap).

    Separable: the 1D `scipy.signal.firwin` design, shape [numtaps], applied along both axes.
    Radial (StyleGAN3-R): a 2D jinc (the ideal circular low-pass) windowed by the outer product
    of Kaiser windows, normalized to unit DC gain, shape [numtaps, numtaps].
    `width` is the full transition band width; all frequencies are in the units of `fs`.
    """
    if numtaps < 1:
        raise ValueError(f"numtaps={numtaps} must be at least 1.")
    if numtaps == 1:
        return None
    if not radial:
        taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(taps, dtype=torch.float32)

    coords = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(coords, coords))
    # jinc: J1(2 pi f_c r) / (pi r); its limit at r = 0 (odd numtaps only) is f_c.
    with np.errstate(divide="ignore", invalid="ignore"):
        taps = np.where(r > 0, scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r), cutoff)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    taps = taps * np.outer(window, window)
    taps = taps / np.sum(taps)
    return torch.as_tensor(taps, dtype=torch.float32)


@keeps_init_kwargs
class SynthesisLayer(torch.nn.Module):
    """Modulated convolution followed by an alias-free leaky ReLU (paper Sec. 3.2, Fig. 4b).

    The nonlinearity runs at a temporarily higher sampling rate `tmp_sampling_rate`:
    upsample by `up_factor` with a low-pass at `in_cutoff`, leaky ReLU, low-pass at `out_cutoff`
    and downsample by `down_factor`, all in one `filtered_lrelu` call. The final ToRGB layer
    (`is_torgb`) is a plain 1x1 modulated convolution without demodulation, bias only.
    """

    def __init__(self,
        w_dim,                  # Intermediate latent (W) dimensionality.
        is_torgb,               # Is this the final ToRGB layer?
        is_critically_sampled,  # Does this layer use critical sampling (cutoff = Nyquist)?
        use_fp16,               # Run this layer in FP16 (on CUDA devices only)?
        in_channels,            # Number of input channels.
        out_channels,           # Number of output channels.
        in_size,                # Input spatial size: int or [width, height].
        out_size,               # Output spatial size: int or [width, height].
        in_sampling_rate,       # Input sampling rate (s).
        out_sampling_rate,      # Output sampling rate (s).
        in_cutoff,              # Input cutoff frequency (f_c).
        out_cutoff,             # Output cutoff frequency (f_c).
        in_half_width,          # Input transition band half-width (f_h).
        out_half_width,         # Output transition band half-width (f_h).
        conv_kernel=3,          # Convolution kernel size; the ToRGB layer always uses 1.
        filter_size=6,          # Low-pass filter taps per sample of the lower rate when resampling.
        lrelu_upsampling=2,     # Oversampling of the leaky ReLU; ToRGB uses 1.
        use_radial_filters=False,  # Radially symmetric downsampling filter (unless critically sampled)?
        conv_clamp=256,         # Clamp the output to [-X, +X], None = no clamping.
        magnitude_ema_beta=0.999,  # Decay of the running average of the input's mean square.
    ):
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = _width_height(in_size)
        self.out_size = _width_height(out_size)
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = (max(in_sampling_rate, out_sampling_rate)
                                  * (1 if is_torgb else lrelu_upsampling))
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.in_half_width = in_half_width
        self.out_half_width = out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = self._integer_ratio(self.tmp_sampling_rate, in_sampling_rate, "up")
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.register_buffer("up_filter", design_lowpass_filter(numtaps=self.up_taps,
            cutoff=in_cutoff, width=in_half_width * 2, fs=self.tmp_sampling_rate))

        self.down_factor = self._integer_ratio(self.tmp_sampling_rate, out_sampling_rate, "down")
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer("down_filter", design_lowpass_filter(numtaps=self.down_taps,
            cutoff=out_cutoff, width=out_half_width * 2, fs=self.tmp_sampling_rate,
            radial=self.down_radial))

        self.padding = self._filtered_lrelu_padding()

    @staticmethod
    def _integer_ratio(tmp_rate, rate, direction):
        factor = int(np.rint(tmp_rate / rate))
        if rate * factor != tmp_rate:
            raise ValueError(f"The {direction}sampling factor {tmp_rate}/{rate} is not an integer; "
                             "sampling rates must divide the leaky ReLU's sampling rate.")
        return factor

    def _filtered_lrelu_padding(self):
        """Padding [x_lo, x_hi, y_lo, y_hi] that makes filtered_lrelu produce `out_size`."""
        in_size, out_size = np.asarray(self.in_size), np.asarray(self.out_size)
        pad_total = (out_size - 1) * self.down_factor + 1  # size needed before downsampling
        pad_total -= (in_size + self.conv_kernel - 1) * self.up_factor  # size after upsampling
        pad_total += self.up_taps + self.down_taps - 2  # shrinkage by the two filters
        # Split so that output samples sit symmetrically between input samples, pixels being
        # centred at half-integer coordinates (paper Appendix C.3).
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        return [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

    design_lowpass_filter = staticmethod(design_lowpass_filter)

    def forward(self, x, w, noise_mode="random", force_fp32=False, update_emas=False, fp16_off_cuda=False):
        """x: [N, in_channels, in_h, in_w], w: [N, w_dim] -> [N, out_channels, out_h, out_w].
        float16 layers run in float32 off CUDA, as in the release, unless `fp16_off_cuda` (tests)."""
        if noise_mode not in NOISE_MODES:  # accepted (and unused) so that callers can treat
            # StyleGAN2 and StyleGAN3 generators alike; StyleGAN3 has no noise inputs.
            raise ValueError(f"noise_mode={noise_mode!r} is not one of {list(NOISE_MODES)}.")
        assert_shape(x, [None, self.in_channels, self.in_size[1], self.in_size[0]],
                      "SynthesisLayer input x")
        assert_shape(w, [x.shape[0], self.w_dim], "SynthesisLayer w")

        # Divide the input by its running RMS (folded into the weights as `input_gain`): keeps
        # activations O(1) through the deep stack without any per-sample normalization.
        if update_emas:
            magnitude = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(magnitude.to(self.magnitude_ema.dtype).lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()

        styles = self.affine(w)  # [N, in_channels]
        if self.is_torgb:
            # ToRGB is not demodulated: use the equalized-learning-rate gain instead.
            styles = styles * (1 / np.sqrt(self.in_channels * self.conv_kernel ** 2))

        use_half = self.use_fp16 and not force_fp32 and (x.device.type == "cuda" or fp16_off_cuda)
        dtype = torch.float16 if use_half else torch.float32
        x = modulated_conv2d(x.to(dtype), self.weight, styles, demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1, input_gain=input_gain)
        x = filtered_lrelu(x, fu=self.up_filter, fd=self.down_filter, b=self.bias.to(dtype),
            up=self.up_factor, down=self.down_factor, padding=self.padding,
            gain=1 if self.is_torgb else np.sqrt(2), slope=1 if self.is_torgb else 0.2,
            clamp=self.conv_clamp)
        assert_shape(x, [None, self.out_channels, self.out_size[1], self.out_size[0]],
                      "SynthesisLayer output")
        return x

    def extra_repr(self):
        return (f"w_dim={self.w_dim}, is_torgb={self.is_torgb}, "
                f"is_critically_sampled={self.is_critically_sampled}, use_fp16={self.use_fp16}, "
                f"in_sampling_rate={self.in_sampling_rate:g}, out_sampling_rate={self.out_sampling_rate:g}, "
                f"in_cutoff={self.in_cutoff:g}, out_cutoff={self.out_cutoff:g}, "
                f"in_half_width={self.in_half_width:g}, out_half_width={self.out_half_width:g}, "
                f"in_size={list(self.in_size)}, out_size={list(self.out_size)}, "
                f"in_channels={self.in_channels}, out_channels={self.out_channels}")


def synthesis_layer_schedule(img_resolution, img_channels, channel_base=32768, channel_max=512,
        num_layers=14, num_critical=2, first_cutoff=2, first_stopband=2**2.1,
        last_stopband_rel=2**0.3, margin_size=10):
    """Per-layer parameters of the synthesis network (paper Sec. 3.2 and Fig. 4c).

    Returns a dict of numpy arrays with num_layers + 1 entries each, entry i describing the
    output of layer L{i} (the last one is ToRGB; the Fourier input shares entry 0):
    `cutoffs` (f_c), `stopbands` (f_t), `sampling_rates` (s), `half_widths` (f_h), `sizes`,
    `channels`.
    Cutoffs and stopbands grow geometrically from the first layer to the last non-critical
    one and then stay at the image Nyquist frequency.
    """
    if num_layers <= num_critical:
        raise ValueError(f"num_layers={num_layers} must exceed num_critical={num_critical}.")
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents

    # The smallest power-of-two rate that keeps the stopband below Nyquist, capped at the image.
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution  # the last two layers drop the margin
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return dict(cutoffs=cutoffs, stopbands=stopbands, sampling_rates=sampling_rates,
                half_widths=half_widths, sizes=sizes, channels=channels)


@keeps_init_kwargs
class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, img_resolution, img_resolution].

    Fourier input, then `num_layers` filtered layers and a ToRGB layer, named
    `L{idx}_{size}_{channels}`. Each consumes one w, so num_ws = num_layers + 2.
    """

    def __init__(self,
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output image resolution.
        img_channels,               # Number of color channels.
        channel_base=32768,         # Overall multiplier for the number of channels.
        channel_max=512,            # Maximum number of channels in any layer.
        num_layers=14,              # Total number of layers, excluding Fourier features and ToRGB.
        num_critical=2,             # Number of critically sampled layers at the end.
        first_cutoff=2,             # Cutoff frequency of the first layer (f_{c,0}).
        first_stopband=2**2.1,      # Minimum stopband of the first layer (f_{t,0}).
        last_stopband_rel=2**0.3,   # Minimum stopband of the last layer, relative to its cutoff.
        margin_size=10,             # Number of additional pixels outside the image.
        output_scale=0.25,          # Scale factor for the output image.
        num_fp16_res=4,             # Use FP16 for the N highest resolutions.
        **layer_kwargs,             # Arguments for SynthesisLayer.
    ):
        super().__init__()
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res

        plan = synthesis_layer_schedule(img_resolution, img_channels, channel_base=channel_base,
            channel_max=channel_max, num_layers=num_layers, num_critical=num_critical,
            first_cutoff=first_cutoff, first_stopband=first_stopband,
            last_stopband_rel=last_stopband_rel, margin_size=margin_size)
        cutoffs, half_widths = plan["cutoffs"], plan["half_widths"]
        rates, sizes, channels = plan["sampling_rates"], plan["sizes"], plan["channels"]

        self.input = SynthesisInput(w_dim=w_dim, channels=int(channels[0]), size=int(sizes[0]),
            sampling_rate=float(rates[0]), bandwidth=float(cutoffs[0]))
        self.layer_names = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)  # layer 0 reads the Fourier features, which match entry 0
            layer = SynthesisLayer(w_dim=w_dim,
                is_torgb=(idx == num_layers),
                is_critically_sampled=(idx >= num_layers - num_critical),
                use_fp16=bool(rates[idx] * (2 ** num_fp16_res) > img_resolution),
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(rates[prev]), out_sampling_rate=int(rates[idx]),
                in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]),
                **layer_kwargs)
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws, **layer_kwargs):
        """ws: [N, num_ws, w_dim] -> [N, img_channels, img_resolution, img_resolution] float32.

        layer_kwargs go to every SynthesisLayer: noise_mode, force_fp32, update_emas, fp16_off_cuda.
        """
        assert_shape(ws, [None, self.num_ws, self.w_dim], "SynthesisNetwork ws")
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w, **layer_kwargs)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)

    def extra_repr(self):
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, num_layers={self.num_layers}, "
                f"num_critical={self.num_critical}, margin_size={self.margin_size}, "
                f"num_fp16_res={self.num_fp16_res}")


class Generator(stylegan2.Generator):
    """StyleGAN3 generator: the StyleGAN2 composition (same constructor arguments and forward) with
    StyleGAN3's mapping and synthesis networks; `synthesis_kwargs` reach `SynthesisNetwork`."""

    mapping_class = MappingNetwork
    synthesis_class = SynthesisNetwork
