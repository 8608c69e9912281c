"""Training images and labels from a folder tree or a zip, in the layout of the releases'
`dataset_tool.py`, and the infinite shuffled sampler that feeds them to the training loop.

A dataset is a directory or a `.zip` holding PNG/JPEG images (any sub-folders) and optionally a
`dataset.json` at its root: `{"labels": [["00000/img00000000.png", 6], ...]}`, one entry per image,
each an int class (given to the networks as a one-hot vector) or a list of floats. Images stay
uint8 `[C, H, W]` numpy arrays until the training loop moves them to the GPU.

Opening a dataset reads every image's header (size and mode, no pixel decoding), so a folder of
mixed sizes or a non-image file fails at once with a sentence naming the file; `verify()` decodes
every image for a full check.

A dataset may come from anyone, so opening one refuses, with one sentence: a FIFO, device or
socket among its files (never opened), an encrypted zip member or one compressed with a method
Python cannot read, a member or `dataset.json` past its size limit, a `dataset.json` nested too
deeply to parse, labels that are not small non-negative class numbers (below `MAX_LABEL_DIM`) or
finite vectors of at most `MAX_LABEL_DIM` floats, and an image past Pillow's pixel limit.
Sub-folders reached through symbolic links are followed, as if copied in; a link that leads back
to a folder already walked (a loop, or the same folder twice) is refused.
"""
import json
import math
import os
import stat
import zipfile
import zlib

import numpy as np
import PIL.Image
import torch

from stylegan.files import file_kind, open_regular_file, read_limited

LABELS_FILE = 'dataset.json'
CHANNELS_OF_MODE = {'L': 1, 'RGB': 3, 'RGBA': 4}  # PIL modes that map to uint8 [C, H, W]
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
MAX_MEMBER_BYTES = 1 << 30      # one image file; a zip member declaring more is not read
MAX_LABELS_BYTES = 256 << 20    # dataset.json: ~60 MB for ImageNet's 1.28M images
MAX_LABEL_DIM = 1 << 16         # classes of an int label, or length of a float label vector


def _readable_zip_methods():
    """{method number: name} of the zip compressions this Python reads (bzip2 and lzma only when
    their modules were built); others (deflate64, AES, ...) would raise NotImplementedError."""
    methods = {zipfile.ZIP_STORED: 'stored', zipfile.ZIP_DEFLATED: 'deflate'}
    for module, method, name in (('bz2', zipfile.ZIP_BZIP2, 'bzip2'), ('lzma', zipfile.ZIP_LZMA, 'lzma')):
        try:
            __import__(module)
            methods[method] = name
        except ImportError:
            pass
    return methods


