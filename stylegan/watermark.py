"""An invisible, keyed watermark that survives JPEG compression and resizing.

    python -m stylegan.watermark detect out/*.png photo.jpg
    python -m stylegan.watermark embed in.png out.png

Scheme (informed sign embedding in a low-frequency DCT band of the luma):
1. The detector brings any image to a canonical 32x32 grey image (an area-weighted resize, so the
   original size does not matter) and takes its orthonormal 2-D DCT.
2. `BAND` is 169 frequencies (u, v <= 13, 3 <= u + v <= 20, the DC and the coarsest shading left
   out): low enough to survive a 0.5x resize of a 32x32 image and JPEG's quantisation, high
   enough not to fight the image's main shapes.
3. The key (a string) seeds a pattern of +-1 signs over the band. The detection score is
   `z = (#band coefficients whose sign matches the pattern - #mismatches) / sqrt(169)`. For an
   unmarked image the signs are independent of the key, so `z` is close to a standard normal
   variable; `THRESHOLD` = 4.5 gives a theoretical false-positive rate near 3e-6 (the measured rate
   on 1000 unmarked images is checked by tests/test_watermark.py).
4. Embedding changes as little as it can to reach `z >= TARGET_SCORE` with every chosen
   coefficient at least a margin past zero: it flips the cheapest mismatched signs, adds the change
   to R, G and B alike (so colours keep their hue) as a smooth low-frequency image, and repeats on
   the rounded, clipped result until the target holds.

Limits: the mark is tested against resizing down to half size (16x16 at the least) and JPEG at
quality 75 (lower qualities, noise and colour edits are untested); it does not survive cropping, rotation, flips or aspect changes beyond a few
percent, heavy blurring, or an attacker who knows the key (the default key is public, so anyone can
detect, and remove, a mark made with it: it records provenance, it is no security measure).
Near-black or near-white images leave little room for the change and may not reach the target
(`embed` then raises). The change is a faint low-frequency texture, stronger on small images: a
PSNR of about 28-36 dB at 32x32 and 64x64, 33-36 dB from 256x256 (measured on generated images,
Fashion-MNIST, emoji and 1/f-noise images); visible on close inspection of flat areas.
A 0.5x resize *followed by* JPEG leaves the mark readable from 64x64 up, not on 32x32 images
(their half-size JPEG keeps too little of the band). GIF's 256-colour palette (generate.py --interp)
weakens it further.
"""
import argparse
import hashlib
import sys

import numpy as np
import PIL.Image
import scipy.fft

DEFAULT_KEY = 'stylegan-generate'
CANONICAL_SIZE = 32
THRESHOLD = 4.5       # detection score above which an image counts as marked
TARGET_SCORE = 7.0    # what embedding aims for, leaving room for JPEG/resize to flip some signs
MAX_ROUNDS = 8


class WatermarkError(ValueError):
    """An image that cannot be marked or read; one sentence."""


def _band_mask():
    u, v = np.meshgrid(np.arange(CANONICAL_SIZE), np.arange(CANONICAL_SIZE), indexing='ij')
    return (u <= 13) & (v <= 13) & (u + v >= 3) & (u + v <= 20)


BAND = _band_mask()  # [32, 32] bool, 169 True
BAND_FREQUENCY = np.add.outer(np.arange(CANONICAL_SIZE), np.arange(CANONICAL_SIZE))[BAND]  # [169] u + v


def margin_for(width, height):
    """[169] |DCT coefficient| (0-255 units, orthonormal 32x32) that embedding keeps past zero.
    JPEG blocks and a 0.5x resize disturb the canonical band of a small image far more than that of
    a large one, so small images get a stronger (more visible) mark: base 8 at 32x32, 5.7 at 64x64,
    4 from 128x128; higher frequencies, which a resize attenuates most, get up to 3x the base."""
    base = float(np.clip(8.0 * np.sqrt(32.0 / min(width, height)), 4.0, 8.0))
    return base * (1.0 + 0.5 * (BAND_FREQUENCY / 10.0) ** 2)


def key_pattern(key):
    """+-1 float64 [169]: the pattern the key stands for."""
    seed = int.from_bytes(hashlib.sha256(key.encode('utf-8')).digest()[:8], 'little')
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=int(BAND.sum()))


