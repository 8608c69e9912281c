"""FID, KID and IS of a generator against a dataset equal torch-fidelity's `calculate_metrics` on
the same images with the same (randomly initialised) Inception weights, and a 2-rank gloo run
returns the 1-rank result."""
import json
import os
import socket

import numpy as np
import PIL.Image
import pytest
import torch
import torch.multiprocessing as mp
import torch_fidelity

import stylegan
from conftest import DATA_DIR
from metrics import extractors, metric_main
from metrics.feature_metrics import compute_fid, compute_is, compute_kid
from metrics.features import MetricOptions, generate_images
from stylegan.data.dataset import ImageDataset

NUM_IMAGES = 6
NETWORK = DATA_DIR / 'sg2ada-sg2-32.pkl'


def write_pngs(images, folder):
    """uint8 [N, 3, H, W] -> folder/000.png ..."""
    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
        PIL.Image.fromarray(np.asarray(image).transpose(1, 2, 0)).save(os.path.join(folder, f'{i:03d}.png'))
    return str(folder)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('fidelity')
    weights_dir = root / 'weights'
    weights_dir.mkdir()
    inception_path = extractors.write_random_weights('inception', weights_dir)
    real = np.random.RandomState(0).randint(0, 256, [NUM_IMAGES, 3, 32, 32], dtype=np.uint8)
    real_dir = write_pngs(real, root / 'real')
    return dict(root=root, weights_dir=str(weights_dir), inception_path=inception_path, real_dir=real_dir)


@pytest.fixture(scope='module')
def single_rank(setup):
    """This project's FID, KID, IS on one rank, and the generated images as PNGs."""
    G = stylegan.load_network(NETWORK)['G_ema']
    opts = MetricOptions(G=G, dataset=ImageDataset(setup['real_dir']), weights_dir=setup['weights_dir'],
                         cache=False, download=False)
    return dict(
        fid=compute_fid(opts, max_real=None, num_gen=NUM_IMAGES),
        kid=compute_kid(opts, max_real=None, num_gen=NUM_IMAGES, num_subsets=100, max_subset_size=1000),
        inception_score=compute_is(opts, num_gen=NUM_IMAGES, num_splits=2),
        generated_dir=write_pngs(generate_images(opts, 0, NUM_IMAGES), setup['root'] / 'generated'))


def test_fid_kid_is_equal_torch_fidelity_on_the_same_images(setup, single_rank):
    # With subsets as large as the sets, KID's subsets are permutations, so the seeds do not matter.
    reference = torch_fidelity.calculate_metrics(
        input1=single_rank['generated_dir'], input2=setup['real_dir'], cuda=False, fid=True, kid=True, isc=True,
        feature_extractor_weights_path=setup['inception_path'], kid_subsets=3, kid_subset_size=NUM_IMAGES,
        isc_splits=2, samples_shuffle=False, cache=False, verbose=False)

    is_mean, is_std = single_rank['inception_score']
    assert single_rank['fid'] > 0
    assert single_rank['fid'] == pytest.approx(reference['frechet_inception_distance'], rel=1e-6)
    # torch-fidelity evaluates the kernels in float32, this project in float64; KID is a difference of
    # kernel means ~30x larger than itself, so float32 rounding reaches ~2e-5 of it (seen on CI's CPU).
    assert single_rank['kid'] == pytest.approx(reference['kernel_inception_distance_mean'], rel=1e-4)
    assert is_mean == pytest.approx(reference['inception_score_mean'], rel=1e-6)
    assert is_std == pytest.approx(reference['inception_score_std'], rel=1e-5, abs=1e-9)


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _kid_worker(rank, port, setup, out_path):
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    try:
        G = stylegan.load_network(NETWORK)['G_ema']
        result = metric_main.calc_metric(f'kid{NUM_IMAGES}_full', G, {'path': setup['real_dir']}, num_gpus=2,
                                         rank=rank, weights_dir=setup['weights_dir'], cache=False, download=False,
                                         batch_size=4)
        with open(f'{out_path}.{rank}', 'w') as file:
            json.dump(result['results'], file)
    finally:
        torch.distributed.destroy_process_group()


def test_two_rank_gloo_kid_equals_one_rank_kid(setup, single_rank, tmp_path):
    # batch_size 4 over 6 images: rank 0 takes images 0-3, rank 1 images 4-5, of both sets; the
    # generated images depend on neither the batch size nor the rank count.
    out_path = str(tmp_path / 'result')
    mp.spawn(_kid_worker, args=(_free_port(), setup, out_path), nprocs=2, join=True)
    name = f'kid{NUM_IMAGES}_full'
    ranks = [json.load(open(f'{out_path}.{rank}'))[name] for rank in range(2)]
    assert ranks[0] == ranks[1]  # broadcast from rank 0
    assert ranks[0] == pytest.approx(single_rank['kid'], rel=1e-6)
