"""Options, presets and run folders of train.py: the releases' numbers and names, no training."""
import dataclasses
import math

import pytest
import torch

from stylegan.training.config import (PRESETS, DatasetInfo, OptionError, TrainOptions, check_options,
                                   resolve_config, run_description)
from stylegan.training.launch import next_run_id, options_from
from stylegan.training.step import build_phases, ema_beta

FFHQ256 = DatasetInfo(name='ffhq-256x256', resolution=256, num_channels=3, label_dim=0, size=70000)


def resolve(**kwargs):
    options = TrainOptions(outdir='runs', data='ffhq-256x256.zip', **kwargs)
    return resolve_config(options, FFHQ256, run_dir='runs/x')


def test_stylegan3_t_has_the_release_hyperparameters():
    config = resolve(cfg='stylegan3-t', gpus=8, batch=32, gamma=2)
    assert config.G_opt_kwargs == dict(lr=0.0025, betas=[0, 0.99], eps=1e-8)
    assert config.D_opt_kwargs['lr'] == 0.002
    assert config.G_kwargs['mapping_kwargs'] == {'num_layers': 2}
    assert config.G_kwargs['channel_base'] == 32768 and config.G_kwargs['channel_max'] == 512
    assert config.G_kwargs['magnitude_ema_beta'] == 0.5 ** (32 / 20000)
    assert config.ema_kimg == 10 and config.ema_rampup == 0.05
    assert config.G_reg_interval is None and config.D_reg_interval == 16
    assert config.loss_kwargs['r1_gamma'] == 2 and config.loss_kwargs['pl_weight'] == 0
    assert config.batch_gpu == 4 and config.total_kimg == 25000
    assert config.ada_target == 0.6 and config.augpipe == 'bgc' and config.ada_kimg == 500
    assert config.G_kwargs['num_fp16_res'] == 4 and config.G_kwargs['conv_clamp'] == 256


def test_stylegan3_r_doubles_generator_channels_and_blurs_d_inputs():
    config = resolve(cfg='stylegan3-r', gpus=8, batch=32, gamma=2, cbase=16384, cmax=256)
    assert config.G_kwargs['channel_base'] == 32768 and config.G_kwargs['channel_max'] == 512
    assert config.D_kwargs['channel_base'] == 16384 and config.D_kwargs['channel_max'] == 256
    assert config.G_kwargs['conv_kernel'] == 1 and config.G_kwargs['use_radial_filters'] is True
    assert config.loss_kwargs['blur_init_sigma'] == 10 and config.loss_kwargs['blur_fade_kimg'] == 200


def test_stylegan2_config_of_the_stylegan3_release():
    config = resolve(cfg='stylegan2', gpus=8, batch=32, gamma=10)
    assert config.G_opt_kwargs['lr'] == 0.002 and config.G_kwargs['mapping_kwargs'] == {'num_layers': 8}
    assert config.loss_kwargs['style_mixing_prob'] == 0.9 and config.loss_kwargs['pl_weight'] == 2
    assert config.loss_kwargs['pl_no_weight_grad'] is True and config.G_reg_interval == 4
    assert config.G_kwargs['fused_modconv_default'] == 'inference_only'


