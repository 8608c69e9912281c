"""FID, KID, IS and precision/recall of a generator: features (metrics/features.py) into formulas
(metrics/formulas.py), with the releases' parameters passed in by metrics/metric_main.py.

Each function runs on every rank; the value is computed on rank 0 and other ranks return NaN
(`calc_metric` broadcasts rank 0's result).
"""
from metrics import formulas
from metrics.features import generated_features, real_features

NAN = float('nan')


def compute_fid(opts, max_real, num_gen):
    """FID between `num_gen` generated images and the first `max_real` real ones (None: all)."""
    extractor = opts.extractor('inception', '2048')
    real = real_features(opts, extractor, max_real, what='stats')
    gen = generated_features(opts, extractor, num_gen)
    if opts.rank != 0:
        return NAN
    mu_gen, sigma_gen = formulas.mean_and_covariance(gen.numpy())
    return formulas.frechet_distance(mu_gen, sigma_gen, real['mu'].numpy(), real['sigma'].numpy())


def compute_kid(opts, max_real, num_gen, num_subsets, max_subset_size):
    """KID (unbiased MMD^2, cubic polynomial kernel, averaged over random subsets)."""
    extractor = opts.extractor('inception', '2048')
    real = real_features(opts, extractor, max_real, what='features')
    gen = generated_features(opts, extractor, num_gen)
    if opts.rank != 0:
        return NAN
    return formulas.kernel_inception_distance(gen.numpy(), real['features'].numpy(), num_subsets,
                                              max_subset_size, seed=opts.seed)


def compute_is(opts, num_gen, num_splits):
    """(mean, std) of the Inception Score over `num_splits` consecutive parts of the generated images."""
    extractor = opts.extractor('inception', 'logits_unbiased')
    logits = generated_features(opts, extractor, num_gen)
    if opts.rank != 0:
        return NAN, NAN
    return formulas.inception_score(logits.numpy(), num_splits)


def compute_pr(opts, max_real, num_gen, nhood_size, row_batch_size):
    """(precision, recall) in VGG16 feature space."""
    extractor = opts.extractor('vgg16', 'fc2_relu')
    real = real_features(opts, extractor, max_real, what='features')
    gen = generated_features(opts, extractor, num_gen)
    if opts.rank != 0:
        return NAN, NAN
    return formulas.precision_recall(gen.numpy(), real['features'].numpy(), nhood_size, row_batch_size)

