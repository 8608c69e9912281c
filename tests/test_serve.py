"""stylegan.serve: the API gives generate.py's images with provenance, bad parameters get one 4xx
sentence, waiting requests are batched, a full queue answers 503, a slow request 504, and the
server holds under a bounded load on the loopback address."""
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import PIL.Image
import pytest
import torch

pytest.importorskip('fastapi', reason="the server's tests need its extra: pip install -e '.[serve]'")

import stylegan  # noqa: E402
from conftest import DATA_DIR  # noqa: E402
from stylegan import generate  # noqa: E402
from stylegan.networks import stylegan2  # noqa: E402
from stylegan.serve.app import BackgroundServer, ServeOptions, create_app  # noqa: E402
from stylegan.serve.load import fetch, run_load, summarize  # noqa: E402

REPO = DATA_DIR.parent.parent


@pytest.fixture(scope='module')
def network(tmp_path_factory):
    """A small randomly initialised conditional StyleGAN2 (16x16, 3 classes) as a checkpoint."""
    torch.manual_seed(0)
    G = stylegan2.Generator(z_dim=16, c_dim=3, w_dim=16, img_resolution=16, img_channels=3,
                            mapping_kwargs={'num_layers': 2}, channel_base=256, channel_max=32)
    path = tmp_path_factory.mktemp('network') / 'tiny.pt'
    stylegan.save_network(path, G=G, G_ema=G)
    return path


@pytest.fixture(scope='module')
def server(network):
    with BackgroundServer(create_app(str(network))) as running:
        yield running


def get(server, query):
    return fetch(f'{server.url}/generate?{query}')


def png(body):
    image = PIL.Image.open(io.BytesIO(body))
    image.load()  # a truncated or corrupt PNG raises here
    return image


def pixels(body):
    return np.asarray(png(body)).astype(int)


def generate_py(network, tmp_path, *args):
    """What generate.py writes for the same options: (pixels, text chunks) of its one output."""
    assert generate.main(['--network', str(network), '--outdir', str(tmp_path), *args]) == 0
    written = PIL.Image.open(next(tmp_path.glob('*.png')))
    return np.asarray(written).astype(int), written.text


def test_an_image_is_generate_py_s_with_its_provenance(server, network, tmp_path):
    status, body, headers = get(server, 'seeds=7&trunc=0.7&class=2&trunc-cutoff=3')
    assert status == 200 and headers['content-type'] == 'image/png'
    assert 'filename="seed0007.png"' in headers['content-disposition']
    expected, expected_text = generate_py(network, tmp_path, '--seeds=7', '--trunc=0.7', '--class=2', '--trunc-cutoff=3')
    assert np.abs(pixels(body) - expected).max() <= 1
    text = png(body).text
    assert text['Software'] == 'stylegan (this project) stylegan.serve'
    for key in ('network', 'network-sha256', 'seed', 'truncation-psi', 'truncation-cutoff', 'class', 'noise-mode',
                'watermark'):
        assert text[key] == expected_text[key], key


def test_grid_and_style_mix_are_generate_py_s_figures(server, network, tmp_path):
    status, body, headers = get(server, 'seeds=0-5&grid=2x3&class=1')
    expected, _ = generate_py(network, tmp_path / 'grid', '--seeds=0-5', '--grid=2x3', '--class=1')
    assert status == 200 and pixels(body).shape == (32, 48, 3) and np.abs(pixels(body) - expected).max() <= 1
    assert png(body).text['grid'] == '2x3' and png(body).text['seeds'] == '0,1,2,3,4,5'

    status, body, headers = get(server, 'seeds=0,1&style-mix=5,6,7&styles=0-3&class=0')
    expected, _ = generate_py(network, tmp_path / 'mix', '--seeds=0,1', '--style-mix=5,6,7', '--styles=0-3', '--class=0')
    assert status == 200 and 'style-mix.png' in headers['content-disposition']
    assert pixels(body).shape == (48, 64, 3) and np.abs(pixels(body) - expected).max() <= 1
    assert png(body).text['styles'] == '0,1,2,3' and png(body).text['column_seeds'] == '5,6,7'

    status, body, _ = get(server, 'seeds=3,4&class=0')  # several seeds, no grid: one row
    assert status == 200 and pixels(body).shape == (16, 32, 3)


def test_stylegan3_translate_and_rotate_are_generate_py_s(tmp_path):
    network = DATA_DIR / 'sg3repo-sg3t-32.pkl'
    with BackgroundServer(create_app(str(network))) as running:
        status, body, _ = get(running, 'seeds=3&translate=0.2,-0.1&rotate=30')
        _, plain, _ = get(running, 'seeds=3')
    expected, _ = generate_py(network, tmp_path, '--seeds=3', '--translate=0.2,-0.1', '--rotate=30')
    assert status == 200 and np.abs(pixels(body) - expected).max() <= 1
    assert np.abs(pixels(plain) - expected).mean() > 2  # the transform moved the image
    assert png(body).text['rotate'] == '30' and png(body).text['translate'] == '0.2,-0.1'


