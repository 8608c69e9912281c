"""Projection: find the latent W of a real image, the StyleGAN2-ADA release's projector.

    python -m stylegan.projector --network=NET --target=img.png --outdir=out [--num-steps=1000] [--seed=303]

The algorithm and its numbers are the release's (`projector.py` of StyleGAN2-ADA PyTorch; the
StyleGAN3 release ships none):
- start at `w_avg`, the mean of the mapping's W over 10000 z drawn with `RandomState(123)`, and
  optimise one W broadcast to every layer (`--w-plus`: one W per layer) together with StyleGAN2's
  constant noise inputs (StyleGAN3 has none), with Adam (betas 0.9, 0.999);
- learning rate 0.1, raised over the first 5% of the steps and lowered along a half cosine over
  the last 25%;
- Gaussian noise added to W, of standard deviation w_std * 0.05 * (1 - t / 0.75)^2 at progress t
  (zero after 75% of the steps), w_std being the RMS distance of the samples from w_avg;
- loss: the LPIPS distance (VGG16 features, Zhang et al. 2018) between the target and the image,
  both area-downsampled to 256x256 when larger, plus 1e5 times the noise regularisation: the
  squared mean correlation of each noise map with its one-pixel shifts, at every scale of a 2x2
  average-pooling pyramid down to 8x8; after each step every noise map is renormalised to zero
  mean and unit variance.

The release reads NVIDIA's TorchScript `vgg16.pt`; here the same distance comes from the metrics'
LPIPS network (`metrics/lpips.py`), whose weight files (`vgg16-397923af.pth`,
`weights-vgg16-lpips.pth`) are found through `metrics/weights.py`: `--weights-dir`,
`$STYLEGAN_METRICS_WEIGHTS`, torch.hub's cache, downloaded unless `--offline`.

Targets of any size are centre-cropped to a square and resized (Lanczos) to the network's
resolution. Outputs, as the release names them: `target.png` (the cropped, resized target),
`proj.png` and `projected_w.npz` (key `w`, float32 [1, num_ws, w_dim], which `generate.py
--projected-w` renders), and with `--save-video=1` `proj.mp4` (target beside the image at every
step, 10 fps; needs ffmpeg, otherwise `proj.gif` with at most 100 evenly spaced steps). As in the
release, the optimised noise maps are not kept: `proj.png` and the video are rendered with the
network's own constant noise, so `generate.py --projected-w` reproduces `proj.png`.

Several targets (`--target a.png b.png ...`) go to one folder each, `out/00-a/`, `out/01-b/`, ...,
plus `out/projected_w.npz` holding all their ws [N, num_ws, w_dim]; `--batch=K` optimises K of
them at once, each with its own W and noise maps (the results differ from one-at-a-time runs only
through the random draws).
"""
import argparse
import copy
import dataclasses
import os
import shutil
import sys
from typing import Optional

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
import tqdm

from metrics import lpips as lpips_lib
from metrics import weights as weights_lib
from stylegan import generate as generate_lib

PERCEPTUAL_RESOLUTION = 256  # larger images are area-downsampled to this before VGG16
GIF_MAX_FRAMES = 100         # the GIF fallback keeps at most this many steps
VIDEO_FPS = 10


class ProjectionError(ValueError):
    """A bad target or option for projection; one sentence."""


@dataclasses.dataclass
class ProjectOptions:
    """The release's `project()` arguments and defaults, plus this project's additions."""
    num_steps: int = 1000
    w_avg_samples: int = 10000
    initial_learning_rate: float = 0.1
    initial_noise_factor: float = 0.05
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    w_plus: bool = False       # one W per layer instead of one W broadcast to all
    seed: int = 303            # the release's default --seed
    class_idx: Optional[int] = None  # conditional networks: the class whose W statistics start the search


@dataclasses.dataclass
class Projection:
    """What `project` found for a batch of B targets."""
    ws: torch.Tensor         # [num_steps, B, num_ws, w_dim]: W after each step (the last row is the result)
    distances: torch.Tensor  # [num_steps, B]: LPIPS distance at each step, before its update


