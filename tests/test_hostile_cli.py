"""Hostile and broken command-line inputs (issue 14): train.py validates every value before the run
folder exists, treats a snapshot's stored options as untrusted data (no escaping --desc, no
silent dataset swap), skips a damaged newest snapshot for --resume=latest, and train.py and
generate.py refuse structurally wrong checkpoints with one sentence. Files are crafted here."""
import os
import subprocess
import sys
import time
import types

import pytest
import torch

from stylegan import files
from stylegan.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from stylegan.generate import main as generate_main
from stylegan.training import launch
from stylegan.training.config import TrainOptions
from stylegan.training.snapshot import TRAINING_STATE_VERSION, capture_rng_state
from test_train_cli import fails_cleanly, outdir, run_cli  # noqa: F401  (outdir is a fixture)
from test_train_helpers import make_image_folder


@pytest.fixture
def images(tmp_path):
    return make_image_folder(tmp_path / 'imgs', count=4, size=16)


def write_snapshot(path, options=None, networks=None):
    """A training snapshot of this project's format holding what resuming checks before the run
    folder: G_ema's constructor arguments (16x16), a well-formed training state, the stored options."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {'architecture': 'stylegan2.Generator', 'init_kwargs': {'img_resolution': 16}, 'state_dict': {}}
    state = {'version': TRAINING_STATE_VERSION, 'loop': {'cur_nimg': 4000, 'cur_tick': 1, 'batch_idx': 1},
             'G_opt': {}, 'D_opt': {}, 'loss': {}, 'nonfinite': {'streak': 0, 'total': 0, 'per_phase': {}},
             'ada': None, 'rng': {'latents': torch.Generator().get_state(), 'ranks': [capture_rng_state('cpu')]},
             'options': options or {}, 'config': {}}
    torch.save({'format': CHECKPOINT_FORMAT, 'version': CHECKPOINT_VERSION,
                'networks': {'G_ema': record} if networks is None else networks,
                'augment_p': None, 'training_set_kwargs': None, 'training_state': state}, path)
    return path


# --- values that used to fail inside the run ------------------------------------------------------

@pytest.mark.parametrize('option, message', [
    ('--desc=../../escape', "--desc '../../escape' holds a path separator"),
    ('--desc=a/b', 'holds a path separator'),
    (f'--seed={2 ** 32}', 'must stay below 2**32'),
    ('--augpipe=zzz', "--augpipe='zzz' is not a pipeline"),
    ('--glr=1e39', 'larger than float32 can hold'),
    ('--cmax=100000', 'channel_max=100000; this project builds networks with |channel_max| <= 4096'),
    ('--map-depth=100000', 'num_layers=100000'),
])
def test_bad_values_stop_before_the_run_folder_exists(capsys, outdir, images, option, message):
    assert message in fails_cleanly(capsys, outdir, f'--data={images}', '--batch=4', option)
    assert not (outdir.parent / 'escape').exists()


# --- a snapshot's stored options --------------------------------------------------------------------

def test_a_stored_desc_that_climbs_out_of_outdir_is_refused(capsys, outdir, images, tmp_path):
    snapshot = write_snapshot(tmp_path / 'in' / 'network-snapshot-000004.pt', {'desc': '../../../escape', 'batch': 4})
    line = fails_cleanly(capsys, outdir, f'--data={images}', f'--resume={snapshot}')
    assert 'the --desc stored in snapshot' in line and "'../../../escape'" in line


def test_a_stored_option_of_the_wrong_type_is_refused(capsys, outdir, images, tmp_path):
    snapshot = write_snapshot(tmp_path / 'in' / 'network-snapshot-000004.pt', {'batch': '4; rm -rf /'})
    assert 'stores --batch=' in fails_cleanly(capsys, outdir, f'--data={images}', f'--resume={snapshot}')


def test_a_stored_dataset_path_with_dotdot_needs_data_on_the_command_line(capsys, outdir, images, tmp_path):
    snapshot = write_snapshot(tmp_path / 'in' / 'network-snapshot-000004.pt', {'data': '../../secret', 'batch': 4})
    line = fails_cleanly(capsys, outdir, f'--resume={snapshot}')
    assert "stores --data='../../secret'" in line and 'give --data on the command line' in line
    code, _err, untouched, out = run_cli(capsys, outdir, f'--resume={snapshot}', f'--data={images}', '--dry-run')
    assert code == 0 and untouched and f'training on --data={images}' in out


def test_the_command_line_dataset_wins_over_the_stored_one_and_either_choice_is_said(capsys, outdir, images, tmp_path):
    stored = make_image_folder(tmp_path / 'stored-imgs', count=4, size=16)
    snapshot = write_snapshot(tmp_path / 'in' / 'network-snapshot-000004.pt', {'data': str(stored), 'batch': 4})
    code, _err, _untouched, out = run_cli(capsys, outdir, f'--resume={snapshot}', f'--data={images}', '--dry-run')
    assert code == 0 and f"differs from the snapshot's dataset '{stored}'" in out
    dataset_line = next(line for line in out.splitlines() if line.strip().startswith('dataset_kwargs:'))
    assert f"'path': '{images}'" in dataset_line and str(stored) not in dataset_line
    code, _err, _untouched, out = run_cli(capsys, outdir, f'--resume={snapshot}', '--dry-run')
    assert code == 0 and f"--data not given: training on the snapshot's dataset '{stored}'" in out


# --- --resume=latest and damaged snapshots ---------------------------------------------------------------

def test_resume_latest_skips_a_truncated_newest_snapshot_with_a_sentence(capsys, outdir, images):
    whole = write_snapshot(outdir / '00000-earlier-run' / 'network-snapshot-000004.pt', {'batch': 4})
    newest = write_snapshot(outdir / '00001-killed-run' / 'network-snapshot-000008.pt', {'batch': 4})
    newest.write_bytes(newest.read_bytes()[:300])  # a copy cut short
    code, _err, untouched, out = run_cli(capsys, outdir, f'--data={images}', '--resume=latest', '--dry-run')
    assert code == 0 and untouched
    assert f"skipping '{newest}'" in out and f'resume: {whole}' in out


def test_resume_latest_with_only_damaged_snapshots_is_refused(capsys, outdir, images):
    only = write_snapshot(outdir / '00001-killed-run' / 'network-snapshot-000008.pt')
    only.write_bytes(b'PK\x03\x04' + b'\0' * 100)
    line = fails_cleanly(capsys, outdir, f'--data={images}', '--resume=latest')
    assert 'that can be resumed (1 damaged one(s) skipped)' in line


@pytest.mark.parametrize('networks', [[1, 2], {'G_ema': [1]}, {'G_ema': {'init_kwargs': 'x'}}])
def test_a_structurally_wrong_checkpoint_is_refused_by_train_and_generate(capsys, outdir, images, tmp_path, networks):
    bad = write_snapshot(tmp_path / 'bad.pt', networks=networks)
    assert 'damaged' in fails_cleanly(capsys, outdir, f'--data={images}', f'--resume={bad}')
    assert generate_main(['--network', str(bad), '--seeds', '0', '--outdir', str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and not (tmp_path / 'out').exists()


def test_an_enormous_seed_range_is_refused_at_once(tmp_path):
    started = time.monotonic()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, os.path.join(repo, 'generate.py'), '--network', 'x.pkl', '--seeds',
                             '0-4000000000', '--outdir', str(tmp_path / 'out')], capture_output=True, text=True, cwd=repo)
    assert result.returncode != 0 and 'lists more than 100000 numbers' in result.stderr
    assert 'Traceback' not in result.stderr and time.monotonic() - started < 60  # no 4e9-element list


# --- leftovers of a killed run ------------------------------------------------------------------------

def test_a_new_run_removes_the_temporaries_a_killed_run_left(tmp_path):
    killed = tmp_path / 'runs' / '00000-killed'
    killed.mkdir(parents=True)
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    old = time.time() - 2 * files.STALE_SECONDS
    leftover = killed / f'network-snapshot-000004.pt.{process.pid}-abcd1234.tmp'
    kept = [killed / 'network-snapshot-000000.pt', killed / 'notes.tmp']
    for path in [leftover, *kept]:
        path.write_bytes(b'x')
        os.utime(path, (old, old))
    config = types.SimpleNamespace(run_dir=str(tmp_path / 'runs' / '00001-new'), to_json_dict=dict)
    launch.create_run_dir(config, TrainOptions())
    assert not leftover.exists() and all(path.exists() for path in kept)
    with pytest.raises(FileExistsError):  # and a run folder is never reused
        launch.create_run_dir(config, TrainOptions())


def test_metrics_refuse_a_dataset_path_from_the_network_file_that_climbs_out(tmp_path):
    from metrics.__main__ import dataset_kwargs
    args = types.SimpleNamespace(network='net.pt', data=None, mirror=None)
    with pytest.raises(ValueError, match="names its dataset as '../../secret'"):
        dataset_kwargs(args, {'training_set_kwargs': {'path': '../../secret'}})
    with pytest.raises(ValueError, match='give --data'):
        dataset_kwargs(args, {'training_set_kwargs': {'path': 'data.zip', 'use_labels': 'yes'}})
    assert dataset_kwargs(args, {'training_set_kwargs': {'path': 'data.zip', 'xflip': True}})['path'] == 'data.zip'
    args.data = 'mine.zip'  # the command line wins, whatever the file says
    assert dataset_kwargs(args, {'training_set_kwargs': {'path': '../../secret'}})['path'] == 'mine.zip'
