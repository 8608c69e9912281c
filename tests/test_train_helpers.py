"""Helpers of the training tests (no tests here): small image sets made with numpy, train.py loaded
as a module, and snapshot comparison."""
import importlib.util
import json
import os
import pathlib
import zipfile

import numpy as np
import PIL.Image
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
RELEASE_PICKLE_32 = REPO_ROOT / 'tests' / 'data' / 'sg2ada-sg2-32.pkl'  # a 32x32 StyleGAN2-ADA network


def make_image_folder(path, count=16, size=16, channels=3, seed=0, labels=None):
    """`count` random smooth-ish RGB PNGs of size x size in folder `path`; labels: list of ints -> dataset.json."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    names = []
    for i in range(count):
        low = rng.randint(0, 256, size=(4, 4, channels)).astype(np.uint8)
        image = PIL.Image.fromarray(low.squeeze(-1) if channels == 1 else low).resize((size, size), PIL.Image.BILINEAR)
        name = f'img{i:05d}.png'
        image.save(path / name)
        names.append(name)
    if labels is not None:
        (path / 'dataset.json').write_text(json.dumps({'labels': [[n, int(c)] for n, c in zip(names, labels)]}))
    return path


def make_image_zip(folder, zip_path):
    with zipfile.ZipFile(zip_path, 'w', compression=zipfile.ZIP_STORED) as archive:
        for file in sorted(pathlib.Path(folder).iterdir()):
            archive.write(file, file.name)
    return zip_path


def load_train_script():
    """train.py as a module, so tests call its `main(argv)` without a subprocess."""
    spec = importlib.util.spec_from_file_location('train_script', REPO_ROOT / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree(path):
    """{relative path: (size, mtime_ns)} of every file under `path`, to check that nothing changed."""
    result = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            stat = os.stat(full)
            result[os.path.relpath(full, path)] = (stat.st_size, stat.st_mtime_ns)
    return result


def load_snapshot(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_nested_close(a, b, atol=0.0, where='snapshot'):
    """Tensors equal within atol (0 = bit-exact), recursively through dicts and lists."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.shape == b.shape and a.dtype == b.dtype, where
        if atol == 0:
            assert torch.equal(a, b), f'{where} differs (max {(a.double() - b.double()).abs().max().item()})'
        else:
            assert torch.allclose(a.double(), b.double(), atol=atol, rtol=0), \
                f'{where} differs by {(a.double() - b.double()).abs().max().item()}'
    elif isinstance(a, dict):
        assert set(a) == set(b), f'{where}: keys {sorted(set(a) ^ set(b))}'
        for key in a:
            assert_nested_close(a[key], b[key], atol, f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_nested_close(x, y, atol, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'