# --- targets ---------------------------------------------------------------------------------------

CHANNEL_MODES = {3: ('RGB', 'RGBA', 'P'), 1: ('L', 'LA')}  # accepted PIL modes per network channel count


def load_target(path, resolution, channels):
    """uint8 [resolution, resolution, channels] from an image file: centre-cropped to a square and
    resized with Lanczos, as the release does. Raises `ProjectionError` for a missing or unreadable
    file, or one whose channels are not the network's (grey vs RGB, transparent pixels)."""
    if not os.path.isfile(path):
        raise ProjectionError(f"target '{path}' does not exist or is not a file.")
    try:
        with PIL.Image.open(path) as image:
            image.load()
    except Exception as error:  # PIL raises many types for damaged or non-image files
        raise ProjectionError(f"target '{path}' cannot be read as an image ({type(error).__name__}); "
                              f"give a PNG or JPEG file.") from None
    kind = 'an RGB' if channels == 3 else 'a greyscale'
    if image.mode not in CHANNEL_MODES[channels]:
        raise ProjectionError(f"target '{path}' has PIL mode {image.mode} ({len(image.getbands())} channel(s)) but the "
                              f"network makes {channels}-channel images; give {kind} image.")
    if image.mode == 'P':
        image = image.convert('RGBA')
    if image.mode in ('RGBA', 'LA'):
        if image.getchannel('A').getextrema()[0] < 255:
            raise ProjectionError(f"target '{path}' has transparent pixels; give {kind} image without transparency.")
        image = image.convert('RGB' if channels == 3 else 'L')
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), PIL.Image.LANCZOS)
    return np.asarray(image, dtype=np.uint8).reshape(resolution, resolution, channels)


# --- the pieces of the optimisation ------------------------------------------------------------------

@torch.no_grad()
def w_statistics(G, num_samples, class_idx=None, device='cpu', chunk=1000):
    """(w_avg float32 [1, w_dim], w_std float): the mean of the mapping's W over `num_samples` z from
    `RandomState(123)` and the RMS distance of the samples from it (over all w_dim entries), as the
    release computes them."""
    z = np.random.RandomState(123).randn(num_samples, G.z_dim)
    ws = []
    for start in range(0, num_samples, chunk):
        z_chunk = torch.from_numpy(z[start:start + chunk]).to(device=device, dtype=torch.float32)
        c = generate_lib.class_vector(G, class_idx, len(z_chunk), device)
        ws.append(G.mapping(z_chunk, c)[:, 0].to(torch.float64))  # [n, num_ws, w_dim] -> [n, w_dim]
    ws = torch.cat(ws)
    w_avg = ws.mean(dim=0, keepdim=True)                          # [1, w_dim]
    w_std = ((ws - w_avg).square().sum() / num_samples).sqrt().item()
    return w_avg.float(), w_std


def noise_layers(synthesis):
    """The layers of a StyleGAN2 synthesis network that add constant noise (none in StyleGAN3)."""
    return [module for module in synthesis.modules()
            if getattr(module, 'use_noise', False) and isinstance(getattr(module, 'noise_const', None), torch.Tensor)]


def learning_rate(step, options):
    """The release's schedule: linear ramp-up over the first `lr_rampup_length` of the steps, a half
    cosine down to 0 over the last `lr_rampdown_length` (so the first step, at t = 0, has lr 0)."""
    t = step / options.num_steps
    ramp = min(1.0, (1.0 - t) / options.lr_rampdown_length)
    ramp = 0.5 - 0.5 * np.cos(ramp * np.pi)
    ramp = ramp * min(1.0, t / options.lr_rampup_length)
    return options.initial_learning_rate * ramp


def w_noise_scale(step, options, w_std):
    """Standard deviation of the noise added to W at `step`: quadratic decay to 0 at `noise_ramp_length`."""
    t = step / options.num_steps
    return w_std * options.initial_noise_factor * max(0.0, 1.0 - t / options.noise_ramp_length) ** 2


