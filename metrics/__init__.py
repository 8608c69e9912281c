"""Evaluation of generators: FID, KID, IS, precision/recall, PPL, EQ-T/EQ-R, SWD (see
metrics/metric_main.py); `python -m metrics` is its command line.

May import: torch, torchvision, torch-fidelity, `ops`, `stylegan.networks`, `stylegan.checkpoint`,
`stylegan.legacy`, `stylegan.files`, `stylegan.durations` and `stylegan.data`. Never
`stylegan.training`: training calls the metrics, not the other way round.
"""
from metrics.metric_main import calc_metric, is_valid_metric, report_metric
from metrics.weights import MissingWeightsError

__all__ = ['calc_metric', 'report_metric', 'is_valid_metric', 'MissingWeightsError']
