"""Benchmark of the ops at the shapes of a 256x256 and a 1024x1024 generator: time of the
reference and the fused op, forward and backward, the bytes an ideal kernel must move, and the
achieved fraction of the device's copy bandwidth.

    python bench/ops.py                       # CUDA if available (reference + fused), else CPU (reference)
    python bench/ops.py --device cpu --batch 1 --dtypes fp32 --configs 256
    python bench/ops.py --device cpu --emulated --configs 256 --dtypes fp32   # + the emulated kernels
    python bench/ops.py --json results.json

Ideal bytes: forward reads the input and writes the output (filtered_lrelu also writes its
2-bit record); backward reads the output gradient (bias_act also x; filtered_lrelu the record)
and writes the input gradient. Bias and filters are negligible. `of copy` = achieved GB/s over
the copy bandwidth measured on the same device (256 MiB tensor copy): how close the op is to
memory-bound at its best. With --emulated (CPU only) the fused column runs ops/*.cu through the
CPU emulation (threads as fibers): it checks correctness (max error vs the reference) and shows
relative cost only; its times say nothing about GPU speed.
"""

import argparse
import contextlib
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
    middle: Callable = None  # filtered_lrelu: x -> elements of the upsampled middle (2-bit record)


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

    def middle(x):
        h, w = upfirdn2d.output_size(x.shape[2:], fu, (up, up), (1, 1), upfirdn2d._parse_padding(padding))
        return x.shape[0] * x.shape[1] * h * w
    return run, middle


def cases():
    """Shapes of StyleGAN2 (config-f channels) and StyleGAN3-T layers at 256 and 1024."""
    fir = setup_filter([1, 3, 3, 1])
    return [
        Case('256', 'bias_act', 'SG2 conv 128x128', (256, 128, 128), _lrelu),
        Case('256', 'upfirdn2d', 'SG2 upsample 64->128', (256, 64, 64), _upsample(fir)),
        Case('256', 'upfirdn2d', 'SG2 D downsample 128->64', (256, 128, 128), _downsample(fir)),
        Case('256', 'filtered_lrelu', 'SG3 layer up2/down2', (128, 148, 148), *_filtered_lrelu(2, 2, 6, 10)),
        Case('1024', 'bias_act', 'SG2 conv 1024x1024', (32, 1024, 1024), _lrelu),
        Case('1024', 'upfirdn2d', 'SG2 upsample 512->1024', (64, 512, 512), _upsample(fir)),
        Case('1024', 'upfirdn2d', 'SG2 D downsample 1024->512', (32, 1024, 1024), _downsample(fir)),
        Case('1024', 'filtered_lrelu', 'SG3 layer up2/down1', (64, 532, 532), *_filtered_lrelu(2, 1, 6, 10)),
    ]


def ideal_bytes(case, x, y, direction):
    """Bytes an ideal kernel moves: see the module docstring."""
    size = x.numel() * x.element_size() + y.numel() * y.element_size()
    if case.op == 'bias_act' and direction == 'backward':
        size += x.numel() * x.element_size()  # the derivative needs x (+ bias)
    if case.middle is not None:
        size += case.middle(x) // 4  # the record: written forward, read backward
    return size


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


def _max_error(actual, expected):
    scale = float(expected.abs().max()) or 1.0
    return float((actual.double() - expected.double()).abs().max()) / scale


def bench_case(case, dtype, batch, device, impls, copy_gbps, channels=None):
    """Rows (forward, backward) of one case: ms, GB/s and fraction of copy per implementation,
    and the fused outputs' and gradients' max relative error against the reference."""
    shape = case.shape if channels is None else (min(channels, case.shape[0]), *case.shape[1:])
    x = torch.randn([batch, *shape], device=device, dtype=dtype).requires_grad_()
    rows, results = [], {}
    for direction in ('forward', 'backward'):
        row = {'config': case.config, 'op': case.op, 'layer': case.layer, 'dtype': str(dtype).replace('torch.', ''),
               'input': [batch, *shape], 'pass': direction}
        for name, (impl, context) in impls.items():
            with context():
                y = case.run(x, impl)
                dy = torch.ones_like(y) / y.numel() ** 0.5
                if direction == 'forward':
                    fn = lambda: case.run(x.detach(), impl)  # noqa: E731
                    results[name, direction] = y.detach()
                else:
                    fn = lambda: torch.autograd.grad(y, x, dy, retain_graph=True)  # noqa: E731
                    results[name, direction] = fn()[0]
                seconds = seconds_per_call(fn, device)
            moved = ideal_bytes(case, x, y, direction)
            row['ideal_mb'] = moved / 1e6
            row[f'{name}_ms'] = seconds * 1e3
            row[f'{name}_gbps'] = moved / seconds / 1e9
            row[f'{name}_of_copy'] = row[f'{name}_gbps'] / copy_gbps
            del y, dy
        if 'fused' in impls:
            row['fused_error'] = _max_error(results['fused', direction], results['ref', direction])
        rows.append(row)
    del x, results
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return rows