def noise_regularization(noises):
    """[B] penalty (a zero scalar without noise maps, as in StyleGAN3): for every noise map [B, 1, R, R] and every level of its 2x2 average-pooling pyramid
    down to 8x8, the squared mean product of the map with itself shifted by one pixel, horizontally
    and vertically (the release's; it pushes the maps towards white noise)."""
    total = torch.zeros([], device=noises[0].device) if noises else torch.zeros([])  # [] + [B] terms -> [B]
    for noise in noises:
        while True:
            for dim in (3, 2):
                total = total + (noise * torch.roll(noise, shifts=1, dims=dim)).mean(dim=[1, 2, 3]).square()
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


@torch.no_grad()
def normalize_noises(noises):
    """Each map [B, 1, R, R] to zero mean and unit variance per target, in place."""
    for noise in noises:
        noise -= noise.mean(dim=[1, 2, 3], keepdim=True)
        noise *= noise.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()


def perceptual_images(images):
    """float [B, C, H, W] in [0, 255] -> [B, 3, h, w] for VGG16: grey repeated to RGB, and larger than
    256x256 area-downsampled to it, as the release does."""
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    if images.shape[2] > PERCEPTUAL_RESOLUTION:
        images = F.interpolate(images, size=(PERCEPTUAL_RESOLUTION, PERCEPTUAL_RESOLUTION), mode='area')
    return images


class PerceptualDistance:
    """LPIPS distance to fixed targets: their VGG16 features are computed once.
    distance(images float [B, C, H, W] in [0, 255]) -> [B]."""

    def __init__(self, lpips, targets):
        self.lpips = lpips
        with torch.no_grad():
            self.target_features = lpips.layer_features(perceptual_images(targets))

    def __call__(self, images):
        features = self.lpips.layer_features(perceptual_images(images))
        distance = 0
        for lin, target, feature in zip(self.lpips.lins, self.target_features, features):
            distance = distance + lin((feature - target).square()).mean(dim=[1, 2, 3])  # [B, 1, h, w] -> [B]
        return distance


# --- the optimisation ------------------------------------------------------------------------------

def project(G, targets, lpips, options, progress=None):
    """Find W for each target. `targets`: uint8 or float [B, C, H, W] in [0, 255] at the network's
    resolution and channels, on G's device; `lpips`: `metrics.lpips.LPIPS` on the same device;
    `progress`: None, or a tqdm bar that is advanced once per step. G is not modified."""
    device = targets.device
    batch, num_ws = targets.shape[0], G.num_ws
    assert tuple(targets.shape[1:]) == (G.img_channels, G.img_resolution, G.img_resolution), targets.shape
    generator = torch.Generator(device=device).manual_seed(options.seed)
    synthesis = copy.deepcopy(G.synthesis).eval().requires_grad_(False)
    distance = PerceptualDistance(lpips, targets.to(torch.float32))

    w_avg, w_std = w_statistics(G, options.w_avg_samples, options.class_idx, device)
    w_layers = num_ws if options.w_plus else 1
    w_opt = w_avg[:, None, :].repeat([batch, w_layers, 1]).requires_grad_(True)  # [B, 1 or num_ws, w_dim]

    # Each target gets its own noise maps: the layers' [R, R] buffers become [B, 1, R, R] leaves of
    # the optimisation (const noise mode broadcasts them over channels).
    noises = []
    for layer in noise_layers(synthesis):
        resolution = layer.noise_const.shape[-1]
        layer.noise_const = torch.randn([batch, 1, resolution, resolution], device=device, generator=generator)
        noises.append(layer.noise_const.requires_grad_(True))
    optimizer = torch.optim.Adam([w_opt] + noises, betas=(0.9, 0.999), lr=options.initial_learning_rate)

    ws_per_step = torch.zeros([options.num_steps, batch, num_ws, G.w_dim], device=device)
    distances = torch.zeros([options.num_steps, batch])
    for step in range(options.num_steps):
        for group in optimizer.param_groups:
            group['lr'] = learning_rate(step, options)
        w_noise = torch.randn(w_opt.shape, device=device, generator=generator) * w_noise_scale(step, options, w_std)
        ws = (w_opt + w_noise).expand([batch, num_ws, G.w_dim])   # [B, num_ws, w_dim]
        images = (synthesis(ws, noise_mode='const') + 1) * (255 / 2)  # [B, C, H, W], about [0, 255]
        dist = distance(images)                                    # [B]
        loss = dist.sum() + noise_regularization(noises).sum() * options.regularize_noise_weight

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        normalize_noises(noises)
        ws_per_step[step] = w_opt.detach().expand([batch, num_ws, G.w_dim])
        distances[step] = dist.detach().cpu()
        if progress is not None:
            progress.set_postfix_str(f'dist {dist.mean().item():.4f} loss {loss.item():.4f}', refresh=False)
            progress.update(1)
    return Projection(ws=ws_per_step, distances=distances)


