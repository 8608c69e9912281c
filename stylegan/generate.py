"""Generate images, grids, interpolations and style-mixing figures from a trained network.

    python generate.py --network=network-snapshot-000400.pkl --seeds=0-3,7 --trunc=0.7 --outdir=out

The network is a checkpoint of this project or an NVlabs release pickle (loaded without running
code from it). A seed gives the same latent as the releases' `generate.py`/`gen_images.py`
(`np.random.RandomState(seed).randn(1, z_dim)`) and, with the same options, the same image,
written under the same name (`seed0007.png`). StyleGAN3's --translate/--rotate set
`G.synthesis.input.transform` to the inverse of the releases' matrix, as they do.

Every PNG records its provenance in text chunks (the network file's SHA-256, seed(s), truncation,
class, noise mode, transform); with --watermark the pixels also carry the invisible mark of
`stylegan.watermark`.
"""
import argparse
import dataclasses
import hashlib
import io
import os
import re
import sys
import zipfile
from typing import Optional

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import torch

import stylegan
from stylegan import watermark as watermarking

SOFTWARE = 'stylegan (this project) generate.py'


class GenerateError(ValueError):
    """A bad option or network for generation; one sentence."""


# --- argument parsing ------------------------------------------------------------------------------

MAX_SEEDS = 100_000  # per command: twice a 50k FID set; '0-4000000000' would build a list of 4e9 ints


def parse_seeds(text, limit=MAX_SEEDS):
    """'0-3,7' -> [0, 1, 2, 3, 7], as the releases parse --seeds (ranges inclusive, order kept).
    More than `limit` seeds are refused before any list is built (a guard against '0-4000000000';
    the server passes a smaller limit)."""
    seeds = []
    for part in text.split(','):
        match = re.fullmatch(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?', part)
        if not match:
            raise argparse.ArgumentTypeError(f"'{text}' is not a list of seeds such as 0-3,7 (non-negative integers)")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise argparse.ArgumentTypeError(f"seed range '{part.strip()}' is backwards; write it as {last}-{first}")
        if limit is not None and len(seeds) + last - first + 1 > limit:
            raise argparse.ArgumentTypeError(f"'{text}' lists more than {limit} numbers; give at most {limit}")
        seeds.extend(range(first, last + 1))
    if any(seed >= 2 ** 32 for seed in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be below 2**32, as numpy's RandomState requires")
    return seeds


def parse_vec2(text):
    """'0.3,1' -> (0.3, 1.0)."""
    try:
        x, y = (float(part) for part in text.split(','))
        return x, y
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a pair of numbers such as 0.3,1") from None


def parse_grid(text):
    """'4x8' -> (4 rows, 8 columns)."""
    match = re.fullmatch(r'(\d+)x(\d+)', text.strip())
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"grid '{text}' is not ROWSxCOLUMNS such as 4x8")
    return int(match.group(1)), int(match.group(2))


@dataclasses.dataclass
class GenerateOptions:
    seeds: list
    outdir: str
    truncation_psi: float = 1.0
    truncation_cutoff: Optional[int] = None
    class_idx: Optional[int] = None
    noise_mode: str = 'const'
    translate: tuple = (0.0, 0.0)
    rotate: float = 0.0
    grid: Optional[tuple] = None           # (rows, columns)
    interp: Optional[str] = None           # 'gif' or 'mp4'
    interp_frames: int = 24                # frames from one seed to the next
    style_mix_cols: Optional[list] = None  # column seeds; the rows are `seeds`
    style_mix_styles: Optional[list] = None
    watermark: bool = False
    watermark_key: str = watermarking.DEFAULT_KEY
    batch_size: int = 16
    projected_w: Optional[str] = None      # a projector's projected_w.npz: render its ws (the rows of --style-mix)


# --- the network -----------------------------------------------------------------------------------

def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def load_generator(path, device):
    """`G_ema` of a checkpoint or release pickle, on `device`; raises `GenerateError`."""
    try:
        networks = stylegan.load_network(path, device=device)
    except stylegan.NetworkFileError as error:
        raise GenerateError(str(error)) from None
    if 'G_ema' not in networks:
        raise GenerateError(f"network file '{path}' holds no G_ema generator (it has {sorted(networks)}).")
    return networks['G_ema']


def is_stylegan3(G):
    return hasattr(G.synthesis, 'input')


def make_transform(translate, angle_degrees):
    """3x3 rotation-then-translation matrix with the releases' layout and sign conventions."""
    angle = angle_degrees / 360.0 * 2 * np.pi
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, sin, translate[0]], [-sin, cos, translate[1]], [0.0, 0.0, 1.0]])


