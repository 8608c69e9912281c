"""The StyleGAN2-ADA release's command line: --cfg=auto, its own stylegan2 preset (sg2ada-stylegan2),
--subset, --allow-tf32 and --nhwc, with the release's numbers and one-sentence errors."""
import json
import os

import numpy as np
import pytest
import torch

from stylegan.data.dataset import ImageDataset
from stylegan.networks import stylegan2
from stylegan.training import launch
from stylegan.training.config import PRESETS, DatasetInfo, OptionError, TrainOptions, check_options, resolve_config
from stylegan.training.loop import build_run, configure_backends
from test_train_helpers import load_train_script, make_image_folder, tree
from test_train_loop import train_one_step

train_script = load_train_script()


def dataset_info(resolution, size=70000):
    return DatasetInfo(name=f'ffhq-{resolution}', resolution=resolution, num_channels=3, label_dim=0, size=size)


def resolve(resolution=256, size=70000, **kwargs):
    options = TrainOptions(outdir='runs', data='ffhq.zip', **kwargs)
    return resolve_config(options, dataset_info(resolution, size), run_dir='runs/x')


# (resolution, gpus) -> (batch, batch_gpu, mbstd, cbase, lr, gamma, ema), worked out by hand from the
# release's formula: batch = max(min(gpus * min(4096 // res, 32), 64), gpus), mbstd = min(batch // gpus, 4),
# cbase = 32768 from 512 up (else 16384), lr 0.002 at 1024 (else 0.0025), gamma = 0.0002 res^2 / batch.
AUTO_CASES = {
    (256, 1): (16, 16, 4, 16384, 0.0025, 0.8192, 5),
    (1024, 8): (32, 4, 4, 32768, 0.002, 6.5536, 10),
    (32, 4): (64, 16, 4, 16384, 0.0025, 0.0032, 20),
    (512, 2): (16, 8, 4, 32768, 0.0025, 3.2768, 5),
    (1024, 1): (4, 4, 4, 32768, 0.002, 52.4288, 1.25),
}


@pytest.mark.parametrize('resolution, gpus', sorted(AUTO_CASES))
def test_auto_follows_the_release_formula_of_resolution_and_gpu_count(resolution, gpus):
    batch, batch_gpu, mbstd, cbase, lr, gamma, ema = AUTO_CASES[(resolution, gpus)]
    config = resolve(resolution, cfg='auto', gpus=gpus)
    assert config.batch_size == batch and config.batch_gpu == batch_gpu
    assert config.D_kwargs['epilogue_kwargs']['mbstd_group_size'] == mbstd
    assert config.G_kwargs['channel_base'] == config.D_kwargs['channel_base'] == cbase
    assert config.G_opt_kwargs['lr'] == config.D_opt_kwargs['lr'] == lr
    assert config.loss_kwargs['r1_gamma'] == pytest.approx(gamma, rel=1e-12)
    assert config.ema_kimg == ema and config.ema_rampup == 0.05 and config.total_kimg == 25000
    # The rest is StyleGAN2-ADA's defaults: 2 mapping layers, style mixing, path length every 4 steps.
    assert config.G_kwargs['mapping_kwargs'] == {'num_layers': 2} and config.generator == 'stylegan2'
    assert config.loss_kwargs['style_mixing_prob'] == 0.9 and config.loss_kwargs['pl_weight'] == 2
    assert config.G_reg_interval == 4 and config.D_kwargs['architecture'] == 'resnet'
    assert config.G_kwargs['semantics'] == config.D_kwargs['semantics'] == 'sg2ada'  # that release's rules


def test_auto_with_a_given_batch_keeps_gamma_and_groups_of_its_own_batch():
    # The release computes gamma, EMA and mbstd from auto's batch before --batch overrides the batch.
    config = resolve(256, cfg='auto', gpus=1, batch=32)
    assert config.batch_size == 32 and config.batch_gpu == 32
    assert config.loss_kwargs['r1_gamma'] == pytest.approx(0.8192) and config.ema_kimg == 5