def test_stylegan2_ada_paper_presets_carry_their_published_numbers():
    # cfg_specs of the StyleGAN2-ADA release: (mb, mbstd, fmaps * 32768, lrate, gamma, ema, ramp, map, batch_gpu)
    expected = {'paper256': (64, 8, 16384, 0.0025, 1, 20, None, 8, 8),
                'paper512': (64, 8, 32768, 0.0025, 0.5, 20, None, 8, 8),
                'paper1024': (32, 4, 32768, 0.002, 2, 10, None, 8, 4),
                'cifar': (64, 32, 32768, 0.0025, 0.01, 500, 0.05, 2, 32)}
    for name, (mb, mbstd, cbase, lr, gamma, ema, ramp, depth, batch_gpu) in expected.items():
        config = resolve(cfg=name, gpus=1)
        assert config.batch_size == mb and config.batch_gpu == batch_gpu, name
        assert config.D_kwargs['epilogue_kwargs']['mbstd_group_size'] == mbstd, name
        assert config.G_kwargs['channel_base'] == cbase == config.D_kwargs['channel_base'], name
        assert config.G_opt_kwargs['lr'] == config.D_opt_kwargs['lr'] == lr, name
        assert config.loss_kwargs['r1_gamma'] == gamma and config.ema_kimg == ema and config.ema_rampup == ramp, name
        assert config.G_kwargs['mapping_kwargs']['num_layers'] == depth, name
    cifar = resolve(cfg='cifar', gpus=1)
    assert cifar.D_kwargs['architecture'] == 'orig' and cifar.total_kimg == 100000
    assert cifar.loss_kwargs['pl_weight'] == 0 and cifar.loss_kwargs['style_mixing_prob'] == 0


def test_explicit_options_override_a_preset():
    config = resolve(cfg='paper256', gpus=2, batch=32, gamma=4, glr=0.001, kimg=100)
    assert config.batch_size == 32 and config.batch_gpu == 16  # --batch given: batch // gpus, as StyleGAN2-ADA
    assert config.loss_kwargs['r1_gamma'] == 4 and config.G_opt_kwargs['lr'] == 0.001 and config.total_kimg == 100


def test_precision_sets_the_fp16_scheme_or_disables_it():
    assert resolve(cfg='stylegan2', batch=32, gamma=1, fp32=True).D_kwargs['conv_clamp'] is None
    bf16 = resolve(cfg='stylegan2', batch=32, gamma=1, precision='bf16')
    assert bf16.precision == 'bf16' and bf16.G_kwargs['num_fp16_res'] == 0
    with pytest.raises(OptionError, match='--fp32 contradicts --precision=fp16'):
        resolve(cfg='stylegan2', batch=32, gamma=1, fp32=True, precision='fp16')


def test_fine_tuning_from_a_network_restarts_schedules_like_the_releases():
    options = TrainOptions(outdir='runs', data='d.zip', cfg='stylegan3-r', batch=32, gamma=2)
    tuned = resolve_config(options, FFHQ256, 'runs/x', resume='net.pkl', resume_is_snapshot=False)
    assert tuned.ada_kimg == 100 and tuned.ema_rampup is None and tuned.loss_kwargs['blur_init_sigma'] == 0
    continued = resolve_config(options, FFHQ256, 'runs/x', resume='snap.pt', resume_is_snapshot=True)
    assert continued.ada_kimg == 500 and continued.ema_rampup == 0.05 and continued.loss_kwargs['blur_init_sigma'] == 10


@pytest.mark.parametrize('kwargs, message', [
    (dict(cfg='stylegan9'), "--cfg='stylegan9' is not a known configuration"),
    (dict(cfg='stylegan3-t', gamma=2), '--batch is required with --cfg=stylegan3-t'),
    (dict(cfg='stylegan3-t', batch=32), '--gamma is required'),
    (dict(cfg='stylegan3-t', batch=30, gamma=2, gpus=8), '--batch=30 is not divisible by --gpus=8'),
    (dict(cfg='stylegan3-t', batch=32, gamma=2, gpus=2, batch_gpu=3), 'not a multiple of --gpus=2 times --batch-gpu=3'),
    (dict(cfg='stylegan3-t', batch=32, gamma=2, gpus=8, mbstd_group=8), '--batch-gpu=4 must be a multiple of --mbstd-group=8'),
    (dict(cfg='stylegan3-t', batch=32, gamma=2, aug='always'), "--aug='always' is not accepted"),
    (dict(cfg='stylegan3-t', batch=32, gamma=2, p=1.5), '--p=1.5 is outside'),
])
def test_bad_options_are_one_sentence(kwargs, message):
    with pytest.raises(OptionError, match=message.replace('(', r'\(').replace('[', r'\[')):
        check_options(TrainOptions(outdir='runs', data='d.zip', **kwargs))