def luma(pixels):
    """float64 [H, W] luma (ITU-R 601) of uint8 [H, W] or [H, W, C] pixels (alpha ignored)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[2] < 3:
        return pixels[:, :, 0]
    return pixels[:, :, :3] @ np.array([0.299, 0.587, 0.114])


def _resize_float(array, width, height):
    # PIL's resize widens its filter when shrinking, so this is an area-weighted average downwards.
    return np.asarray(PIL.Image.fromarray(array.astype(np.float32), 'F').resize((width, height), PIL.Image.BILINEAR),
                      dtype=np.float64)


def band_coefficients(pixels):
    """float64 [169]: the band of the DCT of the canonical 32x32 luma."""
    canonical = _resize_float(luma(pixels), CANONICAL_SIZE, CANONICAL_SIZE)
    return scipy.fft.dctn(canonical, norm='ortho')[BAND]


def score(pixels, key=DEFAULT_KEY):
    """Detection score z (about N(0, 1) for unmarked images, >= THRESHOLD for marked ones)."""
    signs = np.sign(band_coefficients(pixels)) * key_pattern(key)
    return float(signs.sum() / np.sqrt(signs.size))


def is_marked(pixels, key=DEFAULT_KEY):
    return score(pixels, key) >= THRESHOLD


def _needed_changes(coefficients, pattern, margin):
    """Band-coefficient changes that bring the cheapest K coefficients to `margin` on the pattern's side,
    K being the number of matches that `TARGET_SCORE` needs."""
    signed = coefficients * pattern                      # > 0 where the sign already matches
    matches_needed = int(np.ceil((TARGET_SCORE * np.sqrt(signed.size) + signed.size) / 2))
    cost = np.maximum(margin - signed, 0.0)              # how far each coefficient is from the goal
    chosen = np.argsort(cost, kind='stable')[:matches_needed]
    change = np.zeros_like(coefficients)
    change[chosen] = cost[chosen] * pattern[chosen]
    return change


def embed(pixels, key=DEFAULT_KEY):
    """uint8 pixels like `pixels` ([H, W] or [H, W, C]) carrying the mark. Raises `WatermarkError` when
    the image has no room for it (nearly uniform black or white)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or min(pixels.shape[:2]) < 16:
        raise WatermarkError(f'can only mark uint8 images of at least 16x16 pixels, not {pixels.dtype} {list(pixels.shape)}')
    pattern = key_pattern(key)
    height, width = pixels.shape[:2]
    marked = pixels.astype(np.float64)
    for _ in range(MAX_ROUNDS):
        current = np.clip(np.round(marked), 0, 255).astype(np.uint8)
        change = _needed_changes(band_coefficients(current), pattern, margin_for(width, height))
        if not change.any():
            return current
        spectrum = np.zeros([CANONICAL_SIZE, CANONICAL_SIZE])
        spectrum[BAND] = change
        delta = _resize_float(scipy.fft.idctn(spectrum, norm='ortho'), width, height)  # [H, W] luma change
        if marked.ndim == 3:
            delta = delta[:, :, np.newaxis].repeat(min(marked.shape[2], 3), axis=2)
            marked[:, :, :3] += delta
        else:
            marked += delta
        marked = np.clip(marked, 0, 255)
    current = np.clip(np.round(marked), 0, 255).astype(np.uint8)
    if score(current, key) < THRESHOLD:
        raise WatermarkError('the image is too uniform (nearly all black or white) to carry the watermark')
    return current


# --- command line ----------------------------------------------------------------------------------

def _read_pixels(path):
    try:
        with PIL.Image.open(path) as image:
            return np.asarray(image.convert('RGBA' if 'A' in image.mode else 'RGB'))
    except (OSError, ValueError, SyntaxError) as error:
        raise WatermarkError(f"'{path}' is not a readable image ({error})") from None


def _detect_command(args):
    found = 0
    for path in args.images:
        value = score(_read_pixels(path), args.key)
        found += value >= THRESHOLD
        print(f"{path}: {'watermarked' if value >= THRESHOLD else 'no watermark'} (score {value:.1f}, threshold {THRESHOLD})")
    return 0 if found == len(args.images) else 3


def _embed_command(args):
    with PIL.Image.open(args.input) as image:
        mode = image.mode if image.mode in ('L', 'RGB', 'RGBA') else 'RGB'
        pixels = np.asarray(image.convert(mode))
    PIL.Image.fromarray(embed(pixels, args.key), mode).save(args.output)
    print(f'{args.output}: watermarked (score {score(np.asarray(PIL.Image.open(args.output)), args.key):.1f})')
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m stylegan.watermark', description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    detect = commands.add_parser('detect', help='report whether images carry the watermark '
                                                '(exit status 0: all do, 3: some do not)')
    detect.add_argument('images', nargs='+', metavar='IMAGE')
    embed_parser = commands.add_parser('embed', help='write a watermarked copy of an image')
    embed_parser.add_argument('input')
    embed_parser.add_argument('output')
    for sub in (detect, embed_parser):
        sub.add_argument('--key', default=DEFAULT_KEY, help='watermark key (default: the public key of generate.py)')
    args = parser.parse_args(argv)
    try:
        return _detect_command(args) if args.command == 'detect' else _embed_command(args)
    except (WatermarkError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
