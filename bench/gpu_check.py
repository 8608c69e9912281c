"""`make gpu-check`: the one prepared script for a machine with a GPU. Builds the fused ops, runs
the GPU tests, the op benchmarks (bench/ops.py) and training speed (bench/train.py) for
StyleGAN2 256x256 and StyleGAN3-T 256x256 at batch 32, fp16 (the presets' num_fp16_res), each
with the fused ops, with STYLEGAN_OPS=ref and with torch.compile of the reference path.

    python bench/gpu_check.py [OUTPUT_DIR]          # default: $OUT, else ./gpu-check-out
    python bench/gpu_check.py --dry-run             # print the steps and their time limits
    python bench/gpu_check.py --smoke OUTPUT_DIR    # the same plumbing on the CPU with tiny shapes

Writes OUTPUT_DIR/summary.md (one row per step, the training table with sec/kimg and peak
memory, then the op benchmark table) and OUTPUT_DIR/logs/*.log (each step's full output, and
the compiler log). Every step has its own time limit, and all of them together fit in
BUDGET_S (8 minutes on an H100/H200, so that a second try fits in 15): a step that hangs is
killed and the next one starts; later steps get what is left. The GPU steps run with
STYLEGAN_OPS=cuda, so a kernel that does not build fails loudly instead of falling back.
Nothing here imports torch-fidelity (the GPU machines lack it). Exits non-zero if a step failed.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
BUDGET_S = 480

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

SMOKE_BUILD_SCRIPT = '''
import time
from ops import kernels
start = time.time()
kernels.emulated_kernels()
print(f"emulated build loaded in {time.time() - start:.1f} s")
'''

# (preset, ops) of the training rows, most important first: StyleGAN3-T is the target.
TRAIN_RUNS = [('stylegan3-t', 'fused'), ('stylegan3-t', 'ref'), ('stylegan3-t', 'compile'),
              ('stylegan2', 'fused'), ('stylegan2', 'ref'), ('stylegan2', 'compile')]


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    command: list
    timeout_s: int


def steps(out_dir, smoke=False):
    """The steps in order; `smoke`: the same scripts on the CPU with tiny shapes (tests the plumbing)."""
    python = sys.executable
    pytest = [python, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rfEs']
    if smoke:
        result = [Step('environment', [python, '-c', 'import torch; print(torch.__version__)'], 60),
                  Step('build', [python, '-c', SMOKE_BUILD_SCRIPT], 300),
                  Step('gpu-tests', pytest + ['--collect-only', 'tests/test_ops_cuda_kernels.py'], 120),
                  Step('op-benchmark', [python, 'bench/ops.py', '--device', 'cpu', '--configs', '256', '--dtypes',
                                        'fp32', '--channels', '1', '--json', str(out_dir / 'ops.json')], 300)]
        train = ['--device=cpu', '--resolution=32', '--batch=2', '--steps=1', '--warmup=1', '--compile-backend=eager']
        runs = [('tiny', 'fused'), ('tiny', 'compile')]
    else:
        result = [Step('environment', ['bash', '-c', 'nvidia-smi; which nvcc && nvcc --version; '
                                       f'{python} -c "import torch; print(torch.__version__, torch.version.cuda, '
                                       'torch.cuda.get_device_name(0))"'], 30),
                  Step('build', [python, '-c', BUILD_SCRIPT], 180),
                  # The GPU half of the kernel suite (the emulated half runs in every `make test`).
                  Step('gpu-tests', pytest + ['-k', 'not emulated', 'tests/test_ops_cuda_kernels.py',
                                              'tests/test_ops_kernels_layers.py'], 120),
                  Step('op-benchmark', [python, 'bench/ops.py', '--device', 'cuda', '--dtypes', 'fp32,fp16',
                                        '--json', str(out_dir / 'ops.json')], 90)]
        train = ['--device=cuda', '--resolution=256', '--batch=32', '--steps=8', '--warmup=2', '--precision=fp16']
        runs = TRAIN_RUNS
    for preset, ops in runs:
        name = f'train-{preset}-{ops}'
        timeout = 120 if ops == 'compile' else 60  # compile: tracing and inductor's warm-up
        result.append(Step(name, [python, 'bench/train.py', f'--presets={preset}', f'--ops={ops}', *train,
                                  f'--json={out_dir / (name + ".json")}'], 600 if smoke else timeout))
    return result


def run_step(step, log_path, environ, timeout_s):
    start = time.time()
    with open(log_path, 'w') as log:
        log.write(f"$ {' '.join(step.command)}\n")
        log.flush()
        try:
            completed = subprocess.run(step.command, cwd=REPO_ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT,
                                       timeout=timeout_s)
            status = 'ok' if completed.returncode == 0 else f'failed (exit {completed.returncode})'
        except subprocess.TimeoutExpired:
            status = f'timed out after {timeout_s} s'
    return status, time.time() - start


def last_line_with(path, prefix):
    lines = [line for line in pathlib.Path(path).read_text(errors='replace').splitlines() if line.startswith(prefix)]
    return lines[-1][len(prefix):] if lines else None


def test_counts(log_path):
    """pytest's final summary line ('12 passed, 3 skipped in 4.5s'), if any."""
    lines = [line for line in pathlib.Path(log_path).read_text(errors='replace').splitlines()
             if (' passed' in line or ' failed' in line or ' error' in line or ' collected' in line) and ' in ' in line]
    return lines[-1].strip('= ') if lines else ''


