"""train.py's command line: bad input is one clear sentence, a non-zero exit, and --outdir untouched."""
import json
import shutil

import numpy as np
import PIL.Image
import pytest

from test_train_helpers import RELEASE_PICKLE_32, load_train_script, make_image_folder, make_image_zip, tree

train_script = load_train_script()
BASE = ['--cfg=tiny', '--device=cpu', '--workers=0', '--metrics=none']


@pytest.fixture
def outdir(tmp_path):
    """An --outdir that already holds a run, which no failing command may touch."""
    out = tmp_path / 'runs'
    (out / '00000-earlier-run').mkdir(parents=True)
    (out / '00000-earlier-run' / 'log.txt').write_text('earlier\n')
    return out


def run_cli(capsys, outdir, *args):
    before = tree(outdir)
    code = train_script.main([f'--outdir={outdir}', *BASE, *args])
    captured = capsys.readouterr()
    return code, captured.err, before == tree(outdir), captured.out


def fails_cleanly(capsys, outdir, *args):
    code, err, untouched, _out = run_cli(capsys, outdir, *args)
    assert code != 0 and untouched
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('train.py: error: '), err
    return lines[0]


def test_missing_dataset(capsys, outdir, tmp_path):
    line = fails_cleanly(capsys, outdir, f'--data={tmp_path / "nowhere.zip"}')
    assert 'does not exist' in line and 'nowhere.zip' in line


def test_empty_dataset(capsys, outdir, tmp_path):
    (tmp_path / 'empty').mkdir()
    assert 'contains no image files' in fails_cleanly(capsys, outdir, f'--data={tmp_path / "empty"}')


def test_corrupt_image_inside_the_zip(capsys, outdir, tmp_path):
    folder = make_image_folder(tmp_path / 'imgs', count=4)
    (folder / 'img00002.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00garbage' * 8)
    archive = make_image_zip(folder, tmp_path / 'data.zip')
    line = fails_cleanly(capsys, outdir, f'--data={archive}')
    assert 'img00002.png' in line and 'not a readable image' in line


def test_mixed_image_sizes(capsys, outdir, tmp_path):
    folder = make_image_folder(tmp_path / 'imgs', count=3, size=16)
    make_image_folder(tmp_path / 'more', count=1, size=32)
    shutil.copy(tmp_path / 'more' / 'img00000.png', folder / 'zzz.png')
    assert 'mixes image shapes' in fails_cleanly(capsys, outdir, f'--data={folder}')


@pytest.mark.parametrize('shape, message', [((24, 24), 'power of two'), ((16, 32), 'square images are required')])
def test_non_power_of_two_or_non_square_images(capsys, outdir, tmp_path, shape, message):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    for i in range(2):
        PIL.Image.fromarray(np.zeros(shape + (3,), np.uint8)).save(folder / f'{i}.png')
    assert message in fails_cleanly(capsys, outdir, f'--data={folder}')


def test_labels_that_do_not_match_the_images(capsys, outdir, tmp_path):
    folder = make_image_folder(tmp_path / 'imgs', count=4, labels=[0, 1, 0, 1])
    labels = json.loads((folder / 'dataset.json').read_text())
    labels['labels'] = labels['labels'][:3]
    (folder / 'dataset.json').write_text(json.dumps(labels))
    assert 'has no label for 1 image' in fails_cleanly(capsys, outdir, f'--data={folder}', '--cond=1')


def test_batch_not_divisible_by_gpus(capsys, outdir, tmp_path):
    folder = make_image_folder(tmp_path / 'imgs', count=4)
    assert '--batch=6 is not divisible by --gpus=4' in fails_cleanly(capsys, outdir, f'--data={folder}', '--batch=6', '--gpus=4')


def test_unknown_cfg(capsys, outdir, tmp_path):
    folder = make_image_folder(tmp_path / 'imgs', count=4)
    code = train_script.main([f'--outdir={outdir}', '--cfg=stylegan4', f'--data={folder}', '--device=cpu'])
    assert code != 0 and "--cfg='stylegan4' is not a known configuration" in capsys.readouterr().err


def test_resume_of_another_resolution(capsys, outdir, tmp_path):
    folder = make_image_folder(tmp_path / 'imgs', count=4, size=16)
    line = fails_cleanly(capsys, outdir, f'--data={folder}', f'--resume={RELEASE_PICKLE_32}')
    assert '32x32 networks' in line and '16x16 images' in line


def test_resume_latest_without_snapshots(capsys, outdir, tmp_path):
    folder = make_image_folder(tmp_path / 'imgs', count=4)
    assert 'found no network-snapshot' in fails_cleanly(capsys, outdir, f'--data={folder}', '--resume=latest')


def test_cuda_requested_without_a_gpu(capsys, outdir, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip('a GPU is visible')
    folder = make_image_folder(tmp_path / 'imgs', count=4)
    code = train_script.main([f'--outdir={outdir}', '--cfg=tiny', f'--data={folder}', '--metrics=none'])
    assert code != 0 and 'no CUDA GPU is visible' in capsys.readouterr().err


def test_dry_run_prints_the_options_and_creates_nothing(capsys, outdir, tmp_path):
    archive = make_image_zip(make_image_folder(tmp_path / 'imgs', count=4), tmp_path / 'faces-16x16.zip')
    code, _err, untouched, out = run_cli(capsys, outdir, f'--data={archive}', '--batch=4', '--gamma=2', '--mirror', '--dry-run')
    assert code == 0 and untouched
    assert f'{outdir}/00001-tiny-faces-16x16-gpus1-batch4-gamma2' in out.replace('\\', '/')


def test_release_boolean_spellings():
    assert [train_script.parse_bool(v) for v in ('1', 'True', 'yes', '0', 'false', 'off')] == [True] * 3 + [False] * 3
    assert train_script.parse_metrics('none') == [] and train_script.parse_metrics('fid50k_full,kid50k_full') == \
        ['fid50k_full', 'kid50k_full']


def test_a_metric_without_its_weights_stops_at_start_up(capsys, outdir, tmp_path, monkeypatch):
    monkeypatch.setenv('STYLEGAN_METRICS_WEIGHTS', str(tmp_path / 'no-weights'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'no-torch-home'))
    folder = make_image_folder(tmp_path / 'imgs', count=4)
    code, err, untouched, _out = run_cli(capsys, outdir, f'--data={folder}', '--metrics=fid50k_full')
    assert code != 0 and untouched and '--metrics=fid50k_full:' in err and 'weights-inception' in err
    code, err, untouched, _out = run_cli(capsys, outdir, f'--data={folder}', '--metrics=fid50k_ful')
    assert code != 0 and untouched and "'fid50k_ful' is not a known metric" in err


def test_an_image_whose_pixels_are_corrupt_stops_the_run_with_its_name(capsys, outdir, tmp_path):
    # The header reads fine (opening the dataset passes); decoding fails once training reads it.
    folder = make_image_folder(tmp_path / 'imgs', count=4)
    data = (folder / 'img00001.png').read_bytes()
    (folder / 'img00001.png').write_bytes(data[:len(data) // 2])
    archive = make_image_zip(folder, tmp_path / 'data.zip')
    before = tree(outdir)
    code = train_script.main([f'--outdir={outdir}', *BASE, f'--data={archive}', '--batch=4', '--kimg=0.004'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err[-1].startswith('train.py: error: ') and 'img00001.png' in err[-1]
    assert all(tree(outdir).get(path) == stat for path, stat in before.items())  # earlier runs untouched
