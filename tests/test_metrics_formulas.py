"""The metrics' formulas against independent computations: FID vs scipy's matrix square root,
KID vs a direct MMD, IS split as in the papers, precision/recall on a constructed geometry."""
import numpy as np
import pytest
import scipy.linalg
import torch

from metrics import formulas


def closed_form_frechet(mu1, sigma1, mu2, sigma2):
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


def gaussian_features(rng, n, dim, scales):
    mixing = rng.randn(dim, dim) * scales[None, :]
    return rng.randn(n, dim) @ mixing.T + rng.randn(dim)


@pytest.mark.parametrize('scales', ['well_conditioned', 'nearly_singular'])
def test_frechet_distance_of_gaussian_features_equals_sqrtm_closed_form(scales):
    rng = np.random.RandomState(1)
    dim = 16
    scale = np.ones(dim) if scales == 'well_conditioned' else np.logspace(0, -6, dim)
    a = gaussian_features(rng, 400, dim, scale)
    b = gaussian_features(rng, 300, dim, scale * 1.5)
    mu_a, sigma_a = formulas.mean_and_covariance(a)
    mu_b, sigma_b = formulas.mean_and_covariance(b)
    expected = closed_form_frechet(mu_a, sigma_a, mu_b, sigma_b)
    assert formulas.frechet_distance(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(expected, rel=1e-6)
    if scales == 'nearly_singular':
        assert np.linalg.cond(sigma_a) > 1e10


def test_frechet_distance_is_zero_for_identical_statistics_and_mean_shift_for_equal_covariances():
    rng = np.random.RandomState(2)
    mu, sigma = formulas.mean_and_covariance(rng.randn(50, 6))
    assert formulas.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-9)
    shift = np.arange(6.0)
    assert formulas.frechet_distance(mu + shift, sigma, mu, sigma) == pytest.approx(shift @ shift, rel=1e-6)


def test_covariance_is_unbiased():
    features = np.random.RandomState(3).randn(10, 3)
    _, sigma = formulas.mean_and_covariance(features)
    centred = features - features.mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / 9)


def direct_unbiased_mmd2(x, y):
    kernel = lambda a, b: (a @ b / len(a) + 1) ** 3
    m = len(x)
    same = sum(kernel(x[i], x[j]) + kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    cross = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    return same / (m * (m - 1)) - 2 * cross / m ** 2


def test_kid_is_the_unbiased_mmd_averaged_over_seeded_subsets():
    rng = np.random.RandomState(4)
    gen, real = rng.randn(12, 5), rng.randn(15, 5) + 0.3
    num_subsets, size, seed = 3, 7, 11
    draws = np.random.RandomState(seed)
    expected = np.mean([direct_unbiased_mmd2(gen[draws.choice(12, size, replace=False)],
                                             real[draws.choice(15, size, replace=False)]) for _ in range(num_subsets)])
    assert formulas.kernel_inception_distance(gen, real, num_subsets, size, seed) == pytest.approx(expected, rel=1e-10)


def test_kid_is_unbiased_zero_in_expectation_for_one_distribution():
    rng = np.random.RandomState(5)
    samples = [formulas.unbiased_mmd2(rng.randn(20, 4), rng.randn(20, 4)) for _ in range(300)]
    biased = np.mean([formulas.unbiased_mmd2(x, x) for x in [rng.randn(20, 4)]])
    assert abs(np.mean(samples)) < 3 * np.std(samples) / np.sqrt(len(samples))
    assert biased < 0  # the same sample on both sides: the diagonal is excluded only within sets


def test_inception_score_splits_in_order_and_averages_exp_kl():
    # Two splits of 2 rows: the first split's rows are confident and distinct (IS = 2 classes), the
    # second split's rows are identical (IS = 1).
    confident = 40.0
    logits = np.array([[confident, 0, 0], [0, confident, 0], [1.0, 2, 3], [1.0, 2, 3]])
    mean, std = formulas.inception_score(logits, num_splits=2)
    assert mean == pytest.approx((2 + 1) / 2, rel=1e-6)
    assert std == pytest.approx(0.5, rel=1e-6)


def test_inception_score_of_one_split_equals_the_direct_formula():
    logits = np.random.RandomState(6).randn(9, 4)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0))), axis=1)))
    assert formulas.inception_score(logits, num_splits=1)[0] == pytest.approx(expected, rel=1e-10)


def test_precision_and_recall_count_points_inside_the_other_sets_neighbourhood_balls():
    # Real points on a unit grid; generated points half inside the grid, half far away.
    grid = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2)
    gen = np.concatenate([grid[:8] + 0.1, grid[:8] + 100])
    precision, recall = formulas.precision_recall(gen, grid, nhood_size=3, batch_size=7)
    assert precision == pytest.approx(0.5)
    # Each real point near the 8 inside points is inside their balls; the far ones reach nothing.
    radius = torch.cdist(torch.tensor(gen[:8]), torch.tensor(gen)).kthvalue(4, dim=1).values.numpy()
    distances = np.linalg.norm(grid[:, None] - gen[None, :8], axis=2)
    assert recall == pytest.approx(np.mean((distances <= radius[None]).any(axis=1)))


def test_precision_recall_rounds_to_float16_as_the_releases():
    # Real balls of radius 1 (nhood 1) around 0 and 1; a generated point 1.0004 from 0 is outside in
    # float32 but rounds onto the ball's edge in float16 (spacing 2**-10 near 1), as in the releases.
    real = np.array([[0.0], [1.0], [3.0], [4.0]])
    gen = np.array([[-1.0004], [10.0]])
    assert formulas.precision_recall(gen, real, nhood_size=1, dtype=torch.float32)[0] == 0
    assert formulas.precision_recall(gen, real, nhood_size=1)[0] == 0.5


def test_precision_recall_distances_beyond_float16_are_refused():
    features = np.array([[-40000.0], [40000.0], [0.0]])
    with pytest.raises(ValueError, match='feature distances overflow torch.float16 .*dtype=torch.float32'):
        formulas.precision_recall(features, features, nhood_size=1)
    assert formulas.precision_recall(features, features, nhood_size=1, dtype=torch.float32) == (1.0, 1.0)