# --- outputs ---------------------------------------------------------------------------------------

@torch.no_grad()
def render(G, ws):
    """uint8 [N, H, W, C] for ws [N, num_ws, w_dim] with G's own constant noise, converted as the
    release's projector converts (x + 1) * 255/2, truncated: up to 1 below generate.py's rounding."""
    images = (G.synthesis(ws, noise_mode='const') + 1) * (255 / 2)
    return images.permute(0, 2, 3, 1).clamp(0, 255).to(torch.uint8).cpu().numpy()


def video_frames(G, target, ws_per_step, steps, chunk=16):
    """Yields uint8 [H, 2W, C] frames, target beside the image at each of `steps`; ws_per_step
    [S, num_ws, w_dim]. A generator, so that a long video is never held in memory at once."""
    for start in range(0, len(steps), chunk):
        for image in render(G, ws_per_step[list(steps[start:start + chunk])]):
            yield np.concatenate([target, image], axis=1)


def write_video(G, target, ws_per_step, folder):
    """proj.mp4 (every step, ffmpeg) or, without ffmpeg, proj.gif (at most 100 evenly spaced steps)."""
    num_steps = len(ws_per_step)
    if shutil.which('ffmpeg') is not None:
        path = os.path.join(folder, 'proj.mp4')
        generate_lib._write_mp4(video_frames(G, target, ws_per_step, range(num_steps)), path, fps=VIDEO_FPS)
        return path
    steps = sorted(set(np.linspace(0, num_steps - 1, min(num_steps, GIF_MAX_FRAMES)).round().astype(int).tolist()))
    frames = [generate_lib.to_pil(frame) for frame in video_frames(G, target, ws_per_step, steps)]
    path = os.path.join(folder, 'proj.gif')
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=1000 // VIDEO_FPS, loop=0)
    return path


def save_projected_w(path, ws):
    """The release's file: key `w`, float32 [N, num_ws, w_dim]."""
    np.savez(path, w=ws.detach().cpu().numpy().astype(np.float32))


