"""`python -m metrics`: one jsonl line per metric in the release format, appended to
metric-<name>.jsonl; bad input and missing weights are one sentence and a non-zero exit."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image

from conftest import DATA_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE_KEYS = {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl', 'timestamp'}


def run_cli(*args, env=None):
    environment = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, '-m', 'metrics', *args], cwd=REPO, capture_output=True, text=True,
                          env=environment, timeout=600)


def test_equivariance_metric_prints_and_appends_the_release_line(tmp_path):
    network = shutil.copy(DATA_DIR / 'sg3repo-sg3t-32.pkl', tmp_path / 'network-snapshot-000000.pkl')
    for _ in range(2):
        completed = run_cli(f'--network={network}', '--metrics=eqt4_int', '--device=cpu')
        assert completed.returncode == 0, completed.stderr
    printed = json.loads(completed.stdout.strip().splitlines()[-1])
    assert set(printed) == RELEASE_KEYS
    assert printed['metric'] == 'eqt4_int' and printed['num_gpus'] == 1
    assert printed['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    assert printed['results']['eqt4_int'] > 20
    lines = (tmp_path / 'metric-eqt4_int.jsonl').read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1]) == printed


def test_missing_weights_offline_is_one_sentence_naming_the_file_and_folder(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    for i in range(2):
        PIL.Image.fromarray(np.zeros([8, 8, 3], np.uint8)).save(data / f'{i}.png')
    weights_dir = tmp_path / 'weights'
    completed = run_cli(f'--network={DATA_DIR / "sg3repo-sg2-32.pkl"}', f'--data={data}', '--metrics=fid2_full',
                        f'--weights-dir={weights_dir}', '--offline', '--device=cpu', f'--cache-dir={tmp_path}',
                        env={'TORCH_HOME': str(tmp_path / 'torch_home')})
    assert completed.returncode != 0
    assert 'Traceback' not in completed.stderr
    message = completed.stderr.strip()
    assert len(message.splitlines()) == 1
    assert 'weights-inception-2015-12-05-6726825d.pth' in message and str(weights_dir) in message
    assert not list(tmp_path.glob('metric-*.jsonl'))


def test_unknown_metric_and_bad_network_are_one_sentence_errors(tmp_path):
    completed = run_cli(f'--network={DATA_DIR / "sg3repo-sg2-32.pkl"}', '--metrics=fid50k_ful')
    assert completed.returncode != 0 and 'Traceback' not in completed.stderr
    assert "unknown metric 'fid50k_ful'" in completed.stderr and 'fid50k_full' in completed.stderr
    completed = run_cli(f'--network={tmp_path / "absent.pkl"}', '--metrics=eqt4_int')
    assert completed.returncode != 0 and 'Traceback' not in completed.stderr
    assert 'absent.pkl' in completed.stderr
