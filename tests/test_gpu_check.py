"""The plumbing of `make gpu-check` (bench/gpu_check.py), on the CPU: the planned steps cover what
the GPU session must measure within the time budget, the summary is assembled from the steps'
outputs, and (slow) the whole script runs end to end in its CPU smoke mode without torch-fidelity.
"""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load_gpu_check():
    # By file path: putting bench/ on sys.path would let bench/metrics.py shadow the metrics package.
    spec = importlib.util.spec_from_file_location('gpu_check', REPO_ROOT / 'bench' / 'gpu_check.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load_gpu_check()


def test_plan_covers_build_tests_ops_and_both_presets_with_each_ops_path(tmp_path):
    plan = gpu_check.steps(tmp_path)
    names = [s.name for s in plan]
    assert names[:4] == ['environment', 'build', 'gpu-tests', 'op-benchmark']
    for preset in ('stylegan3-t', 'stylegan2'):
        for ops in ('fused', 'ref', 'compile'):
            command = ' '.join(plan[names.index(f'train-{preset}-{ops}')].command)
            for flag in ('--device=cuda', '--resolution=256', '--batch=32', '--precision=fp16', f'--ops={ops}'):
                assert flag in command
    assert 'bench/ops.py' in ' '.join(plan[3].command)
    # Every step has its own limit, and the most important ones fit in the budget by themselves.
    assert all(0 < s.timeout_s <= gpu_check.BUDGET_S for s in plan)
    assert sum(s.timeout_s for s in plan[:5]) <= gpu_check.BUDGET_S <= 8 * 60


def test_summary_has_one_row_per_training_run_relative_to_fused(tmp_path):
    (tmp_path / 'logs').mkdir()
    (tmp_path / 'logs' / 'op-benchmark.log').write_text('noise\nDevice: X\n| config | op |\n')
    for ops, seconds in (('fused', 2.0), ('ref', 5.0), ('compile', 3.0)):
        row = {'preset': 'stylegan3-t', 'ops': ops, 'resolution': 256, 'batch': 32, 'batch_gpu': 32,
               'sec_per_kimg': seconds, 'peak_memory_gb': 1.5, 'device': 'GPU', 'precision': 'fp16'}
        (tmp_path / f'train-stylegan3-t-{ops}.json').write_text(json.dumps([row]))
    summary = '\n'.join(gpu_check.write_summary(tmp_path, ['| build | ok | 3 | |']))
    assert '| stylegan3-t | ref | 5.00 | 1.50 | 2.50x |' in summary
    assert '| stylegan3-t | compile | 3.00 | 1.50 | 1.50x |' in summary
    assert '| config | op |' in summary and '| build | ok | 3 | |' in summary
    assert (tmp_path / 'summary.md').read_text() == summary


def test_bad_budget_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(['--budget', '0', '--dry-run'])
    assert exit_info.value.code != 0
    assert '--budget must be a positive number of seconds' in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_run_on_the_cpu_without_torch_fidelity(tmp_path):
    # A torch_fidelity that cannot be imported, first on the path: the GPU machines lack it.
    blocker = tmp_path / 'blocker' / 'torch_fidelity'
    blocker.mkdir(parents=True)
    (blocker / '__init__.py').write_text('raise ImportError("torch-fidelity is not installed here")\n')
    environ = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(blocker.parent), str(REPO_ROOT)]),
               'OMP_NUM_THREADS': '1'}
    out = tmp_path / 'out'
    completed = subprocess.run([sys.executable, 'bench/gpu_check.py', '--smoke', '--budget', '1500', str(out)],
                               cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=1600)
    summary = (out / 'summary.md').read_text()
    assert completed.returncode == 0, summary + completed.stdout[-3000:]
    assert '| tiny | fused |' in summary and '| tiny | compile |' in summary
    assert 'filtered_lrelu' in summary  # the op table made it in