def validate_for_network(G, options):
    """Refuse options the network cannot honour, each with one sentence."""
    if G.c_dim == 0 and options.class_idx is not None:
        raise GenerateError(f'--class={options.class_idx} was given but the network is unconditional (c_dim=0); '
                            f'leave --class out.')
    if G.c_dim > 0 and options.class_idx is None:
        raise GenerateError(f'the network is conditional with {G.c_dim} classes; choose one with --class=0 ... {G.c_dim - 1}.')
    if G.c_dim > 0 and not 0 <= options.class_idx < G.c_dim:
        raise GenerateError(f'--class={options.class_idx} is out of range; this network has classes 0 ... {G.c_dim - 1}.')
    if not is_stylegan3(G) and (tuple(options.translate) != (0, 0) or options.rotate != 0):
        raise GenerateError('--translate and --rotate need a StyleGAN3 network; this one is StyleGAN2.')
    if options.truncation_cutoff is not None and not 0 < options.truncation_cutoff <= G.num_ws:
        raise GenerateError(f'--trunc-cutoff={options.truncation_cutoff} must be in 1 ... {G.num_ws} (the number of ws).')
    if options.style_mix_styles is not None and max(options.style_mix_styles) >= G.num_ws:
        raise GenerateError(f'--styles={max(options.style_mix_styles)} is out of range; this network has styles '
                            f'0 ... {G.num_ws - 1}.')
    if options.grid is not None and options.grid[0] * options.grid[1] != len(options.seeds):
        raise GenerateError(f'--grid={options.grid[0]}x{options.grid[1]} has {options.grid[0] * options.grid[1]} cells '
                            f'but {len(options.seeds)} seeds were given; give exactly one seed per cell.')
    if options.interp is not None and len(options.seeds) < 2:
        raise GenerateError('--interp needs at least two seeds to move between.')


def set_transform(G, options):
    """StyleGAN3 only: the releases pass the inverse of the wanted transform to the network."""
    if is_stylegan3(G):
        matrix = np.linalg.inv(make_transform(options.translate, options.rotate))
        G.synthesis.input.transform.copy_(torch.from_numpy(matrix))


def latents(G, seeds, device):
    """float32 [N, z_dim]: the releases' z for each seed."""
    z = np.concatenate([np.random.RandomState(seed).randn(1, G.z_dim) for seed in seeds])
    return torch.from_numpy(z).to(device=device, dtype=torch.float32)


def class_vector(G, class_idx, count, device):
    c = torch.zeros([count, G.c_dim], device=device)
    if class_idx is not None:
        c[:, class_idx] = 1
    return c


def mapped_ws(G, seeds, options, device):
    """[N, num_ws, w_dim] truncated ws for the seeds."""
    ws = [G.mapping(latents(G, chunk, device), class_vector(G, options.class_idx, len(chunk), device),
                    truncation_psi=options.truncation_psi, truncation_cutoff=options.truncation_cutoff)
          for chunk in _chunks(seeds, options.batch_size)]
    return torch.cat(ws)


