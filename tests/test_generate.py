"""generate.py: the releases' seeds and images, provenance, grid/interpolation/style-mix outputs, and
one-sentence refusals of bad input."""
import hashlib
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

import stylegan
from conftest import DATA_DIR, RELEASE_FIXTURES
from stylegan.generate import main, make_transform, parse_seeds
from stylegan.networks import stylegan2

REPO = DATA_DIR.parent.parent


def release_images(G, seeds, psi=1.0, c=None):
    """What the releases' generate.py writes for each seed: their z, their uint8 conversion."""
    z = torch.from_numpy(np.concatenate([np.random.RandomState(seed).randn(1, G.z_dim) for seed in seeds])).float()
    img = G(z, None if c is None else c.repeat(len(seeds), 1), truncation_psi=psi, noise_mode='const')
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def release_image(G, seed, psi=1.0, c=None):
    return release_images(G, [seed], psi, c)[0]


def test_seeds_parse_as_in_the_releases():
    assert parse_seeds('0-3,7') == [0, 1, 2, 3, 7]
    assert parse_seeds('5') == [5] and parse_seeds('9,2-3') == [9, 2, 3]


@pytest.mark.parametrize('name', RELEASE_FIXTURES)
def test_each_release_pickle_gives_the_releases_image_for_a_seed_with_provenance(name, tmp_path):
    network = DATA_DIR / f'{name}.pkl'
    assert main(['--network', str(network), '--seeds', '0-1,7', '--trunc', '0.7', '--outdir', str(tmp_path)]) == 0
    G = stylegan.load_network(network)['G_ema']
    for seed, expected in zip((0, 1, 7), release_images(G, (0, 1, 7), psi=0.7)):
        written = PIL.Image.open(tmp_path / f'seed{seed:04d}.png')
        assert np.abs(np.asarray(written).astype(int) - expected).max() <= 1
        assert written.text['seed'] == str(seed) and written.text['truncation-psi'] == '0.7'
        assert written.text['network-sha256'] == hashlib.sha256(network.read_bytes()).hexdigest()


def test_stylegan3_translate_and_rotate_set_the_inverse_transform_as_the_releases(tmp_path):
    network = DATA_DIR / 'sg3repo-sg3t-32.pkl'
    assert main(['--network', str(network), '--seeds', '3', '--translate', '0.2,-0.1', '--rotate', '30',
                 '--outdir', str(tmp_path)]) == 0
    G = stylegan.load_network(network)['G_ema']
    plain = release_image(G, 3)
    G.synthesis.input.transform.copy_(torch.from_numpy(np.linalg.inv(make_transform((0.2, -0.1), 30))))
    written = np.asarray(PIL.Image.open(tmp_path / 'seed0003.png')).astype(int)
    assert np.abs(written - release_image(G, 3)).max() <= 1
    assert np.abs(written - plain).mean() > 2  # the transform did move the image


@pytest.fixture
def conditional_checkpoint(tmp_path):
    torch.manual_seed(0)
    G = stylegan2.Generator(z_dim=16, c_dim=3, w_dim=16, img_resolution=16, img_channels=3,
                            mapping_kwargs={'num_layers': 2}, channel_base=256, channel_max=32)
    path = tmp_path / 'checkpoint.pt'
    stylegan.save_network(path, G=G, G_ema=G)
    return path


def test_checkpoint_of_this_project_generates_the_chosen_class(conditional_checkpoint, tmp_path):
    out = tmp_path / 'out'
    assert main(['--network', str(conditional_checkpoint), '--seeds', '4', '--class', '2', '--outdir', str(out)]) == 0
    G = stylegan.load_network(conditional_checkpoint)['G_ema']
    written = PIL.Image.open(out / 'seed0004.png')
    assert np.abs(np.asarray(written).astype(int) - release_image(G, 4, c=torch.eye(3)[2:3])).max() <= 1
    assert written.text['class'] == '2'


