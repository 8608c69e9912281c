"""The explorer page in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven
by Selenium): it loads, the truncation and seed controls change the image, a style-mix setting shows
the mix, a click on the neighbour grid picks a seed, StyleGAN3's translate and rotate move the image;
every image shown is the API's PNG for the controls. It also takes the README's screenshot:

    STYLEGAN_SCREENSHOT=docs/serve.png .venv/bin/python -m pytest -q tests/test_serve_browser.py
"""
import base64
import io
import os
import urllib.parse

import numpy as np
import PIL.Image
import pytest
import torch

CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip('no Chromium: install it with `apt-get install -y chromium chromium-driver` to run the browser test',
                allow_module_level=True)
pytest.importorskip('fastapi', reason="the browser test needs the server's extra: pip install -e '.[dev,serve]'")
pytest.importorskip('selenium', reason="the browser test needs Selenium: pip install -e '.[dev,serve]'")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

import stylegan  # noqa: E402
from stylegan.networks import stylegan2  # noqa: E402
from stylegan.serve.app import BackgroundServer, create_app  # noqa: E402
from stylegan.serve.load import fetch  # noqa: E402

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--disable-quic', '--window-size=1200,900']
RESOLUTION = 64


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    """A randomly initialised conditional StyleGAN2 (64x64, 4 classes) behind the server."""
    torch.manual_seed(1)
    G = stylegan2.Generator(z_dim=32, c_dim=4, w_dim=32, img_resolution=RESOLUTION, img_channels=3,
                            mapping_kwargs={'num_layers': 2}, channel_base=1024, channel_max=64)
    path = tmp_path_factory.mktemp('network') / 'random-init-64.pt'
    stylegan.save_network(path, G=G, G_ema=G)
    with BackgroundServer(create_app(str(path))) as running:
        yield running


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f'--user-data-dir={tmp_path_factory.mktemp("chromium-profile")}']:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


# The bytes behind the Download button (base64), read the way the browser would save them.
DOWNLOADED_BYTES = """
    const done = arguments[arguments.length - 1];
    fetch(document.getElementById('download').href).then((r) => r.blob()).then((blob) => {
        const reader = new FileReader();
        reader.onload = () => done(reader.result.split(',', 2)[1]);
        reader.readAsDataURL(blob);
    });"""


def settled(driver):
    """Wait until the page shows the image (or error) of its current controls; returns that query."""
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return document.body.dataset.state === 'idle' && document.body.dataset.shown === explorer.query();"))
    return driver.execute_script('return document.body.dataset.shown;')


def shown_pixels(driver):
    """int [H, W, 3] of the displayed image at its own resolution (read back through a canvas)."""
    data_url = driver.execute_script("""
        const img = document.getElementById('image');
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        canvas.getContext('2d').drawImage(img, 0, 0);
        return canvas.toDataURL('image/png');""")
    image = PIL.Image.open(io.BytesIO(base64.b64decode(data_url.split(',', 1)[1])))
    return np.asarray(image.convert('RGB')).astype(int)


def api_pixels(server, query):
    status, body, _ = fetch(f'{server.url}/generate?{query}')
    assert status == 200, body
    return np.asarray(PIL.Image.open(io.BytesIO(body)).convert('RGB')).astype(int)


def assert_shows_api_image(driver, server):
    query = settled(driver)
    pixels = shown_pixels(driver)
    assert np.abs(pixels - api_pixels(server, query)).max() <= 1, query
    return query, pixels