def format_table(rows, device_name, copy_gbps, emulated=False):
    fused = any('fused_ms' in r for r in rows)
    header = ['config', 'op', 'layer', 'dtype', 'input', 'pass', 'ideal MB', 'ref ms', 'ref of copy']
    if fused and emulated:
        header += ['emulated ms', 'emulated / ref time', 'max rel. error']
    elif fused:
        header += ['fused ms', 'fused GB/s', 'fused of copy', 'speed-up', 'max rel. error']
    note = (' The emulated column runs ops/*.cu on the CPU emulation: correctness and relative cost only, '
            'not GPU speed.' if emulated else '')
    lines = [f'Device: {device_name}; copy bandwidth {copy_gbps:.1f} GB/s; torch {torch.__version__}.{note}', '',
             '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in rows:
        cells = [r['config'], r['op'], r['layer'], r['dtype'], 'x'.join(map(str, r['input'])), r['pass'],
                 f"{r['ideal_mb']:.1f}", f"{r['ref_ms']:.3f}", f"{r['ref_of_copy']:.0%}"]
        if fused and emulated:
            cells += [f"{r['fused_ms']:.1f}", f"{r['fused_ms'] / r['ref_ms']:.0f}x", f"{r['fused_error']:.1e}"]
        elif fused:
            cells += [f"{r['fused_ms']:.3f}", f"{r['fused_gbps']:.1f}", f"{r['fused_of_copy']:.0%}",
                      f"{r['ref_ms'] / r['fused_ms']:.2f}x", f"{r['fused_error']:.1e}"]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=['cuda', 'cpu'])
    parser.add_argument('--batch', type=int, default=None, help='batch size (default: 4 on CUDA, 1 on the CPU)')
    parser.add_argument('--dtypes', default='fp32,fp16,bf16', help='comma-separated subset of fp32,fp16,bf16')
    parser.add_argument('--configs', default='256,1024', help='comma-separated subset of 256,1024')
    parser.add_argument('--json', default=None, help='also write the rows to this JSON file')
    parser.add_argument('--emulated', action='store_true',
                        help='CPU only: also run the fused kernels through the CPU emulation (correctness, relative cost)')
    parser.add_argument('--channels', type=int, default=None,
                        help='cap the channel count of every shape (default: 2 with --emulated, else the real one)')
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
    if args.emulated and args.device != 'cpu':
        parser.error('--emulated runs the CPU emulation of the kernels: use it with --device cpu')
    if args.channels is not None and args.channels < 1:
        parser.error(f'--channels must be a positive int, got {args.channels}')
    return args


def implementations(device, emulated):
    """{column: (impl, context manager)}: the reference, plus the fused kernels when they run
    (CUDA with a successful build, or the CPU emulation with --emulated)."""
    impls = {'ref': ('ref', contextlib.nullcontext)}
    from ops import kernels
    if device.type == 'cuda' and kernels.kernels_available():  # else it prints why; the ref column still runs
        impls['fused'] = ('cuda', contextlib.nullcontext)
    elif emulated:
        emulation = kernels.emulated_kernels()
        impls['fused'] = ('cuda', lambda: kernels.use_emulated(emulation))
    return impls


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    batch = args.batch or (4 if device.type == 'cuda' else 1)
    channels = args.channels or (2 if args.emulated else None)
    impls = implementations(device, args.emulated)
    copy_gbps = copy_bandwidth(device)
    device_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({os.cpu_count()} cores)'
    rows = []
    for case in cases():
        if case.config not in args.configs.split(','):
            continue
        for dtype_name in args.dtypes.split(','):
            for row in bench_case(case, DTYPES[dtype_name], batch, device, impls, copy_gbps, channels):
                rows.append(row)
                print(f"{case.config} {case.op} {case.layer} {dtype_name} {row['pass']}: ref {row['ref_ms']:.3f} ms"
                      + (f", fused {row['fused_ms']:.3f} ms" if 'fused_ms' in row else ''), file=sys.stderr, flush=True)
    table = format_table(rows, device_name, copy_gbps, emulated=args.emulated)
    print(table)
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump({'device': device_name, 'copy_gbps': copy_gbps, 'emulated': args.emulated, 'rows': rows},
                      handle, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