@pytest.mark.parametrize('query, status, names', [
    ('seeds=4294967296&class=0', 400, 'below 2**32'),
    ('seeds=-1&class=0', 400, "'-1' is not a list of seeds"),
    ('seeds=1&trunc=abc&class=0', 400, "trunc: 'abc' is not a number"),
    ('seeds=1&trunc=inf&class=0', 400, "trunc: 'inf' is not a number"),
    ('seeds=1&rotate=10&class=0', 400, 'need a StyleGAN3 network; this one is StyleGAN2'),
    ('seeds=1', 400, 'conditional with 3 classes'),
    ('seeds=1&class=3', 400, 'class=3 is out of range'),
    ('seeds=1&class=x', 400, "class: 'x' is not a whole number"),
    ('seeds=0-3&grid=3x3&class=0', 400, 'grid=3x3 has 9 cells but 4 seeds'),
    ('seeds=0-7&style-mix=8-14&class=0', 400, 'needs 71 images; the server makes at most 64'),
    ('seeds=0-4000000000&class=0', 400, "seeds: '0-4000000000' lists more than 64 numbers"),  # before listing them
    ('seeds=1&style-mix=2&styles=0-4000000000&class=0', 400, "styles: '0-4000000000' lists more than 64 numbers"),
    ('seeds=1&noise-mode=loud&class=0', 400, 'give one of const, random, none'),
    ('seeds=1&psi=0.5&class=0', 400, "unknown parameter 'psi'"),
    ('seeds=1&seeds=2&class=0', 400, "'seeds' was given 2 times"),
    ('class=0', 400, "'seeds' is missing"),
    ('seeds=1&styles=0-3&class=0', 400, "give 'style-mix' with it"),
    ('seeds=1&style-mix=2&styles=9&class=0', 400, 'styles=9 is out of range'),
])
def test_bad_parameters_get_one_4xx_sentence(server, query, status, names):
    answer_status, body, headers = get(server, query)
    assert answer_status == status and headers['content-type'] == 'application/json'
    error = json.loads(body)
    assert list(error) == ['error'] and names in error['error']
    assert '\n' not in error['error'] and error['error'].endswith('.')
    assert not re.search(r'--(class|trunc|grid|styles|translate)', error['error'])  # query names, not CLI flags


def test_unknown_pages_get_a_json_sentence(server):
    status, body, _ = fetch(f'{server.url}/nothing')
    assert status == 404 and b'the server offers /, /info and /generate' in body


def test_info_describes_the_network_and_the_page_is_served(server, network):
    status, body, _ = fetch(f'{server.url}/info')
    info = json.loads(body)
    assert status == 200 and info['architecture'] == 'StyleGAN2' and info['c_dim'] == 3 and info['num_ws'] == 6
    assert info['img_resolution'] == 16 and info['network'] == 'tiny.pt' and info['devices'] == ['cpu']
    assert info['network-sha256'] == generate.file_sha256(network)
    status, page, _ = fetch(f'{server.url}/')
    assert status == 200 and b'/static/app.js' in page
    for asset in re.findall(rb'(?:src|href)="(/static/[^"]+)"', page):  # everything the page needs is local
        assert fetch(f'{server.url}{asset.decode()}')[0] == 200
    assert not re.search(rb'(?:src|href)="(?:https?:)?//', page)


def test_watermark_option_marks_every_image(network):
    from stylegan import watermark
    with BackgroundServer(create_app(str(network), ServeOptions(watermark=True))) as running:
        status, body, _ = get(running, 'seeds=0-3&grid=2x2&class=0')
    assert status == 200 and png(body).text['watermark'] == 'yes' and watermark.is_marked(pixels(body).astype(np.uint8))


