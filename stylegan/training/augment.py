"""The adaptive discriminator augmentation (ADA) of "Training Generative Adversarial Networks
with Limited Data" (Karras et al. 2020): the `AugmentPipe` that every image shown to D goes
through, the `--augpipe` presets, and the heuristic that tunes its probability `p`.

Each augmentation is applied to each image independently with probability `multiplier * p`.
Geometric transforms (pixel blitting and general geometry) are composed into one inverse 3x3
matrix per image and executed in a single resampling: reflect-pad, 2x upsample with the
orthogonal `sym6` wavelet, bilinear `grid_sample` (twice differentiable, for R1 through the
pipe), 2x downsample with the same filter. Colour transforms are one 4x4 matrix per image
(paper appendix B.2); then the image-space filter bank, additive noise and cutout.

Random numbers are drawn in the release's order with its shapes, so a seeded run draws the same
augmentation parameters as the release's `training/augment.py`.
"""
import numpy as np
import torch
import torch.nn.functional as F

from ops import upfirdn2d
from ops.grid_sample_gradfix import grid_sample

# Low-pass decomposition taps of two Symlet wavelets (the standard published coefficients).
SYM2 = [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025]
SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]

# Expected power of the 4 imgfilter bands for natural images (1/f spectrum), paper appendix B.3.
IMGFILTER_BAND_POWER = [10 / 13, 1 / 13, 1 / 13, 1 / 13]

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

# The releases' `--augpipe` choices, as AugmentPipe keyword arguments.
AUGPIPE_PRESETS = {
    'blit':   dict(_BLIT),
    'geom':   dict(_GEOM),
    'color':  dict(_COLOR),
    'filter': dict(imgfilter=1),
    'noise':  dict(noise=1),
    'cutout': dict(cutout=1),
    'bg':     dict(**_BLIT, **_GEOM),
    'bgc':    dict(**_BLIT, **_GEOM, **_COLOR),
    'bgcf':   dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1),
    'bgcfn':  dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1),
    'bgcfnc': dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1, cutout=1),
}


# --- batched homogeneous matrices: each argument a float or a [N] tensor -> [N, K, K] ---------------
def _matrix(rows, batch_size, device):
    entries = [torch.as_tensor(x, dtype=torch.float32, device=device).expand(batch_size)
               for row in rows for x in row]
    return torch.stack(entries, dim=-1).reshape(batch_size, len(rows), len(rows))


def translate2d(tx, ty, batch_size, device):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], batch_size, device)


def scale2d(sx, sy, batch_size, device):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], batch_size, device)


def rotate2d(theta, batch_size, device):
    theta = torch.as_tensor(theta, dtype=torch.float32, device=device)
    cos, sin = torch.cos(theta), torch.sin(theta)
    return _matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], batch_size, device)


def translate3d(tx, ty, tz, batch_size, device):
    return _matrix([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]], batch_size, device)


def scale3d(sx, sy, sz, batch_size, device):
    return _matrix([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]], batch_size, device)


def rotate3d(axis, theta, batch_size, device):
    """Rotation by `theta` [N] about the unit `axis` [4] (homogeneous, last entry 0): Rodrigues' formula."""
    x, y, z = axis[0], axis[1], axis[2]
    sin, cos = torch.sin(theta), torch.cos(theta)
    one_minus_cos = 1 - cos
    return _matrix([
        [x * x * one_minus_cos + cos, x * y * one_minus_cos - z * sin, x * z * one_minus_cos + y * sin, 0],
        [y * x * one_minus_cos + z * sin, y * y * one_minus_cos + cos, y * z * one_minus_cos - x * sin, 0],
        [z * x * one_minus_cos - y * sin, z * y * one_minus_cos + x * sin, z * z * one_minus_cos + cos, 0],
        [0, 0, 0, 1]], batch_size, device)


