"""The metrics' formulas on features: no networks, no data loading.

Features are float arrays [N, D], one row per image. Conventions follow the releases
(stylegan2-ada-pytorch / stylegan3 `metrics/`) and torch-fidelity, which agree except where noted.
"""
import numpy as np
import torch


def mean_and_covariance(features):
    """[N, D] -> (mean [D], covariance [D, D]) in float64. The covariance is the unbiased one
    (divided by N - 1) as in the papers' TF code and torch-fidelity; the PyTorch releases divide by N,
    a relative difference of 1/N (2e-5 at 50k samples)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6):
    |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    tr((sigma1 sigma2)^(1/2)) is the sum of the square roots of the eigenvalues of sigma1 sigma2, which
    are real and >= 0 for covariance matrices; computing them directly stays accurate when a
    covariance is (nearly) singular, where an explicit matrix square root loses precision."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    diff = mu1 - mu2
    eigenvalues = np.linalg.eigvals(sigma1 @ sigma2)
    trace_sqrt = np.sqrt(eigenvalues.astype(np.complex128)).real.sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def polynomial_kernel(x, y):
    """k(x, y) = (x.y / D + 1)^3, the KID kernel (Binkowski et al. 2018). [M, D], [M, D] -> [M, M]."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def unbiased_mmd2(x, y):
    """Unbiased estimate of the squared MMD between the samples x [M, D] and y [M, D]: the mean of
    k(x_i, x_j) and k(y_i, y_j) over i != j, minus twice the mean of k(x_i, y_j) over all i, j."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return within - 2 * k_xy.sum() / (m * m)


def kernel_inception_distance(gen_features, real_features, num_subsets=100, max_subset_size=1000, seed=2020):
    """KID: the mean of `unbiased_mmd2` over `num_subsets` random subsets of
    m = min(N_gen, N_real, max_subset_size) rows of each set, drawn without replacement
    (generated rows first, then real rows, from one `np.random.RandomState(seed)`)."""
    gen = np.asarray(gen_features, np.float64)
    real = np.asarray(real_features, np.float64)
    m = min(gen.shape[0], real.shape[0], max_subset_size)
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(gen.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        total += unbiased_mmd2(x, y)
    return float(total / num_subsets)


def inception_score(logits, num_splits=10):
    """IS (Salimans et al. 2016): the N rows, in order, are cut into `num_splits` consecutive parts
    [i N / S, (i + 1) N / S); each part scores exp(mean_n KL(p(y|x_n) || mean_n p(y|x_n))).
    Returns (mean, std) over the parts. logits: [N, classes], before softmax."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    probs, log_probs = logits.softmax(dim=1), logits.log_softmax(dim=1)
    n = logits.shape[0]
    scores = []
    for i in range(num_splits):
        part = slice(i * n // num_splits, (i + 1) * n // num_splits)
        p, log_p = probs[part], log_probs[part]
        log_marginal = p.mean(dim=0, keepdim=True).log()
        kl = (p * (log_p - log_marginal)).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


def _pairwise_distances(rows, cols):
    """[M, D], [K, D] -> [M, K] Euclidean distances in the dtype of the features. In float16 always
    through |x|^2 + |y|^2 - 2 x.y (torch's cdist takes that path above 25 rows, so the releases did
    on their batch sizes; torch has no other float16 cdist on the CPU)."""
    mode = 'use_mm_for_euclid_dist' if rows.dtype == torch.float16 else 'use_mm_for_euclid_dist_if_necessary'
    distances = torch.cdist(rows, cols, compute_mode=mode)
    if not torch.isfinite(distances).all():
        raise ValueError(f'feature distances overflow {rows.dtype} (features up to {rows.abs().max().item():g}); '
                         'compute precision/recall with dtype=torch.float32.')
    return distances


def _kth_neighbour_radius(manifold, nhood_size, batch_size):
    """Distance of each manifold row to its nhood_size-th nearest other row (the row itself is 0th),
    selected in float32 and returned in the manifold's dtype, as the releases do."""
    radii = [_pairwise_distances(rows, manifold).float().kthvalue(nhood_size + 1, dim=1).values
             for rows in manifold.split(batch_size)]
    return torch.cat(radii).to(manifold.dtype)


def _fraction_inside(probes, manifold, radii, batch_size):
    """Fraction of probe rows within radii[j] of some manifold row j."""
    inside = [(_pairwise_distances(rows, manifold) <= radii.unsqueeze(0)).any(dim=1) for rows in probes.split(batch_size)]
    return float(torch.cat(inside).double().mean())


def precision_recall(gen_features, real_features, nhood_size=3, batch_size=10000, dtype=torch.float16):
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision is the fraction of generated
    rows inside the real manifold (the union of balls around each real row reaching its
    nhood_size-th nearest real neighbour); recall swaps the roles. Returns (precision, recall).

    As in the releases, the features are rounded to float16 and the distances computed and compared
    in float16 (each radius is selected in float32, then rounded); `dtype=torch.float32` keeps full
    precision; on a small example the two differ by up to 0.0025 (docs/benchmarks.md,
    `bench/precision_recall.py`)."""
    gen = torch.as_tensor(np.asarray(gen_features), dtype=torch.float32).to(dtype)
    real = torch.as_tensor(np.asarray(real_features), dtype=torch.float32).to(dtype)
    precision = _fraction_inside(gen, real, _kth_neighbour_radius(real, nhood_size, batch_size), batch_size)
    recall = _fraction_inside(real, gen, _kth_neighbour_radius(gen, nhood_size, batch_size), batch_size)
    return precision, recall
