"""The projector: the release's schedule and regulariser, a projection that really finds a generated
image, the release's files read back by generate.py --projected-w, and one-sentence refusals.

Small networks (a 32x32 StyleGAN2 built here, the 32x32 release pickles of tests/data) and randomly
initialised VGG16/LPIPS weight files of the published layout, so nothing is downloaded."""
import io
import os
import shutil
import stat
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

import stylegan
from conftest import DATA_DIR
from metrics import extractors
from metrics import lpips as lpips_lib
from stylegan import generate, projector
from stylegan.networks import stylegan2

RELEASE_SG2 = str(DATA_DIR / 'sg2ada-sg2-32.pkl')
RELEASE_SG3 = str(DATA_DIR / 'sg3repo-sg3t-32.pkl')


@pytest.fixture(scope='module')
def weights_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('weights')
    extractors.write_random_weights('vgg16', folder)
    extractors.write_random_weights('lpips', folder)
    return str(folder)


@pytest.fixture(scope='module')
def lpips(weights_dir):
    return lpips_lib.load_lpips('cpu', weights_dir, download=False)


@pytest.fixture(scope='module')
def small_G():
    """A randomly initialised 32x32 StyleGAN2 whose noise inputs matter (strength 0.05, not 0)."""
    torch.manual_seed(0)
    G = stylegan2.Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
                            mapping_kwargs={'num_layers': 2}, channel_base=1024, channel_max=32)
    for layer in projector.noise_layers(G.synthesis):
        layer.noise_strength.data.fill_(0.05)
    return G.eval().requires_grad_(False)


def write_image(path, pixels, mode=None):
    PIL.Image.fromarray(pixels, mode).save(path)
    return str(path)