def imgfilter_bank(lowpass=SYM2, num_bands=4):
    """[num_bands, taps] zero-phase filters that split a signal into octave bands (their sum is a
    unit impulse): band 0 the lowest, band i built by repeated dyadic upsampling of the wavelet's
    low-pass power response `H(z) H(1/z) / 2` and adding the high-pass `H(-z) H(-1/z) / 2` at level i."""
    lo = np.asarray(lowpass, dtype=np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)  # H(-z)
    lo_power = np.convolve(lo, lo[::-1]) / 2
    hi_power = np.convolve(hi, hi[::-1]) / 2
    bank = np.eye(num_bands, 1)
    for band in range(1, num_bands):
        stretched = np.zeros([num_bands, bank.shape[1] * 2 - 1])
        stretched[:, ::2] = bank  # insert a zero between taps: B(z) -> B(z^2)
        bank = np.stack([np.convolve(row, lo_power) for row in stretched])
        start = (bank.shape[1] - hi_power.size) // 2
        bank[band, start:start + hi_power.size] += hi_power
    return torch.as_tensor(bank, dtype=torch.float32)


class AugmentPipe(torch.nn.Module):
    """`AugmentPipe(**AUGPIPE_PRESETS['bgc'])(images [N, C, H, W]) -> [N, C, H, W]` with the
    release's arguments: one probability multiplier per augmentation (0 = off, 1 = on) and its
    strength. The buffer `p` (0-dim) is the overall probability the ADA heuristic tunes; its
    state_dict keys (`p`, `Hz_geom`, `Hz_fbank`) are the release's."""

    def __init__(self,
                 xflip=0, rotate90=0, xint=0, xint_max=0.125,
                 scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
                 brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0,
                 brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1,
                 imgfilter=0, imgfilter_bands=(1, 1, 1, 1), imgfilter_std=1,
                 noise=0, cutout=0, noise_std=0.1, cutout_size=0.5):
        super().__init__()
        self.register_buffer('p', torch.ones([]))
        # Pixel blitting: x-flip, 90-degree rotations, integer translation (fraction of the size).
        self.xflip, self.rotate90, self.xint = float(xflip), float(rotate90), float(xint)
        self.xint_max = float(xint_max)
        # General geometry; scale/aniso std in log2 units, rotate_max 1 = full circle, xfrac std in image sizes.
        self.scale, self.rotate, self.aniso, self.xfrac = float(scale), float(rotate), float(aniso), float(xfrac)
        self.scale_std, self.rotate_max = float(scale_std), float(rotate_max)
        self.aniso_std, self.xfrac_std = float(aniso_std), float(xfrac_std)
        # Colour; contrast/saturation std in log2 units, hue_max 1 = full circle.
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        self.brightness_std, self.contrast_std = float(brightness_std), float(contrast_std)
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)
        # Image-space filtering: per-band multipliers, log2 std of the band gains.
        self.imgfilter, self.imgfilter_bands, self.imgfilter_std = float(imgfilter), list(imgfilter_bands), float(imgfilter_std)
        # Corruptions: noise std (values in [-1, 1]), cutout square side as a fraction of the image.
        self.noise, self.cutout = float(noise), float(cutout)
        self.noise_std, self.cutout_size = float(noise_std), float(cutout_size)
        self.init_kwargs = dict(
            xflip=xflip, rotate90=rotate90, xint=xint, xint_max=xint_max, scale=scale, rotate=rotate, aniso=aniso,
            xfrac=xfrac, scale_std=scale_std, rotate_max=rotate_max, aniso_std=aniso_std, xfrac_std=xfrac_std,
            brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue, saturation=saturation,
            brightness_std=brightness_std, contrast_std=contrast_std, hue_max=hue_max, saturation_std=saturation_std,
            imgfilter=imgfilter, imgfilter_bands=list(imgfilter_bands), imgfilter_std=imgfilter_std,
            noise=noise, cutout=cutout, noise_std=noise_std, cutout_size=cutout_size)

        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(SYM6))  # [12], separable
        self.register_buffer('Hz_fbank', imgfilter_bank(SYM2))  # [4, 43]
        if len(self.imgfilter_bands) != self.Hz_fbank.shape[0]:
            raise ValueError(f'imgfilter_bands needs {self.Hz_fbank.shape[0]} entries, got {self.imgfilter_bands}.')

    # --- random parameters -------------------------------------------------------------------------
    def _gate(self, value, probability, neutral, debug_value=None):
        """`value` where a fresh uniform draw is below `probability`, else `neutral`; one draw per
        image, broadcast over value's trailing axes. `debug_value` replaces the outcome entirely."""
        enabled = torch.rand([value.shape[0]] + [1] * (value.ndim - 1), device=value.device) < probability
        value = torch.where(enabled, value, torch.full_like(value, neutral))
        return value if debug_value is None else torch.full_like(value, 0).add_(debug_value)

    def _uniform(self, shape, device):
        return torch.rand(shape, device=device) * 2 - 1  # U(-1, 1)

    def _lognormal(self, batch_size, std, device):
        return torch.exp2(torch.randn([batch_size], device=device) * std)

    # --- geometric -----------------------------------------------------------------------------------
    def _geometric_matrix(self, batch_size, width, height, device, debug):
        """Inverse transform [N, 3, 3] (output pixel -> input pixel, origin at the image centre), or
        None when no geometric augmentation is enabled."""
        n, dev = batch_size, device
        g_inv = None

        def then(m):
            nonlocal g_inv
            g_inv = m if g_inv is None else g_inv @ m

        if self.xflip > 0:
            flip = self._gate(torch.floor(torch.rand([n], device=dev) * 2), self.xflip * self.p, 0,
                              None if debug is None else torch.floor(debug * 2))
            then(scale2d(1 / (1 - 2 * flip), 1, n, dev))
        if self.rotate90 > 0:
            quarter = self._gate(torch.floor(torch.rand([n], device=dev) * 4), self.rotate90 * self.p, 0,
                                 None if debug is None else torch.floor(debug * 4))
            then(rotate2d(np.pi / 2 * quarter, n, dev))  # inverse of a rotation by -90 * quarter degrees
        if self.xint > 0:
            shift = self._gate(self._uniform([n, 2], dev) * self.xint_max, self.xint * self.p, 0,
                               None if debug is None else (debug * 2 - 1) * self.xint_max)
            then(translate2d(-torch.round(shift[:, 0] * width), -torch.round(shift[:, 1] * height), n, dev))
        if self.scale > 0:
            s = self._gate(self._lognormal(n, self.scale_std, dev), self.scale * self.p, 1,
                           None if debug is None else torch.exp2(torch.erfinv(debug * 2 - 1) * self.scale_std))
            then(scale2d(1 / s, 1 / s, n, dev))
        # Rotation happens before and after the anisotropic scaling, each with p_rot, so that
        # P(pre or post) = rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))
        if self.rotate > 0:
            theta = self._uniform([n], dev) * np.pi * self.rotate_max
            theta = self._gate(theta, p_rot, 0, None if debug is None else (debug * 2 - 1) * np.pi * self.rotate_max)
            then(rotate2d(theta, n, dev))
        if self.aniso > 0:
            s = self._gate(self._lognormal(n, self.aniso_std, dev), self.aniso * self.p, 1,
                           None if debug is None else torch.exp2(torch.erfinv(debug * 2 - 1) * self.aniso_std))
            then(scale2d(1 / s, s, n, dev))
        if self.rotate > 0:
            theta = self._gate(self._uniform([n], dev) * np.pi * self.rotate_max, p_rot, 0,
                               None if debug is None else 0.0)
            then(rotate2d(theta, n, dev))
        if self.xfrac > 0:
            shift = self._gate(torch.randn([n, 2], device=dev) * self.xfrac_std, self.xfrac * self.p, 0,
                               None if debug is None else torch.erfinv(debug * 2 - 1) * self.xfrac_std)
            then(translate2d(-shift[:, 0] * width, -shift[:, 1] * height, n, dev))
        return g_inv

    def _resample(self, images, g_inv):
        """Apply the inverse transform `g_inv` [N, 3, 3] to images [N, C, H, W] (same shape out)."""
        n, channels, height, width = images.shape
        dev = images.device
        # Reflect-pad just enough that every output pixel (plus filter support) samples real content.
        cx, cy = (width - 1) / 2, (height - 1) / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=dev)  # [4, xyz]
        corners = g_inv @ corners.t()  # [N, xyz, 4]
        filter_pad = self.Hz_geom.shape[0] // 4
        reach = corners[:, :2, :].permute(1, 0, 2).flatten(1)  # [xy, N * 4]
        margin = torch.cat([-reach, reach]).max(dim=1).values  # [x0, y0, x1, y1]
        margin = margin + torch.tensor([filter_pad * 2 - cx, filter_pad * 2 - cy] * 2, device=dev)
        margin = margin.clamp(min=0).min(torch.tensor([width - 1, height - 1] * 2, dtype=torch.float32, device=dev))
        mx0, my0, mx1, my1 = (int(m) for m in margin.ceil().tolist())
        images = F.pad(images, [mx0, mx1, my0, my1], mode='reflect')
        g_inv = translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, n, dev) @ g_inv

        # 2x upsample; move the matrix into the upsampled pixel grid.
        images = upfirdn2d.upsample2d(images, self.Hz_geom.to(images.dtype), up=2)
        g_inv = scale2d(2, 2, n, dev) @ g_inv @ scale2d(0.5, 0.5, n, dev)
        g_inv = translate2d(-0.5, -0.5, n, dev) @ g_inv @ translate2d(0.5, 0.5, n, dev)

        # Sample an output of the original size plus filter margins; matrices in [-1, 1] coordinates.
        shape = [n, channels, (height + filter_pad * 2) * 2, (width + filter_pad * 2) * 2]
        g_inv = (scale2d(2 / images.shape[3], 2 / images.shape[2], n, dev) @ g_inv
                 @ scale2d(shape[3] / 2, shape[2] / 2, n, dev))
        grid = F.affine_grid(g_inv[:, :2, :].to(images.dtype), shape, align_corners=False)
        images = grid_sample(images, grid)

        # 2x downsample with the matching filter and crop the margins: back to [N, C, H, W].
        return upfirdn2d.downsample2d(images, self.Hz_geom.to(images.dtype), down=2,
                                      padding=-filter_pad * 2, flip_filter=True)

    # --- colour --------------------------------------------------------------------------------------
    def _color_matrix(self, batch_size, num_channels, device, debug):
        """[N, 4, 4] homogeneous transform of (r, g, b, 1), or None when no colour augmentation is on."""
        n, dev = batch_size, device
        identity = torch.eye(4, device=dev)
        c = None

        def then(m):
            nonlocal c
            c = m if c is None else m @ c

        if self.brightness > 0:
            b = self._gate(torch.randn([n], device=dev) * self.brightness_std, self.brightness * self.p, 0,
                           None if debug is None else torch.erfinv(debug * 2 - 1) * self.brightness_std)
            then(translate3d(b, b, b, n, dev))
        if self.contrast > 0:
            k = self._gate(self._lognormal(n, self.contrast_std, dev), self.contrast * self.p, 1,
                           None if debug is None else torch.exp2(torch.erfinv(debug * 2 - 1) * self.contrast_std))
            then(scale3d(k, k, k, n, dev))
        luma_axis = torch.tensor([1, 1, 1, 0], dtype=torch.float32, device=dev) / np.sqrt(3)
        luma_outer = torch.outer(luma_axis, luma_axis)
        if self.lumaflip > 0:
            flip = self._gate(torch.floor(torch.rand([n, 1, 1], device=dev) * 2), self.lumaflip * self.p, 0,
                              None if debug is None else torch.floor(debug * 2))
            then(identity - 2 * luma_outer * flip)  # Householder reflection of the luma component
        if self.hue > 0 and num_channels > 1:
            theta = self._gate(self._uniform([n], dev) * np.pi * self.hue_max, self.hue * self.p, 0,
                               None if debug is None else (debug * 2 - 1) * np.pi * self.hue_max)
            then(rotate3d(luma_axis, theta, n, dev))
        if self.saturation > 0 and num_channels > 1:
            s = torch.exp2(torch.randn([n, 1, 1], device=dev) * self.saturation_std)
            s = self._gate(s, self.saturation * self.p, 1,
                           None if debug is None else torch.exp2(torch.erfinv(debug * 2 - 1) * self.saturation_std))
            then(luma_outer + (identity - luma_outer) * s)  # scale the chroma, keep the luma
        return c

    @staticmethod
    def _apply_color(images, c):
        """images [N, C, H, W] with C in (1, 3, 4); alpha passes through, grey uses the mean row."""
        n, channels, height, width = images.shape
        c = c.to(images.dtype)
        flat = images.reshape(n, channels, height * width)
        if channels in (3, 4):
            rgb = c[:, :3, :3] @ flat[:, :3] + c[:, :3, 3:]
            flat = rgb if channels == 3 else torch.cat([rgb, flat[:, 3:]], dim=1)
        elif channels == 1:
            grey = c[:, :3, :].mean(dim=1, keepdim=True)  # [N, 1, 4]
            flat = flat * grey[:, :, :3].sum(dim=2, keepdim=True) + grey[:, :, 3:]
        else:
            raise ValueError(f'colour augmentation needs 1 (L), 3 (RGB) or 4 (RGBA) channels, got {channels}.')
        return flat.reshape(n, channels, height, width)

    # --- image-space filter and corruptions ------------------------------------------------------------
    def _imgfilter(self, images, debug):
        """Amplify/attenuate each frequency band by a random log-normal gain, keeping expected power."""
        n, channels, height, width = images.shape
        dev = images.device
        num_bands = self.Hz_fbank.shape[0]
        band_power = torch.tensor(IMGFILTER_BAND_POWER, device=dev)
        gains = torch.ones([n, num_bands], device=dev)
        for band, band_strength in enumerate(self.imgfilter_bands):
            gain = torch.exp2(torch.randn([n], device=dev) * self.imgfilter_std)
            debug_gain = None
            if debug is not None:
                debug_gain = torch.exp2(torch.erfinv(debug * 2 - 1) * self.imgfilter_std) if band_strength > 0 else 1.0
            gain = self._gate(gain, self.imgfilter * band_strength * self.p, 1, debug_gain)
            step = torch.ones([n, num_bands], device=dev)
            step[:, band] = gain
            step = step / (band_power * step.square()).sum(dim=-1, keepdim=True).sqrt()
            gains = gains * step
        taps = (gains @ self.Hz_fbank).to(images.dtype)  # [N, taps]
        taps = taps.unsqueeze(1).repeat([1, channels, 1]).reshape(n * channels, 1, -1)  # [N * C, 1, taps]
        pad = self.Hz_fbank.shape[1] // 2
        if min(height, width) <= pad:
            raise ValueError(f'imgfilter augmentation reflect-pads by {pad} pixels and needs images larger than '
                             f'{pad}x{pad} (32x32 or more), got {height}x{width}.')
        x = images.reshape(1, n * channels, height, width)
        x = F.pad(x, [pad, pad, pad, pad], mode='reflect')
        x = F.conv2d(x, taps.unsqueeze(2), groups=n * channels)  # along x
        x = F.conv2d(x, taps.unsqueeze(3), groups=n * channels)  # along y
        return x.reshape(n, channels, height, width)

    def _add_noise(self, images, debug):
        n = images.shape[0]
        sigma = torch.randn([n, 1, 1, 1], device=images.device).abs() * self.noise_std
        sigma = self._gate(sigma, self.noise * self.p, 0, None if debug is None else torch.erfinv(debug) * self.noise_std)
        return images + torch.randn(images.shape, device=images.device).to(images.dtype) * sigma.to(images.dtype)

    def _cutout(self, images, debug):
        n, _channels, height, width = images.shape
        dev = images.device
        size = self._gate(torch.full([n, 2, 1, 1, 1], self.cutout_size, device=dev), self.cutout * self.p, 0)
        center = torch.rand([n, 2, 1, 1, 1], device=dev)
        if debug is not None:
            size = torch.full_like(size, self.cutout_size)
            center = torch.full_like(center, 0).add_(debug)
        coord_x = torch.arange(width, device=dev).reshape(1, 1, 1, -1)
        coord_y = torch.arange(height, device=dev).reshape(1, 1, -1, 1)
        outside_x = ((coord_x + 0.5) / width - center[:, 0]).abs() >= size[:, 0] / 2
        outside_y = ((coord_y + 0.5) / height - center[:, 1]).abs() >= size[:, 1] / 2
        return images * torch.logical_or(outside_x, outside_y).to(images.dtype)

    # --- the pipeline ----------------------------------------------------------------------------------
    def forward(self, images, debug_percentile=None):
        """images [N, C, H, W] (D's input range, about [-1, 1]) -> augmented, same shape and dtype.
        `debug_percentile` in [0, 1] replaces every random parameter by that percentile of its
        distribution (for visualising one augmentation's strength, as in the release)."""
        if not (isinstance(images, torch.Tensor) and images.ndim == 4):
            raise ValueError(f"AugmentPipe expects images of shape [N, C, H, W], got {getattr(images, 'shape', type(images).__name__)}.")
        batch_size, num_channels, height, width = images.shape
        device = images.device
        debug = None if debug_percentile is None else torch.as_tensor(debug_percentile, dtype=torch.float32, device=device)

        g_inv = self._geometric_matrix(batch_size, width, height, device, debug)
        if g_inv is not None:
            images = self._resample(images, g_inv)
        c = self._color_matrix(batch_size, num_channels, device, debug)
        if c is not None:
            images = self._apply_color(images, c)
        if self.imgfilter > 0:
            images = self._imgfilter(images, debug)
        if self.noise > 0:
            images = self._add_noise(images, debug)
        if self.cutout > 0:
            images = self._cutout(images, debug)
        return images