def test_sg2ada_stylegan2_preset_has_that_release_numbers_not_the_stylegan3_ones():
    for gpus in (1, 8):
        config = resolve(1024, cfg='sg2ada-stylegan2', gpus=gpus)
        assert config.batch_size == 32 and config.batch_gpu == 4  # batch // 8 reference GPUs
        assert config.loss_kwargs['r1_gamma'] == 10 and config.ema_kimg == 10 and config.ema_rampup is None
        assert config.G_opt_kwargs['lr'] == config.D_opt_kwargs['lr'] == 0.002
        assert config.G_kwargs['mapping_kwargs'] == {'num_layers': 8}
        assert config.G_kwargs['channel_base'] == 32768 and config.D_kwargs['epilogue_kwargs']['mbstd_group_size'] == 4
        assert config.total_kimg == 25000 and config.loss_kwargs['pl_weight'] == 2
    assert PRESETS['sg2ada-stylegan2'].release == 'StyleGAN2-ADA' and PRESETS['sg2ada-stylegan2'].semantics == 'sg2ada'
    assert config.G_kwargs['semantics'] == config.D_kwargs['semantics'] == 'sg2ada'  # that release's rules
    # The StyleGAN3 release's stylegan2 is another preset: batch and gamma required, EMA ramp-up on.
    sg3 = resolve(1024, cfg='stylegan2', gpus=8, batch=32, gamma=10)
    assert sg3.ema_rampup == 0.05 and sg3.G_kwargs['fused_modconv_default'] == 'inference_only'
    with pytest.raises(OptionError, match='--batch is required with --cfg=stylegan2'):
        check_options(TrainOptions(outdir='runs', data='d.zip', cfg='stylegan2'))


def test_subset_is_recorded_and_drawn_with_the_seed():
    config = resolve(256, size=1000, cfg='paper256', subset=100, seed=7)
    assert config.dataset_kwargs['max_size'] == 100 and config.dataset_kwargs['random_seed'] == 7
    assert resolve(256, size=1000, cfg='paper256').dataset_kwargs['max_size'] == 1000


def test_subset_picks_the_release_images(tmp_path):
    # The release: shuffle arange(N) with RandomState(seed), keep the first `subset`, sorted; mirroring after.
    folder = make_image_folder(tmp_path / 'imgs', count=12, size=8)
    files = sorted(os.listdir(folder))
    order = np.arange(12)
    np.random.RandomState(3).shuffle(order)
    expected = sorted(order[:5])
    dataset = ImageDataset(folder, max_size=5, random_seed=3, xflip=True)
    assert len(dataset) == 10
    assert [dataset.raw_index(i) for i in range(10)] == [(int(i), False) for i in expected] + \
        [(int(i), True) for i in expected]
    import PIL.Image
    first = np.asarray(PIL.Image.open(folder / files[expected[0]])).transpose(2, 0, 1)
    assert np.array_equal(dataset[0][0], first)
    other_seed = ImageDataset(folder, max_size=5, random_seed=4)
    assert [other_seed.raw_index(i)[0] for i in range(5)] != [int(i) for i in expected]


@pytest.mark.parametrize('kwargs, message', [
    (dict(subset=0), '--subset=0 must be a positive integer.'),
    (dict(subset=1001), '--subset=1001 is more than the 1000 images of --data=ffhq.zip; give 1 to 1000.'),
    (dict(cfg='auto', gpus=3), '--batch=64 is not divisible by --gpus=3'),
    (dict(cfg='stylegan5'), "--cfg='stylegan5' is not a known configuration; choose one of .*auto"),
])
def test_bad_values_are_one_sentence(kwargs, message):
    with pytest.raises(OptionError, match=message):
        resolve(32, size=1000, **dict(dict(cfg='paper256'), **kwargs))


