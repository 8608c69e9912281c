"""Cache of the real images' features, keyed by what they depend on, never by a path.

The key hashes: the dataset's content (every file's relative name and the sha256 of its bytes,
`dataset.json` included, for a folder; the zip's bytes for a zip), which items are used (the first
`num_items` after the dataset's `max_size`/`xflip` selection), the extractor and its layer, the
sha256 of its weights file, and what is stored ('stats' or 'features'), each field preceded by its
length so that no two different inputs give one stream. One changed pixel or label changes the
key, so stale statistics are never reused; moving or renaming the dataset keeps it.

Files are written atomically (temporary file + rename), so a crash or two ranks never leave a
half-written entry. The folder: `cache_dir`, else `$STYLEGAN_METRICS_CACHE`, else
`~/.cache/stylegan/gan-metrics`.
"""
import hashlib
import os

import numpy as np

from stylegan.checkpoint import atomic_torch_save
from stylegan.files import remove_stale_temporaries
from stylegan.safeload import NetworkFileError, load_torch_file

CACHE_DIR_ENV = 'STYLEGAN_METRICS_CACHE'
_folder_hashes = {}  # (path, ((name, size, mtime_ns), ...)) -> sha256 hex


def default_cache_dir():
    return os.environ.get(CACHE_DIR_ENV) or os.path.join(os.path.expanduser('~'), '.cache', 'stylegan', 'gan-metrics')


def _files_of(path):
    """Sorted relative names of all files under a folder, '/'-separated."""
    names = [os.path.relpath(os.path.join(root, name), path).replace(os.sep, '/')
             for root, _dirs, files in os.walk(path) for name in files]
    return sorted(names)


def source_content_hash(path):
    """sha256 over (relative name, bytes) of every file of a dataset folder, or over a zip's bytes;
    remembered per (path, sizes, mtimes) for the life of the process."""
    path = os.path.abspath(path)
    names = _files_of(path) if os.path.isdir(path) else ['']
    stats = tuple((name, *_size_and_mtime(os.path.join(path, name) if name else path)) for name in names)
    memo_key = (path, stats)
    if memo_key not in _folder_hashes:
        digest = hashlib.sha256()
        for name in names:
            file_digest = hashlib.sha256()
            with open(os.path.join(path, name) if name else path, 'rb') as file:
                for block in iter(lambda: file.read(1 << 20), b''):
                    file_digest.update(block)
            update_fields(digest, name.encode(), file_digest.digest())
        _folder_hashes[memo_key] = digest.hexdigest()
    return _folder_hashes[memo_key]


def update_fields(digest, *fields):
    """Feed byte strings to a hash each preceded by its length, so that no two different lists of
    fields give the same stream (name + bytes without lengths would let 'a'+'bc' pass as 'ab'+'c')."""
    for field in fields:
        digest.update(len(field).to_bytes(8, 'little'))
        digest.update(field)


def _size_and_mtime(path):
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def dataset_content_hash(dataset, num_items):
    """Hash of the first `num_items` items of `dataset` as the metrics see them. For this project's
    `ImageDataset` (it has `path` and `raw_index`): the files' bytes plus which files, mirrored or not,
    are the items. For any other dataset: the decoded items themselves (slower, same guarantee)."""
    digest = hashlib.sha256()
    path = getattr(dataset, 'path', None)
    if path is not None and hasattr(dataset, 'raw_index') and os.path.exists(path):
        selection = np.array([dataset.raw_index(i) for i in range(num_items)], dtype=np.int64).reshape(-1)
        update_fields(digest, b'files', source_content_hash(path).encode(), selection.tobytes())
    else:
        update_fields(digest, b'items')
        for i in range(num_items):
            image, label = dataset[i]
            image = np.ascontiguousarray(image)
            update_fields(digest, f'{image.dtype}{image.shape}'.encode(), image.tobytes(), np.asarray(label, np.float32).tobytes())
    update_fields(digest, str(num_items).encode())
    return digest.hexdigest()


def real_cache_path(cache_dir, dataset, num_items, extractor_identity, what):
    """Path of the cache entry of the real features of `dataset` (see the module docstring)."""
    key = hashlib.sha256()
    update_fields(key, *(field.encode() for field in (dataset_content_hash(dataset, num_items), extractor_identity, what)))
    name = getattr(dataset, 'name', 'dataset')
    return os.path.join(cache_dir or default_cache_dir(), f'{name}-{what}-{num_items}-{key.hexdigest()[:32]}.pt')


def load_entry(path):
    """The cached dict of tensors, or None when absent or unreadable (then it is recomputed)."""
    if not os.path.isfile(path):
        return None
    try:
        entry = load_torch_file(path, 'expected a metrics cache entry')
    except NetworkFileError:  # damaged, foreign or crafted: the entry is recomputed and replaced
        return None
    return entry if isinstance(entry, dict) else None


def save_entry(path, entry):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    remove_stale_temporaries(os.path.dirname(path))  # what a run killed while saving an entry left
    atomic_torch_save(entry, path)