def _chunks(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


def to_uint8(images):
    """[N, C, H, W] float about [-1, 1] -> uint8 [N, H, W, C] numpy, the releases' exact rounding."""
    return (images.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def synthesize(G, ws, options):
    """uint8 [N, H, W, C] images for [N, num_ws, w_dim] ws, in batches."""
    return np.concatenate([to_uint8(G.synthesis(chunk, noise_mode=options.noise_mode))
                           for chunk in torch.split(ws, options.batch_size)])


# --- writing images --------------------------------------------------------------------------------

def provenance(network_path, network_hash, options, **extra):
    """Text chunks that say how an image was made."""
    fields = {
        'Software': SOFTWARE,
        'network': os.path.basename(network_path),
        'network-sha256': network_hash,
        'truncation-psi': f'{options.truncation_psi:g}',
        'truncation-cutoff': 'none' if options.truncation_cutoff is None else str(options.truncation_cutoff),
        'class': 'none' if options.class_idx is None else str(options.class_idx),
        'noise-mode': options.noise_mode,
        'translate': f'{options.translate[0]:g},{options.translate[1]:g}',
        'rotate': f'{options.rotate:g}',
        'watermark': 'yes' if options.watermark else 'no',
    }
    fields.update({key: str(value) for key, value in extra.items()})
    return fields


def to_pil(pixels):
    return PIL.Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, 'L' if pixels.shape[2] == 1 else 'RGB')


def save_png(pixels, path, fields, options):
    """Write uint8 [H, W, C] pixels as a PNG with the provenance `fields`, watermarked when asked."""
    if options.watermark:
        pixels = watermarking.embed(pixels, options.watermark_key)
        pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    info = PIL.PngImagePlugin.PngInfo()
    for key, value in fields.items():
        info.add_text(key, value)
    to_pil(pixels).save(path, format='PNG', pnginfo=info)  # `path` may be a binary file (the server's)


def tile(images, rows, columns):
    """uint8 [rows*columns, H, W, C] -> [rows*H, columns*W, C]."""
    _, height, width, channels = images.shape
    return images.reshape(rows, columns, height, width, channels).transpose(0, 2, 1, 3, 4).reshape(
        rows * height, columns * width, channels)


def seeds_text(seeds):
    return ','.join(map(str, seeds))


# --- what generate.py writes -----------------------------------------------------------------------

def write_seed_images(G, options, network):
    """One `seedNNNN.png` per seed, named as the releases name them."""
    images = synthesize(G, mapped_ws(G, options.seeds, options, G.mapping.w_avg.device), options)
    paths = []
    for seed, pixels in zip(options.seeds, images):
        paths.append(os.path.join(options.outdir, f'seed{seed:04d}.png'))
        save_png(pixels, paths[-1], provenance(*network, options, seed=seed), options)
    return paths


def write_grid(G, options, network):
    """One `grid.png`, seeds in row-major order."""
    rows, columns = options.grid
    images = synthesize(G, mapped_ws(G, options.seeds, options, G.mapping.w_avg.device), options)
    path = os.path.join(options.outdir, 'grid.png')
    save_png(tile(images, rows, columns), path, provenance(*network, options, seeds=seeds_text(options.seeds),
                                                           grid=f'{rows}x{columns}'), options)
    return [path]


# A projected_w.npz holds [N, num_ws, w_dim] float32: 256 MiB is ~3,600 ws of a 1024x1024 StyleGAN2.
MAX_PROJECTED_W_BYTES = 256 << 20


def load_projected_ws(path, G, device):
    """float32 [N, num_ws, w_dim] from a projector's `projected_w.npz` (key `w`, the releases' layout)."""
    if not os.path.isfile(path):
        raise GenerateError(f"--projected-w '{path}' does not exist or is not a file.")
    try:
        ws = read_npz_array(path, 'w', MAX_PROJECTED_W_BYTES)
    except GenerateError:
        raise
    except Exception as error:  # not an npz, damaged
        raise GenerateError(f"--projected-w '{path}' cannot be read as an .npz file ({type(error).__name__}); "
                            f"give the projected_w.npz that the projector wrote.") from None
    if ws is None or ws.ndim != 3 or ws.shape[1:] != (G.num_ws, G.w_dim):
        found = 'no array w' if ws is None else f'w of shape {list(ws.shape)}'
        raise GenerateError(f"--projected-w '{path}' holds {found}; this network needs w of shape "
                            f"[N, {G.num_ws}, {G.w_dim}] (num_ws, w_dim): project with the same network.")
    return torch.from_numpy(ws.astype(np.float32)).to(device)


def read_npz_array(path, key, limit):
    """The float array `key` of an .npz, or None. Bounded where np.load is not: the member's declared
    size (zipfile never inflates past it) and the npy header's shape against the bytes present are
    checked before anything is allocated; np.load would allocate whatever shape the header claims."""
    with zipfile.ZipFile(path) as archive:
        if key + '.npy' not in archive.namelist():
            return None
        info = archive.getinfo(key + '.npy')
        if info.file_size > limit:
            raise GenerateError(f"--projected-w '{path}' declares {info.file_size} bytes for '{key}', more than the "
                                f"{limit >> 20} MiB a projected_w.npz may hold.")
        data = archive.read(info)
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(stream)
    count = int(np.prod(shape, dtype=object))
    if dtype.kind != 'f' or count * dtype.itemsize != len(data) - stream.tell():
        raise GenerateError(f"--projected-w '{path}' holds '{key}' as {dtype} of shape {list(shape)} in "
                            f"{len(data) - stream.tell()} bytes; a projected_w.npz holds exactly that many floats.")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell())
    return array.reshape(shape, order='F' if fortran_order else 'C')


