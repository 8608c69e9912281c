"""`plots.png`: the run's curves over kimg, redrawn from `stats.jsonl` and `metric-*.jsonl`.

Only the files are read, so the plots can be redrawn for any run folder, a finished one or one of
the release's (`python -c "from stylegan.training.monitor.plots import draw_run_plots; draw_run_plots('run')"`).
Drawing uses a bare `Figure` on the Agg canvas: no pyplot state, no window, whatever backend the
user has chosen elsewhere.
"""
import glob
import json
import math
import os
import re

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stylegan.files import atomic_write

# Panels in reading order: title, the statistics drawn as lines, y-axis label.
STAT_PANELS = [
    ('G and D loss', ['Loss/G/loss', 'Loss/D/loss'], 'loss'),
    ('D output', ['Loss/scores/real', 'Loss/scores/fake'], 'logit'),
    ('Regularization', ['Loss/r1_penalty', 'Loss/pl_penalty'], 'penalty'),
    ('Augmentation', ['Progress/augment', 'Loss/signs/real'], 'p, E[sign(D(real))]'),
    ('Speed', ['Timing/sec_per_kimg'], 'sec/kimg'),
]
LEGEND_NAMES = {
    'Loss/G/loss': 'G loss', 'Loss/D/loss': 'D loss',
    'Loss/scores/real': 'D(real)', 'Loss/scores/fake': 'D(fake)',
    'Loss/r1_penalty': 'R1 penalty', 'Loss/pl_penalty': 'path length penalty',
    'Progress/augment': 'augment p', 'Loss/signs/real': 'sign of D(real)',
    'Timing/sec_per_kimg': 'sec/kimg',
}
SHADED_STATS = {'Loss/G/loss', 'Loss/D/loss', 'Loss/scores/real', 'Loss/scores/fake'}
PANEL_SIZE = (6.0, 3.2)  # inches per panel
PANEL_COLUMNS = 2


def read_jsonl(path):
    """The JSON objects of a .jsonl file; a torn last line (a crash mid-write) is skipped."""
    rows = []
    with open(path) as file:
        for line in file:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def stat_series(stats_rows, name):
    """(kimg, mean, std) lists of statistic `name` over the rows of stats.jsonl that hold it."""
    kimg, mean, std = [], [], []
    for row in stats_rows:
        record, progress = row.get(name), row.get('Progress/kimg')
        if not isinstance(record, dict) or not isinstance(progress, dict):
            continue
        kimg.append(progress['mean'])
        mean.append(record['mean'])
        std.append(record.get('std', math.nan))
    return kimg, mean, std


def read_metric_series(run_dir):
    """{metric: {result name: (kimg list, value list)}} from the run's metric-*.jsonl files."""
    series = {}
    for path in sorted(glob.glob(os.path.join(run_dir, 'metric-*.jsonl'))):
        for row in read_jsonl(path):
            kimg = metric_row_kimg(row)
            if kimg is None or not isinstance(row.get('results'), dict):
                continue
            metric = row.get('metric') or os.path.basename(path)[len('metric-'):-len('.jsonl')]
            for key, value in row['results'].items():
                xs, ys = series.setdefault(metric, {}).setdefault(key, ([], []))
                xs.append(kimg)
                ys.append(value)
    return series


def metric_row_kimg(row):
    """kimg of a metric line: its `kimg` field, else the number in its snapshot's file name
    (the release writes only `snapshot_pkl`, e.g. 'network-snapshot-000400.pkl')."""
    if isinstance(row.get('kimg'), (int, float)):
        return row['kimg']
    match = re.search(r'(\d+)\.\w+$', str(row.get('snapshot_pkl') or ''))
    return int(match.group(1)) if match else None


def build_plots_figure(stats_rows, metric_series, ada_target=None):
    """A Figure with one panel per group of statistics present, then one per metric; each panel's
    title names it. Returns None when there is nothing to draw yet."""
    panels = [(title, names, ylabel) for title, names, ylabel in STAT_PANELS
              if any(stat_series(stats_rows, name)[0] for name in names)]
    num_panels = len(panels) + len(metric_series)
    if num_panels == 0:
        return None
    rows = math.ceil(num_panels / PANEL_COLUMNS)
    figure = Figure(figsize=(PANEL_SIZE[0] * PANEL_COLUMNS, PANEL_SIZE[1] * rows), layout='constrained')
    FigureCanvasAgg(figure)
    axes = [figure.add_subplot(rows, PANEL_COLUMNS, i + 1) for i in range(num_panels)]
    for ax, (title, names, ylabel) in zip(axes, panels):
        _draw_stat_panel(ax, stats_rows, title, names, ylabel)
        if title == 'Augmentation' and ada_target is not None:
            ax.axhline(ada_target, color='gray', linestyle='--', linewidth=1, label=f'ADA target {ada_target:g}')
            ax.legend(loc='best', fontsize='small')
    for ax, (metric, results) in zip(axes[len(panels):], sorted(metric_series.items())):
        _draw_metric_panel(ax, metric, results)
    return figure


def _draw_stat_panel(ax, stats_rows, title, names, ylabel):
    for name in names:
        kimg, mean, std = stat_series(stats_rows, name)
        if not kimg:
            continue
        line, = ax.plot(kimg, mean, label=LEGEND_NAMES.get(name, name), linewidth=1.2)
        if name in SHADED_STATS:
            lower = [m - s for m, s in zip(mean, std)]
            upper = [m + s for m, s in zip(mean, std)]
            ax.fill_between(kimg, lower, upper, color=line.get_color(), alpha=0.15, linewidth=0)
    if title == 'Regularization' and _all_positive(ax):
        ax.set_yscale('log')  # R1 and the path length penalty differ by orders of magnitude
    _finish_panel(ax, title, ylabel)


def _draw_metric_panel(ax, metric, results):
    for key, (kimg, values) in sorted(results.items()):
        ax.plot(kimg, values, marker='o', markersize=3, linewidth=1.2, label=key)
    _finish_panel(ax, f'Metric {metric}', metric)


def _all_positive(ax):
    return all(min(line.get_ydata(), default=0) > 0 for line in ax.get_lines())


def _finish_panel(ax, title, ylabel):
    ax.set_title(title)
    ax.set_xlabel('kimg')
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc='best', fontsize='small')


def draw_run_plots(run_dir, ada_target=None, file_name='plots.png'):
    """Redraw `run_dir/plots.png` from the run's stats.jsonl and metric-*.jsonl files (atomically).
    Returns the path written, or None when the run has nothing to plot yet."""
    stats_path = os.path.join(run_dir, 'stats.jsonl')
    stats_rows = read_jsonl(stats_path) if os.path.exists(stats_path) else []
    figure = build_plots_figure(stats_rows, read_metric_series(run_dir), ada_target)
    if figure is None:
        return None
    path = os.path.join(run_dir, file_name)
    atomic_write(path, lambda file: figure.savefig(file, format='png', dpi=100))
    return path
