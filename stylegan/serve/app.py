"""The FastAPI application: the explorer page, `GET /info`, `GET /generate`.

Every error is JSON `{"error": "<one sentence>"}`: 400 for a bad parameter, 404 for an unknown
path, 503 with `Retry-After` when the queue is full, 504 when a request outlives `timeout` seconds.
"""
import asyncio
import dataclasses
import io
import json
import logging
import os
import socket
import threading
import time

import fastapi
import uvicorn
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from stylegan import generate, watermark as watermarking
from stylegan.serve.batching import GenerationQueue, QueueFull
from stylegan.serve.params import ACCEPTED, SOFTWARE, ParameterError, parse_query

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
log = logging.getLogger('stylegan.serve')


@dataclasses.dataclass
class ServeOptions:
    """The server's command-line options beyond --network, --host and --port."""
    devices: tuple = ('cpu',)
    max_queue: int = 64        # pictures waiting for a device; one more gets 503
    max_batch: int = 16        # images per synthesis call
    max_images: int = 64       # images one request may ask for
    timeout: float = 30.0      # seconds from arrival to answer; later gets 504
    watermark: bool = False
    watermark_key: str = watermarking.DEFAULT_KEY


def error_response(status, sentence, headers=None):
    return JSONResponse({'error': sentence}, status_code=status, headers=headers)


def describe_network(network_path, network_hash, G, options):
    """The JSON of `GET /info`."""
    return {
        'network': os.path.basename(network_path), 'network-sha256': network_hash,
        'architecture': 'StyleGAN3' if generate.is_stylegan3(G) else 'StyleGAN2',
        'z_dim': G.z_dim, 'c_dim': G.c_dim, 'w_dim': G.w_dim, 'num_ws': G.num_ws,
        'img_resolution': G.img_resolution, 'img_channels': G.img_channels,
        'init_kwargs': json.loads(json.dumps(dict(getattr(G, 'init_kwargs', {})), default=str)),
        'devices': [str(device) for device in options.devices],
        'watermark': options.watermark, 'parameters': list(ACCEPTED),
        'limits': {'max_images': options.max_images, 'max_batch': options.max_batch,
                   'max_queue': options.max_queue, 'timeout_s': options.timeout},
    }


def encode_png(picture, pixels, network):
    """PNG bytes of uint8 [H, W, C] pixels with the provenance chunks (watermarked when asked)."""
    buffer = io.BytesIO()
    fields = generate.provenance(*network, picture.options, Software=SOFTWARE, **picture.provenance_extra())
    generate.save_png(pixels, buffer, fields, picture.options)
    return buffer.getvalue()


def create_app(network_path, options=None, start_workers=True):
    """Load one generator per device and build the app; raises `generate.GenerateError` for a bad
    network file. `start_workers=False` leaves `app.state.queue.start()` to the caller (tests)."""
    options = options or ServeOptions()
    generators = [generate.load_generator(network_path, device) for device in options.devices]
    network = (network_path, generate.file_sha256(network_path))
    queue = GenerationQueue(generators, options.max_queue, options.max_batch, start=start_workers)
    G = generators[0]  # read-only here: its attributes check the parameters; only workers run networks
    info = describe_network(network_path, network[1], G, options)
    defaults = {'watermark': options.watermark, 'watermark_key': options.watermark_key, 'batch_size': options.max_batch}

    async def lifespan(app):
        yield
        await run_in_threadpool(queue.close)

    app = fastapi.FastAPI(title='stylegan.serve', lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.queue = queue
    app.mount('/static', StaticFiles(directory=STATIC_DIR), name='static')

    @app.exception_handler(HTTPException)
    async def http_error(request, error):
        sentence = {404: f"there is no page '{request.url.path}'; the server offers /, /info and /generate.",
                    405: f'{request.method} is not allowed on {request.url.path}; use GET.'}
        return error_response(error.status_code, sentence.get(error.status_code, str(error.detail)))

    @app.get('/')
    async def page():
        return FileResponse(os.path.join(STATIC_DIR, 'index.html'), headers={'Cache-Control': 'no-cache'})

    @app.get('/info')
    async def network_info():
        return info

    @app.get('/generate')
    async def generate_png(request: fastapi.Request):
        try:
            picture = parse_query(request.query_params, G, options.max_images, **defaults)
        except ParameterError as error:
            return error_response(400, str(error))
        try:
            future = queue.submit(picture)
        except QueueFull:
            retry = queue.retry_after()
            return error_response(503, f'the server is busy ({options.max_queue} requests are waiting); '
                                       f'retry in {retry} s.', headers={'Retry-After': str(retry)})

        async def answer():
            pixels = await asyncio.wrap_future(future)
            return await run_in_threadpool(encode_png, picture, pixels, network)
        try:
            # On time-out wait_for cancels the future: a waiting picture is then dropped unrun.
            png = await asyncio.wait_for(answer(), options.timeout)
        except asyncio.TimeoutError:
            return error_response(504, f'the image was not ready within the server\'s limit of {options.timeout:g} s; '
                                       f'retry, or ask for fewer images.')
        except watermarking.WatermarkError as error:
            return error_response(500, f'the image could not be watermarked: {error}')
        except Exception as error:  # noqa: BLE001 -- the client gets one sentence, the log the traceback
            log.exception('generation failed for %s', request.url.query)
            return error_response(500, f'generation failed: {type(error).__name__}: {error}')
        return Response(png, media_type='image/png', headers={
            'Content-Disposition': f'inline; filename="{picture.filename}"', 'Cache-Control': 'no-store'})

    return app


# --- running it ------------------------------------------------------------------------------------

def listen(host, port):
    """A listening TCP socket on host:port (port 0: a free one); raises OSError."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def uvicorn_server(app, log_level='info'):
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan='on', timeout_graceful_shutdown=5))


class BackgroundServer:
    """Serves `app` on a thread at a free port of `host` (tests and benchmarks):

        with BackgroundServer(app) as server:
            urllib.request.urlopen(server.url + '/info')
    """

    def __init__(self, app, host='127.0.0.1', log_level='warning'):
        self.app, self.host, self.log_level = app, host, log_level

    def __enter__(self):
        self.socket = listen(self.host, 0)
        self.url = f'http://{self.host}:{self.socket.getsockname()[1]}'
        self.server = uvicorn_server(self.app, self.log_level)
        self.thread = threading.Thread(target=self.server.run, kwargs={'sockets': [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f'the test server on {self.url} did not start')
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()