def write_projected_images(G, options, network, ws):
    """`projNN.png` for each of the ws [N, num_ws, w_dim], named as the releases' generate.py names them."""
    paths = []
    for index, pixels in enumerate(synthesize(G, ws, options)):
        paths.append(os.path.join(options.outdir, f'proj{index:02d}.png'))
        fields = provenance(*network, options, projected_w=os.path.basename(options.projected_w), index=index)
        save_png(pixels, paths[-1], fields, options)
    return paths


def interpolation_ws(key_ws, frames_per_step):
    """[S*F, num_ws, w_dim]: straight lines in W from each seed's ws to the next, back to the first
    (so the animation loops without a jump)."""
    starts, ends = key_ws, torch.roll(key_ws, shifts=-1, dims=0)
    fractions = torch.arange(frames_per_step, dtype=key_ws.dtype, device=key_ws.device) / frames_per_step
    lines = starts[:, None] + (ends - starts)[:, None] * fractions[None, :, None, None]  # [S, F, num_ws, w_dim]
    return lines.flatten(0, 1)


def write_interpolation(G, options, network):
    """`interp.gif` (Pillow) or `interp.mp4` (needs ffmpeg on PATH) moving through the seeds in W."""
    device = G.mapping.w_avg.device
    frames = synthesize(G, interpolation_ws(mapped_ws(G, options.seeds, options, device), options.interp_frames), options)
    if options.watermark:
        frames = np.stack([watermarking.embed(f, options.watermark_key).reshape(f.shape) for f in frames])
    fields = provenance(*network, options, seeds=seeds_text(options.seeds), frames_per_seed=options.interp_frames)
    path = os.path.join(options.outdir, f'interp.{options.interp}')
    if options.interp == 'mp4':
        _write_mp4(frames, path)
    else:
        pil_frames = [to_pil(f) for f in frames]
        comment = '; '.join(f'{k}={v}' for k, v in fields.items())
        pil_frames[0].save(path, save_all=True, append_images=pil_frames[1:], duration=40, loop=0, comment=comment)
    return [path]


