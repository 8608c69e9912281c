"""`python -m stylegan.serve --network=NET`: the command line of the server (see the package docstring)."""
import argparse
import sys

import torch

from stylegan import watermark as watermarking

LOCAL_HOSTS = ('127.0.0.1', 'localhost', '::1')


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m stylegan.serve',
                                     description='An explorer page and an HTTP image server for a trained network.')
    parser.add_argument('--network', required=True, metavar='FILE', help='checkpoint of this project or release pickle')
    parser.add_argument('--host', default='127.0.0.1', help='address to listen on (default 127.0.0.1: this machine only)')
    parser.add_argument('--port', type=int, default=8000, help='default 8000; 0 picks a free port')
    parser.add_argument('--device', help="'cuda', 'cpu', or several such as 'cuda:0,cuda:1' (one worker each; "
                                         "default: cuda when available)")
    parser.add_argument('--watermark', action='store_true', help='embed the invisible watermark in every image')
    parser.add_argument('--watermark-key', default=watermarking.DEFAULT_KEY)
    parser.add_argument('--max-queue', type=int, default=64, help='requests that may wait; one more gets 503 (default 64)')
    parser.add_argument('--max-batch', type=int, default=16, help='images per synthesis call (default 16)')
    parser.add_argument('--max-images', type=int, default=64, help='images one request may ask for (default 64)')
    parser.add_argument('--timeout', type=float, default=30.0, help='seconds a request may take; later gets 504 (default 30)')
    return parser


def parse_devices(text):
    """'cuda:0,cuda:1' -> [device, device]; raises ValueError with one sentence."""
    text = text or ('cuda' if torch.cuda.is_available() else 'cpu')
    devices = []
    for name in text.split(','):
        try:
            device = torch.device(name.strip())
        except RuntimeError:
            raise ValueError(f"--device: '{name}' is not a device such as cpu, cuda or cuda:1") from None
        if device.type == 'cuda' and not torch.cuda.is_available():
            raise ValueError(f"--device={name} asks for CUDA but no CUDA GPU is available; use --device=cpu")
        if device.type == 'cuda' and (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"--device={name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        devices.append(device)
    return devices


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print("error: the server needs FastAPI and uvicorn, which are not installed; run pip install -e '.[serve]'.",
              file=sys.stderr)
        return 1
    from stylegan.generate import GenerateError
    from stylegan.serve.app import ServeOptions, create_app, listen, uvicorn_server

    for name in ('max_queue', 'max_batch', 'max_images'):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1.", file=sys.stderr)
            return 1
    if not args.timeout > 0:
        print('error: --timeout must be a positive number of seconds.', file=sys.stderr)
        return 1
    try:
        devices = parse_devices(args.device)
        sock = listen(args.host, args.port)
    except ValueError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except OSError as error:
        print(f'error: cannot listen on {args.host}:{args.port} ({error.strerror or error}); choose another --port '
              f'or --host.', file=sys.stderr)
        return 1
    options = ServeOptions(devices=tuple(devices), max_queue=args.max_queue, max_batch=args.max_batch,
                           max_images=args.max_images, timeout=args.timeout, watermark=args.watermark,
                           watermark_key=args.watermark_key)
    try:
        app = create_app(args.network, options)
    except GenerateError as error:
        sock.close()
        print(f'error: {error}', file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    url_host = f'[{host}]' if ':' in host else host
    print(f'stylegan.serve: {args.network} on http://{url_host}:{port}/ (devices: {", ".join(map(str, devices))}); '
          f'Ctrl-C stops it.', flush=True)
    if args.host not in LOCAL_HOSTS:
        print(f'warning: listening on {args.host}, so other machines can reach the server; it has no authentication.',
              flush=True)
    try:
        uvicorn_server(app).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
