"""ImageDataset reads the releases' dataset layout (folder or zip, dataset.json labels), refuses bad
inputs with one clear sentence, and InfiniteSampler shards an endless shuffled stream across ranks."""
import io
import itertools
import json
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest

from stylegan.data.dataset import DatasetError, ImageDataset, InfiniteSampler


def _png_bytes(pixels):
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format='PNG')
    return buffer.getvalue()


def _random_images(count, size=8, channels=3, seed=0):
    rng = np.random.RandomState(seed)
    shape = [size, size, channels] if channels > 1 else [size, size]
    return [rng.randint(0, 256, size=shape, dtype=np.uint8) for _ in range(count)]


def _write_folder(root, files):
    """files: {relative path: bytes}."""
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def _write_zip(path, files):
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def _image_files(images):
    return {f'{i // 3:05d}/img{i:08d}.png': _png_bytes(pixels) for i, pixels in enumerate(images)}


def _labels_file(labels_of):
    return json.dumps({'labels': [[name, label] for name, label in labels_of.items()]}).encode()


def test_folder_and_zip_give_the_same_items(tmp_path):
    images = _random_images(5)
    files = _image_files(images)
    folder = ImageDataset(_write_folder(tmp_path / 'faces', files))
    archive = ImageDataset(_write_zip(tmp_path / 'faces.zip', files))
    assert len(folder) == len(archive) == 5
    assert folder.name == archive.name == 'faces'
    for ds in (folder, archive):
        assert (ds.resolution, ds.num_channels, ds.image_shape, ds.label_dim, ds.has_labels) == (8, 3, [3, 8, 8], 0, False)
    for i, pixels in enumerate(images):  # file names sort in creation order
        (img_f, label_f), (img_z, label_z) = folder[i], archive[i]
        assert img_f.dtype == np.uint8 and img_f.shape == (3, 8, 8)
        np.testing.assert_array_equal(img_f, pixels.transpose(2, 0, 1))
        np.testing.assert_array_equal(img_z, img_f)
        assert label_f.shape == label_z.shape == (0,) and label_f.dtype == np.float32


def test_greyscale_images_have_one_channel(tmp_path):
    images = _random_images(2, channels=1)
    ds = ImageDataset(_write_zip(tmp_path / 'grey.zip', _image_files(images)))
    assert ds.image_shape == [1, 8, 8]
    np.testing.assert_array_equal(ds[1][0][0], images[1])


def test_int_labels_become_one_hot_and_float_labels_stay_vectors(tmp_path):
    files = _image_files(_random_images(3))
    names = sorted(files)
    classes = dict(zip(names, [2, 0, 5]))
    ds = ImageDataset(_write_zip(tmp_path / 'classes.zip', {**files, 'dataset.json': _labels_file(classes)}), use_labels=True)
    assert ds.label_dim == 6 and ds.has_labels and ds.has_onehot_labels
    np.testing.assert_array_equal(ds[0][1], np.eye(6, dtype=np.float32)[2])
    np.testing.assert_array_equal(ds.get_label(2), np.eye(6, dtype=np.float32)[5])

    vectors = {name: [0.5 * i, -1.0] for i, name in enumerate(names)}
    ds = ImageDataset(_write_folder(tmp_path / 'vectors', {**files, 'dataset.json': _labels_file(vectors)}), use_labels=True)
    assert ds.label_dim == 2 and not ds.has_onehot_labels
    np.testing.assert_array_equal(ds[1][1], np.array([0.5, -1.0], dtype=np.float32))

    unlabelled = ImageDataset(tmp_path / 'classes.zip', use_labels=False)
    assert unlabelled.label_dim == 0 and unlabelled[0][1].shape == (0,)


def test_xflip_doubles_the_dataset_with_mirrored_second_half(tmp_path):
    images = _random_images(3)
    ds = ImageDataset(_write_zip(tmp_path / 'd.zip', _image_files(images)), xflip=True)
    assert len(ds) == 6
    for i in range(3):
        np.testing.assert_array_equal(ds[i + 3][0], ds[i][0][:, :, ::-1])
        assert ds.raw_index(i + 3) == (i, True)
    assert ds[3][0].flags['C_CONTIGUOUS']


def test_max_size_takes_a_seeded_sorted_subset_before_xflip(tmp_path):
    path = _write_zip(tmp_path / 'd.zip', _image_files(_random_images(10)))
    ds = ImageDataset(path, max_size=4, xflip=True, random_seed=3)
    picked = [ds.raw_index(i)[0] for i in range(len(ds))]
    assert len(ds) == 8 and picked[:4] == picked[4:] and picked[:4] == sorted(picked[:4])
    expected = np.arange(10)
    np.random.RandomState(3).shuffle(expected)
    assert picked[:4] == sorted(expected[:4].tolist())  # the releases' subset for the same seed
    other = ImageDataset(path, max_size=4, random_seed=4)
    assert [other.raw_index(i)[0] for i in range(4)] != picked[:4]


def test_zip_handle_survives_pickling_for_dataloader_workers(tmp_path):
    ds = ImageDataset(_write_zip(tmp_path / 'd.zip', _image_files(_random_images(2))))
    ds[0]  # opens the zip in this process
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[1][0], ds[1][0])


def test_dataloader_with_worker_processes_reads_the_zip(tmp_path):
    import torch
    ds = ImageDataset(_write_zip(tmp_path / 'd.zip', _image_files(_random_images(4))))
    ds[0]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    images = torch.cat([batch for batch, _labels in loader])
    np.testing.assert_array_equal(images.numpy(), np.stack([ds[i][0] for i in range(4)]))