def test_conditioning_needs_labels():
    with pytest.raises(OptionError, match='--cond=True needs labels'):
        resolve(cfg='stylegan2', batch=32, gamma=1, cond=True)


def test_run_folder_is_named_and_numbered_like_the_releases(tmp_path):
    options = TrainOptions(outdir=str(tmp_path), cfg='stylegan3-t', data='d.zip', gpus=8, batch=32, gamma=2)
    assert run_description(options, 'ffhq-256x256') == 'stylegan3-t-ffhq-256x256-gpus8-batch32-gamma2'
    assert run_description(dataclasses.replace(options, gamma=8.2, desc='try'), 'afhq') == \
        'stylegan3-t-afhq-gpus8-batch32-gamma8.2-try'
    assert next_run_id(str(tmp_path)) == 0
    (tmp_path / '00007-old').mkdir()
    (tmp_path / '00009-file-not-folder').write_text('')
    assert next_run_id(str(tmp_path)) == 8


def test_lazy_regularization_corrects_adam_like_the_papers():
    G, D = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    phases = build_phases(G, D, dict(lr=0.002, betas=[0, 0.99], eps=1e-8), dict(lr=0.002, betas=[0, 0.99], eps=1e-8),
                          G_reg_interval=4, D_reg_interval=16)
    assert [(p.name, p.interval) for p in phases] == [('Gmain', 1), ('Greg', 4), ('Dmain', 1), ('Dreg', 16)]
    G_group, D_group = phases[0].opt.param_groups[0], phases[2].opt.param_groups[0]
    assert phases[0].opt is phases[1].opt
    assert math.isclose(G_group['lr'], 0.002 * 4 / 5) and math.isclose(G_group['betas'][1], 0.99 ** (4 / 5))
    assert math.isclose(D_group['lr'], 0.002 * 16 / 17) and math.isclose(D_group['betas'][1], 0.99 ** (16 / 17))
    no_reg = build_phases(G, D, dict(lr=0.002, betas=[0, 0.99]), dict(lr=0.002, betas=[0, 0.99]), None, 16)
    assert no_reg[0].name == 'Gboth' and no_reg[0].opt.param_groups[0]['lr'] == 0.002


def test_ema_half_life_and_ramp_up():
    # Half-life ema_kimg: after ema_kimg * 1000 / batch steps the old weights keep half their weight.
    beta = ema_beta(batch_size=32, cur_nimg=10 ** 7, ema_kimg=10, ema_rampup=0.05)
    assert math.isclose(beta ** (10000 / 32), 0.5)
    assert ema_beta(32, cur_nimg=0, ema_kimg=10, ema_rampup=0.05) == 0  # G_ema starts as a copy of G
    ramped = ema_beta(32, cur_nimg=100000, ema_kimg=10, ema_rampup=0.05)  # half-life 5 kimg early on
    assert math.isclose(ramped ** (5000 / 32), 0.5)
    assert ema_beta(32, cur_nimg=0, ema_kimg=10, ema_rampup=None) == beta


def test_resume_reuses_the_snapshot_options_under_explicit_ones():
    stored = dict(cfg='tiny', data='old.zip', batch=8, gamma=0.5, resume='x', outdir='elsewhere')
    options = options_from({'outdir': 'runs', 'resume': 'latest', 'kimg': 9.0}, stored)
    assert (options.cfg, options.data, options.batch, options.gamma) == ('tiny', 'old.zip', 8, 0.5)
    assert options.outdir == 'runs' and options.resume == 'latest' and options.kimg == 9.0


def test_every_preset_resolves():
    for name in PRESETS:
        config = resolve(cfg=name, gpus=1, batch=PRESETS[name].batch or 32, gamma=1)
        assert config.generator in ('stylegan2', 'stylegan3')
