"""Convert images into a training dataset in the releases' layout:

    python -m stylegan.dataset_tool --source=photos/ --dest=datasets/photos-256.zip \\
        --resolution=256x256 --transform=center-crop

Sources (see `stylegan.data.sources`): a folder tree of images, a zip of images (for example a dataset
written by this tool or by the releases' `dataset_tool.py`), `cifar-10-python.tar.gz`, and
MNIST/Fashion-MNIST `*-images-idx3-ubyte[.gz]` (their labels file is picked up from beside it).

Output (a .zip or a folder): `00000/img00000000.png, 00000/img00000001.png, ...` (1000 per
folder) and `dataset.json` = `{"labels": [["00000/img00000000.png", 6], ...] or null}`, the format
the releases read and write, so their datasets and ours are interchangeable. When the classes have
names (sub-folders, CIFAR-10) they are stored as an extra `"class_names"` entry that loaders ignore.

Each image is decoded defensively: an unreadable, truncated or oversized ("decompression bomb")
file is skipped and listed in the report, never a crash half-way. Grey, palette, RGBA (composited
over black) and 16-bit images are normalised to `--channels`. Exact duplicates (same pixels after
the transform) are dropped; `--near-duplicates=D` also drops images whose perceptual hash is within
Hamming distance D of a kept one. The destination is written to a temporary name and renamed at the
end, so a failed run leaves nothing behind and an existing dataset is never overwritten: the final
move fails when --dest exists by then, even if it appeared during the conversion (a folder --dest
may be an empty folder). Leftovers of a killed run (`<dest>.partial-<pid>`) are removed by the next.

Without --resolution the first image sets the size and images of other sizes are skipped; when
most images have another size than the first, the run stops (exit 1, nothing written) naming the
sizes, since the first image was the odd one out.
"""
import argparse
import collections
import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import shutil
import sys
import warnings
import zipfile
from typing import Optional

import numpy as np
import PIL.Image
import scipy.fft

from stylegan.data.sources import LABELS_FILE, SourceError, open_source
from stylegan.files import publish_exclusively, remove_stale_temporaries

TRANSFORMS = ('none', 'center-crop', 'center-crop-wide', 'center-crop-tall', 'pad')
RESIZE_FILTERS = {'lanczos': PIL.Image.LANCZOS, 'box': PIL.Image.BOX}
LABEL_MODES = ('auto', 'json', 'folders', 'none')
IMAGES_PER_FOLDER = 1000
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own limit: 1024 * 1024 * 1024 // 4 // 3


class DatasetToolError(ValueError):
    """A bad option or an input that stops the whole conversion; one sentence."""


class ImageRejected(Exception):
    """One image is skipped; `category` is 'unreadable', 'rejected', 'duplicate' or 'near-duplicate'."""

    def __init__(self, category, reason):
        super().__init__(reason)
        self.category = category
        self.reason = reason


@dataclasses.dataclass
class ToolOptions:
    resolution: Optional[tuple] = None  # (W, H) or None to keep the source size
    transform: str = 'none'
    resize_filter: str = 'lanczos'
    channels: Optional[int] = None      # 1 or 3; None = the source's default
    labels: str = 'auto'
    near_duplicates: Optional[int] = None  # Hamming distance of the 64-bit perceptual hash
    max_images: Optional[int] = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    png_compression: int = 0            # 0 as in the releases: fast to decode, larger files


@dataclasses.dataclass
class Summary:
    total: int = 0
    kept: int = 0
    resized: int = 0
    skipped: list = dataclasses.field(default_factory=list)  # [{'file', 'category', 'reason'}]
    sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # (W, H) -> images

    def count(self, category):
        return sum(1 for entry in self.skipped if entry['category'] == category)

    def text(self):
        return (f'kept {self.kept} of {self.total} images ({self.resized} resized); skipped '
                f'{self.count("duplicate")} duplicates, {self.count("near-duplicate")} near-duplicates, '
                f'{self.count("unreadable")} corrupt or unreadable, {self.count("rejected")} rejected')

    def as_dict(self):
        counts = {c: self.count(c) for c in ('duplicate', 'near-duplicate', 'unreadable', 'rejected')}
        return {'total': self.total, 'kept': self.kept, 'resized': self.resized, **counts, 'skipped': self.skipped}


