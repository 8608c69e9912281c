"""The metrics by name, `calc_metric` and the release-format `metric-<name>.jsonl` lines.

Names follow the releases; the sample count in a name may be any number, with `k` for thousands
(`fid50k_full` is the paper's metric, `fid10k_full` / `fid1k_full` / `fid200_full` quicker checks):

| name pattern | result keys | what |
| --- | --- | --- |
| `fid{N}_full` | same | FID, N generated vs all real images (no x-flips) |
| `fid{N}` | same | FID, N generated vs the first N real (legacy) |
| `kid{N}_full`, `kid{N}` | same | KID, 100 subsets of at most 1000, vs up to 1M / N real |
| `pr{N}3_full`, `pr{N}3` | `*_precision`, `*_recall` | precision/recall, 3 neighbours, vs up to 200k / N real |
| `is{N}` | `is{N}_mean`, `is{N}_std` | Inception Score, 10 splits |
| `ppl2_wend`, `ppl_zfull`, `ppl_wfull`, `ppl_zend`, `ppl_wend` | same | PPL, 50k paths (see metrics/ppl.py) |
| `eqt{N}_int`, `eqt{N}_frac`, `eqr{N}` | same | EQ-T, EQ-T_frac, EQ-R in dB (StyleGAN3 only) |
| `swd{N}` | same, and `swd{N}_{res}` per level | sliced Wasserstein distance x1e3 (Progressive GAN); needs no weights |
"""
import dataclasses
import json
import os
import re
import time
import typing

import torch

from metrics import sharding
from metrics.equivariance import compute_equivariance_metrics
from metrics.feature_metrics import compute_fid, compute_is, compute_kid, compute_pr
from metrics.features import MetricOptions
from metrics.ppl import compute_ppl
from metrics.swd import compute_swd
from stylegan.durations import format_duration

RELEASE_METRICS = ('fid50k_full', 'kid50k_full', 'pr50k3_full', 'ppl2_wend', 'eqt50k_int', 'eqt50k_frac', 'eqr50k',
                   'fid50k', 'kid50k', 'pr50k3', 'is50k', 'ppl_zfull', 'ppl_wfull', 'ppl_zend', 'ppl_wend')
DATASET_FULL = {'max_size': None, 'xflip': False}  # the `_full` metrics: every real image, unmirrored
DATASET_UNLIMITED = {'max_size': None}             # legacy metrics: no max_size, mirroring as trained
DATASET_AS_GIVEN = {}                              # metrics that read only labels


class UnknownMetricError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class MetricDefinition:
    compute: typing.Callable[[MetricOptions], dict]  # opts -> {result key: float}
    dataset_overrides: dict
    needs_real_images: bool


def _count(text):
    return int(text[:-1]) * 1000 if text.endswith('k') else int(text)


def _definition_of(name, kind, count, full):
    """The definition of metric `name` of family `kind` ('fid', ...) with sample count `count`."""
    overrides = DATASET_FULL if full else DATASET_UNLIMITED
    if kind == 'fid':
        compute = lambda o: {name: compute_fid(o, max_real=None if full else count, num_gen=count)}
    elif kind == 'kid':
        compute = lambda o: {name: compute_kid(o, max_real=1000000 if full else count, num_gen=count,
                                               num_subsets=100, max_subset_size=1000)}
    elif kind == 'pr':
        def compute(o):
            precision, recall = compute_pr(o, max_real=200000 if full else count, num_gen=count, nhood_size=3,
                                           row_batch_size=10000)
            return {f'{name}_precision': precision, f'{name}_recall': recall}
    elif kind == 'swd':
        compute = lambda o: compute_swd(o, name, count)
        overrides = DATASET_FULL
    elif kind == 'is':
        overrides = DATASET_FULL

        def compute(o):
            mean, std = compute_is(o, num_gen=count, num_splits=10)
            return {f'{name}_mean': mean, f'{name}_std': std}
    else:  # 'eqt_int', 'eqt_frac', 'eqr'
        equivariance_kind = {'eqt_int': 'int', 'eqt_frac': 'frac', 'eqr': 'rot'}[kind]
        compute = lambda o: {name: compute_equivariance_metrics(o, num_samples=count, batch_size=4,
                                                                kinds=(equivariance_kind,))[0]}
        return MetricDefinition(compute, DATASET_AS_GIVEN, needs_real_images=False)
    return MetricDefinition(compute, overrides, needs_real_images=kind != 'is')


