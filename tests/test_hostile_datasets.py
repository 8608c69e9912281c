"""Hostile and broken datasets (issue 14): training's `ImageDataset` and the dataset tool refuse each
with one sentence (exit 1 for the tool, nothing written), never open a FIFO or device, never
read past a limit, and never replace an existing destination. Every input is crafted here."""
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import numpy as np
import PIL.Image
import pytest

from stylegan import files
from stylegan.data import dataset as dataset_module
from stylegan.data import sources, tool
from stylegan.data.dataset import DatasetError, ImageDataset

posix_only = pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='FIFOs and /dev/zero are POSIX')


@pytest.fixture(autouse=True)
def no_hang():
    """A regression that opens a FIFO would block for ever; fail instead."""
    if not hasattr(signal, 'SIGALRM'):
        yield
        return
    def fail(*_):
        raise TimeoutError('the dataset code blocked (opened a FIFO?)')
    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def image_folder(path, count=3, size=8, names=None):
    path.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names or [f'{i}.png' for i in range(count)]):
        PIL.Image.fromarray(np.full((size, size, 3), zlib.crc32(name.encode()) % 256, np.uint8)).save(path / name)
    return path


def zip_of(folder, zip_path):
    with zipfile.ZipFile(zip_path, 'w') as archive:
        for name in sorted(os.listdir(folder)):
            archive.write(folder / name, name)
    return zip_path


def patch_first_member(zip_path, out_path, flags=None, method=None):
    """A copy of the zip whose first member claims encryption (`flags`) or another compression
    `method`, in both its local and central headers."""
    data = bytearray(zip_path.read_bytes())
    local, central = data.find(b'PK\x03\x04'), data.find(b'PK\x01\x02')
    if flags is not None:
        data[local + 6:local + 8] = data[central + 8:central + 10] = struct.pack('<H', flags)
    if method is not None:
        data[local + 8:local + 10] = data[central + 10:central + 12] = struct.pack('<H', method)
    out_path.write_bytes(bytes(data))
    return out_path


def tool_fails(capsys, source, dest, *extra):
    """Run the dataset tool's command line; it must exit 1 with one line and write nothing at dest."""
    status = tool.main(['--source', str(source), '--dest', str(dest), '--quiet', *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].startswith('error: '), err
    assert not os.path.lexists(dest) and not [p for p in os.listdir(os.path.dirname(dest)) if '.partial-' in p]
    return err[0]


# --- files that are not regular files ------------------------------------------------------------

@posix_only
@pytest.mark.parametrize('make, kind', [(lambda p: os.mkfifo(p), 'a FIFO'),
                                        (lambda p: os.symlink('/dev/zero', p), 'a character device')])
def test_a_fifo_or_device_among_the_images_is_refused_unopened(tmp_path, capsys, make, kind):
    folder = image_folder(tmp_path / 'src')
    make(folder / '1b.png')
    with pytest.raises(DatasetError, match=f"holds '1b.png', which is {kind}"):
        ImageDataset(str(folder))
    assert kind in tool_fails(capsys, folder, tmp_path / 'out.zip')


@posix_only
def test_a_fifo_given_as_the_dataset_or_source_is_refused_unopened(tmp_path, capsys):
    os.mkfifo(tmp_path / 'data.zip')
    with pytest.raises(DatasetError, match='neither a directory nor a .zip file'):
        ImageDataset(str(tmp_path / 'data.zip'))
    assert 'is a FIFO, not a folder or a regular file' in tool_fails(capsys, tmp_path / 'data.zip', tmp_path / 'out.zip')


@posix_only
def test_open_regular_file_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / 'pipe')
    with pytest.raises(files.NotRegularFileError, match='FIFO'):
        files.open_regular_file(tmp_path / 'pipe')


def test_images_in_a_linked_sub_folder_are_followed(tmp_path):
    folder = image_folder(tmp_path / 'src', count=2)
    image_folder(tmp_path / 'elsewhere', names=['x.png', 'y.png'])
    try:
        os.symlink(tmp_path / 'elsewhere', folder / 'linked', target_is_directory=True)
    except OSError:
        pytest.skip('no symbolic links here')
    assert len(ImageDataset(str(folder))) == 4
    summary = tool.convert_dataset(folder, tmp_path / 'out.zip', tool.ToolOptions(), progress=False)
    assert summary.kept == 4


def test_a_link_back_to_a_walked_folder_is_refused(tmp_path, capsys):
    folder = image_folder(tmp_path / 'src', count=2)
    try:
        os.symlink(folder, folder / 'loop', target_is_directory=True)
    except OSError:
        pytest.skip('no symbolic links here')
    with pytest.raises(DatasetError, match="'loop' leads .* to a folder already walked"):
        ImageDataset(str(folder))
    assert 'already walked' in tool_fails(capsys, folder, tmp_path / 'out.zip')


# --- zip members -------------------------------------------------------------------------------------

@pytest.mark.parametrize('patch, message', [(dict(flags=1), 'is encrypted'),
                                            (dict(method=9), 'zip method 9, which Python cannot read')])