def _write_mp4(frames, path, fps=25):
    """Encode uint8 frames [H, W, C] (an array [T, H, W, C] or any iterable of frames, streamed to
    ffmpeg one at a time, so that a long video, e.g. the projector's, is never all in memory)."""
    import itertools
    import shutil
    import subprocess
    ffmpeg = shutil.which('ffmpeg')
    if ffmpeg is None:
        raise GenerateError('--interp=mp4 needs ffmpeg on the PATH, which was not found; use --interp=gif.')
    frames = iter(frames)
    first = next(frames)
    height, width, channels = first.shape
    pixel_format = 'gray' if channels == 1 else 'rgb24'
    command = [ffmpeg, '-y', '-loglevel', 'error', '-f', 'rawvideo', '-pix_fmt', pixel_format, '-s', f'{width}x{height}',
               '-r', str(fps), '-i', '-', '-vf', 'pad=ceil(iw/2)*2:ceil(ih/2)*2', '-vcodec', 'libx264',
               '-pix_fmt', 'yuv420p', path]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as process:
        try:
            for frame in itertools.chain([first], frames):
                process.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:  # ffmpeg stopped early; its stderr says why
            pass
        _, stderr = process.communicate()
    if process.returncode != 0:
        raise GenerateError(f'ffmpeg failed to write {path}: {stderr.decode(errors="replace").strip()}')


def style_mix_styles(G, options):
    """The ws the columns give: --styles, or the releases' default 0-6 (those the network has)."""
    return options.style_mix_styles if options.style_mix_styles is not None else [s for s in range(7) if s < G.num_ws]


def style_mix_ws(G, rows, columns, styles, options, row_ws=None):
    """[R + C + R*C, num_ws, w_dim]: the row seeds' ws (or the given `row_ws`, e.g. projected ones),
    the column seeds' ws, then each cell's ws (row-major): the row's ws with the `styles` entries
    taken from the column's ws."""
    device = G.mapping.w_avg.device
    row_ws = mapped_ws(G, rows, options, device) if row_ws is None else row_ws
    column_ws = mapped_ws(G, columns, options, device)
    mixed = row_ws[:, None].repeat(1, len(columns), 1, 1)  # [R, C, num_ws, w_dim]
    mixed[:, :, styles] = column_ws[None, :, styles]
    return torch.cat([row_ws, column_ws, mixed.flatten(0, 1)])


def style_mix_figure(images, num_rows, num_columns):
    """uint8 [R + C + R*C, H, W, C] images of `style_mix_ws` -> the figure [(R+1)*H, (C+1)*W, C]: a
    blank corner, the column images along the top, the row images down the left, the cells."""
    row_images, column_images = images[:num_rows], images[num_rows:num_rows + num_columns]
    cells = images[num_rows + num_columns:].reshape(num_rows, num_columns, *images.shape[1:])
    blank = np.zeros_like(images[:1])
    figure = np.concatenate([np.concatenate([blank, column_images])[None],
                             np.concatenate([row_images[:, None], cells], axis=1)])  # [R+1, C+1, H, W, C]
    return tile(figure.reshape(-1, *figure.shape[2:]), num_rows + 1, num_columns + 1)


def write_style_mix(G, options, network, projected_ws=None):
    """`style-mix.png`, the papers' figure (`style_mix_figure`); with `projected_ws` [R, num_ws, w_dim]
    (--projected-w) those are the rows instead of the seeds."""
    rows, columns = options.seeds, options.style_mix_cols
    if projected_ws is not None:
        rows = [f'{os.path.basename(options.projected_w)}[{index}]' for index in range(len(projected_ws))]
    styles = style_mix_styles(G, options)
    images = synthesize(G, style_mix_ws(G, rows, columns, styles, options, row_ws=projected_ws), options)
    path = os.path.join(options.outdir, 'style-mix.png')
    save_png(style_mix_figure(images, len(rows), len(columns)), path,
             provenance(*network, options, row_seeds=seeds_text(rows), column_seeds=seeds_text(columns),
                        styles=seeds_text(styles)), options)
    return [path]