_COUNT = r'(?P<count>[1-9]\d*k?)'
_PATTERNS = [
    (re.compile(rf'fid{_COUNT}(?P<full>_full)?'), 'fid'),
    (re.compile(rf'kid{_COUNT}(?P<full>_full)?'), 'kid'),
    (re.compile(rf'pr{_COUNT}3(?P<full>_full)?'), 'pr'),
    (re.compile(rf'is{_COUNT}'), 'is'),
    (re.compile(rf'eqt{_COUNT}_int'), 'eqt_int'),
    (re.compile(rf'eqt{_COUNT}_frac'), 'eqt_frac'),
    (re.compile(rf'eqr{_COUNT}'), 'eqr'),
    (re.compile(rf'swd{_COUNT}'), 'swd'),
]
_PPL = {  # name -> (space, sampling, crop), 50k paths of epsilon 1e-4 in pairs
    'ppl_zfull': ('z', 'full', True), 'ppl_wfull': ('w', 'full', True), 'ppl_zend': ('z', 'end', True),
    'ppl_wend': ('w', 'end', True), 'ppl2_wend': ('w', 'end', False),
}


def metric_definition(name):
    """The definition of a metric name, or UnknownMetricError naming the accepted ones."""
    if name in _PPL:
        space, sampling, crop = _PPL[name]
        compute = lambda o: {name: compute_ppl(o, num_samples=50000, epsilon=1e-4, space=space, sampling=sampling,
                                               crop=crop, batch_size=2)}
        return MetricDefinition(compute, DATASET_AS_GIVEN, needs_real_images=False)
    for pattern, kind in _PATTERNS:
        match = pattern.fullmatch(name)
        if match:
            full = bool(match.groupdict().get('full'))
            return _definition_of(name, kind, _count(match['count']), full)
    raise UnknownMetricError(f"unknown metric '{name}'; accepted are {', '.join(RELEASE_METRICS)}, or these with "
                             f"another sample count (e.g. fid10k_full, kid1k_full, eqt10k_int), or swd{{N}} (e.g. swd1k, no weights needed)")


def is_valid_metric(name):
    try:
        metric_definition(name)
    except UnknownMetricError:
        return False
    return True


def open_dataset(dataset_kwargs, overrides):
    """An ImageDataset from the releases' `training_set_kwargs` (keys other than ImageDataset's
    arguments, such as `class_name`, are ignored), with `overrides` applied."""
    from stylegan.data.dataset import ImageDataset
    accepted = ('path', 'resolution', 'use_labels', 'max_size', 'xflip', 'random_seed')
    kwargs = {k: v for k, v in dict(dataset_kwargs, **overrides).items() if k in accepted}
    return ImageDataset(**kwargs)


def calc_metric(name, G, dataset_kwargs_or_dataset=None, num_gpus=1, rank=0, device='cpu', cache_dir=None,
                weights_dir=None, cache=True, download=True, verbose=False, seed=0, G_kwargs=None, batch_size=64):
    """Compute metric `name` of generator G against a dataset (kwargs of ImageDataset, opened with the
    metric's overrides, or a dataset object, used as given). Call on every rank of a distributed run
    with the same arguments (`batch_size`: images per extractor call per rank, a multiple of 4; the
    result does not depend on it nor on num_gpus); every rank returns rank 0's result as
    {'results': {key: float}, 'metric', 'total_time', 'total_time_str', 'num_gpus'}."""
    definition = metric_definition(name)
    needs_dataset = definition.needs_real_images or G.c_dim > 0  # EQ, PPL, IS read only labels
    dataset = dataset_kwargs_or_dataset if needs_dataset else None
    if isinstance(dataset, dict):
        dataset = open_dataset(dataset, definition.dataset_overrides)
    if needs_dataset and dataset is None:
        raise ValueError(f"metric '{name}' needs a dataset{' for its labels' if G.c_dim else ''}; pass --data")
    device = torch.device(device)
    opts = MetricOptions(G=G, dataset=dataset, device=device, rank=rank, num_gpus=num_gpus, cache=cache,
                         cache_dir=cache_dir, weights_dir=weights_dir, download=download, verbose=verbose,
                         seed=seed, G_kwargs=dict(G_kwargs or {}), batch_size=batch_size)
    start = time.time()
    results = sharding.broadcast_results(definition.compute(opts), device, num_gpus)
    total_time = time.time() - start
    return {'results': results, 'metric': name, 'total_time': total_time, 'total_time_str': format_duration(total_time),
            'num_gpus': num_gpus}


def report_metric(result, run_dir=None, snapshot_pkl=None):
    """The release's jsonl line for `calc_metric`'s result, with `snapshot_pkl` (relative to run_dir)
    and `timestamp`; appended to `<run_dir>/metric-<name>.jsonl` when run_dir is a folder. Returns it."""
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = json.dumps(dict(result, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    if run_dir is not None and os.path.isdir(run_dir):
        with open(os.path.join(run_dir, f"metric-{result['metric']}.jsonl"), 'at') as file:
            file.write(line + '\n')
    return line