ZIP_METHODS = _readable_zip_methods()


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is one sentence naming the problem."""


# --- checks shared with the dataset tool's sources ---------------------------------------------------

def list_folder(root):
    """({'/'-separated relative path of every regular file under `root`}, {path: what it is} of the
    entries that are not regular files: FIFOs, devices, sockets, dangling links). Linked
    sub-folders are followed; raises ValueError for a link back to a folder already walked."""
    files, odd = set(), {}
    seen = {os.path.realpath(root)}
    pending = ['']
    while pending:
        relative = pending.pop()
        folder = os.path.join(root, *relative.split('/')) if relative else root
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            name = f'{relative}/{entry.name}' if relative else entry.name
            try:
                mode = entry.stat(follow_symlinks=True).st_mode
            except OSError:
                odd[name] = 'a dangling link'
                continue
            if stat.S_ISDIR(mode):
                real = os.path.realpath(entry.path)
                if real in seen:
                    raise ValueError(f"folder '{name}' leads (through a link) to a folder already walked, "
                                     f"which would loop or count images twice")
                seen.add(real)
                pending.append(name)
            elif stat.S_ISREG(mode):
                files.add(name)
            else:
                odd[name] = file_kind(mode)
    return files, odd


def zip_member_problem(info, limit=None):
    """Why a zip member cannot be read (a phrase), or None; `limit` defaults to MAX_MEMBER_BYTES."""
    limit = MAX_MEMBER_BYTES if limit is None else limit
    if info.flag_bits & 0x1:
        return 'is encrypted, which datasets may not be'
    if info.compress_type not in ZIP_METHODS:
        return (f'is compressed with zip method {info.compress_type}, which Python cannot read; '
                f'accepted are {", ".join(sorted(ZIP_METHODS.values()))}')
    if info.file_size > limit:
        return f'declares {info.file_size} bytes, more than the limit of {limit}'
    return None


def parse_labels_json(data):
    """{file name: label} of a dataset.json's bytes (the releases' `{"labels": [[name, label], ...]}`),
    or None when its labels are null; raises ValueError naming the problem."""
    try:
        entries = json.loads(data)['labels']
    except RecursionError:
        raise ValueError('it is nested too deeply to parse') from None
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f'{type(error).__name__}: {error}') from None
    if entries is None:
        return None
    if not isinstance(entries, list) or not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                                 for e in entries):
        raise ValueError('"labels" is not a list of [file name, label] pairs')
    labels = {}
    for name, label in entries:
        problem = label_problem(label)
        if problem:
            raise ValueError(f"the label of '{name}' {problem}")
        labels[name.replace('\\', '/')] = label
    return labels


def label_problem(label):
    """Why a label is unusable (a phrase), or None: a class must be an int in [0, MAX_LABEL_DIM), a
    vector a list of at most MAX_LABEL_DIM finite numbers."""
    if isinstance(label, int) and not isinstance(label, bool):
        return None if 0 <= label < MAX_LABEL_DIM else f'is {label}; a class is an int in 0 ... {MAX_LABEL_DIM - 1}'
    if isinstance(label, list):
        if len(label) > MAX_LABEL_DIM:
            return f'has {len(label)} values; a label vector has at most {MAX_LABEL_DIM}'
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) and _is_finite(x) for x in label):
            return None
    return f'is {str(label)[:40]!r}; a label is a class (int) or a list of finite numbers'


def _file_ext(fname):
    return os.path.splitext(fname)[1].lower()


def _image_extensions():
    PIL.Image.init()
    return set(PIL.Image.EXTENSION)


def _is_finite(number):
    try:
        return math.isfinite(number)
    except OverflowError:  # an int too large for a float
        return False


class _FileSource:
    """Read access to the files of a directory or a zip, keyed by '/'-separated relative path.

    The zip handle is opened lazily and reopened in each process (a handle inherited through
    `fork` by DataLoader workers shares its file offset with the parent and corrupts reads)."""

    def __init__(self, path):
        self.path = path
        self._zipfile = None
        self._zip_pid = None
        if os.path.isdir(path):
            self.kind = 'dir'
            try:
                self.fnames, odd = list_folder(path)
            except (ValueError, OSError) as error:
                raise DatasetError(f"dataset '{path}' cannot be listed: {error}.") from None
            if odd:
                name, kind = sorted(odd.items())[0]
                raise DatasetError(f"dataset '{path}' holds '{name}', which is {kind}; a dataset folder may hold "
                                   f"only regular files and folders.")
        elif os.path.isfile(path) and _file_ext(path) == '.zip':
            self.kind = 'zip'
            try:
                self.infos = {info.filename: info for info in self._zip().infolist() if not info.is_dir()}
            except (zipfile.BadZipFile, OSError) as error:
                raise DatasetError(f"dataset '{path}' is not a readable zip file ({error}).") from None
            self.fnames = set(self.infos)
        elif not os.path.exists(path):
            raise DatasetError(f"dataset path '{path}' does not exist; give a directory of images or a .zip.")
        else:
            raise DatasetError(f"dataset path '{path}' is neither a directory nor a .zip file.")

    def _zip(self):
        if self._zipfile is None or self._zip_pid != os.getpid():
            self._zipfile = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zipfile

    def check_readable(self, fnames, limit=None):
        """Refuse (DatasetError) zip members among `fnames` that cannot or may not be read."""
        for fname in fnames if self.kind == 'zip' else ():
            problem = zip_member_problem(self.infos[fname], limit)
            if problem:
                raise DatasetError(f"'{fname}' in dataset '{self.path}' {problem}.")

    def open(self, fname):
        if self.kind == 'dir':
            return open_regular_file(os.path.join(self.path, *fname.split('/')))
        return self._zip().open(fname, 'r')

    def read(self, fname, limit):
        """All bytes of one file, at most `limit` (ValueError past it)."""
        with self.open(fname) as f:
            return read_limited(f, limit, f"'{fname}'")

    def close(self):
        if self._zipfile is not None and self._zip_pid == os.getpid():
            self._zipfile.close()
        self._zipfile = None

    def __getstate__(self):
        return dict(self.__dict__, _zipfile=None, _zip_pid=None)


class ImageDataset(torch.utils.data.Dataset):
    """`ds[i] -> (uint8 [C, H, W], float32 [label_dim])`. With `xflip` the length doubles and the
    second half are the mirror images of the first; `max_size` keeps a random subset (drawn with
    `random_seed`, before `xflip`), as the releases' `ImageFolderDataset` does."""

    def __init__(self, path, resolution=None, use_labels=False, max_size=None, xflip=False, random_seed=0):
        self.path = os.fspath(path)
        self.name = os.path.splitext(os.path.basename(os.path.normpath(self.path)))[0]
        self._source = _FileSource(self.path)
        extensions = _image_extensions()
        self._image_fnames = sorted(f for f in self._source.fnames if _file_ext(f) in extensions)
        if not self._image_fnames:
            raise DatasetError(f"dataset '{self.path}' contains no image files (PNG or JPEG).")
        self._source.check_readable(self._image_fnames)
        self.image_shape = self._read_image_shape()  # [C, H, W]
        self._check_resolution(resolution)
        self._raw_labels = self._load_raw_labels() if use_labels else None
        self._raw_idx, self._xflip = _select_indices(len(self._image_fnames), max_size, xflip, random_seed)

    # --- validation at open time -----------------------------------------------------------------
    def _read_header(self, fname):
        """(width, height, channels) of one image, from its header only."""
        try:
            with self._source.open(fname) as f, PIL.Image.open(f) as image:
                size, mode = image.size, image.mode
        except PIL.Image.DecompressionBombError as error:
            raise DatasetError(f"image '{fname}' in dataset '{self.path}' is past Pillow's pixel limit, a possible "
                               f"decompression bomb ({str(error).rstrip('.')}).") from None
        except _DECODE_ERRORS as error:
            raise DatasetError(f"image '{fname}' in dataset '{self.path}' is not a readable image ({error}).") from None
        if mode not in CHANNELS_OF_MODE:
            raise DatasetError(f"image '{fname}' in dataset '{self.path}' has PIL mode '{mode}'; "
                               f"accepted modes are {sorted(CHANNELS_OF_MODE)} (8-bit grey, RGB, RGBA).")
        return size[0], size[1], CHANNELS_OF_MODE[mode]

    def _read_image_shape(self):
        first_of_shape = {}  # (width, height, channels) -> [first file, count]
        for fname in self._image_fnames:
            first_of_shape.setdefault(self._read_header(fname), [fname, 0])[1] += 1
        if len(first_of_shape) > 1:
            # Name the most common shape and the odd ones (the first file is not necessarily right).
            (shape, (example, count)), *others = sorted(first_of_shape.items(), key=lambda item: -item[1][1])
            odd = '; '.join(f"'{f}' is {w}x{h} with {c} channels" + (f' (and {n - 1} more like it)' if n > 1 else '')
                            for (w, h, c), (f, n) in others[:3])
            raise DatasetError(f"dataset '{self.path}' mixes image shapes: {count} image(s) are {shape[0]}x{shape[1]} "
                               f"with {shape[2]} channels (e.g. '{example}'), but {odd}; all images must have the "
                               f"same size and channels.")
        (width, height, channels), = first_of_shape
        if width != height:
            raise DatasetError(f"images of dataset '{self.path}' are {width}x{height}; square images are required.")
        if width < 4 or width & (width - 1):
            raise DatasetError(f"images of dataset '{self.path}' are {width}x{height}; "
                               f"the side must be a power of two (4, 8, ..., 1024).")
        return [channels, height, width]

    def _check_resolution(self, resolution):
        if resolution is not None and resolution != self.resolution:
            raise DatasetError(f"dataset '{self.path}' has {self.resolution}x{self.resolution} images, "
                               f"but resolution {resolution} was asked.")

    def _load_raw_labels(self):
        """Labels of the images in `_image_fnames` order: int64 [N] classes or float32 [N, L]; None
        when the dataset has no `dataset.json` or its labels are null."""
        if LABELS_FILE not in self._source.fnames:
            return None
        self._source.check_readable([LABELS_FILE], MAX_LABELS_BYTES)
        try:
            labels_of = parse_labels_json(self._source.read(LABELS_FILE, MAX_LABELS_BYTES))
        except (ValueError, OSError) as error:
            raise DatasetError(f"'{LABELS_FILE}' of dataset '{self.path}' is not of the form "
                               f'{{"labels": [["file.png", label], ...]}}: {error}.') from None
        if labels_of is None:
            return None
        missing = [f for f in self._image_fnames if f not in labels_of]
        if missing:
            raise DatasetError(f"'{LABELS_FILE}' of dataset '{self.path}' has no label for {len(missing)} "
                               f"image(s), the first being '{missing[0]}'; every image needs one.")
        unknown = sorted(set(labels_of) - set(self._image_fnames))
        if unknown:
            raise DatasetError(f"'{LABELS_FILE}' of dataset '{self.path}' labels {len(unknown)} file(s) that "
                               f"are not images of the dataset, the first being '{unknown[0]}'.")
        return self._labels_array([labels_of[f] for f in self._image_fnames])

    def _labels_array(self, labels):
        try:
            array = np.array(labels)
        except ValueError:
            array = np.array(labels, dtype=object)
        if array.ndim == 1 and np.issubdtype(array.dtype, np.integer) and array.min() >= 0:
            return array.astype(np.int64)
        if array.ndim == 2 and np.issubdtype(array.dtype, np.number):
            return array.astype(np.float32)
        raise DatasetError(f"labels in '{LABELS_FILE}' of dataset '{self.path}' must be all non-negative ints "
                           f"(classes) or all float lists of one length; got values like {labels[0]!r}.")

    def verify(self):
        """Decode every image (the full check that opening skips); raises `DatasetError` on the first bad one."""
        for raw_idx in range(len(self._image_fnames)):
            self._load_raw_image(raw_idx)

    # --- access ----------------------------------------------------------------------------------
    def _load_raw_image(self, raw_idx):
        fname = self._image_fnames[raw_idx]
        try:
            with self._source.open(fname) as f, PIL.Image.open(f) as image:
                pixels = np.array(image)
        except (*_DECODE_ERRORS, PIL.Image.DecompressionBombError) as error:
            raise DatasetError(f"image '{fname}' in dataset '{self.path}' cannot be decoded ({error}).") from None
        if pixels.ndim == 2:
            pixels = pixels[:, :, np.newaxis]  # [H, W] -> [H, W, 1]
        pixels = pixels.transpose(2, 0, 1)  # [H, W, C] -> [C, H, W]
        if list(pixels.shape) != self.image_shape or pixels.dtype != np.uint8:
            raise DatasetError(f"image '{fname}' in dataset '{self.path}' decodes to {pixels.dtype} "
                               f"{list(pixels.shape)}, not uint8 {self.image_shape} as its header said.")
        return pixels

    def __len__(self):
        return self._raw_idx.size

    def __getitem__(self, idx):
        image = self._load_raw_image(self._raw_idx[idx])
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self.get_label(idx)

    def get_label(self, idx):
        """float32 [label_dim]: one-hot for class labels, the vector itself otherwise."""
        if self._raw_labels is None:
            return np.zeros([0], dtype=np.float32)
        label = self._raw_labels[self._raw_idx[idx]]
        if self._raw_labels.dtype == np.int64:
            onehot = np.zeros([self.label_dim], dtype=np.float32)
            onehot[label] = 1
            return onehot
        return label.copy()

    def raw_index(self, idx):
        """Index of item `idx` among the image files (sorted by path), and whether it is mirrored."""
        return int(self._raw_idx[idx]), bool(self._xflip[idx])

    @property
    def num_channels(self):
        return self.image_shape[0]

    @property
    def resolution(self):
        return self.image_shape[1]

    @property
    def label_shape(self):
        if self._raw_labels is None:
            return [0]
        if self._raw_labels.dtype == np.int64:
            return [int(self._raw_labels.max()) + 1]
        return list(self._raw_labels.shape[1:])

    @property
    def label_dim(self):
        return self.label_shape[0]

    @property
    def has_labels(self):
        return self.label_dim != 0

    @property
    def has_onehot_labels(self):
        return self._raw_labels is not None and self._raw_labels.dtype == np.int64

    def close(self):
        self._source.close()

    def __del__(self):
        source = self.__dict__.get('_source')
        if source is not None:
            source.close()