def generate(network_path, options, device=None):
    """Load the network, check the options against it, write the outputs; returns their paths."""
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    G = load_generator(network_path, device)
    validate_for_network(G, options)
    projected_ws = None if options.projected_w is None else load_projected_ws(options.projected_w, G, device)
    network = (network_path, file_sha256(network_path))
    os.makedirs(options.outdir, exist_ok=True)
    set_transform(G, options)
    if options.grid is not None:
        return write_grid(G, options, network)
    if options.interp is not None:
        return write_interpolation(G, options, network)
    if options.style_mix_cols is not None:
        return write_style_mix(G, options, network, projected_ws)
    if projected_ws is not None:
        return write_projected_images(G, options, network, projected_ws)
    return write_seed_images(G, options, network)


# --- command line ----------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(prog='python generate.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--network', required=True, metavar='FILE', help='checkpoint of this project or release pickle')
    parser.add_argument('--seeds', type=parse_seeds, help="e.g. '0-99,120' (style mix: the rows)")
    parser.add_argument('--projected-w', metavar='FILE', help="a projector's projected_w.npz: write projNN.png for "
                        "its ws, or with --style-mix use them as the rows (in place of --seeds)")
    parser.add_argument('--trunc', dest='truncation_psi', type=float, default=1.0, help='truncation psi (default 1)')
    parser.add_argument('--trunc-cutoff', dest='truncation_cutoff', type=int, help='truncate only the first N ws')
    parser.add_argument('--class', dest='class_idx', type=int, help='class of a conditional network')
    parser.add_argument('--noise-mode', default='const', choices=('const', 'random', 'none'))
    parser.add_argument('--translate', type=parse_vec2, default=(0.0, 0.0), metavar='X,Y', help='StyleGAN3 only')
    parser.add_argument('--rotate', type=float, default=0.0, metavar='DEGREES', help='StyleGAN3 only')
    parser.add_argument('--outdir', required=True, metavar='DIR')
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument('--grid', type=parse_grid, metavar='RxC', help='write one grid.png of R rows and C columns')
    modes.add_argument('--interp', nargs='?', const='gif', choices=('gif', 'mp4'),
                       help='write interp.gif (or interp.mp4, needs ffmpeg) moving through the seeds in W')
    modes.add_argument('--style-mix', dest='style_mix_cols', type=parse_seeds, metavar='COLUMN_SEEDS',
                       help='write style-mix.png: --seeds are the rows, these the columns')
    parser.add_argument('--styles', dest='style_mix_styles', type=parse_seeds,
                        help="ws the columns give in --style-mix (default '0-6', as the releases)")
    parser.add_argument('--interp-frames', type=int, default=24, help='frames from one seed to the next (default 24)')
    parser.add_argument('--watermark', action='store_true', help='embed the invisible watermark of stylegan.watermark')
    parser.add_argument('--watermark-key', default=watermarking.DEFAULT_KEY)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--device', help="'cuda', 'cpu', ... (default: cuda when available)")
    return parser


def main(argv=None):
    args = vars(build_parser().parse_args(argv))
    network_path, device = args.pop('network'), args.pop('device')
    options = GenerateOptions(**args)
    if options.batch_size < 1 or options.interp_frames < 1:
        print('error: --batch-size and --interp-frames must be at least 1.', file=sys.stderr)
        return 1
    if (options.seeds is None) == (options.projected_w is None) or (options.projected_w and (options.grid or options.interp)):
        print('error: give exactly one of --seeds and --projected-w (which works alone or with --style-mix).',
              file=sys.stderr)
        return 1
    try:
        paths = generate(network_path, options, device)
    except (GenerateError, watermarking.WatermarkError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    print(f'wrote {len(paths)} file(s) to {options.outdir}' if len(paths) > 1 else f'wrote {paths[0]}')
    return 0