class AdaptiveAugment:
    """The ADA heuristic (paper section 3): every `ada_interval` minibatches, compare
    r_t = E[sign(D(real))] since the last adjustment with `ada_target` and step the pipe's `p`
    up (D overfits) or down by `batch_size * ada_interval / (ada_kimg * 1000)`, so that p can go
    from 0 to 1 in `ada_kimg` thousand images. Unlike the release, p is clamped to [0, 1].

    Per training iteration: `accumulate(stats['Loss/signs/real'])` after each D phase that reports
    it (the release counts the Dreg phases' real logits too), then
    `end_minibatch(batch_size)` with the global batch size. The sign sums stay on the device until an
    adjustment (one host sync every `ada_interval` minibatches)."""

    def __init__(self, augment_pipe, ada_target=0.6, ada_interval=4, ada_kimg=500):
        if not 0 <= ada_target <= 1:
            raise ValueError(f'ada_target must lie in [0, 1], got {ada_target}.')
        if ada_interval < 1 or ada_kimg <= 0:
            raise ValueError(f'ada_interval must be >= 1 and ada_kimg > 0, got {ada_interval} and {ada_kimg}.')
        self.augment_pipe = augment_pipe
        self.ada_target = float(ada_target)
        self.ada_interval = int(ada_interval)
        self.ada_kimg = float(ada_kimg)
        self.sign_stats = torch.zeros([2], dtype=torch.float64, device=augment_pipe.p.device)  # [sum, count]
        self.num_batches = 0
        self.last_rt = None  # r_t of the last adjustment, for logging

    @property
    def p(self):
        return self.augment_pipe.p

    def accumulate(self, real_signs):
        """Add sign(D(real)) values (any shape) to the running mean; no host sync."""
        real_signs = real_signs.detach()
        if self.sign_stats.device != real_signs.device:  # the pipe moved after construction
            self.sign_stats = self.sign_stats.to(real_signs.device)
        self.sign_stats[0] += real_signs.sum().to(torch.float64)
        self.sign_stats[1] += real_signs.numel()

    def end_minibatch(self, batch_size, all_reduce=None):
        """Adjust p after every `ada_interval`-th minibatch (the 4th, 8th, ... as in the releases).
        `all_reduce`, e.g. `torch.distributed.all_reduce`, sums the statistics over ranks in place."""
        self.num_batches += 1
        if self.num_batches % self.ada_interval == 0:
            if all_reduce is not None:
                all_reduce(self.sign_stats)
            sign_sum, count = self.sign_stats.tolist()
            if count > 0:
                self.last_rt = sign_sum / count
                step = np.sign(self.last_rt - self.ada_target) * batch_size * self.ada_interval / (self.ada_kimg * 1000)
                self.p.copy_((self.p + step).clamp(0, 1))
            self.sign_stats.zero_()

    def state_dict(self):
        return {'p': self.p.detach().cpu().clone(), 'sign_stats': self.sign_stats.cpu().clone(),
                'num_batches': self.num_batches, 'last_rt': self.last_rt}

    def load_state_dict(self, state):
        self.p.copy_(state['p'])
        self.sign_stats.copy_(state['sign_stats'])
        self.num_batches = int(state['num_batches'])
        self.last_rt = state['last_rt']