def test_encrypted_or_unreadably_compressed_zip_members_are_refused(tmp_path, capsys, patch, message):
    plain = zip_of(image_folder(tmp_path / 'src'), tmp_path / 'plain.zip')
    bad = patch_first_member(plain, tmp_path / 'bad.zip', **patch)
    with pytest.raises(DatasetError, match=message):
        ImageDataset(str(bad))
    assert message in tool_fails(capsys, bad, tmp_path / 'out.zip')


def test_a_zip_member_past_the_size_limit_is_not_read(tmp_path, monkeypatch):
    archive = zip_of(image_folder(tmp_path / 'src'), tmp_path / 'data.zip')
    monkeypatch.setattr(dataset_module, 'MAX_MEMBER_BYTES', 20)
    with pytest.raises(DatasetError, match=r"'0.png' .* declares \d+ bytes, more than the limit of 20"):
        ImageDataset(str(archive))


# --- labels and dataset.json -------------------------------------------------------------------------

@pytest.mark.parametrize('label, message', [(2 ** 63, 'is 9223372036854775808; a class is an int'),
                                            (10 ** 9, 'is 1000000000; a class is an int'),
                                            ([0.5, float('nan')], 'list of finite numbers'),
                                            (True, 'a label is a class')])
def test_absurd_labels_are_refused(tmp_path, capsys, label, message):
    folder = image_folder(tmp_path / 'src', count=2)
    text = json.dumps({'labels': [['0.png', label], ['1.png', label]]})
    (folder / 'dataset.json').write_text(text)
    with pytest.raises(DatasetError, match=message.replace('(', r'\(')):
        ImageDataset(str(folder), use_labels=True)
    assert message in tool_fails(capsys, folder, tmp_path / 'out.zip')


def test_very_deeply_nested_json_is_refused(tmp_path, capsys):
    folder = image_folder(tmp_path / 'src', count=2)
    (folder / 'dataset.json').write_text('{"labels": ' + '[' * 200_000 + ']' * 200_000 + '}')
    with pytest.raises(DatasetError, match='nested too deeply'):
        ImageDataset(str(folder), use_labels=True)
    assert 'nested too deeply' in tool_fails(capsys, folder, tmp_path / 'out.zip')


def test_dataset_json_past_its_size_limit_is_not_read(tmp_path, monkeypatch, capsys):
    folder = image_folder(tmp_path / 'src', count=2)
    (folder / 'dataset.json').write_text(json.dumps({'labels': [['0.png', 0], ['1.png', 1]]}))
    monkeypatch.setattr(dataset_module, 'MAX_LABELS_BYTES', 16)
    monkeypatch.setattr(sources, 'MAX_LABELS_BYTES', 16)
    with pytest.raises(DatasetError, match='larger than 16 bytes'):
        ImageDataset(str(folder), use_labels=True)
    assert 'larger than 16 bytes' in tool_fails(capsys, folder, tmp_path / 'out.zip')


# --- images ------------------------------------------------------------------------------------------

