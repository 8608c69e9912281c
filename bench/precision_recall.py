"""Effect of the releases' float16 arithmetic on precision/recall, on a small example.

    python bench/precision_recall.py [--num=2000] [--dim=4096] [--seeds=3]

The releases round the VGG16 features to float16 and compute the pairwise distances in float16;
`metrics.formulas.precision_recall` does the same by default (`dtype=torch.float16`). This script
compares it with full float32 arithmetic on synthetic features shaped like VGG16 fc2 activations
(ReLU of correlated Gaussians, 4096 wide, about half zero), a real set and a generated set whose
distribution is shifted and rescaled. It needs no weights and prints a markdown table.
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from metrics import formulas  # noqa: E402


def vgg_like_features(rng, num, dim, shift, scale):
    """[num, dim] float32: ReLU of Gaussians with a low-rank shared component (features correlate)."""
    basis = np.random.RandomState(0).randn(32, dim) / np.sqrt(32)  # shared by both sets
    latent = rng.randn(num, 32)
    raw = (latent @ basis + 0.5 * rng.randn(num, dim)) * scale + shift
    return np.maximum(raw, 0).astype(np.float32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--num', type=int, default=2000, help='images per set')
    parser.add_argument('--dim', type=int, default=4096, help='feature width')
    parser.add_argument('--seeds', type=int, default=3)
    args = parser.parse_args()
    print('| seed | precision fp32 | precision fp16 | recall fp32 | recall fp16 | max difference |')
    print('| --- | --- | --- | --- | --- | --- |')
    worst = 0.0
    for seed in range(args.seeds):
        rng = np.random.RandomState(seed + 1)
        real = vgg_like_features(rng, args.num, args.dim, shift=0.0, scale=1.0)
        gen = vgg_like_features(rng, args.num, args.dim, shift=0.05, scale=1.1)
        p32, r32 = formulas.precision_recall(gen, real, nhood_size=3, batch_size=1000, dtype=torch.float32)
        p16, r16 = formulas.precision_recall(gen, real, nhood_size=3, batch_size=1000, dtype=torch.float16)
        difference = max(abs(p16 - p32), abs(r16 - r32))
        worst = max(worst, difference)
        print(f'| {seed} | {p32:.4f} | {p16:.4f} | {r32:.4f} | {r16:.4f} | {difference:.4f} |')
    print(f'\nlargest |fp16 - fp32| over {args.seeds} seeds, {args.num} images per set: {worst:.4f}')


if __name__ == '__main__':
    main()
