"""dataset_tool: every source type, labels, duplicates, damaged files, mode normalisation, transforms,
and output that loads in training (`ImageDataset`)."""
import gzip
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile
import zlib

import numpy as np
import PIL.Image
import pytest

from stylegan.data.dataset import ImageDataset
from stylegan.data.sources import SourceError
from stylegan.data.tool import DatasetToolError, ToolOptions, convert_dataset, main


def save(image, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)


def noise_image(seed, size=(40, 30), mode='RGB'):
    pixels = np.random.RandomState(seed).randint(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels, 'RGB').convert(mode)


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format='png')
    return buffer.getvalue()


def read_zip_dataset(path):
    """{name: uint8 pixels} and the parsed dataset.json of a dataset zip."""
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read('dataset.json'))
        images = {n: np.asarray(PIL.Image.open(io.BytesIO(archive.read(n)))) for n in archive.namelist() if n.endswith('.png')}
    return images, meta


def convert(source, dest, **options):
    return convert_dataset(source, dest, ToolOptions(**options), progress=False)


# --- sources and labels ---------------------------------------------------------------------------

def test_folder_with_class_subfolders_becomes_a_labelled_dataset_that_training_loads(tmp_path):
    source = tmp_path / 'photos'
    modes = ['RGB', 'L', 'RGBA', 'P', 'LA', 'I;16']  # every image in a different mode and size
    for i, mode in enumerate(modes):
        image = noise_image(i, size=(40 + i, 30)).convert('L' if mode == 'I;16' else mode)
        if mode == 'I;16':
            image = PIL.Image.fromarray(np.asarray(image).astype(np.uint16) * 257)  # 16-bit grey
        save(image, str(source / ('cats' if i % 2 else 'dogs') / f'{i}.png'))
    summary = convert(source, tmp_path / 'out.zip', resolution=(16, 16), transform='center-crop', labels='folders')

    assert (summary.kept, summary.resized) == (len(modes), len(modes))
    dataset = ImageDataset(str(tmp_path / 'out.zip'), use_labels=True)
    assert len(dataset) == len(modes) and dataset.image_shape == [3, 16, 16] and dataset.label_dim == 2
    images, meta = read_zip_dataset(tmp_path / 'out.zip')
    assert sorted(images) == [f'00000/img{i:08d}.png' for i in range(len(modes))]
    assert meta['class_names'] == ['cats', 'dogs']
    assert [label for _, label in meta['labels']] == [0, 0, 0, 1, 1, 1]  # sorted paths: cats/1, 3, 5, dogs/0, 2, 4


def test_labels_come_from_the_source_dataset_json_and_survive_a_zip_round_trip(tmp_path):
    source = tmp_path / 'src'
    for i in range(3):
        save(noise_image(i, size=(8, 8)), str(source / f'a{i}.png'))
    (source / 'dataset.json').write_text(json.dumps({'labels': [['a0.png', 4], ['a1.png', 5], ['a2.png', 6]]}))
    convert(source, tmp_path / 'first.zip')
    convert(tmp_path / 'first.zip', tmp_path / 'second.zip')  # a zip in the releases' layout is a source too

    first, first_meta = read_zip_dataset(tmp_path / 'first.zip')
    second, second_meta = read_zip_dataset(tmp_path / 'second.zip')
    assert [label for _, label in second_meta['labels']] == [4, 5, 6] == [label for _, label in first_meta['labels']]
    assert all(np.array_equal(first[name], second[name]) for name in first)
    assert np.array_equal(first['00000/img00000001.png'], np.asarray(noise_image(1, size=(8, 8))))


def write_cifar10_tarball(path, payload_of_batch=None):
    with tarfile.open(path, 'w:gz') as tar:
        for batch in range(1, 6):
            data = np.random.RandomState(batch).randint(0, 256, size=(2, 3 * 32 * 32), dtype=np.uint8)
            payload = payload_of_batch(batch) if payload_of_batch else {'data': data, 'labels': [batch, batch + 1]}
            blob = pickle.dumps(payload, protocol=2)
            info = tarfile.TarInfo(f'cifar-10-batches-py/data_batch_{batch}')
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_cifar10_tarball_gives_rgb_images_with_their_classes(tmp_path):
    write_cifar10_tarball(tmp_path / 'cifar-10-python.tar.gz')
    convert(tmp_path / 'cifar-10-python.tar.gz', tmp_path / 'cifar.zip')
    images, meta = read_zip_dataset(tmp_path / 'cifar.zip')

    assert len(images) == 10 and meta['class_names'][0] == 'airplane'
    assert [label for _, label in meta['labels']][:4] == [1, 2, 2, 3]
    expected = np.random.RandomState(1).randint(0, 256, size=(2, 3 * 32 * 32), dtype=np.uint8)[0]
    assert np.array_equal(images['00000/img00000000.png'], expected.reshape(3, 32, 32).transpose(1, 2, 0))