def send_in_background(server, query):
    """Start GET /generate?query on a thread; returns a dict that gets 'answer' when it is done."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(answer=get(server, query)), daemon=True)
    thread.start()
    box['thread'] = thread
    return box


def wait_until(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, 'condition not reached'
        time.sleep(0.01)


def test_waiting_requests_share_one_synthesis_call_and_get_their_own_image(network, tmp_path):
    app = create_app(str(network), ServeOptions(max_batch=16), start_workers=False)
    queries = [f'seeds={seed}&trunc={psi}&class={seed % 3}' for seed, psi in zip(range(5), (1, 0.5, 0.7, -0.3, 1.2))]
    with BackgroundServer(app) as running:
        sent = [send_in_background(running, query) for query in queries]
        sent.append(send_in_background(running, 'seeds=9&class=0&noise-mode=none'))  # a different synthesis call
        wait_until(lambda: app.state.queue.waiting == 6)
        app.state.queue.start()
        for box in sent:
            box['thread'].join(30)
    assert list(app.state.queue.batch_sizes) == [5, 1]
    for seed, psi in zip(range(5), (1, 0.5, 0.7, -0.3, 1.2)):
        status, body, _ = sent[seed]['answer']
        expected, _ = generate_py(network, tmp_path / str(seed), f'--seeds={seed}', f'--trunc={psi}', f'--class={seed % 3}')
        assert status == 200 and np.abs(pixels(body) - expected).max() <= 1


def test_a_full_queue_answers_503_with_retry_after_at_once(network):
    app = create_app(str(network), ServeOptions(max_queue=1), start_workers=False)
    with BackgroundServer(app) as running:
        first = send_in_background(running, 'seeds=1&class=0')
        wait_until(lambda: app.state.queue.waiting == 1)
        status, body, headers = get(running, 'seeds=2&class=0')  # the workers are stopped: it must not wait
        assert status == 503 and int(headers['retry-after']) >= 1 and b'the server is busy' in body
        app.state.queue.start()
        first['thread'].join(30)
        assert first['answer'][0] == 200


def test_a_request_past_its_time_limit_gets_504_and_never_runs(network):
    app = create_app(str(network), ServeOptions(timeout=0.3), start_workers=False)
    with BackgroundServer(app) as running:
        status, body, _ = get(running, 'seeds=1&class=0')
        assert status == 504 and b'limit of 0.3 s' in body
        app.state.queue.start()
        assert get(running, 'seeds=2&class=0')[0] == 200
    assert list(app.state.queue.batch_sizes) == [1]  # only the second request ran


def test_200_requests_from_20_clients_each_get_a_correct_png_or_503(network, capsys):
    G = stylegan.load_network(network)['G_ema']
    seeds, psis = list(range(200)), [(1.0, 0.5, 0.8, 0.7)[i % 4] for i in range(200)]
    queries = [f'seeds={seed}&trunc={psi}&class={seed % 3}' for seed, psi in zip(seeds, psis)]
    app = create_app(str(network), ServeOptions(devices=('cpu', 'cpu'), max_queue=8, max_batch=8))  # two workers
    with BackgroundServer(app) as running:
        answers, seconds = run_load(running.url, queries, clients=20)
        assert fetch(f'{running.url}/info')[0] == 200  # still up
    assert len(answers) == 200 and all(answer.status in (200, 503) for answer in answers)
    assert any(answer.status == 200 for answer in answers)
    for seed, psi, answer in zip(seeds, psis, answers):
        if answer.status == 200:
            z = generate.latents(G, [seed], 'cpu')
            c = generate.class_vector(G, seed % 3, 1, 'cpu')
            expected = generate.to_uint8(G(z, c, truncation_psi=psi, noise_mode='const'))[0]
            assert np.abs(pixels(answer.body) - expected).max() <= 1, answer.query
            assert png(answer.body).text['seed'] == str(seed)
        else:
            assert int(answer.headers['retry-after']) >= 1
    with capsys.disabled():
        print('\n' + ', '.join(f'{key} {value:.1f}' if isinstance(value, float) else f'{key} {value}'
                               for key, value in summarize(answers, seconds).items()))


def run_cli(*args, timeout=60):
    return subprocess.run([sys.executable, '-m', 'stylegan.serve', *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_cli_refuses_a_bad_network_or_port_in_one_sentence(network, tmp_path, capsys):
    result = run_cli(f'--network={tmp_path / "missing.pt"}', '--port=0')
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().count('\n') == 0 and 'does not exist' in result.stderr
    from stylegan.serve.__main__ import main
    from stylegan.serve.app import listen
    with listen('127.0.0.1', 0) as taken:
        assert main([f'--network={network}', f'--port={taken.getsockname()[1]}']) == 1
    assert 'cannot listen on 127.0.0.1' in capsys.readouterr().err
    assert main([f'--network={network}', '--max-queue=0']) == 1
    assert '--max-queue must be at least 1' in capsys.readouterr().err
    assert main([f'--network={network}', '--device=tpu']) == 1
    assert "'tpu' is not a device" in capsys.readouterr().err


def test_cli_serves_on_localhost_by_default_and_stops_on_ctrl_c(network):
    process = subprocess.Popen([sys.executable, '-m', 'stylegan.serve', f'--network={network}', '--port=0',
                                '--device=cpu'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        first_line = process.stdout.readline()
        url = re.search(r'http://127\.0\.0\.1:\d+/', first_line).group(0)
        wait_until(lambda: fetch(f'{url}info', timeout=5)[0] == 200)
        assert get(type('S', (), {'url': url.rstrip('/')}), 'seeds=1&class=0')[0] == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(30) in (0, -signal.SIGINT)  # uvicorn shuts down, then re-raises the signal
        assert 'Traceback' not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
