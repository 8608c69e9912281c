"""Throughput of the metrics' inner loop: generation plus Inception feature extraction.

    python bench/metrics.py [--num-images=32] [--device=cpu]

Uses the test networks in tests/data (32x32) and a randomly initialised Inception of the published
layout (same cost as the real weights), so it runs offline. Prints a markdown table.
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
from metrics.features import MetricOptions, generate_images, generated_features  # noqa: E402

NETWORKS = {'StyleGAN2 32x32': 'sg2ada-sg2-32.pkl', 'StyleGAN3-T 32x32': 'sg3repo-sg3t-32.pkl'}


def images_per_second(run, num_images):
    start = time.perf_counter()
    run()
    return num_images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--num-images', type=int, default=32)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    data_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'data')
    with tempfile.TemporaryDirectory() as weights_dir:
        extractors.write_random_weights('inception', weights_dir)
        extractor = extractors.load_extractor('inception', '2048', torch.device(args.device), weights_dir, download=False)
        print(f'device: {args.device}, torch threads: {torch.get_num_threads()}, images: {args.num_images}\n')
        print('| generator | generation (img/s) | Inception features (img/s) | both, as in FID (img/s) |')
        print('| --- | ---: | ---: | ---: |')
        for label, file_name in NETWORKS.items():
            G = stylegan.load_network(os.path.join(data_dir, file_name), device=args.device)['G_ema']
            opts = MetricOptions(G=G, device=torch.device(args.device), cache=False, download=False,
                                 weights_dir=weights_dir)
            images = generate_images(opts, 0, args.num_images)  # also warms up G and the extractor
            extractor(images[:2])
            generation = images_per_second(lambda: generate_images(opts, 0, args.num_images), args.num_images)
            extraction = images_per_second(lambda: extractor(images), args.num_images)
            both = images_per_second(lambda: generated_features(opts, extractor, args.num_images), args.num_images)
            print(f'| {label} | {generation:.1f} | {extraction:.1f} | {both:.1f} |')


if __name__ == '__main__':
    main()