def test_cifar10_tarball_that_would_run_code_is_refused(tmp_path):
    write_cifar10_tarball(tmp_path / 'evil.tar.gz', payload_of_batch=lambda batch: {'data': os.getcwd, 'labels': []})
    with pytest.raises(SourceError, match='posix.getcwd|never does'):
        convert(tmp_path / 'evil.tar.gz', tmp_path / 'out.zip')
    assert not (tmp_path / 'out.zip').exists()


def write_idx(path, array):
    header = struct.pack('>BBBB', 0, 0, 8, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_files_are_padded_to_32x32_grey_with_labels(tmp_path):
    digits = np.random.RandomState(0).randint(1, 256, size=(3, 28, 28))
    write_idx(tmp_path / 'train-images-idx3-ubyte.gz', digits)
    write_idx(tmp_path / 'train-labels-idx1-ubyte.gz', np.array([7, 2, 1]))
    convert(tmp_path / 'train-images-idx3-ubyte.gz', tmp_path / 'mnist')  # a folder destination
    dataset = ImageDataset(str(tmp_path / 'mnist'), use_labels=True)

    assert len(dataset) == 3 and dataset.image_shape == [1, 32, 32]
    image, label = dataset[0]
    assert np.array_equal(image[0, 2:30, 2:30], digits[0]) and image[0, :2].max() == 0
    assert label.argmax() == 7 and dataset.label_dim == 8


# --- cleaning -------------------------------------------------------------------------------------

def test_exact_and_near_duplicates_are_removed(tmp_path):
    base = noise_image(0, size=(16, 16))
    save(base, str(tmp_path / 'src' / 'a.png'))
    save(base, str(tmp_path / 'src' / 'b_copy.png'))
    save(PIL.Image.fromarray(np.clip(np.asarray(base).astype(int) + 2, 0, 255).astype(np.uint8)),
         str(tmp_path / 'src' / 'c_brighter.png'))
    save(noise_image(1, size=(16, 16)), str(tmp_path / 'src' / 'd_other.png'))

    exact_only = convert(tmp_path / 'src', tmp_path / 'exact.zip')
    near_too = convert(tmp_path / 'src', tmp_path / 'near.zip', near_duplicates=4)
    assert exact_only.kept == 3 and [e['file'] for e in exact_only.skipped] == ['b_copy.png']
    assert near_too.kept == 2 and near_too.count('near-duplicate') == 1
    assert near_too.skipped[-1]['file'] == 'c_brighter.png' and 'a.png' in near_too.skipped[-1]['reason']


def write_bomb_png(path, side):
    """A valid PNG of side x side black pixels that is only a few kilobytes on disk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    compressor = zlib.compressobj(9)
    row = b'\0' * (side + 1)  # filter byte + pixels
    body = b''.join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack('>IIBBBBB', side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', body) + chunk(b'IEND', b''))


def test_damaged_files_are_skipped_and_listed_in_the_report(tmp_path, capsys):
    src = tmp_path / 'src'
    save(noise_image(0, size=(8, 8)), str(src / 'good.png'))
    (src / 'truncated.png').write_bytes(png_bytes(noise_image(1, size=(64, 64)))[:200])
    (src / 'empty.png').write_bytes(b'')
    (src / 'notes.jpg').write_text('this is not a JPEG')
    write_bomb_png(src / 'bomb.png', 3000)
    assert (src / 'bomb.png').stat().st_size < 50_000

    status = main(['--source', str(src), '--dest', str(tmp_path / 'out.zip'), '--quiet', '--max-pixels', '1000000',
                   '--report', str(tmp_path / 'report.json')])
    report = json.loads((tmp_path / 'report.json').read_text())
    assert status == 0 and report['kept'] == 1 and report['unreadable'] == 4
    assert sorted(e['file'] for e in report['skipped']) == ['bomb.png', 'empty.png', 'notes.jpg', 'truncated.png']
    assert 'decompression bomb' in next(e['reason'] for e in report['skipped'] if e['file'] == 'bomb.png')
    out = capsys.readouterr()
    assert 'kept 1 of 5 images' in out.out and 'skipped truncated.png' in out.err


def test_grey_palette_and_transparent_images_become_the_chosen_channel_count(tmp_path):
    transparent = PIL.Image.new('RGBA', (8, 8), (255, 0, 0, 0))
    transparent.putpixel((0, 0), (0, 255, 0, 255))
    save(transparent, str(tmp_path / 'src' / 'a.png'))
    save(PIL.Image.new('P', (8, 8), 3), str(tmp_path / 'src' / 'b.png'))
    save(PIL.Image.new('L', (8, 8), 200), str(tmp_path / 'src' / 'c.png'))

    convert(tmp_path / 'src', tmp_path / 'rgb.zip')
    convert(tmp_path / 'src', tmp_path / 'grey.zip', channels=1)
    rgb, _ = read_zip_dataset(tmp_path / 'rgb.zip')
    grey, _ = read_zip_dataset(tmp_path / 'grey.zip')
    assert all(p.shape == (8, 8, 3) for p in rgb.values()) and all(p.shape == (8, 8) for p in grey.values())
    first = rgb['00000/img00000000.png']
    assert tuple(first[0, 0]) == (0, 255, 0) and first[1:].max() == 0  # transparent red -> black
    assert tuple(rgb['00000/img00000002.png'][3, 3]) == (200, 200, 200)


def test_pad_and_center_crop_wide_letterbox_with_black(tmp_path):
    save(PIL.Image.new('RGB', (64, 32), (255, 255, 255)), str(tmp_path / 'src' / 'wide.png'))
    convert(tmp_path / 'src', tmp_path / 'pad.zip', resolution=(16, 16), transform='pad', resize_filter='box')
    convert(tmp_path / 'src', tmp_path / 'crop.zip', resolution=(16, 8), transform='center-crop-wide')
    padded = read_zip_dataset(tmp_path / 'pad.zip')[0]['00000/img00000000.png']
    cropped = read_zip_dataset(tmp_path / 'crop.zip')[0]['00000/img00000000.png']
    for pixels in (padded, cropped):
        assert pixels.shape == (16, 16, 3)
        assert pixels[:4].max() == 0 and pixels[12:].max() == 0 and pixels[4:12].min() == 255


def test_images_of_another_size_are_rejected_without_resolution(tmp_path):
    save(noise_image(0, size=(8, 8)), str(tmp_path / 'src' / 'a.png'))
    save(noise_image(1, size=(16, 16)), str(tmp_path / 'src' / 'b.png'))
    summary = convert(tmp_path / 'src', tmp_path / 'out.zip')
    assert summary.kept == 1 and summary.skipped[0]['category'] == 'rejected' and '--resolution' in summary.skipped[0]['reason']


# --- refusals ---------------------------------------------------------------------------------------

def test_existing_destination_is_never_overwritten(tmp_path, capsys):
    save(noise_image(0, size=(8, 8)), str(tmp_path / 'src' / 'a.png'))
    (tmp_path / 'out.zip').write_bytes(b'precious')
    assert main(['--source', str(tmp_path / 'src'), '--dest', str(tmp_path / 'out.zip'), '--quiet']) == 1
    assert (tmp_path / 'out.zip').read_bytes() == b'precious'
    assert capsys.readouterr().err.count('\n') == 1


@pytest.mark.parametrize('options, message', [
    (dict(resolution=(48, 48)), 'power of two'),
    (dict(transform='center-crop'), 'needs --resolution'),
    (dict(labels='json'), 'no dataset.json'),
])
def test_bad_options_fail_before_anything_is_written(tmp_path, options, message):
    save(noise_image(0, size=(8, 8)), str(tmp_path / 'src' / 'a.png'))
    with pytest.raises(DatasetToolError, match=message):
        convert(tmp_path / 'src', tmp_path / 'out.zip', **options)
    assert os.listdir(tmp_path) == ['src']


def test_first_image_that_is_not_square_stops_the_run_and_leaves_nothing(tmp_path):
    save(noise_image(0, size=(12, 8)), str(tmp_path / 'src' / 'a.png'))
    with pytest.raises(DatasetToolError, match='square power-of-two'):
        convert(tmp_path / 'src', tmp_path / 'out')
    assert os.listdir(tmp_path) == ['src']