def test_grid_interpolation_and_style_mix_figures(tmp_path):
    network = str(DATA_DIR / 'sg3repo-sg2-32.pkl')
    G = stylegan.load_network(network)['G_ema']
    assert main(['--network', network, '--seeds', '0-5', '--grid', '2x3', '--outdir', str(tmp_path)]) == 0
    grid = np.asarray(PIL.Image.open(tmp_path / 'grid.png')).astype(int)
    assert grid.shape == (64, 96, 3) and np.abs(grid[32:, 64:] - release_image(G, 5)).max() <= 1

    assert main(['--network', network, '--seeds', '0,1,2', '--interp', '--interp-frames', '3', '--outdir', str(tmp_path)]) == 0
    gif = PIL.Image.open(tmp_path / 'interp.gif')
    assert gif.n_frames == 9 and 'seeds=0,1,2' in gif.info['comment'].decode()

    assert main(['--network', network, '--seeds', '0,1', '--style-mix', '5,6,7', '--styles', '0-3',
                 '--outdir', str(tmp_path)]) == 0
    figure = np.asarray(PIL.Image.open(tmp_path / 'style-mix.png')).astype(int)
    assert figure.shape == (96, 128, 3) and figure[:32, :32].max() == 0
    assert np.abs(figure[:32, 32:64] - release_image(G, 5)).max() <= 1   # column seed along the top
    assert np.abs(figure[64:, :32] - release_image(G, 1)).max() <= 1     # row seed down the left
    z = torch.from_numpy(np.random.RandomState(1).randn(1, G.z_dim)).float()
    ws = G.mapping(z, None)
    ws[:, :4] = G.mapping(torch.from_numpy(np.random.RandomState(7).randn(1, G.z_dim)).float(), None)[:, :4]
    mixed = (G.synthesis(ws, noise_mode='const').permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0]
    assert np.abs(figure[64:, 96:] - mixed.numpy()).max() <= 1


def test_watermark_option_marks_the_png(tmp_path):
    from stylegan import watermark
    network = str(DATA_DIR / 'sg2ada-sg2-32.pkl')
    assert main(['--network', network, '--seeds', '0,1', '--watermark', '--outdir', str(tmp_path)]) == 0
    for seed in (0, 1):
        written = PIL.Image.open(tmp_path / f'seed{seed:04d}.png')
        assert watermark.is_marked(np.asarray(written)) and written.text['watermark'] == 'yes'


@pytest.mark.parametrize('arguments, message', [
    (['--network', 'missing.pkl'], 'does not exist'),
    (['--network', str(DATA_DIR / 'README.md')], 'not a network pickle'),
    (['--network', str(DATA_DIR / 'sg2ada-sg2-32.pkl'), '--class', '1'], 'unconditional'),
    (['--network', str(DATA_DIR / 'sg2ada-sg2-32.pkl'), '--translate', '0.1,0'], 'need a StyleGAN3 network'),
    (['--network', str(DATA_DIR / 'sg3repo-sg2-32.pkl'), '--rotate', '10'], 'need a StyleGAN3 network'),
    (['--network', str(DATA_DIR / 'sg3repo-sg2-32.pkl'), '--grid', '3x3'], 'one seed per cell'),
])
def test_bad_input_is_refused_with_one_sentence(arguments, message, tmp_path, capsys):
    assert main(arguments + ['--seeds', '0-1', '--outdir', str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1 and 'Traceback' not in err
    assert not (tmp_path / 'out').exists()


def test_class_must_exist_and_be_given_for_a_conditional_network(conditional_checkpoint, tmp_path, capsys):
    assert main(['--network', str(conditional_checkpoint), '--seeds', '0', '--class', '3', '--outdir', str(tmp_path)]) == 1
    assert 'out of range; this network has classes 0 ... 2' in capsys.readouterr().err
    assert main(['--network', str(conditional_checkpoint), '--seeds', '0', '--outdir', str(tmp_path)]) == 1
    assert 'choose one with --class' in capsys.readouterr().err


def test_generate_py_script_exits_non_zero_on_a_bad_network(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / 'generate.py'), '--network', str(tmp_path / 'nope.pkl'),
                             '--seeds', '0', '--outdir', str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1 and result.stderr.startswith('error: ') and 'Traceback' not in result.stderr
