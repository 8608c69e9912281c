"""Where the feature extractors' weight files come from, and their content hashes.

The metrics use three pretrained networks, each one file, named as torch-fidelity and torchvision
publish them (so a file already in torch.hub's cache is found and reused):

| key | file | used by |
| --- | --- | --- |
| `inception` | `weights-inception-2015-12-05-6726825d.pth` | FID, KID, IS (the TF Inception of the papers) |
| `vgg16` | `vgg16-397923af.pth` (torchvision ImageNet VGG16) | precision/recall, PPL's LPIPS trunk |
| `lpips` | `weights-vgg16-lpips.pth` (LPIPS v0.1 linear layers) | PPL |

A file is looked for in, in order: the `weights_dir` argument (`--weights-dir`), the folder named by
`$STYLEGAN_METRICS_WEIGHTS`, and torch.hub's checkpoint folder. When it is in none of them it is
downloaded into the first of those folders, unless downloads are off (`download=False`,
`--offline`, or `$STYLEGAN_METRICS_OFFLINE=1`); this download is the only network access of
`metrics/`. When the file can be neither found nor fetched, `MissingWeightsError` says which file
to put where.
"""
import dataclasses
import hashlib
import os

import torch

from stylegan.safeload import NetworkFileError, load_torch_file

WEIGHTS_DIR_ENV = 'STYLEGAN_METRICS_WEIGHTS'
OFFLINE_ENV = 'STYLEGAN_METRICS_OFFLINE'


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    file_name: str
    url: str
    what: str  # for messages


WEIGHTS_FILES = {
    'inception': WeightsFile(
        'weights-inception-2015-12-05-6726825d.pth',
        'https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth',
        'Inception-v3 (FID/KID/IS)'),
    'vgg16': WeightsFile(
        'vgg16-397923af.pth',
        'https://download.pytorch.org/models/vgg16-397923af.pth',
        'VGG16 (precision/recall, PPL)'),
    'lpips': WeightsFile(
        'weights-vgg16-lpips.pth',
        'https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-vgg16-lpips.pth',
        'LPIPS linear layers (PPL)'),
}


class MissingWeightsError(RuntimeError):
    """A weights file that is neither on disk nor downloadable; the message says what to do."""


def search_dirs(weights_dir=None):
    """The folders searched for weight files, in order (existing or not)."""
    dirs = []
    if weights_dir:
        dirs.append(os.fspath(weights_dir))
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(os.environ[WEIGHTS_DIR_ENV])
    dirs.append(os.path.join(torch.hub.get_dir(), 'checkpoints'))
    return dirs


def downloads_allowed(download=True):
    return bool(download) and os.environ.get(OFFLINE_ENV, '') in ('', '0')


def weights_path(key, weights_dir=None, download=True, verbose=False):
    """Path of the weights file `key` (a key of `WEIGHTS_FILES`), downloading it if allowed."""
    spec = WEIGHTS_FILES[key]
    dirs = search_dirs(weights_dir)
    for folder in dirs:
        candidate = os.path.join(folder, spec.file_name)
        if os.path.isfile(candidate):
            return candidate
    target_dir = dirs[0]
    target = os.path.join(target_dir, spec.file_name)
    hint = (f"put '{spec.file_name}' (from {spec.url}) into '{target_dir}', or point --weights-dir "
            f"(or ${WEIGHTS_DIR_ENV}) at a folder that holds it")
    if not downloads_allowed(download):
        raise MissingWeightsError(f"{spec.what} weights '{spec.file_name}' were not found in "
                                  f"{', '.join(repr(d) for d in dirs)} and downloads are off; {hint}.")
    try:
        os.makedirs(target_dir, exist_ok=True)
        torch.hub.download_url_to_file(spec.url, target, progress=verbose)
    except Exception as error:  # any network or file-system failure means the same thing to the user
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MissingWeightsError(f"{spec.what} weights '{spec.file_name}' were not found and could not be "
                                  f"downloaded ({reason}); {hint}.") from None
    return target


def load_state_dict_file(path, what):
    """A state dict read with `weights_only=True`; a damaged or foreign file is one sentence."""
    try:
        state = load_torch_file(path, 'expected a PyTorch state dict', allow_legacy_format=True)
    except NetworkFileError as error:
        raise MissingWeightsError(f"{what} weights file '{path}' cannot be read as a PyTorch state dict "
                                  f"({str(error)[:300]}); replace it with the published file.") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise MissingWeightsError(f"{what} weights file '{path}' does not hold a state dict of tensors; "
                                  f"replace it with the published file.")
    return state


_file_hashes = {}  # (path, size, mtime_ns) -> sha256 hex


def file_sha256(path):
    """sha256 of a file's bytes, remembered per (path, size, mtime) for the life of the process."""
    stat = os.stat(path)
    memo_key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _file_hashes:
        digest = hashlib.sha256()
        with open(path, 'rb') as file:
            for block in iter(lambda: file.read(1 << 20), b''):
                digest.update(block)
        _file_hashes[memo_key] = digest.hexdigest()
    return _file_hashes[memo_key]