def _error(path, **kwargs):
    with pytest.raises(DatasetError) as info:
        ds = ImageDataset(path, **kwargs)
        ds.verify()
    message = str(info.value)
    assert '\n' not in message and message.endswith('.')
    return message


def test_missing_path_is_refused(tmp_path):
    assert 'does not exist' in _error(tmp_path / 'nowhere.zip')


def test_empty_dataset_is_refused(tmp_path):
    (tmp_path / 'empty').mkdir()
    assert 'contains no image files' in _error(tmp_path / 'empty')
    assert 'contains no image files' in _error(_write_zip(tmp_path / 'e.zip', {'readme.txt': b'hi'}))


def test_non_zip_file_is_refused(tmp_path):
    (tmp_path / 'images.tar').write_bytes(b'x')
    assert 'neither a directory nor a .zip' in _error(tmp_path / 'images.tar')
    (tmp_path / 'fake.zip').write_bytes(b'not a zip')
    assert 'not a readable zip' in _error(tmp_path / 'fake.zip')


def test_corrupt_image_inside_zip_is_named(tmp_path):
    files = _image_files(_random_images(2))
    garbage = dict(files, **{'00000/img00000001.png': b'\x89PNG garbage'})
    assert "'00000/img00000001.png'" in _error(_write_zip(tmp_path / 'g.zip', garbage))
    truncated = dict(files, **{'00000/img00000001.png': files['00000/img00000001.png'][:60]})
    message = _error(_write_zip(tmp_path / 't.zip', truncated))  # header fine, pixels cut off
    assert "'00000/img00000001.png'" in message and 'cannot be decoded' in message


def test_mixed_image_sizes_are_refused(tmp_path):
    files = {'a.png': _png_bytes(_random_images(1, size=8)[0]), 'b.png': _png_bytes(_random_images(1, size=16)[0])}
    message = _error(_write_zip(tmp_path / 'm.zip', files))
    assert 'mixes image shapes' in message and "'b.png' is 16x16" in message


def test_non_square_and_non_power_of_two_images_are_refused(tmp_path):
    wide = np.zeros([8, 16, 3], dtype=np.uint8)
    assert 'square images are required' in _error(_write_zip(tmp_path / 'w.zip', {'a.png': _png_bytes(wide)}))
    odd = np.zeros([12, 12, 3], dtype=np.uint8)
    assert 'power of two' in _error(_write_zip(tmp_path / 'o.zip', {'a.png': _png_bytes(odd)}))


def test_unsupported_image_mode_is_refused(tmp_path):
    grey16 = PIL.Image.fromarray(np.zeros([8, 8], dtype=np.uint16))
    buffer = io.BytesIO()
    grey16.save(buffer, format='PNG')
    assert "PIL mode 'I;16'" in _error(_write_zip(tmp_path / 'i.zip', {'a.png': buffer.getvalue()}))


def test_labels_that_do_not_match_the_images_are_refused(tmp_path):
    files = _image_files(_random_images(2))
    names = sorted(files)
    missing = _labels_file({names[0]: 1})
    message = _error(_write_zip(tmp_path / 'a.zip', {**files, 'dataset.json': missing}), use_labels=True)
    assert 'no label for 1 image(s)' in message and names[1] in message
    unknown = _labels_file({names[0]: 1, names[1]: 0, 'ghost.png': 3})
    assert "'ghost.png'" in _error(_write_zip(tmp_path / 'b.zip', {**files, 'dataset.json': unknown}), use_labels=True)
    mixed = _labels_file({names[0]: 1, names[1]: [0.5]})
    assert 'must be all non-negative ints' in _error(_write_zip(tmp_path / 'c.zip', {**files, 'dataset.json': mixed}), use_labels=True)
    assert 'is not of the form' in _error(_write_zip(tmp_path / 'd.zip', {**files, 'dataset.json': b'{"x": 1}'}), use_labels=True)


def test_resolution_other_than_the_images_is_refused(tmp_path):
    path = _write_zip(tmp_path / 'r.zip', _image_files(_random_images(1)))
    assert ImageDataset(path, resolution=8).resolution == 8
    assert 'has 8x8 images, but resolution 16 was asked' in _error(path, resolution=16)


def _take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def test_sampler_is_deterministic_by_seed_and_covers_the_dataset():
    dataset = range(10)
    first = _take(InfiniteSampler(dataset, seed=1), 40)
    assert first == _take(InfiniteSampler(dataset, seed=1), 40)
    assert first != _take(InfiniteSampler(dataset, seed=2), 40)
    assert set(first) == set(range(10))
    assert first[10:20] != first[:10]  # the window keeps reshuffling, no fixed epochs
    no_window = _take(InfiniteSampler(dataset, seed=1, window_size=0), 20)
    assert sorted(no_window[:10]) == list(range(10)) and no_window[10:] == no_window[:10]
    assert _take(InfiniteSampler(dataset, shuffle=False), 12) == list(range(10)) + [0, 1]


def test_sampler_ranks_take_disjoint_interleaved_slices_of_one_stream():
    dataset = range(12)
    stream = _take(InfiniteSampler(dataset, seed=7), 36)
    shards = [_take(InfiniteSampler(dataset, rank=r, num_replicas=3, seed=7), 12) for r in range(3)]
    for rank, shard in enumerate(shards):
        assert shard == stream[rank::3]
    # Without the window the stream is one permutation repeated: a pass gives each item to one rank.
    passes = [_take(InfiniteSampler(dataset, rank=r, num_replicas=3, seed=7, window_size=0), 4) for r in range(3)]
    assert sorted(itertools.chain(*passes)) == list(range(12))


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match='rank'):
        InfiniteSampler(range(4), rank=2, num_replicas=2)
    with pytest.raises(ValueError, match='non-empty'):
        InfiniteSampler([], seed=0)