# --- options ---------------------------------------------------------------------------------------

def parse_resolution(text):
    """'256x256', '512,384' or '256' -> (W, H)."""
    match = re.fullmatch(r'(\d+)(?:[x,](\d+))?', text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"resolution '{text}' is not of the form WxH, e.g. 256x256")
    width = int(match.group(1))
    return width, int(match.group(2) or width)


def output_side(options):
    """Side of the square output images for the given options, or None when the source decides."""
    if options.resolution is None:
        return None
    width, height = options.resolution
    return {'center-crop-wide': width, 'center-crop-tall': height}.get(options.transform,
                                                                         width if width == height else None)


def validate_options(options):
    if options.transform not in TRANSFORMS:
        raise DatasetToolError(f"transform '{options.transform}' is unknown; choose one of {', '.join(TRANSFORMS)}.")
    if options.transform != 'none' and options.resolution is None:
        raise DatasetToolError(f"--transform={options.transform} needs --resolution=WxH.")
    if options.resolution is not None:
        side = output_side(options)
        width, height = options.resolution
        if side is None:
            raise DatasetToolError(f'--resolution={width}x{height} with --transform={options.transform} gives '
                                   f'non-square images; training needs square ones (use center-crop-wide for W > H).')
        if side < 4 or side & (side - 1):
            raise DatasetToolError(f'output images would be {side}x{side}; the side must be a power of two (4 ... 1024).')
        wide, tall = options.transform == 'center-crop-wide', options.transform == 'center-crop-tall'
        if (wide and height > width) or (tall and width > height):
            raise DatasetToolError(f'--transform={options.transform} needs --resolution={"WxH with W >= H" if wide else "WxH with H >= W"}.')
    if options.resize_filter not in RESIZE_FILTERS:
        raise DatasetToolError(f"resize filter '{options.resize_filter}' is unknown; choose box or lanczos.")
    if options.channels not in (None, 1, 3):
        raise DatasetToolError(f'--channels={options.channels} is not supported; choose 1 (grey) or 3 (RGB).')
    if options.labels not in LABEL_MODES:
        raise DatasetToolError(f"labels '{options.labels}' is unknown; choose one of {', '.join(LABEL_MODES)}.")
    if options.near_duplicates is not None and not 0 <= options.near_duplicates <= 63:
        raise DatasetToolError(f'--near-duplicates={options.near_duplicates} must be a Hamming distance in 0 ... 63.')
    if not 0 <= options.png_compression <= 9:
        raise DatasetToolError(f'--png-compression={options.png_compression} must be in 0 ... 9.')


# --- one image: decode, normalise, transform -------------------------------------------------------