def training_table(out_dir):
    """sec/kimg and peak memory per preset and ops, with each row's time relative to the fused ops."""
    rows = []
    for path in sorted(out_dir.glob('train-*.json')):
        rows += json.loads(path.read_text())
    if not rows:
        return ['No training rows (the train steps failed or did not run: see logs/train-*.log).']
    fused = {r['preset']: r['sec_per_kimg'] for r in rows if r['ops'] == 'fused'}
    lines = [f"{rows[0]['device']}, {rows[0]['resolution']}x{rows[0]['resolution']}, batch {rows[0]['batch']}, "
             f"precision {rows[0]['precision'] or 'preset default'}; compile = torch.compile of the reference ops "
             "(regularisation phases eager).", '',
             '| preset | ops | sec/kimg | peak memory (GB) | time / fused |', '|---|---|---|---|---|']
    order = {ops: i for i, ops in enumerate(['fused', 'ref', 'compile'])}
    for r in sorted(rows, key=lambda r: (r['preset'], order.get(r['ops'], 9))):
        ratio = f"{r['sec_per_kimg'] / fused[r['preset']]:.2f}x" if r['preset'] in fused else ''
        lines.append(f"| {r['preset']} | {r['ops']} | {r['sec_per_kimg']:.2f} | {r['peak_memory_gb']:.2f} | {ratio} |")
    return lines


def write_summary(out_dir, rows):
    summary = ['# gpu-check', '', '| step | status | seconds | tests |', '|---|---|---|---|', *rows, '',
               '## Training (bench/train.py)', '', *training_table(out_dir), '']
    bench_log = out_dir / 'logs' / 'op-benchmark.log'
    table = [line for line in bench_log.read_text(errors='replace').splitlines()
             if line.startswith('|') or line.startswith('Device:')] if bench_log.exists() else []
    summary += ['## Ops (bench/ops.py)', '', *table, '']
    (out_dir / 'summary.md').write_text('\n'.join(summary))
    return summary


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', nargs='?', default=None, help='output folder (default: $OUT, else gpu-check-out)')
    parser.add_argument('--dry-run', action='store_true', help='print the steps and their time limits, run nothing')
    parser.add_argument('--smoke', action='store_true', help='run the same plumbing on the CPU with tiny shapes')
    parser.add_argument('--budget', type=int, default=BUDGET_S, help=f'total seconds for all steps (default {BUDGET_S})')
    args = parser.parse_args(argv)
    if args.budget < 1:
        parser.error(f'--budget must be a positive number of seconds, got {args.budget}')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out_dir = pathlib.Path(args.out_dir or os.environ.get('OUT') or 'gpu-check-out').resolve()
    plan = steps(out_dir, smoke=args.smoke)
    if args.dry_run:
        for step in plan:
            print(f"{step.name} (limit {step.timeout_s} s): {' '.join(step.command)}")
        print(f"total of the limits {sum(s.timeout_s for s in plan)} s; budget {args.budget} s")
        return 0
    logs = out_dir / 'logs'
    logs.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, 'PYTHONUNBUFFERED': '1', 'STYLEGAN_OPS': 'auto' if args.smoke else 'cuda'}
    rows, failed, deadline = [], False, time.time() + args.budget
    for step in plan:
        log_path = logs / f'{step.name}.log'
        left = int(deadline - time.time())
        if left < 10:
            rows.append(f'| {step.name} | skipped: the {args.budget} s budget is spent | 0 | |')
            failed = True
            print(rows[-1], flush=True)
            continue
        # bench/train.py sets STYLEGAN_OPS itself from --ops; the others keep the strict mode.
        status, seconds = run_step(step, log_path, environ, min(step.timeout_s, left))
        failed |= status != 'ok'
        rows.append(f'| {step.name} | {status} | {seconds:.0f} | {test_counts(log_path)} |')
        print(rows[-1], flush=True)
        if step.name == 'build':
            build_log = last_line_with(log_path, 'BUILD_LOG=')
            if build_log and os.path.isfile(build_log):
                shutil.copy(build_log, logs / 'compiler.log')
    print('\n'.join(write_summary(out_dir, rows)))
    print(f'Full logs: {logs}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
