"""Throughput and latency of `python -m stylegan.serve` under a bounded load on the loopback address.

    python bench/serve.py [--network=tests/data/sg2ada-sg2-32.pkl] [--requests=200] [--clients=20] [--device=cpu]

Serves the network in this process (uvicorn on a thread, a free port of 127.0.0.1), sends
`--requests` single-image requests (seeds 0, 1, ..., truncation 0.7) from `--clients` threads, each
waiting for its answer before sending the next, once per `--max-batch` value, and prints a markdown
table: answers that are a PNG of the network's size (ok), 503s (queue full), anything else, ok
answers per second over the run, and p50/p99 latency of the ok answers. Exits 1 if any answer was
neither a correct PNG nor a 503.
"""
import argparse
import io
import os
import sys

import PIL.Image
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from stylegan.serve.app import BackgroundServer, ServeOptions, create_app  # noqa: E402
from stylegan.serve.load import run_load, summarize  # noqa: E402

DEFAULT_NETWORK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'data',
                               'sg2ada-sg2-32.pkl')


def is_png_of_size(body, resolution):
    try:
        image = PIL.Image.open(io.BytesIO(body))
        image.load()
        return image.format == 'PNG' and image.size == (resolution, resolution)
    except Exception:  # noqa: BLE001 -- any decoding failure is a corrupt answer
        return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--network', default=DEFAULT_NETWORK)
    parser.add_argument('--requests', type=int, default=200)
    parser.add_argument('--clients', type=int, default=20)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--max-batch', default='1,16', help='comma-separated values, one row each (default 1,16)')
    parser.add_argument('--max-queue', type=int, default=64)
    args = parser.parse_args()

    queries = [f'seeds={seed}&trunc=0.7' for seed in range(args.requests)]
    print(f'network: {os.path.basename(args.network)}, device: {args.device}, torch threads: {torch.get_num_threads()}, '
          f'{args.requests} requests from {args.clients} clients, queue bound {args.max_queue}\n')
    print('| max batch | ok | 503 | other | ok/s | p50 ms | p99 ms | mean pictures per synthesis call |')
    print('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    failed = False
    for max_batch in (int(value) for value in args.max_batch.split(',')):
        options = ServeOptions(devices=(args.device,), max_queue=args.max_queue, max_batch=max_batch, timeout=600)
        app = create_app(args.network, options)
        resolution = app.state.queue.generators[0].img_resolution
        with BackgroundServer(app) as server:
            run_load(server.url, queries[:args.clients], args.clients)  # warm-up, not counted
            app.state.queue.batch_sizes.clear()
            answers, seconds = run_load(server.url, queries, args.clients)
        corrupt = [a for a in answers if a.status == 200 and not is_png_of_size(a.body, resolution)]
        failed |= bool(corrupt) or any(a.status not in (200, 503) for a in answers)
        summary = summarize(answers, seconds)
        sizes = list(app.state.queue.batch_sizes)
        print(f"| {max_batch} | {summary['ok'] - len(corrupt)} | {summary['busy (503)']} | "
              f"{summary['other'] + len(corrupt)} | {summary['ok/s']:.1f} | {summary['p50 ms']:.0f} | "
              f"{summary['p99 ms']:.0f} | {sum(sizes) / max(1, len(sizes)):.1f} |")
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