def decode_image(record, max_pixels):
    """The fully decoded image of a source record, or `ImageRejected('unreadable')`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', PIL.Image.DecompressionBombWarning)  # the check below replaces it
            image = record.decode()
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected('unreadable', f'{width}x{height} pixels exceed the limit of {max_pixels} '
                                                  f'(a decompression bomb?); raise --max-pixels to accept it')
            image.load()
        return image
    except ImageRejected:
        raise
    except PIL.Image.DecompressionBombError as error:
        raise ImageRejected('unreadable', f'decompression bomb: {error}') from None
    # Decoders of untrusted files raise many types (OSError, SyntaxError, struct.error, zlib.error,
    # ValueError, EOFError, ...); any of them means this one file is unusable, not that the run is.
    except Exception as error:  # pylint: disable=broad-except
        raise ImageRejected('unreadable', f'{type(error).__name__}: {error}') from None


def normalise_channels(image, channels):
    """The image in mode 'L' (channels=1) or 'RGB' (channels=3): 16-bit and float images are scaled to
    8 bits; transparency is composited over black."""
    target = {1: 'L', 3: 'RGB'}[channels]
    if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode != 'F':
            pixels = pixels / 257.0  # 16-bit range -> 8-bit range
        image = PIL.Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), 'L')
    if image.mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa') or (image.mode == 'P' and 'transparency' in image.info):
        rgba = image.convert('RGBA')
        image = PIL.Image.alpha_composite(PIL.Image.new('RGBA', rgba.size, (0, 0, 0, 255)), rgba)
    return image if image.mode == target else image.convert(target)


def _centre_box(width, height, crop_width, crop_height):
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    return left, top, left + crop_width, top + crop_height


def _on_canvas(image, canvas_width, canvas_height):
    canvas = PIL.Image.new(image.mode, (canvas_width, canvas_height), 0)
    canvas.paste(image, ((canvas_width - image.width) // 2, (canvas_height - image.height) // 2))
    return canvas


def transform_image(image, options):
    """Crop/pad/resize to the output size; raises `ImageRejected` when the transform cannot use the image."""
    if options.resolution is None:
        return image
    out_w, out_h = options.resolution
    resample = RESIZE_FILTERS[options.resize_filter]
    width, height = image.size
    if options.transform == 'none':
        return image if image.size == (out_w, out_h) else image.resize((out_w, out_h), resample)
    if options.transform == 'center-crop':
        side = min(width, height)
        return image.crop(_centre_box(width, height, side, side)).resize((out_w, out_h), resample)
    if options.transform == 'pad':
        scale = min(out_w / width, out_h / height)
        fitted = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), resample)
        return _on_canvas(fitted, out_w, out_h)
    # center-crop-wide / -tall: crop to the WxH aspect, then letterbox it on a square canvas.
    if width < out_w or height < out_h:
        raise ImageRejected('rejected', f'{width}x{height} is smaller than {out_w}x{out_h}, which '
                                        f'{options.transform} does not upscale')
    crop_w, crop_h = min(width, round(height * out_w / out_h)), min(height, round(width * out_h / out_w))
    cropped = image.crop(_centre_box(width, height, crop_w, crop_h)).resize((out_w, out_h), resample)
    side = max(out_w, out_h)
    return _on_canvas(cropped, side, side)


# --- duplicates ------------------------------------------------------------------------------------

def perceptual_hash(image):
    """64-bit DCT hash: signs of the lowest 8x8 frequencies of a 32x32 grey version against their median."""
    grey = np.asarray(image.convert('L').resize((32, 32), PIL.Image.BOX), dtype=np.float64)
    low = scipy.fft.dctn(grey, norm='ortho')[:8, :8].ravel()[1:]  # [63], DC left out
    bits = low > np.median(low)
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def _popcount(values):
    if hasattr(np, 'bitwise_count'):
        return np.bitwise_count(values)
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


class DuplicateFilter:
    """Remembers kept images; `check` raises `ImageRejected` for a copy (or near copy) of one."""

    def __init__(self, near_distance=None):
        self.near_distance = near_distance
        self.first_with_digest = {}
        self.hashes = np.zeros([1024], dtype=np.uint64)  # the first len(hash_names) are in use
        self.hash_names = []

    def check(self, name, image):
        digest = hashlib.sha256(f'{image.mode}{image.size}'.encode() + image.tobytes()).digest()
        if digest in self.first_with_digest:
            raise ImageRejected('duplicate', f"same pixels as '{self.first_with_digest[digest]}'")
        phash = None
        if self.near_distance is not None:
            phash = np.uint64(perceptual_hash(image))
            if self.hash_names:
                distances = _popcount(self.hashes[:len(self.hash_names)] ^ phash)
                nearest = int(np.argmin(distances))
                if distances[nearest] <= self.near_distance:
                    raise ImageRejected('near-duplicate', f"perceptual hash within {int(distances[nearest])} bits "
                                                          f"of '{self.hash_names[nearest]}'")
        self.first_with_digest[digest] = name
        if phash is not None:
            if len(self.hash_names) == self.hashes.size:
                self.hashes = np.concatenate([self.hashes, np.zeros_like(self.hashes)])
            self.hashes[len(self.hash_names)] = phash
            self.hash_names.append(name)


# --- output ----------------------------------------------------------------------------------------

def archive_name(index):
    return f'{index // IMAGES_PER_FOLDER:05d}/img{index:08d}.png'


class DatasetWriter:
    """Writes a dataset to a temporary name next to `dest`; `commit()` renames it into place and
    `abort()` removes it, so `dest` only ever appears complete."""

    def __init__(self, dest):
        self.dest = os.path.normpath(dest)
        self.is_zip = self.dest.lower().endswith('.zip')
        if not self._dest_is_free():
            raise DatasetToolError(f"destination '{dest}' already exists; remove it or choose another --dest.")
        parent = os.path.dirname(os.path.abspath(self.dest))
        os.makedirs(parent, exist_ok=True)
        remove_stale_temporaries(parent)
        self.partial = f'{self.dest}.partial-{os.getpid()}'
        if self.is_zip:
            self.zip = zipfile.ZipFile(self.partial, 'w', compression=zipfile.ZIP_STORED)
        else:
            self.zip = None
            os.makedirs(self.partial)

    def write(self, name, data):
        if self.zip is not None:
            # A fixed timestamp makes the zip a function of its content: rebuilding gives the same bytes.
            self.zip.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
            return
        path = os.path.join(self.partial, *name.split('/'))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)

    def _dest_is_free(self):
        """Nothing there, or (folder output) an empty folder; a dangling link counts as taken."""
        if not os.path.lexists(self.dest):
            return True
        return not self.is_zip and os.path.isdir(self.dest) and not os.path.islink(self.dest) \
            and not os.listdir(self.dest)

    def commit(self):
        """Move the output into place; `dest` is never replaced, even if it appeared meanwhile
        (a zip is hard-linked, which fails on an existing name; renaming a folder fails over a file
        or a non-empty folder)."""
        if self.zip is not None:
            self.zip.close()
        try:
            if self.zip is not None:
                publish_exclusively(self.partial, self.dest)
            else:
                if os.path.isdir(self.dest) and not os.path.islink(self.dest):
                    os.rmdir(self.dest)  # only ever removes an empty folder
                if os.path.lexists(self.dest):
                    raise FileExistsError(self.dest)
                os.rename(self.partial, self.dest)
        except OSError as error:
            self.abort()
            if isinstance(error, FileExistsError) or error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise DatasetToolError(f"destination '{self.dest}' appeared during the conversion; it was left as "
                                       f"it is and nothing was written (choose another --dest).") from None
            raise  # the disk or permissions: main() says which

    def abort(self):
        if self.zip is not None:
            self.zip.close()
            if os.path.exists(self.partial):
                os.remove(self.partial)
        else:
            shutil.rmtree(self.partial, ignore_errors=True)


def encode_png(image, compression):
    buffer = io.BytesIO()
    image.save(buffer, format='png', compress_level=compression, optimize=False)
    return buffer.getvalue()


# --- the conversion --------------------------------------------------------------------------------

def _label_mode(requested, source):
    if requested != 'auto':
        return requested
    if source.has_json_labels:
        return 'json'
    return 'builtin' if source.class_names is not None or source.kind == 'idx' else 'none'


def _label_of(record, mode, class_index):
    """The label to store for a record, or `ImageRejected` when the chosen label source lacks one."""
    if mode == 'none':
        return None
    if mode == 'builtin':
        if record.builtin_label is None:
            raise ImageRejected('rejected', 'the source has no label for it')
        return record.builtin_label
    if mode == 'json':
        if record.json_label is None:
            raise ImageRejected('rejected', f'it has no label in the source\'s {LABELS_FILE}')
        return record.json_label
    if record.folder_label is None:
        raise ImageRejected('rejected', 'it is not inside a class sub-folder (--labels=folders)')
    return class_index[record.folder_label]


def _check_first_shape(image, name):
    width, height = image.size
    if width != height or width < 4 or width & (width - 1):
        raise DatasetToolError(f"the first image, '{name}', is {width}x{height}; training needs square power-of-two "
                               f"images, so pass --resolution=WxH (and --transform) to convert them.")


def convert_dataset(source_path, dest, options=None, progress=True):
    """Convert `source_path` into a dataset at `dest` (.zip or folder); returns the `Summary`.
    Raises `DatasetToolError` or `SourceError` (one sentence) before writing anything, or removes
    the partial output when it fails later."""
    options = options or ToolOptions()
    validate_options(options)
    source = open_source(source_path)
    label_mode = _label_mode(options.labels, source)
    if label_mode == 'json' and not source.has_json_labels:
        raise DatasetToolError(f"--labels=json but source '{source_path}' has no {LABELS_FILE} with labels.")
    if label_mode == 'folders' and source.kind not in ('folder', 'zip'):
        raise DatasetToolError(f'--labels=folders needs a folder or zip source, not a {source.kind} file.')
    class_names = None
    if label_mode == 'folders':
        class_names = sorted({name.split('/')[0] for name in source.names if '/' in name})
    class_index = {name: i for i, name in enumerate(class_names or [])}
    channels = options.channels or source.default_channels

    writer = DatasetWriter(dest)
    try:
        summary, labels = _convert_records(source, writer, options, channels, label_mode, class_index, progress)
        if summary.kept == 0:
            raise DatasetToolError(f"no image of source '{source_path}' could be used ({summary.text()}).")
        _check_size_majority(summary, options)
        metadata = {'labels': labels if label_mode != 'none' else None}
        if label_mode == 'folders' or (label_mode == 'builtin' and source.class_names):
            metadata['class_names'] = class_names or source.class_names
        writer.write(LABELS_FILE, json.dumps(metadata).encode())
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return summary


def _check_size_majority(summary, options):
    """Without --resolution the first image set the size; refuse when more images have another size."""
    if options.resolution is not None or len(summary.sizes) < 2:
        return
    common, common_count = summary.sizes.most_common(1)[0]
    first = next(iter(summary.sizes))  # Counter keeps insertion order: the first image's size
    if common != first and common_count > summary.sizes[first]:
        raise DatasetToolError(f'the first image set the size to {first[0]}x{first[1]}, but {common_count} of '
                               f'{sum(summary.sizes.values())} images are {common[0]}x{common[1]} and would be '
                               f'skipped; pass --resolution={common[0]}x{common[1]} (or remove the odd images).')


def _convert_records(source, writer, options, channels, label_mode, class_index, progress):
    from tqdm import tqdm
    summary, labels = Summary(), []
    duplicates = DuplicateFilter(options.near_duplicates)
    shape = None if output_side(options) is None else (output_side(options),) * 2
    records = tqdm(source.images(), total=source.count, unit='img', disable=not progress, file=sys.stderr)
    for record in records:
        if options.max_images is not None and summary.kept >= options.max_images:
            break
        summary.total += 1
        try:
            label = _label_of(record, label_mode, class_index)
            image = normalise_channels(decode_image(record, options.max_pixels), channels)
            original_size = image.size
            image = transform_image(image, options)
            summary.sizes[image.size] += 1
            if shape is None:
                _check_first_shape(image, record.name)
                shape = image.size
            if image.size != shape:
                raise ImageRejected('rejected', f'it is {image.width}x{image.height} but the dataset is '
                                                f'{shape[0]}x{shape[1]}; pass --resolution to resize all images')
            duplicates.check(record.name, image)
        except ImageRejected as rejected:
            summary.skipped.append({'file': record.name, 'category': rejected.category, 'reason': rejected.reason})
            continue
        name = archive_name(summary.kept)
        writer.write(name, encode_png(image, options.png_compression))
        if label_mode != 'none':
            labels.append([name, label])
        summary.kept += 1
        summary.resized += image.size != original_size
    return summary, labels


# --- command line ----------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(prog='python -m stylegan.dataset_tool', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--source', required=True, metavar='PATH',
                        help='folder, .zip, cifar-10-python.tar.gz or *-images-idx3-ubyte[.gz]')
    parser.add_argument('--dest', required=True, metavar='PATH', help='output .zip or folder (must not exist)')
    parser.add_argument('--resolution', type=parse_resolution, metavar='WxH', help='output size (default: keep)')
    parser.add_argument('--transform', default='none', choices=TRANSFORMS, help='crop/pad before resizing')
    parser.add_argument('--resize-filter', default='lanczos', choices=sorted(RESIZE_FILTERS))
    parser.add_argument('--channels', type=int, choices=(1, 3), help='1 = grey, 3 = RGB (default: 1 for idx files, else 3)')
    parser.add_argument('--labels', default='auto', choices=LABEL_MODES,
                        help="auto: the source's dataset.json, or CIFAR-10/idx classes; folders: first sub-folder name")
    parser.add_argument('--near-duplicates', type=int, metavar='BITS',
                        help='also drop images whose 64-bit perceptual hash is within BITS of a kept one (e.g. 4)')
    parser.add_argument('--max-images', type=int, metavar='N', help='stop after N kept images')
    parser.add_argument('--max-pixels', type=int, default=DEFAULT_MAX_PIXELS, metavar='N',
                        help='skip images with more pixels than this (decompression bombs)')
    parser.add_argument('--png-compression', type=int, default=0, metavar='0-9',
                        help='PNG zlib level; 0 (the releases\' choice) decodes fastest, 9 is smallest')
    parser.add_argument('--report', metavar='FILE.json', help='write the summary and every skipped file to this file')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def _print_skipped(summary, limit=20):
    for entry in summary.skipped[:limit]:
        print(f"skipped {entry['file']}: {entry['category']}: {entry['reason']}", file=sys.stderr)
    if len(summary.skipped) > limit:
        print(f'... and {len(summary.skipped) - limit} more; --report=FILE.json lists them all', file=sys.stderr)


def main(argv=None):
    args = build_parser().parse_args(argv)
    options = ToolOptions(resolution=args.resolution, transform=args.transform, resize_filter=args.resize_filter,
                          channels=args.channels, labels=args.labels, near_duplicates=args.near_duplicates,
                          max_images=args.max_images, max_pixels=args.max_pixels, png_compression=args.png_compression)
    if args.report and os.path.lexists(args.report):
        print(f"error: --report file '{args.report}' already exists; choose a new file name.", file=sys.stderr)
        return 1
    try:
        summary = convert_dataset(args.source, args.dest, options, progress=not args.quiet)
    except (DatasetToolError, SourceError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except OSError as error:  # the destination's disk or permissions, not the input
        print(f"error: cannot write '{error.filename or args.dest}': {error.strerror or error}.", file=sys.stderr)
        return 1
    _print_skipped(summary)
    print(f'{args.dest}: {summary.text()}')
    if args.report:
        try:
            with open(args.report, 'x', encoding='utf-8') as f:  # never replaces a file
                json.dump(summary.as_dict(), f, indent=1)
        except OSError as error:
            print(f"error: the dataset was written, but not --report '{args.report}': {error.strerror or error}.",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