def bomb_png(path, side):
    """A valid grey PNG of side x side pixels that is a few hundred kilobytes on disk."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    compressor = zlib.compressobj(9)
    body = b''.join(compressor.compress(b'\0' * (side + 1)) for _ in range(side)) + compressor.flush()
    header = struct.pack('>IIBBBBB', side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', body) + chunk(b'IEND', b''))


def test_an_image_past_pillows_pixel_limit_is_refused_by_training(tmp_path, monkeypatch):
    monkeypatch.setattr(PIL.Image, 'MAX_IMAGE_PIXELS', 64 * 64)  # the same check, on a small bomb
    folder = image_folder(tmp_path / 'src', count=2)
    bomb_png(folder / 'bomb.png', 256)
    with pytest.raises(DatasetError, match="'bomb.png' .* past Pillow's pixel limit"):
        ImageDataset(str(folder))


def test_training_names_the_majority_shape_when_the_first_image_is_the_odd_one(tmp_path):
    folder = image_folder(tmp_path / 'src', count=1, size=8, names=['a-odd.png'])
    image_folder(folder, size=16, names=['b.png', 'c.png', 'd.png'])
    with pytest.raises(DatasetError, match=r"3 image\(s\) are 16x16 .* but 'a-odd.png' is 8x8"):
        ImageDataset(str(folder))


def test_a_first_image_of_a_minority_size_stops_the_tool(tmp_path, capsys):
    folder = image_folder(tmp_path / 'src', count=1, size=8, names=['a-odd.png'])
    image_folder(folder, size=16, names=['b.png', 'c.png', 'd.png'])
    line = tool_fails(capsys, folder, tmp_path / 'out.zip')
    assert 'first image set the size to 8x8, but 3 of 4 images are 16x16' in line and '--resolution=16x16' in line


# --- the destination -------------------------------------------------------------------------------

@pytest.mark.parametrize('dest_name', ['out.zip', 'out'])
def test_a_destination_that_appears_during_the_conversion_is_not_replaced(tmp_path, capsys, monkeypatch, dest_name):
    folder = image_folder(tmp_path / 'src')
    dest = tmp_path / dest_name
    convert_records = tool._convert_records

    def convert_then_race(*args, **kwargs):
        result = convert_records(*args, **kwargs)
        if dest_name.endswith('.zip'):
            dest.write_bytes(b'precious')
        else:
            dest.mkdir()
            (dest / 'precious.txt').write_bytes(b'precious')
        return result

    monkeypatch.setattr(tool, '_convert_records', convert_then_race)
    status = tool.main(['--source', str(folder), '--dest', str(dest), '--quiet'])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and 'appeared during the conversion' in err[0]
    precious = dest if dest_name.endswith('.zip') else dest / 'precious.txt'
    assert precious.read_bytes() == b'precious'
    assert sorted(os.listdir(tmp_path)) == sorted(['src', dest_name])  # no partial output left


def test_an_existing_report_file_is_not_replaced(tmp_path, capsys):
    folder = image_folder(tmp_path / 'src')
    (tmp_path / 'report.json').write_text('mine')
    line = tool_fails(capsys, folder, tmp_path / 'out.zip', '--report', str(tmp_path / 'report.json'))
    assert 'already exists' in line and (tmp_path / 'report.json').read_text() == 'mine'


def dead_pid():
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_run(tmp_path):
    folder = image_folder(tmp_path / 'src')
    gone, old = dead_pid(), time.time() - 2 * files.STALE_SECONDS
    leftovers = [tmp_path / f'out.zip.partial-{gone}', tmp_path / f'other.zip.{gone}-abcd1234.tmp']
    (tmp_path / f'out.partial-{gone}').mkdir()
    leftovers.append(tmp_path / f'out.partial-{gone}')
    kept = [tmp_path / f'fresh.zip.partial-{gone}', tmp_path / f'live.zip.partial-{os.getpid()}',
            tmp_path / 'notes.tmp', tmp_path / 'data.partial']
    for path in leftovers + kept:
        if not path.exists():
            path.write_bytes(b'x')
        if path.name != f'fresh.zip.partial-{gone}':
            os.utime(path, (old, old))
    tool.convert_dataset(folder, tmp_path / 'out.zip', tool.ToolOptions(), progress=False)
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in kept)


def test_atomic_write_without_replace_never_replaces_a_file(tmp_path):
    (tmp_path / 'a.bin').write_bytes(b'old')
    with pytest.raises(FileExistsError):
        files.atomic_write(tmp_path / 'a.bin', lambda f: f.write(b'new'), replace=False)
    files.atomic_write(tmp_path / 'b.bin', lambda f: f.write(b'new'), replace=False)
    assert (tmp_path / 'a.bin').read_bytes() == b'old' and (tmp_path / 'b.bin').read_bytes() == b'new'
    assert sorted(os.listdir(tmp_path)) == ['a.bin', 'b.bin']  # no temporary left behind


def test_an_idx_file_past_its_size_limit_is_not_read(tmp_path, monkeypatch, capsys):
    import gzip
    header = struct.pack('>BBBB', 0, 0, 8, 3) + struct.pack('>3I', 3, 28, 28)
    with gzip.open(tmp_path / 'train-images-idx3-ubyte.gz', 'wb') as f:
        f.write(header + bytes(3 * 28 * 28))  # 2.4 KB that a gzip bomb could make gigabytes
    monkeypatch.setattr(sources, 'MAX_MEMBER_BYTES', 1000)
    assert 'larger than 1000 bytes' in tool_fails(capsys, tmp_path / 'train-images-idx3-ubyte.gz', tmp_path / 'out.zip')


def test_saving_a_metrics_cache_entry_removes_a_killed_writers_leftover(tmp_path):
    from metrics import cache
    gone, old = dead_pid(), time.time() - 2 * files.STALE_SECONDS
    leftover = tmp_path / f'fid-abc.pkl.{gone}-abcd1234.tmp'
    leftover.write_bytes(b'half an entry')
    os.utime(leftover, (old, old))
    cache.save_entry(str(tmp_path / 'fid-def.pkl'), {'mu': np.zeros(2)})
    assert not leftover.exists() and sorted(os.listdir(tmp_path)) == ['fid-def.pkl']


def _write_and_die(path):
    files.atomic_write(path, lambda f: (f.write(b'half'), f.flush(), os._exit(9)))


@posix_only
def test_the_temporary_of_a_writer_killed_mid_write_is_recognised_and_removed(tmp_path):
    import multiprocessing
    writer = multiprocessing.get_context('fork').Process(target=_write_and_die, args=(str(tmp_path / 'snap.pt'),))
    writer.start()
    writer.join(60)
    leftovers = os.listdir(tmp_path)
    assert writer.exitcode == 9 and len(leftovers) == 1 and leftovers[0].startswith(f'snap.pt.{writer.pid}-')
    assert files.remove_stale_temporaries(tmp_path) == []  # under an hour old: a writer elsewhere may be alive
    assert files.remove_stale_temporaries(tmp_path, min_age=0) == [str(tmp_path / leftovers[0])]
    assert os.listdir(tmp_path) == []
