"""Time per projection step: generator forward and backward plus the VGG16/LPIPS distance.

    python bench/projector.py [--steps=20] [--device=cpu] [--batch=1]

Uses the 32x32 release pickles in tests/data and randomly initialised VGG16/LPIPS weight files of
the published layout (same cost as the real weights), so it runs offline. At 32x32 no image is
resized for VGG16 (only images larger than 256x256 are). Prints a markdown table.
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import stylegan  # noqa: E402
from metrics import extractors  # noqa: E402
from metrics.lpips import load_lpips  # noqa: E402
from stylegan.projector import ProjectOptions, project  # noqa: E402

NETWORKS = {'StyleGAN2 32x32': 'sg2ada-sg2-32.pkl', 'StyleGAN3-T 32x32': 'sg3repo-sg3t-32.pkl'}
WARMUP_STEPS = 2


def seconds_per_step(G, targets, lpips, steps, w_plus):
    """Wall time of `steps` optimisation steps (w statistics and set-up excluded), per step."""
    options = ProjectOptions(num_steps=WARMUP_STEPS, w_avg_samples=1000, w_plus=w_plus)
    start = time.perf_counter()
    project(G, targets, lpips, options)
    setup_and_warmup = time.perf_counter() - start
    options.num_steps = WARMUP_STEPS + steps
    start = time.perf_counter()
    project(G, targets, lpips, options)
    return (time.perf_counter() - start - setup_and_warmup) / steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--batch', type=int, default=1, help='targets optimised at once')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    device = torch.device(args.device)
    data_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'data')
    with tempfile.TemporaryDirectory() as weights_dir:
        extractors.write_random_weights('vgg16', weights_dir)
        extractors.write_random_weights('lpips', weights_dir)
        lpips = load_lpips(device, weights_dir, download=False)
        print(f'device: {args.device}, torch threads: {torch.get_num_threads()}, steps: {args.steps}, '
              f'batch: {args.batch}\n')
        print('| generator | W | ms per step | steps/s |')
        print('| --- | --- | ---: | ---: |')
        for label, file_name in NETWORKS.items():
            G = stylegan.load_network(os.path.join(data_dir, file_name), device=device)['G_ema']
            targets = torch.randint(0, 256, [args.batch, G.img_channels, G.img_resolution, G.img_resolution],
                                    dtype=torch.uint8, device=device)
            for w_plus in (False, True):
                seconds = seconds_per_step(G, targets, lpips, args.steps, w_plus)
                print(f"| {label} | {'W+ (--w-plus)' if w_plus else 'W'} | {seconds * 1000:.1f} | {1 / seconds:.1f} |")


if __name__ == '__main__':
    main()
