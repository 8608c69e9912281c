"""Evaluation of generators: FID, KID, IS, precision/recall, PPL, EQ-T/EQ-R (see metrics/metric_main.py)."""
from metrics.metric_main import calc_metric, is_valid_metric, report_metric
from metrics.weights import MissingWeightsError

__all__ = ['calc_metric', 'report_metric', 'is_valid_metric', 'MissingWeightsError']
