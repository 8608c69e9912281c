"""The real-features cache: keyed by the dataset's content, not its path; one changed image or
changed weights is a miss; entries are written whole."""
import os
import shutil

import numpy as np
import PIL.Image
import pytest
import torch

from metrics import cache as cache_lib
from metrics.features import MetricOptions, real_features
from stylegan.data.dataset import ImageDataset


class MeanColourExtractor:
    """A tiny real extractor (mean colour per image) that counts its calls."""

    def __init__(self, identity='mean-colour/weights-sha'):
        self.identity = identity
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        return images.float().mean(dim=[2, 3])  # [N, C, H, W] -> [N, C]


def write_dataset(folder, seed=0, count=5):
    os.makedirs(folder)
    rng = np.random.RandomState(seed)
    for i in range(count):
        PIL.Image.fromarray(rng.randint(0, 256, [8, 8, 3], dtype=np.uint8)).save(os.path.join(folder, f'{i}.png'))
    return str(folder)


def features_and_calls(dataset_path, cache_dir, extractor=None, what='features'):
    extractor = extractor or MeanColourExtractor()
    opts = MetricOptions(G=None, dataset=ImageDataset(dataset_path), cache_dir=str(cache_dir), batch_size=4)
    entry = real_features(opts, extractor, max_items=None, what=what)
    return entry, extractor.calls


def test_same_data_is_a_hit_even_at_another_path(tmp_path):
    first = write_dataset(tmp_path / 'a')
    entry, calls = features_and_calls(first, tmp_path / 'cache')
    assert calls == 2 and entry['features'].shape == (5, 3)

    moved = shutil.copytree(first, tmp_path / 'elsewhere' / 'a')
    cached, calls = features_and_calls(moved, tmp_path / 'cache')
    assert calls == 0
    torch.testing.assert_close(cached['features'], entry['features'])


def test_one_changed_image_is_a_miss(tmp_path):
    path = write_dataset(tmp_path / 'a')
    before, _ = features_and_calls(path, tmp_path / 'cache')
    pixels = np.array(PIL.Image.open(os.path.join(path, '3.png')))
    pixels[0, 0, 0] ^= 1
    PIL.Image.fromarray(pixels).save(os.path.join(path, '3.png'))
    after, calls = features_and_calls(path, tmp_path / 'cache')
    assert calls == 2
    assert not torch.equal(after['features'][3], before['features'][3])
    torch.testing.assert_close(after['features'][:3], before['features'][:3])


def test_other_weights_or_other_labels_are_a_miss(tmp_path):
    path = write_dataset(tmp_path / 'a')
    features_and_calls(path, tmp_path / 'cache')
    _, calls = features_and_calls(path, tmp_path / 'cache', MeanColourExtractor('mean-colour/other-sha'))
    assert calls == 2
    with open(os.path.join(path, 'dataset.json'), 'w') as file:
        file.write('{"labels": [["0.png", 0], ["1.png", 1], ["2.png", 0], ["3.png", 1], ["4.png", 0]]}')
    _, calls = features_and_calls(path, tmp_path / 'cache')
    assert calls == 2


def test_statistics_entry_holds_mean_and_unbiased_covariance(tmp_path):
    path = write_dataset(tmp_path / 'a')
    entry, _ = features_and_calls(path, tmp_path / 'cache', what='stats')
    features, _ = features_and_calls(path, tmp_path / 'cache2')
    np.testing.assert_allclose(entry['mu'].numpy(), features['features'].double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(entry['sigma'].numpy(), np.cov(features['features'].double().numpy(), rowvar=False))


def test_cache_folder_holds_only_complete_entries(tmp_path):
    path = write_dataset(tmp_path / 'a')
    features_and_calls(path, tmp_path / 'cache')
    names = os.listdir(tmp_path / 'cache')
    assert len(names) == 1 and names[0].endswith('.pt') and names[0].startswith('a-features-5-')
    assert cache_lib.load_entry(str(tmp_path / 'cache' / names[0]))['features'].shape == (5, 3)


def test_unreadable_entry_is_recomputed(tmp_path):
    path = write_dataset(tmp_path / 'a')
    features_and_calls(path, tmp_path / 'cache')
    (entry_path,) = (tmp_path / 'cache').iterdir()
    entry_path.write_bytes(b'truncated')
    _, calls = features_and_calls(path, tmp_path / 'cache')
    assert calls == 2
    assert cache_lib.load_entry(str(entry_path)) is not None


@pytest.mark.parametrize('what', ['features', 'stats'])
def test_cache_key_separates_stored_kinds(tmp_path, what):
    path = write_dataset(tmp_path / 'a')
    dataset = ImageDataset(path)
    other = 'stats' if what == 'features' else 'features'
    assert (cache_lib.real_cache_path(str(tmp_path), dataset, 5, 'x', what)
            != cache_lib.real_cache_path(str(tmp_path), dataset, 5, 'x', other))
