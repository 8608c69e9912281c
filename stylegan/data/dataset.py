"""Training images and labels from a folder tree or a zip, in the layout of the releases'
`dataset_tool.py`, and the infinite shuffled sampler that feeds them to the training loop.

A dataset is a directory or a `.zip` holding PNG/JPEG images (any sub-folders) and optionally a
`dataset.json` at its root: `{"labels": [["00000/img00000000.png", 6], ...]}`, one entry per image,
each an int class (given to the networks as a one-hot vector) or a list of floats. Images stay
uint8 `[C, H, W]` numpy arrays until the training loop moves them to the GPU.

Opening a dataset reads every image's header (size and mode, no pixel decoding), so a folder of
mixed sizes or a non-image file fails at once with a sentence naming the file; `verify()` decodes
every image for a full check.
"""
import json
import os
import zipfile
import zlib

import numpy as np
import PIL.Image
import torch

LABELS_FILE = 'dataset.json'
CHANNELS_OF_MODE = {'L': 1, 'RGB': 3, 'RGBA': 4}  # PIL modes that map to uint8 [C, H, W]
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is one sentence naming the problem."""


def _file_ext(fname):
    return os.path.splitext(fname)[1].lower()


def _image_extensions():
    PIL.Image.init()
    return set(PIL.Image.EXTENSION)


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
            self.fnames = {os.path.relpath(os.path.join(root, fname), start=path).replace(os.sep, '/')
                           for root, _dirs, files in os.walk(path) for fname in files}
        elif os.path.isfile(path) and _file_ext(path) == '.zip':
            self.kind = 'zip'
            try:
                self.fnames = {name for name in self._zip().namelist() if not name.endswith('/')}
            except (zipfile.BadZipFile, OSError) as error:
                raise DatasetError(f"dataset '{path}' is not a readable zip file ({error}).") from None
        elif not os.path.exists(path):
            raise DatasetError(f"dataset path '{path}' does not exist; give a directory of images or a .zip.")
        else:
            raise DatasetError(f"dataset path '{path}' is neither a directory nor a .zip file.")

    def _zip(self):
        if self._zipfile is None or self._zip_pid != os.getpid():
            self._zipfile = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zipfile

    def open(self, fname):
        if self.kind == 'dir':
            return open(os.path.join(self.path, fname), 'rb')
        return self._zip().open(fname, 'r')

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
        except _DECODE_ERRORS as error:
            raise DatasetError(f"image '{fname}' in dataset '{self.path}' is not a readable image ({error}).") from None
        if mode not in CHANNELS_OF_MODE:
            raise DatasetError(f"image '{fname}' in dataset '{self.path}' has PIL mode '{mode}'; "
                               f"accepted modes are {sorted(CHANNELS_OF_MODE)} (8-bit grey, RGB, RGBA).")
        return size[0], size[1], CHANNELS_OF_MODE[mode]

    def _read_image_shape(self):
        first = self._image_fnames[0]
        width, height, channels = self._read_header(first)
        for fname in self._image_fnames[1:]:
            other = self._read_header(fname)
            if other != (width, height, channels):
                raise DatasetError(f"dataset '{self.path}' mixes image shapes: '{first}' is {width}x{height} with "
                                   f"{channels} channels but '{fname}' is {other[0]}x{other[1]} with {other[2]}; "
                                   f"all images must have the same size and channels.")
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
        try:
            with self._source.open(LABELS_FILE) as f:
                entries = json.load(f)['labels']
            if entries is None:
                return None
            labels_of = {str(fname).replace('\\', '/'): label for fname, label in entries}
        except (ValueError, KeyError, TypeError) as error:
            raise DatasetError(f"'{LABELS_FILE}' of dataset '{self.path}' is not of the form "
                               f'{{"labels": [["file.png", label], ...]}} ({error}).') from None
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
        except _DECODE_ERRORS as error:
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
