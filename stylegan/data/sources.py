"""The inputs `dataset_tool` converts: a folder tree of images, a zip of images, the CIFAR-10
python tarball, and MNIST/Fashion-MNIST idx files.

Every source yields `SourceImage` records in a fixed order. A record carries a `decode()` that
returns a `PIL.Image` or raises; decoding is left to the tool so that one bad file is reported
and skipped instead of stopping the run. Arrays (CIFAR-10, idx) decode without failing.
"""
import codecs
import dataclasses
import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile
from typing import Callable, Iterator, Optional

import numpy as np
import PIL.Image

from stylegan.data.dataset import (LABELS_FILE, MAX_LABELS_BYTES, MAX_MEMBER_BYTES, list_folder, parse_labels_json,
                                   zip_member_problem)
from stylegan.files import file_kind, open_regular_file, read_limited
from stylegan.legacy import NUMPY_GLOBALS
from stylegan.safeload import check_pickle_nesting, walk_checked


class SourceError(ValueError):
    """A source that cannot be opened at all; the message is one sentence naming it."""


@dataclasses.dataclass
class SourceImage:
    name: str                          # path inside the source, '/'-separated, or '<file>[index]'
    decode: Callable[[], PIL.Image.Image]
    folder_label: Optional[str] = None  # first path component, for --labels=folders
    json_label: object = None          # the entry of the source's dataset.json, if any
    builtin_label: Optional[int] = None  # the class that CIFAR-10 and idx files carry


@dataclasses.dataclass
class Source:
    kind: str                          # 'folder', 'zip', 'cifar10' or 'idx'
    count: int                         # number of records `images()` yields
    images: Callable[[], Iterator[SourceImage]]
    default_channels: int              # 1 for idx files, 3 otherwise (as the releases' tool does)
    has_json_labels: bool = False
    class_names: Optional[list] = None  # names of the built-in classes, when known
    names: Optional[list] = None        # the image files of a folder or zip, in `images()` order


def open_source(path):
    """The `Source` that `path` holds, recognised by its content; raises `SourceError`."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _folder_source(path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise SourceError(f"source '{path}' is {file_kind(os.stat(path).st_mode)}, not a folder or a regular file; "
                          f"it is not opened.")
    if not os.path.isfile(path):
        raise SourceError(f"source '{path}' does not exist; give a folder, a .zip, "
                          f"cifar-10-python.tar.gz or an MNIST-style *-images-idx3-ubyte[.gz] file.")
    if zipfile.is_zipfile(path):
        return _zip_source(path)
    if _is_idx_images(path):
        return _idx_source(path)
    if tarfile.is_tarfile(path):
        return _cifar10_source(path)
    raise SourceError(f"source '{path}' is not a folder, a zip, a CIFAR-10 python tarball or an idx image "
                      f"file; those are the accepted sources.")


# --- image files: folder and zip -----------------------------------------------------------------

def _is_image_name(name):
    PIL.Image.init()
    return os.path.splitext(name)[1].lower() in PIL.Image.EXTENSION


def _first_component(name):
    parts = name.split('/')
    return parts[0] if len(parts) > 1 else None


def _parse_labels_json(read_bytes, where):
    """{file name: label} from the releases' dataset.json (read by `read_bytes()`); {} when its labels are null."""
    try:
        return parse_labels_json(read_bytes()) or {}
    except (ValueError, OSError) as error:
        raise SourceError(f"'{LABELS_FILE}' in source '{where}' is not of the form "
                          f'{{"labels": [["file.png", label], ...]}}: {error}.') from None


def _decode_bytes(read_bytes):
    """A decode() for an encoded image file; the bytes are read when called, so an unreadable
    file fails there (and is reported) rather than when the source is listed."""
    def decode():
        return PIL.Image.open(io.BytesIO(read_bytes()))
    return decode


def _image_records(names, read_bytes_of, labels):
    for name in names:
        yield SourceImage(name=name, decode=_decode_bytes(lambda name=name: read_bytes_of(name)),
                          folder_label=_first_component(name), json_label=labels.get(name))