def write_outputs(G, target, ws_per_step, folder, save_video):
    """target.png, proj.png, projected_w.npz (and the video) for one target; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    final = ws_per_step[-1:]  # [1, num_ws, w_dim]
    paths = [os.path.join(folder, name) for name in ('target.png', 'proj.png', 'projected_w.npz')]
    generate_lib.to_pil(target).save(paths[0])
    generate_lib.to_pil(render(G, final)[0]).save(paths[1])
    save_projected_w(paths[2], final)
    if save_video:
        paths.append(write_video(G, target, ws_per_step, folder))
    return paths


def target_folders(outdir, target_paths):
    """outdir itself for one target (the release's layout); `outdir/NN-<name>` for several."""
    if len(target_paths) == 1:
        return [outdir]
    stems = [os.path.splitext(os.path.basename(path))[0] for path in target_paths]
    return [os.path.join(outdir, f'{index:02d}-{stem}') for index, stem in enumerate(stems)]


def run_projection(network_path, target_paths, outdir, options, batch_size=1, save_video=True,
                   weights_dir=None, download=True, device=None, verbose=True):
    """Load everything (refusing bad input before anything is written), project the targets
    `batch_size` at a time, write the outputs; returns the final ws [N, num_ws, w_dim]."""
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    G = generate_lib.load_generator(network_path, device)
    check_class(G, options.class_idx)
    targets = np.stack([load_target(path, G.img_resolution, G.img_channels) for path in target_paths])
    lpips = lpips_lib.load_lpips(device, weights_dir, download=download, verbose=verbose)

    folders = target_folders(outdir, target_paths)
    finals = []
    for start in range(0, len(targets), batch_size):
        chunk = targets[start:start + batch_size]  # [B, H, W, C]
        names = ', '.join(os.path.basename(path) for path in target_paths[start:start + batch_size])
        with tqdm.tqdm(total=options.num_steps, desc=f'projecting {names}', disable=not verbose,
                       file=sys.stderr, dynamic_ncols=True) as progress:
            result = project(G, torch.from_numpy(chunk).permute(0, 3, 1, 2).to(device), lpips, options, progress)
        for index in range(len(chunk)):
            write_outputs(G, chunk[index], result.ws[:, index], folders[start + index], save_video)
            finals.append(result.ws[-1, index])
    finals = torch.stack(finals)
    if len(target_paths) > 1:
        save_projected_w(os.path.join(outdir, 'projected_w.npz'), finals)
    return finals


def check_class(G, class_idx):
    if G.c_dim == 0 and class_idx is not None:
        raise ProjectionError(f'--class={class_idx} was given but the network is unconditional; leave --class out.')
    if G.c_dim > 0 and (class_idx is None or not 0 <= class_idx < G.c_dim):
        raise ProjectionError(f'the network is conditional; choose the class to start from with --class=0 ... {G.c_dim - 1}.')


# --- command line ----------------------------------------------------------------------------------

def parse_bool(text):
    """The release's click booleans: 1/0, true/false, yes/no."""
    value = text.strip().lower()
    if value in ('1', 'true', 'yes', 'on'):
        return True
    if value in ('0', 'false', 'no', 'off'):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not a boolean; use 1 or 0")


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m stylegan.projector', description=__doc__.split('\n\n')[0])
    parser.add_argument('--network', required=True, metavar='FILE', help='checkpoint of this project or release pickle')
    parser.add_argument('--target', required=True, nargs='+', metavar='FILE', help='image(s) to project')
    parser.add_argument('--outdir', required=True, metavar='DIR')
    parser.add_argument('--num-steps', type=int, default=1000, help='optimisation steps (default 1000)')
    parser.add_argument('--seed', type=int, default=303, help='random seed (default 303)')
    parser.add_argument('--save-video', type=parse_bool, default=True, metavar='BOOL',
                        help='write proj.mp4 (proj.gif without ffmpeg) of the optimisation (default 1)')
    parser.add_argument('--w-plus', action='store_true', help='optimise one W per layer instead of one broadcast W')
    parser.add_argument('--batch', type=int, default=1, help='targets optimised at once (default 1)')
    parser.add_argument('--class', dest='class_idx', type=int, help='class of a conditional network')
    parser.add_argument('--w-avg-samples', type=int, default=10000, help='samples for w_avg and w_std (default 10000)')
    parser.add_argument('--weights-dir', help=f'folder of the VGG16/LPIPS weight files (or ${weights_lib.WEIGHTS_DIR_ENV})')
    parser.add_argument('--offline', action='store_true', help=f'never download weights (or {weights_lib.OFFLINE_ENV}=1)')
    parser.add_argument('--device', help="'cuda', 'cpu', ... (default: cuda when available)")
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ('num_steps', 'batch', 'w_avg_samples'):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')}={getattr(args, name)} must be at least 1.", file=sys.stderr)
            return 1
    options = ProjectOptions(num_steps=args.num_steps, w_avg_samples=args.w_avg_samples, w_plus=args.w_plus,
                             seed=args.seed, class_idx=args.class_idx)
    try:
        run_projection(args.network, args.target, args.outdir, options, batch_size=args.batch,
                       save_video=args.save_video, weights_dir=args.weights_dir, download=not args.offline,
                       device=args.device, verbose=not args.quiet)
    except (ProjectionError, generate_lib.GenerateError, weights_lib.MissingWeightsError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    print(f'wrote the projection to {args.outdir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