def _select_indices(num_images, max_size, xflip, random_seed):
    """(raw index [N'], mirrored flag [N']): a seeded subset of at most `max_size` images (sorted),
    then, with `xflip`, the same list again with the flag set."""
    raw_idx = np.arange(num_images, dtype=np.int64)
    if max_size is not None and raw_idx.size > max_size:
        np.random.RandomState(random_seed).shuffle(raw_idx)
        raw_idx = np.sort(raw_idx[:max_size])
    flags = np.zeros(raw_idx.size, dtype=np.uint8)
    if xflip:
        raw_idx = np.concatenate([raw_idx, raw_idx])
        flags = np.concatenate([flags, np.ones_like(flags)])
    return raw_idx, flags


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless stream of dataset indices for `DataLoader(sampler=...)`, as the releases' sampler:
    one seeded permutation, then each visited slot is swapped with a random slot up to
    `window_size * len(dataset)` positions behind it, so the order keeps changing without epochs.
    Rank `r` of `num_replicas` takes every `num_replicas`-th position of the one global stream,
    so ranks see disjoint items at each step."""

    def __init__(self, dataset, rank=0, num_replicas=1, shuffle=True, seed=0, window_size=0.5):
        if len(dataset) == 0:
            raise ValueError('InfiniteSampler needs a non-empty dataset.')
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f'InfiniteSampler needs 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}.')
        if not 0 <= window_size <= 1:
            raise ValueError(f'InfiniteSampler window_size must lie in [0, 1], got {window_size}.')
        super().__init__()
        self.dataset_size = len(dataset)
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size

    def __iter__(self):
        order = np.arange(self.dataset_size)
        rng = None
        window = 0
        if self.shuffle:
            rng = np.random.RandomState(self.seed)
            rng.shuffle(order)
            window = int(np.rint(order.size * self.window_size))
        position = 0
        while True:
            slot = position % order.size
            if position % self.num_replicas == self.rank:
                yield int(order[slot])
            if window >= 2:
                other = (slot - rng.randint(window)) % order.size
                order[slot], order[other] = order[other], order[slot]
            position += 1
