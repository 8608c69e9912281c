"""What a user watches during training, all written into the run folder.

    run.py        RunMonitor: log.txt, the tick line, stats.jsonl, metric-*.jsonl, TensorBoard
    stats.py      StatsCollector: per-tick statistics, averaged over ranks
    grid.py       reals.png / fakes*.png image grids
    plots.py      plots.png, redrawn from stats.jsonl and the metric files
    resources.py  CPU and GPU memory figures

May import: torch, matplotlib, `stylegan.files`, `stylegan.durations`. Nothing else of the
project: the training loop calls the monitor, never the other way round.
"""
from stylegan.training.monitor.run import RunMonitor, format_duration, format_tick_line
from stylegan.training.monitor.grid import setup_snapshot_image_grid
from stylegan.training.monitor.stats import StatsCollector

__all__ = ['RunMonitor', 'StatsCollector', 'setup_snapshot_image_grid', 'format_duration', 'format_tick_line']