def test_the_explorer_follows_its_controls_in_headless_chromium(server, browser, tmp_path):
    browser.get(server.url + '/')
    query, first = assert_shows_api_image(browser, server)
    assert urllib.parse.parse_qs(query) == {'seeds': ['0'], 'trunc': ['1'], 'class': ['0']}
    assert first.shape == (RESOLUTION, RESOLUTION, 3)
    assert 'random-init-64.pt' in browser.find_element(By.ID, 'network-info').text

    truncation = browser.find_element(By.ID, 'trunc')  # a range input: arrow keys move it like a drag
    truncation.send_keys(*[Keys.ARROW_LEFT] * 6)
    query, truncated = assert_shows_api_image(browser, server)
    assert urllib.parse.parse_qs(query)['trunc'] == ['0.7'] and np.abs(truncated - first).mean() > 1
    assert browser.find_element(By.ID, 'trunc-value').text == '0.7'

    browser.find_element(By.ID, 'seed-up').click()
    query, next_seed = assert_shows_api_image(browser, server)
    assert urllib.parse.parse_qs(query)['seeds'] == ['1'] and np.abs(next_seed - truncated).mean() > 1
    seed = browser.find_element(By.ID, 'seed')
    seed.send_keys(Keys.CONTROL, 'a')
    seed.send_keys('42')
    query, typed = assert_shows_api_image(browser, server)
    assert urllib.parse.parse_qs(query)['seeds'] == ['42'] and np.abs(typed - next_seed).mean() > 1
    download = browser.find_element(By.ID, 'download')
    assert download.get_attribute('download') == 'seed0042.png'
    saved = PIL.Image.open(io.BytesIO(base64.b64decode(browser.execute_async_script(DOWNLOADED_BYTES))))
    assert saved.text['seed'] == '42' and saved.text['truncation-psi'] == '0.7' and len(saved.text['network-sha256']) == 64

    Select(browser.find_element(By.ID, 'view')).select_by_value('mix')
    mix_seed = browser.find_element(By.ID, 'mix-seed')
    mix_seed.send_keys(Keys.CONTROL, 'a')
    mix_seed.send_keys('7')
    query, figure = assert_shows_api_image(browser, server)
    r = RESOLUTION
    assert urllib.parse.parse_qs(query)['style-mix'] == ['7'] and figure.shape == (2 * r, 2 * r, 3)
    params = {key: value[0] for key, value in urllib.parse.parse_qs(query).items() if key not in ('style-mix', 'styles')}
    mixed_in = api_pixels(server, urllib.parse.urlencode({**params, 'seeds': '7'}))
    assert np.abs(figure[:r, r:] - mixed_in).max() <= 1          # the mixed-in seed along the top
    assert np.abs(figure[r:, :r] - typed).max() <= 1             # the seed down the left
    cell = figure[r:, r:]
    assert np.abs(cell - typed).mean() > 1 and np.abs(cell - mixed_in).mean() > 1  # the mix is neither
    screenshot = os.environ.get('STYLEGAN_SCREENSHOT') or str(tmp_path / 'serve.png')
    assert browser.save_screenshot(screenshot)

    Select(browser.find_element(By.ID, 'view')).select_by_value('grid')
    query, grid = assert_shows_api_image(browser, server)
    assert urllib.parse.parse_qs(query)['seeds'] == ['38-46'] and grid.shape == (3 * r, 3 * r, 3)
    image = browser.find_element(By.ID, 'image')
    webdriver.ActionChains(browser).move_to_element_with_offset(image, image.size['width'] // 3, 0).click().perform()
    query, _ = assert_shows_api_image(browser, server)  # the right-hand cell of the middle row: seed 43
    assert urllib.parse.parse_qs(query)['seeds'] == ['39-47']
    assert browser.find_element(By.ID, 'seed').get_attribute('value') == '43'

    seed.send_keys(Keys.CONTROL, 'a')
    seed.send_keys('4294967296')  # one past numpy's seeds: the server's sentence is shown, the image kept
    settled(browser)
    status = browser.find_element(By.ID, 'status')
    assert 'error' in status.get_attribute('class') and status.text.startswith('400: ') and '2**32' in status.text


def test_stylegan3_transform_controls_move_the_image(browser):
    from conftest import DATA_DIR
    with BackgroundServer(create_app(str(DATA_DIR / 'sg3repo-sg3t-32.pkl'))) as running:
        browser.get(running.url + '/')
        _, plain = assert_shows_api_image(browser, running)
        assert browser.find_element(By.ID, 'transform').is_displayed()
        browser.find_element(By.ID, 'rotate').send_keys(*[Keys.ARROW_RIGHT] * 15)
        browser.find_element(By.ID, 'translate-x').send_keys(*[Keys.ARROW_RIGHT] * 20)
        query, moved = assert_shows_api_image(browser, running)
    assert urllib.parse.parse_qs(query)['rotate'] == ['15'] and urllib.parse.parse_qs(query)['translate'] == ['0.2,0']
    assert np.abs(moved - plain).mean() > 1