def generated_target(G, seed):
    """(w [1, num_ws, w_dim] of a seed, the generator's own image of it as uint8 [1, C, H, W])."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    w = G.mapping(z, None)
    return w, torch.from_numpy(projector.render(G, w)).permute(0, 3, 1, 2)


# --- the release's numbers ---------------------------------------------------------------------------

def test_learning_rate_and_w_noise_follow_the_release_schedule():
    options = projector.ProjectOptions(num_steps=1000)
    assert projector.learning_rate(0, options) == 0                       # ramp-up starts at 0
    assert projector.learning_rate(25, options) == pytest.approx(0.05)    # halfway up the 5% ramp
    assert projector.learning_rate(500, options) == pytest.approx(0.1)
    assert projector.learning_rate(875, options) == pytest.approx(0.05)   # halfway down the 25% cosine
    assert projector.w_noise_scale(0, options, w_std=2.0) == pytest.approx(2.0 * 0.05)
    assert projector.w_noise_scale(375, options, w_std=2.0) == pytest.approx(2.0 * 0.05 * 0.25)
    assert projector.w_noise_scale(750, options, w_std=2.0) == 0


def test_noise_regularization_sums_shifted_correlations_over_the_pyramid_down_to_8x8():
    # A constant map correlates fully with its shifts: 2 terms at each of 32, 16 and 8.
    ones = torch.ones([2, 1, 32, 32])
    torch.testing.assert_close(projector.noise_regularization([ones]), torch.tensor([6.0, 6.0]))
    white = torch.randn([1, 1, 32, 32], generator=torch.Generator().manual_seed(0))
    assert projector.noise_regularization([white]).item() < 0.05
    noise = torch.randn([1, 1, 16, 16]) * 3 + 1
    projector.normalize_noises([noise])
    assert abs(noise.mean().item()) < 1e-5 and noise.square().mean().item() == pytest.approx(1, abs=1e-5)


def test_w_statistics_are_the_mean_and_rms_distance_of_the_release_samples(small_G):
    w_avg, w_std = projector.w_statistics(small_G, 300, chunk=128)
    z = torch.from_numpy(np.random.RandomState(123).randn(300, small_G.z_dim)).float()
    w = small_G.mapping(z, None)[:, 0]
    torch.testing.assert_close(w_avg, w.mean(dim=0, keepdim=True), rtol=1e-5, atol=1e-5)
    assert w_std == pytest.approx((w - w.mean(dim=0)).square().sum(dim=1).mean().sqrt().item(), rel=1e-5)


def test_target_is_centre_cropped_and_resized_with_lanczos(tmp_path):
    pixels = np.random.RandomState(0).randint(0, 256, [40, 60, 3], dtype=np.uint8)  # 60 wide, 40 high
    target = projector.load_target(write_image(tmp_path / 'wide.png', pixels), 32, 3)
    expected = PIL.Image.fromarray(pixels[:, 10:50]).resize((32, 32), PIL.Image.LANCZOS)
    np.testing.assert_array_equal(target, np.asarray(expected))


# --- the projection ----------------------------------------------------------------------------------

def test_distance_falls_and_a_generated_image_is_recovered_closer_than_the_mean_image(small_G, lpips):
    w_true, target = generated_target(small_G, seed=5)
    noise_before = [layer.noise_const.clone() for layer in projector.noise_layers(small_G.synthesis)]
    options = projector.ProjectOptions(num_steps=60, w_avg_samples=1000)
    result = projector.project(small_G, target, lpips, options)

    assert result.ws.shape == (60, 1, small_G.num_ws, small_G.w_dim) and result.distances.shape == (60, 1)
    assert result.distances[-5:].mean() < 0.5 * result.distances[:5].mean()
    # Judged in pixels, which the optimisation never saw: closer than the image of w_avg.
    w_avg, _ = projector.w_statistics(small_G, 1000)
    target_pixels = target.permute(0, 2, 3, 1).numpy().astype(float)
    found = projector.render(small_G, result.ws[-1]).astype(float)
    mean_image = projector.render(small_G, w_avg[:, None].repeat(1, small_G.num_ws, 1)).astype(float)
    assert ((found - target_pixels) ** 2).mean() < 0.5 * ((mean_image - target_pixels) ** 2).mean()
    # One W broadcast to every layer; the caller's network keeps its noise.
    assert torch.equal(result.ws[:, :, :1].expand_as(result.ws), result.ws)
    for layer, before in zip(projector.noise_layers(small_G.synthesis), noise_before):
        assert torch.equal(layer.noise_const, before)


def test_stylegan3_has_no_noise_inputs_and_projects(lpips):
    G = stylegan.load_network(RELEASE_SG3)['G_ema']
    assert projector.noise_layers(G.synthesis) == []
    _, target = generated_target(G, seed=1)
    result = projector.project(G, target, lpips, projector.ProjectOptions(num_steps=2, w_avg_samples=100, w_plus=True))
    assert result.ws.shape == (2, 1, G.num_ws, G.w_dim) and torch.isfinite(result.distances).all()


# --- the command line and generate.py --projected-w -----------------------------------------------------

def test_cli_writes_the_release_files_and_generate_renders_and_style_mixes_the_npz(weights_dir, tmp_path, capsys):
    G = stylegan.load_network(RELEASE_SG2)['G_ema']
    _, target = generated_target(G, seed=3)
    big = np.asarray(PIL.Image.fromarray(target[0].permute(1, 2, 0).numpy()).resize((48, 48)))
    target_path = write_image(tmp_path / 'photo.png', np.pad(big, [(0, 0), (8, 8), (0, 0)]))  # 64 wide, 48 high
    out = tmp_path / 'out'
    assert projector.main(['--network', RELEASE_SG2, '--target', target_path, '--outdir', str(out), '--num-steps', '4',
                           '--w-avg-samples', '200', '--weights-dir', weights_dir, '--offline']) == 0
    assert 'dist ' in capsys.readouterr().err  # the progress bar shows the distance
    assert np.asarray(PIL.Image.open(out / 'target.png')).shape == (32, 32, 3)
    assert (out / 'proj.mp4').exists() or (out / 'proj.gif').exists()
    with np.load(out / 'projected_w.npz') as npz:
        assert npz.files == ['w']
        w = npz['w']
    assert w.shape == (1, G.num_ws, G.w_dim) and w.dtype == np.float32

    rendered = tmp_path / 'rendered'
    assert generate.main(['--network', RELEASE_SG2, '--projected-w', str(out / 'projected_w.npz'),
                          '--outdir', str(rendered)]) == 0
    proj = np.asarray(PIL.Image.open(out / 'proj.png')).astype(int)
    again = np.asarray(PIL.Image.open(rendered / 'proj00.png')).astype(int)
    assert np.abs(again - proj).max() <= 1  # the release's projector truncates where generate.py rounds
    expected = generate.to_uint8(G.synthesis(torch.from_numpy(w), noise_mode='const'))[0]
    np.testing.assert_array_equal(again, expected)

    assert generate.main(['--network', RELEASE_SG2, '--projected-w', str(out / 'projected_w.npz'), '--style-mix', '7',
                          '--styles', '0-3', '--outdir', str(rendered)]) == 0
    figure = np.asarray(PIL.Image.open(rendered / 'style-mix.png')).astype(int)
    mixed = torch.from_numpy(w).clone()
    mixed[:, :4] = G.mapping(torch.from_numpy(np.random.RandomState(7).randn(1, G.z_dim)).float(), None)[:, :4]
    assert np.abs(figure[32:, :32] - expected).max() <= 1                                 # the projection's row
    assert np.abs(figure[32:, 32:] - generate.to_uint8(G.synthesis(mixed, noise_mode='const'))[0]).max() <= 1


def test_several_targets_in_a_batch_with_w_plus_get_a_folder_each_and_one_npz(weights_dir, tmp_path):
    G = stylegan.load_network(RELEASE_SG2)['G_ema']
    paths = [write_image(tmp_path / f'{name}.png', projector.render(G, generated_target(G, seed)[0])[0])
             for name, seed in (('a', 1), ('b', 2), ('c', 3))]
    out = tmp_path / 'out'
    assert projector.main(['--network', RELEASE_SG2, '--target', *paths, '--outdir', str(out), '--num-steps', '3',
                           '--batch', '2', '--w-plus', '--save-video', '0', '--w-avg-samples', '100',
                           '--weights-dir', weights_dir, '--offline', '--quiet']) == 0
    with np.load(out / 'projected_w.npz') as npz:
        ws = npz['w']
    assert ws.shape == (3, G.num_ws, G.w_dim)
    for index, name in enumerate(('00-a', '01-b', '02-c')):
        assert sorted(os.listdir(out / name)) == ['proj.png', 'projected_w.npz', 'target.png']
        with np.load(out / name / 'projected_w.npz') as npz:
            np.testing.assert_array_equal(npz['w'][0], ws[index])
    assert not np.allclose(ws[:, 0], ws[:, -1])  # one W per layer, moved apart by the optimisation
    assert not np.allclose(ws[0], ws[1])         # targets in one batch are optimised separately


# --- videos ------------------------------------------------------------------------------------------

def test_video_streams_every_step_to_ffmpeg_and_falls_back_to_a_gif(small_G, tmp_path, monkeypatch):
    target = np.full([32, 32, 3], 200, dtype=np.uint8)
    ws = small_G.mapping(torch.randn([150, small_G.z_dim]), None)  # [steps, num_ws, w_dim]
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    fake_ffmpeg = bin_dir / 'ffmpeg'  # writes the raw frames it is given to the output path
    fake_ffmpeg.write_text(f'#!/bin/sh\nfor last; do :; done\n{shutil.which("cat")} > "$last"\n')
    fake_ffmpeg.chmod(fake_ffmpeg.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', str(bin_dir))
    path = projector.write_video(small_G, target, ws[:12], str(tmp_path))
    frames = np.fromfile(path, dtype=np.uint8).reshape(12, 32, 64, 3)
    assert (frames[:, :, :32] == 200).all()
    np.testing.assert_array_equal(frames[:, :, 32:], projector.render(small_G, ws[:12]))

    fake_ffmpeg.unlink()
    gif = PIL.Image.open(projector.write_video(small_G, target, ws, str(tmp_path)))
    assert gif.n_frames == projector.GIF_MAX_FRAMES and gif.size == (64, 32)


# --- refusals ----------------------------------------------------------------------------------------

def corrupt(tmp_path):
    (tmp_path / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    return str(tmp_path / 'corrupt.png')


@pytest.mark.parametrize('make_target, message', [
    (lambda tmp_path: str(tmp_path / 'missing.png'), 'does not exist'),
    (corrupt, 'cannot be read as an image'),
    (lambda tmp_path: write_image(tmp_path / 'grey.png', np.zeros([32, 32], np.uint8)), 'give an RGB image'),
    (lambda tmp_path: write_image(tmp_path / 'clear.png', np.zeros([32, 32, 4], np.uint8)), 'transparent pixels'),
])
def test_bad_targets_are_refused_with_one_sentence(make_target, message, weights_dir, tmp_path, capsys):
    out = tmp_path / 'out'
    arguments = ['--network', RELEASE_SG2, '--target', make_target(tmp_path), '--outdir', str(out),
                 '--weights-dir', weights_dir, '--offline', '--num-steps', '2']
    assert projector.main(arguments) == 1
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1 and err.startswith('error: ') and 'Traceback' not in err
    assert not out.exists()


def test_missing_vgg16_weights_name_the_file_and_the_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv('STYLEGAN_METRICS_WEIGHTS', raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch-home'))
    G = stylegan.load_network(RELEASE_SG2)['G_ema']
    target = write_image(tmp_path / 'target.png', projector.render(G, generated_target(G, 0)[0])[0])
    empty = tmp_path / 'empty'
    out = tmp_path / 'out'
    assert projector.main(['--network', RELEASE_SG2, '--target', target, '--outdir', str(out),
                           '--weights-dir', str(empty), '--offline']) == 1
    err = capsys.readouterr().err
    assert "'vgg16-397923af.pth'" in err and str(empty) in err and err.count('\n') == 1
    assert not out.exists()


@pytest.mark.parametrize('arguments, message', [
    (['--seeds', '0', '--projected-w', 'WRONG_SHAPE'], 'exactly one of --seeds and --projected-w'),
    ([], 'exactly one of --seeds and --projected-w'),
    (['--projected-w', 'missing.npz'], 'does not exist'),
    (['--projected-w', 'WRONG_SHAPE'], 'needs w of shape [N, 8, 64]'),
    (['--projected-w', 'HUGE_HEADER'], 'a projected_w.npz holds exactly that many floats'),
    (['--projected-w', 'NOT_NPZ'], 'cannot be read as an .npz file'),
])
def test_generate_refuses_a_bad_projected_w_with_one_sentence(arguments, message, tmp_path, capsys):
    crafted = {'WRONG_SHAPE': tmp_path / 'wrong.npz', 'HUGE_HEADER': tmp_path / 'huge.npz',
               'NOT_NPZ': tmp_path / 'plain.npy'}
    np.savez(crafted['WRONG_SHAPE'], w=np.zeros([1, 5, 64], np.float32))  # another network's num_ws
    np.save(crafted['NOT_NPZ'], np.zeros([1, 8, 64], np.float32))
    # A w.npy whose header claims 20 TB over 2 KB of data: np.load would try to allocate it.
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {'descr': '<f4', 'fortran_order': False, 'shape': (10**10, 8, 64)})
    with zipfile.ZipFile(crafted['HUGE_HEADER'], 'w') as archive:
        archive.writestr('w.npy', npy.getvalue() + bytes(2048))
    arguments = [str(crafted[a]) if a in crafted else str(tmp_path / a) if a.endswith('.npz') else a
                 for a in arguments]
    out = tmp_path / 'out'
    assert generate.main(['--network', RELEASE_SG2, *arguments, '--outdir', str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1 and 'Traceback' not in err
    assert not out.exists()


def test_projector_script_exits_non_zero_on_a_bad_target_without_a_traceback(tmp_path):
    import subprocess
    import sys
    repo = DATA_DIR.parent.parent
    result = subprocess.run([sys.executable, str(repo / 'projector.py'), '--network', RELEASE_SG2, '--target',
                             str(tmp_path / 'nope.png'), '--outdir', str(tmp_path / 'out')],
                            capture_output=True, text=True, cwd=repo)
    assert result.returncode == 1 and result.stderr.startswith('error: ') and 'Traceback' not in result.stderr
    assert "'" + str(tmp_path / 'nope.png') + "' does not exist" in result.stderr


def test_conditional_networks_start_from_the_chosen_class_and_refuse_a_missing_one(lpips, weights_dir, tmp_path,
                                                                                    capsys):
    torch.manual_seed(0)
    G = stylegan2.Generator(z_dim=16, c_dim=3, w_dim=16, img_resolution=16, img_channels=3,
                            mapping_kwargs={'num_layers': 2}, channel_base=256, channel_max=32).eval()
    w_avg = {c: projector.w_statistics(G, 50, class_idx=c)[0] for c in (0, 2)}
    assert not torch.allclose(w_avg[0], w_avg[2])
    result = projector.project(G, torch.zeros([1, 3, 16, 16]), lpips,
                               projector.ProjectOptions(num_steps=1, w_avg_samples=50, class_idx=2))
    torch.testing.assert_close(result.ws[0, 0, :1], w_avg[2])  # the first step has learning rate 0
    network = tmp_path / 'conditional.pt'
    stylegan.save_network(network, G=G, G_ema=G)
    target = write_image(tmp_path / 'target.png', np.zeros([16, 16, 3], np.uint8))
    assert projector.main(['--network', str(network), '--target', target, '--outdir', str(tmp_path / 'out'),
                           '--weights-dir', weights_dir, '--offline']) == 1
    assert 'choose the class to start from with --class=0 ... 2' in capsys.readouterr().err