def test_allow_tf32_is_off_by_default_and_reaches_the_backends():
    assert resolve(cfg='paper256').allow_tf32 is False and resolve(cfg='paper256', allow_tf32=True).allow_tf32
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        configure_backends(True, allow_tf32=True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        configure_backends(True, allow_tf32=False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_nhwc_makes_the_fp16_blocks_channels_last():
    plain, nhwc = resolve(32, cfg='paper256', nhwc=False), resolve(32, cfg='paper256', nhwc=True)
    assert 'fp16_channels_last' not in plain.G_kwargs and nhwc.G_kwargs['fp16_channels_last'] is True
    assert nhwc.D_kwargs['block_kwargs'] == {'freeze_layers': 0, 'fp16_channels_last': True}
    small = dict(channel_base=256, channel_max=16)
    G = stylegan2.Generator(**dict(nhwc.G_kwargs, **small))
    D = stylegan2.Discriminator(**dict(nhwc.D_kwargs, **small))
    # num_fp16_res=4 at 32x32: blocks 8..32 are float16 and channels-last, 4x4 stays float32 and NCHW.
    blocks = (G.synthesis.b32, G.synthesis.b8, G.synthesis.b4)
    assert [block.channels_last for block in blocks] == [True, True, False]
    assert D.b32.channels_last and D.b8.channels_last
    assert G.synthesis.b32.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # StyleGAN3's layers have no channels-last variant; its D (a StyleGAN2 D) still gets it.
    sg3 = resolve(32, cfg='stylegan3-t', batch=32, gamma=2, nhwc=True)
    assert 'fp16_channels_last' not in sg3.G_kwargs and sg3.D_kwargs['block_kwargs']['fp16_channels_last']


def test_nhwc_runs_the_float16_blocks_channels_last_with_the_same_numbers():
    # StyleGAN2-ADA presets run their float16 blocks in float16 on the CPU too (that release's rule),
    # so the channels-last path runs here: forward and backward, as NCHW does.
    results = {}
    for nhwc in (False, True):
        config = resolve(32, cfg='paper256', nhwc=nhwc)
        torch.manual_seed(0)
        small = dict(channel_base=256, channel_max=16)
        G = stylegan2.Generator(**dict(config.G_kwargs, **small)).train()
        D = stylegan2.Discriminator(**dict(config.D_kwargs, **small)).train()
        seen = []
        G.synthesis.b32.conv1.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        img = G(torch.randn(4, 512, generator=torch.Generator().manual_seed(1)), None, noise_mode='const')
        logits = D(img, None)
        logits.sum().backward()
        assert seen[0].dtype == torch.float16
        assert seen[0].is_contiguous(memory_format=torch.channels_last) == nhwc
        results[nhwc] = (img.detach(), logits.detach(), G.synthesis.b32.conv1.weight.grad)
    for plain, nhwc in zip(results[False], results[True]):
        assert torch.allclose(plain, nhwc, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Through train.py.

BASE = ['--device=cpu', '--workers=0', '--metrics=none']


def test_cli_auto_dry_run_names_the_run_with_the_computed_batch(capsys, tmp_path):
    folder = make_image_folder(tmp_path / 'faces', count=6, size=16)
    code = train_script.main([f'--outdir={tmp_path / "runs"}', '--cfg=auto', f'--data={folder}', '--subset=4',
                              '--allow-tf32=1', '--nhwc', '--dry-run', *BASE])
    out = capsys.readouterr().out
    # 16x16 on 1 GPU: batch 32, gamma 0.0002 * 256 / 32.
    assert code == 0 and '00000-auto-faces-gpus1-batch32-gamma0.0016-subset4' in out
    assert "'max_size': 4" in out and 'allow_tf32: True' in out and not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('args, message', [
    (['--subset=7'], '--subset=7 is more than the 6 images of --data='),
    (['--subset=-1'], '--subset=-1 must be a positive integer.'),
    (['--cfg=auto', '--gpus=3'], '--batch=64 is not divisible by --gpus=3'),
])
def test_cli_bad_values_leave_outdir_untouched(capsys, tmp_path, args, message):
    folder = make_image_folder(tmp_path / 'faces', count=6, size=16)
    outdir = tmp_path / 'runs'
    (outdir / '00000-earlier').mkdir(parents=True)
    before = tree(outdir)
    code = train_script.main([f'--outdir={outdir}', '--cfg=tiny', f'--data={folder}', *BASE, *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0 and tree(outdir) == before and os.listdir(outdir) == ['00000-earlier']
    assert len(err) == 1 and err[0].startswith('train.py: error: ') and message in err[0], err


def test_auto_builds_and_trains_one_step(tmp_path):
    folder = make_image_folder(tmp_path / 'faces', count=4, size=16)
    train_one_step(tmp_path / 'runs', folder, cfg='auto', cbase=256, cmax=16, map_depth=2)


def test_subset_run_records_it_in_training_options(tmp_path):
    folder = make_image_folder(tmp_path / 'faces', count=6, size=16)
    options = TrainOptions(outdir=str(tmp_path / 'runs'), cfg='tiny', data=str(folder), device='cpu', workers=0,
                           metrics=[], batch=2, mbstd_group=2, subset=3, seed=5, kimg=0.002, snap=1, img_snap=0,
                           nhwc=True, allow_tf32=True)
    config, options = launch.prepare_training(options)
    launch.create_run_dir(config, options)
    run = build_run(config, rank=0, local_rank=0, options={})
    assert len(run.dataset) == 3 and [run.dataset.raw_index(i)[0] for i in range(3)] == \
        sorted(np.random.RandomState(5).permutation(6)[:3])  # permutation draws as shuffle(arange) does
    run.monitor.close()
    written = json.load(open(os.path.join(config.run_dir, 'training_options.json')))
    assert written['dataset_kwargs']['max_size'] == 3 and written['dataset_kwargs']['random_seed'] == 5
    assert written['options']['subset'] == 3 and written['allow_tf32'] is True and written['options']['nhwc'] is True
    assert os.path.basename(config.run_dir) == '00000-tiny-faces-gpus1-batch2-gamma0.1-subset3'