def _folder_source(root):
    """Images of a folder tree; linked sub-folders are followed (see `list_folder`), and a FIFO,
    device or socket with an image's name (or dataset.json's) stops the conversion unopened."""
    try:
        files, odd = list_folder(root)
    except (ValueError, OSError) as error:
        raise SourceError(f"source folder '{root}' cannot be listed: {error}.") from None
    unreadable = sorted(name for name in odd if _is_image_name(name) or name == LABELS_FILE)
    if unreadable:
        raise SourceError(f"source folder '{root}' holds '{unreadable[0]}', which is {odd[unreadable[0]]}; "
                          f"images must be regular files.")
    names = sorted(files)
    image_names = [name for name in names if _is_image_name(name)]

    def read_bytes(name, limit=MAX_MEMBER_BYTES):
        with open_regular_file(os.path.join(root, *name.split('/'))) as f:
            return read_limited(f, limit, 'the file')

    labels = {}
    if LABELS_FILE in names:
        labels = _parse_labels_json(lambda: read_bytes(LABELS_FILE, MAX_LABELS_BYTES), root)

    return Source(kind='folder', count=len(image_names), default_channels=3, has_json_labels=bool(labels),
                  names=image_names, images=lambda: _image_records(image_names, read_bytes, labels))


def _zip_source(path):
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {info.filename: info for info in archive.infolist() if not info.is_dir()}
            image_names = sorted(name for name in infos if _is_image_name(name))
            # Encrypted or unreadably compressed members stop the run: they are not damaged images.
            for name in image_names + ([LABELS_FILE] if LABELS_FILE in infos else []):
                problem = zip_member_problem(infos[name], MAX_LABELS_BYTES if name == LABELS_FILE else MAX_MEMBER_BYTES)
                if problem:
                    raise SourceError(f"'{name}' in source '{path}' {problem}.")
            labels = _parse_labels_json(lambda: archive.read(LABELS_FILE), path) if LABELS_FILE in infos else {}
    except (zipfile.BadZipFile, OSError) as error:
        raise SourceError(f"source '{path}' is not a readable zip file ({error}).") from None

    def images():
        with zipfile.ZipFile(path) as archive:
            yield from _image_records(image_names, archive.read, labels)

    return Source(kind='zip', count=len(image_names), default_channels=3, has_json_labels=bool(labels),
                  names=image_names, images=images)


# --- arrays: CIFAR-10 and idx --------------------------------------------------------------------

CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
CIFAR10_BATCHES = [f'cifar-10-batches-py/data_batch_{i}' for i in range(1, 6)]


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10's batches are pickles of a dict of numpy arrays and lists; nothing else may load,
    so that a tampered tarball cannot run code."""
    allowed = {('_codecs', 'encode'): codecs.encode,  # how protocol-2 pickles of Python 3 spell bytes
               **NUMPY_GLOBALS}  # plain numeric dtypes and arrays whose bytes fill their shape

    def find_class(self, module, name):
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"it references '{module}.{name}', which a CIFAR-10 batch never does")
        return self.allowed[(module, name)]


def _read_cifar10_batch(tar, member_name, where):
    if tar.getmember(member_name).size > MAX_MEMBER_BYTES:
        raise SourceError(f"CIFAR-10 tarball '{where}': '{member_name}' declares more than {MAX_MEMBER_BYTES} bytes, "
                          f"far more than a CIFAR-10 batch (31 MB).")
    try:
        with tar.extractfile(member_name) as f:
            data = f.read()
        # A tuple nested a million deep crashes the unpickler when hashed; shared references can
        # make the batch a billion values: both are refused (as ValueError) before numpy sees them.
        check_pickle_nesting(data, f"'{member_name}'")
        batch = walk_checked(_ArrayOnlyUnpickler(io.BytesIO(data), encoding='latin1').load(), f"'{member_name}'")
        images = np.asarray(batch['data'], dtype=np.uint8).reshape(-1, 3, 32, 32)  # [N, 3*32*32] -> [N, C, H, W]
        labels = np.asarray(batch['labels'], dtype=np.int64)
    except (KeyError, pickle.UnpicklingError, ValueError, TypeError, EOFError, OSError) as error:
        raise SourceError(f"CIFAR-10 tarball '{where}' has an unreadable '{member_name}' ({error}).") from None
    if len(labels) != len(images):
        raise SourceError(f"CIFAR-10 tarball '{where}': '{member_name}' has {len(images)} images "
                          f"but {len(labels)} labels.")
    return images.transpose(0, 2, 3, 1), labels  # [N, C, H, W] -> [N, H, W, C]


def _cifar10_source(path):
    """The 50,000 training images of the python version of CIFAR-10, with their classes."""
    try:
        with tarfile.open(path) as tar:
            names = set(tar.getnames())
            if not set(CIFAR10_BATCHES) <= names:
                raise SourceError(f"source '{path}' is a tarball but not the CIFAR-10 python version "
                                  f"(it lacks {CIFAR10_BATCHES[0]} ... data_batch_5).")
            batches = [_read_cifar10_batch(tar, name, path) for name in CIFAR10_BATCHES]
    except (tarfile.TarError, OSError, EOFError) as error:
        raise SourceError(f"source '{path}' is not a readable tarball ({error}).") from None
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    return _array_source('cifar10', path, images, labels, default_channels=3, class_names=CIFAR10_CLASSES)


IDX_UBYTE = 0x08


def _open_maybe_gzip(path):
    with open_regular_file(path) as f:
        gzipped = f.read(2) == b'\x1f\x8b'
    return gzip.GzipFile(fileobj=open_regular_file(path), mode='rb') if gzipped else open_regular_file(path)


def _read_idx(path):
    """uint8 array of an idx file (the MNIST format: a zero pair, type byte, rank, big-endian dims)."""
    try:
        with _open_maybe_gzip(path) as f:
            data = read_limited(f, MAX_MEMBER_BYTES, 'its content')
    except (OSError, EOFError, ValueError) as error:
        raise SourceError(f"idx file '{path}' cannot be read ({error}).") from None
    if len(data) < 4 or data[:2] != b'\0\0' or data[2] != IDX_UBYTE:
        raise SourceError(f"'{path}' is not an idx file of unsigned bytes (MNIST format).")
    rank = data[3]
    shape = struct.unpack(f'>{rank}I', data[4:4 + 4 * rank])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(shape)):
        raise SourceError(f"idx file '{path}' declares shape {list(shape)} but holds {body.size} values; "
                          f"it is truncated or damaged.")
    return body.reshape(shape)


def _is_idx_images(path):
    base = os.path.basename(path)
    return 'images-idx3-ubyte' in base or 'images.idx3-ubyte' in base


def idx_labels_path(images_path):
    """The labels file beside an idx images file, as MNIST names it (None when there is none)."""
    folder, base = os.path.split(images_path)
    for images_part, labels_part in (('images-idx3-ubyte', 'labels-idx1-ubyte'), ('images.idx3-ubyte', 'labels.idx1-ubyte')):
        stem = base.replace(images_part, labels_part)
        for candidate in (stem, stem + '.gz', stem[:-3] if stem.endswith('.gz') else None):
            if candidate and candidate != base and os.path.isfile(os.path.join(folder, candidate)):
                return os.path.join(folder, candidate)
    return None


def _idx_source(path):
    """MNIST/Fashion-MNIST images, zero-padded to a power-of-two square (28x28 -> 32x32) as the
    releases' tool does."""
    images = _read_idx(path)
    if images.ndim != 3:
        raise SourceError(f"idx file '{path}' holds a {images.ndim}-d array; image files are 3-d [N, H, W].")
    side = 1 << (max(images.shape[1:]) - 1).bit_length()
    pad_y, pad_x = side - images.shape[1], side - images.shape[2]
    images = np.pad(images, [(0, 0), (pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2)])
    labels_path = idx_labels_path(path)
    labels = None if labels_path is None else _read_idx(labels_path).astype(np.int64)
    if labels is not None and labels.shape != images.shape[:1]:
        raise SourceError(f"labels file '{labels_path}' has {labels.size} labels for {len(images)} images in '{path}'.")
    return _array_source('idx', path, images, labels, default_channels=1, class_names=None)


def _array_source(kind, path, images, labels, default_channels, class_names):
    base = os.path.basename(path)

    def records():
        for index, pixels in enumerate(images):
            yield SourceImage(name=f'{base}[{index}]', decode=lambda pixels=pixels: PIL.Image.fromarray(pixels),
                              builtin_label=None if labels is None else int(labels[index]))

    return Source(kind=kind, count=len(images), images=records, default_channels=default_channels,
                  class_names=class_names if labels is not None else None)
