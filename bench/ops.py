"""Benchmark of the ops at the shapes of a 256x256 and a 1024x1024 generator: time of the
reference and the fused op, achieved GB/s, and the fraction of the device's copy bandwidth.

    python bench/ops.py                       # CUDA if available (reference + fused), else CPU (reference)
    python bench/ops.py --device cpu --batch 1 --dtypes fp32 --configs 256
    python bench/ops.py --json results.json

GB/s counts the bytes an ideal kernel must move (read the input, write the output; bias and
filters are negligible), so `of copy` is how close the op is to being memory-bound at its
best; the copy bandwidth is measured on the same device with a 256 MiB tensor copy.
Forward pass only.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops import bias_act, filtered_lrelu, upfirdn2d  # noqa: E402
from ops.upfirdn2d import setup_filter  # noqa: E402

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class Case:
    """One op call at a representative layer shape; `run(x, impl)` calls it."""
    config: str   # '256' or '1024': the generator resolution the shape comes from
    op: str
    layer: str    # which layer the shape stands for
    shape: tuple  # input [N, C, H, W] without the batch, which is added at run time
    run: Callable


def _lrelu(x, impl):
    b = torch.zeros(x.shape[1], device=x.device, dtype=x.dtype)
    return bias_act.bias_act(x, b, act='lrelu', clamp=256, impl=impl)


def _upsample(f):
    return lambda x, impl: upfirdn2d.upsample2d(x, f.to(x.device), impl=impl)


def _downsample(f):
    return lambda x, impl: upfirdn2d.downsample2d(x, f.to(x.device), impl=impl)


def _filtered_lrelu(up, down, taps, padding):
    fu = setup_filter(torch.ones(taps * up) / (taps * up), separable=True)
    fd = setup_filter(torch.ones(taps * down) / (taps * down), separable=True)

    def run(x, impl):
        b = torch.zeros(x.shape[1], device=x.device, dtype=x.dtype)
        return filtered_lrelu.filtered_lrelu(x, fu.to(x.device), fd.to(x.device), b, up=up, down=down,
                                             padding=padding, clamp=256, impl=impl)
    return run


def cases():
    """Shapes of StyleGAN2 (config-f channels) and StyleGAN3-T layers at 256 and 1024."""
    fir = setup_filter([1, 3, 3, 1])
    return [
        Case('256', 'bias_act', 'SG2 conv 128x128', (256, 128, 128), _lrelu),
        Case('256', 'upfirdn2d', 'SG2 upsample 64->128', (256, 64, 64), _upsample(fir)),
        Case('256', 'upfirdn2d', 'SG2 D downsample 128->64', (256, 128, 128), _downsample(fir)),
        Case('256', 'filtered_lrelu', 'SG3 layer up2/down2', (128, 148, 148), _filtered_lrelu(2, 2, 6, 10)),
        Case('1024', 'bias_act', 'SG2 conv 1024x1024', (32, 1024, 1024), _lrelu),
        Case('1024', 'upfirdn2d', 'SG2 upsample 512->1024', (64, 512, 512), _upsample(fir)),
        Case('1024', 'upfirdn2d', 'SG2 D downsample 1024->512', (32, 1024, 1024), _downsample(fir)),
        Case('1024', 'filtered_lrelu', 'SG3 layer up2/down1', (64, 532, 532), _filtered_lrelu(2, 1, 6, 10)),
    ]


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def seconds_per_call(fn, device, min_time=0.2, max_calls=100):
    """Median-free mean over enough calls to fill min_time (after one warm-up call)."""
    fn()
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while calls < max_calls and (calls == 0 or time.perf_counter() - start < min_time):
        fn()
        calls += 1
        if device.type == 'cuda' and calls % 10 == 0:
            synchronize(device)
    synchronize(device)
    return (time.perf_counter() - start) / calls


def copy_bandwidth(device):
    """GB/s of a 256 MiB device-to-device copy (read + write)."""
    src = torch.empty(64 * 2 ** 20, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    seconds = seconds_per_call(lambda: dst.copy_(src), device, min_time=0.3)
    return 2 * src.numel() * src.element_size() / seconds / 1e9


def bench_case(case, dtype, batch, device, with_fused, copy_gbps):
    x = torch.randn([batch, *case.shape], device=device, dtype=dtype)
    y = case.run(x, 'ref')
    moved = x.numel() * x.element_size() + y.numel() * y.element_size()
    row = {'config': case.config, 'op': case.op, 'layer': case.layer, 'dtype': str(dtype).replace('torch.', ''),
           'input': [batch, *case.shape]}
    for impl in ('ref', 'cuda') if with_fused else ('ref',):
        seconds = seconds_per_call(lambda: case.run(x, impl), device)
        name = 'fused' if impl == 'cuda' else 'ref'
        row[f'{name}_ms'] = seconds * 1e3
        row[f'{name}_gbps'] = moved / seconds / 1e9
        row[f'{name}_of_copy'] = row[f'{name}_gbps'] / copy_gbps
    del x, y
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return row


def format_table(rows, device_name, copy_gbps):
    fused = any('fused_ms' in r for r in rows)
    header = ['config', 'op', 'layer', 'dtype', 'input', 'ref ms', 'ref GB/s', 'ref of copy']
    if fused:
        header += ['fused ms', 'fused GB/s', 'fused of copy', 'speed-up']
    lines = [f'Device: {device_name}; copy bandwidth {copy_gbps:.1f} GB/s; torch {torch.__version__}', '',
             '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in rows:
        cells = [r['config'], r['op'], r['layer'], r['dtype'], 'x'.join(map(str, r['input'])),
                 f"{r['ref_ms']:.3f}", f"{r['ref_gbps']:.1f}", f"{r['ref_of_copy']:.0%}"]
        if fused:
            cells += [f"{r['fused_ms']:.3f}", f"{r['fused_gbps']:.1f}", f"{r['fused_of_copy']:.0%}",
                      f"{r['ref_ms'] / r['fused_ms']:.2f}x"]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=['cuda', 'cpu'])
    parser.add_argument('--batch', type=int, default=None, help='batch size (default: 4 on CUDA, 1 on the CPU)')
    parser.add_argument('--dtypes', default='fp32,fp16,bf16', help='comma-separated subset of fp32,fp16,bf16')
    parser.add_argument('--configs', default='256,1024', help='comma-separated subset of 256,1024')
    parser.add_argument('--json', default=None, help='also write the rows to this JSON file')
    args = parser.parse_args(argv)
    bad = [d for d in args.dtypes.split(',') if d not in DTYPES]
    if bad:
        parser.error(f"--dtypes accepts fp32, fp16, bf16; got {', '.join(bad)}")
    bad = [c for c in args.configs.split(',') if c not in ('256', '1024')]
    if bad:
        parser.error(f"--configs accepts 256 and 1024; got {', '.join(bad)}")
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda needs a CUDA GPU; none is visible (use --device cpu)')
    if args.batch is not None and args.batch < 1:
        parser.error(f'--batch must be a positive int, got {args.batch}')
    return args


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    batch = args.batch or (4 if device.type == 'cuda' else 1)
    with_fused = device.type == 'cuda'
    if with_fused:
        from ops import kernels
        with_fused = kernels.kernels_available()  # prints why not, and the ref column still runs
    copy_gbps = copy_bandwidth(device)
    device_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({os.cpu_count()} cores)'
    rows = []
    for case in cases():
        if case.config not in args.configs.split(','):
            continue
        for dtype_name in args.dtypes.split(','):
            rows.append(bench_case(case, DTYPES[dtype_name], batch, device, with_fused, copy_gbps))
            print(f"{case.config} {case.op} {case.layer} {dtype_name}: ref {rows[-1]['ref_ms']:.3f} ms"
                  + (f", fused {rows[-1]['fused_ms']:.3f} ms" if with_fused else ''), file=sys.stderr, flush=True)
    table = format_table(rows, device_name, copy_gbps)
    print(table)
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump({'device': device_name, 'copy_gbps': copy_gbps, 'rows': rows}, handle, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
