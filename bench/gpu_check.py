"""`make gpu-check`: on a machine with a GPU, build the fused ops, run the GPU tests and the op
benchmarks, and write a short table plus full logs.

    python bench/gpu_check.py [OUTPUT_DIR]     # default: $OUT, else ./gpu-check-out

Writes OUTPUT_DIR/summary.md (one row per step, then the benchmark table) and
OUTPUT_DIR/logs/*.log (each step's full output, and the compiler log). Steps run with
STYLEGAN_OPS=cuda, so a kernel that does not build fails loudly instead of falling back.
Exits non-zero if any step failed. Sized to finish well under 10 minutes on one H100.
"""

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

BUILD_SCRIPT = '''
import time, torch
from ops import build, kernels
start = time.time()
library = kernels._load_for_mode('cuda')
spec = build.kernel_build_spec()
print(f"built in {time.time() - start:.1f} s for TORCH_CUDA_ARCH_LIST={spec.arch_list} into {spec.build_dir}")
print(f"toolkit {spec.toolkit.root} (CUDA {spec.toolkit.version}); torch {torch.__version__} (CUDA {torch.version.cuda})")
print(f"BUILD_LOG={spec.build_dir / 'build.log'}")
'''


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    command: list
    timeout_s: int


def steps(out_dir):
    python = sys.executable
    pytest = [python, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rfEs']
    return [
        Step('environment', ['bash', '-c', 'nvidia-smi; which nvcc && nvcc --version; '
                             f'{python} -c "import torch; print(torch.__version__, torch.version.cuda, '
                             'torch.cuda.get_device_name(0))"'], 60),
        Step('build', [python, '-c', BUILD_SCRIPT], 240),
        Step('gpu-tests', pytest + ['tests/test_ops_cuda_kernels.py', 'tests/test_ops_registered.py'], 300),
        Step('compile-test', pytest + ['tests/test_ops_cuda_build.py'], 240),
        Step('benchmark', [python, 'bench/ops.py', '--device', 'cuda', '--json', str(out_dir / 'benchmark.json')], 240),
    ]


def run_step(step, log_path, environ):
    start = time.time()
    with open(log_path, 'w') as log:
        log.write(f"$ {' '.join(step.command)}\n")
        log.flush()
        try:
            completed = subprocess.run(step.command, cwd=REPO_ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT,
                                       timeout=step.timeout_s)
            status = 'ok' if completed.returncode == 0 else f'failed (exit {completed.returncode})'
        except subprocess.TimeoutExpired:
            status = f'timed out after {step.timeout_s} s'
    return status, time.time() - start


def last_line_with(path, prefix):
    lines = [line for line in pathlib.Path(path).read_text(errors='replace').splitlines() if line.startswith(prefix)]
    return lines[-1][len(prefix):] if lines else None


def test_counts(log_path):
    """pytest's final summary line ('12 passed, 3 skipped in 4.5s'), if any."""
    lines = [line for line in pathlib.Path(log_path).read_text(errors='replace').splitlines()
             if (' passed' in line or ' failed' in line or ' error' in line) and ' in ' in line]
    return lines[-1].strip('= ') if lines else ''


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out_dir = pathlib.Path(argv[0] if argv else os.environ.get('OUT') or 'gpu-check-out')
    logs = out_dir / 'logs'
    logs.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, 'STYLEGAN_OPS': 'cuda', 'PYTHONUNBUFFERED': '1'}
    rows, failed = [], False
    for step in steps(out_dir):
        log_path = logs / f'{step.name}.log'
        status, seconds = run_step(step, log_path, environ)
        failed |= status != 'ok'
        rows.append(f'| {step.name} | {status} | {seconds:.0f} | {test_counts(log_path)} |')
        print(rows[-1], flush=True)
        if step.name == 'build':
            build_log = last_line_with(log_path, 'BUILD_LOG=')
            if build_log and os.path.isfile(build_log):
                shutil.copy(build_log, logs / 'compiler.log')
    summary = ['# gpu-check', '', '| step | status | seconds | tests |', '|---|---|---|---|', *rows, '']
    bench_log = logs / 'benchmark.log'
    table = [line for line in bench_log.read_text(errors='replace').splitlines()
             if line.startswith('|') or line.startswith('Device:')] if bench_log.exists() else []
    summary += ['## Benchmark (bench/ops.py)', '', *table, '']
    (out_dir / 'summary.md').write_text('\n'.join(summary))
    print('\n'.join(summary))
    print(f'Full logs: {logs}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
