"""The package layout is a promise: every module imports only from its own layer or lower ones, the
documented entry points run, and files written before the move to packages still load and resume."""
import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import stylegan
from stylegan.training import launch
from stylegan.training.config import TrainOptions
from stylegan.training.snapshot import read_checkpoint_payload, training_state_of
from test_train_helpers import make_image_folder

REPO = pathlib.Path(__file__).resolve().parent.parent
OLD_SNAPSHOT = REPO / 'tests' / 'data' / 'snapshot-before-layout-move.pt'

# Layers, lowest first (stylegan/__init__.py): a module may import only modules of its layer or lower.
LAYERS = [
    ('ops',),
    ('stylegan.networks',),
    ('stylegan', 'stylegan.safeload', 'stylegan.legacy', 'stylegan.tf_pickles', 'stylegan.checkpoint',
     'stylegan.files', 'stylegan.durations'),
    ('stylegan.data',),
    ('metrics',),
    ('stylegan.training',),
]
TOOLS_LAYER = len(LAYERS)  # generate, watermark, demo, dataset_tool and every other module of stylegan/


def layer_of(module):
    """The layer index of a dotted module name of this project; None for other packages."""
    if module.split('.')[0] not in ('ops', 'stylegan', 'metrics'):
        return None
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + '.')) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    if best is None or (best[1] == len('stylegan') and module != 'stylegan'):
        return TOOLS_LAYER  # a stylegan module outside the listed packages
    return best[0]


def module_name(path):
    parts = list(path.relative_to(REPO).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def imported_modules(path, package):
    """Every module a file imports, lazily inside functions too, as absolute dotted names."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:  # relative: resolve against the file's package
                anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(anchor + ([base] if base else []))
            yield base
            yield from (f'{base}.{alias.name}' for alias in node.names)  # `from stylegan import networks`


def project_modules():
    for root in ('ops', 'stylegan', 'metrics'):
        for path in sorted((REPO / root).rglob('*.py')):
            name = module_name(path)
            package = name if path.name == '__init__.py' else name.rpartition('.')[0]
            yield path, name, package


def test_no_module_imports_a_higher_layer():
    upward = []
    for path, name, package in project_modules():
        own = layer_of(name)
        for imported in imported_modules(path, package):
            layer = layer_of(imported)
            # `from stylegan import X` names a submodule or a name of the root package: judge the submodule.
            if layer is not None and layer > own and not _is_root_package_name(imported):
                upward.append(f'{name} imports {imported}')
    assert not upward, 'imports from a higher layer:\n' + '\n'.join(upward)


def _is_root_package_name(imported):
    """`from stylegan import load_network` yields 'stylegan.load_network': a name, not a module."""
    head, _, tail = imported.partition('.')
    return head == 'stylegan' and '.' not in tail and tail in stylegan.__all__


def test_the_layer_rule_catches_an_upward_import():
    assert layer_of('stylegan.networks.stylegan2') < layer_of('stylegan.training.loop')
    assert layer_of('ops.upfirdn2d') < layer_of('metrics.swd') < layer_of('stylegan.training')
    assert layer_of('stylegan.generate') == TOOLS_LAYER and layer_of('torch') is None


def test_no_prefix_grouped_modules_remain_side_by_side():
    names = [p.stem for p in (REPO / 'stylegan').glob('*.py') if p.stem != '__init__']
    prefixes = {name.split('_')[0] for name in names if '_' in name}
    grouped = sorted(name for name in names for prefix in prefixes
                     if name != prefix and name.startswith(prefix) and sum(n.startswith(prefix) for n in names) > 1)
    assert not grouped, f'modules grouped by a name prefix instead of a package: {grouped}'


@pytest.mark.parametrize('command', [
    [sys.executable, 'train.py', '--help'],
    [sys.executable, 'generate.py', '--help'],
    [sys.executable, '-m', 'metrics', '--help'],
    [sys.executable, '-m', 'stylegan.dataset_tool', '--help'],
    [sys.executable, '-m', 'stylegan.watermark', '--help'],
])
def test_documented_entry_point_runs(command):
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'usage:' in result.stdout


def test_documented_imports_work():
    from stylegan.networks import stylegan2, stylegan3  # noqa: F401  the documented class paths
    assert stylegan.load_network and stylegan.save_network and stylegan2.Generator and stylegan3.Generator
    from stylegan.data import ImageDataset  # noqa: F401


def test_snapshot_written_before_the_move_gives_the_same_images():
    expected = torch.load(OLD_SNAPSHOT.with_name('snapshot-before-layout-move.expected.pt'), weights_only=True)
    G = stylegan.load_network(OLD_SNAPSHOT)['G_ema']
    torch.testing.assert_close(G(expected['z'], None, noise_mode='const'), expected['img'], rtol=0, atol=1e-6)


def test_snapshot_written_before_the_move_resumes(tmp_path, capsys):
    state = training_state_of(read_checkpoint_payload(OLD_SNAPSHOT))
    assert state['loop']['cur_nimg'] == 8 and state['options']['cfg'] == 'tiny'
    data = make_image_folder(tmp_path / 'faces', count=16, size=16)
    options = TrainOptions(outdir=str(tmp_path / 'runs'), cfg='tiny', data=str(data), device='cpu', workers=0,
                           metrics=[], batch=4, tick=0.004, snap=1, kimg=0.012, cbase=256, cmax=16, map_depth=1,
                           resume=str(OLD_SNAPSHOT))
    config, options = launch.prepare_training(options)
    launch.create_run_dir(config, options)
    launch.start_training(config, options)
    rows = [json.loads(line) for line in open(os.path.join(config.run_dir, 'stats.jsonl'))]
    assert 'at kimg 0.008' in capsys.readouterr().out  # continued where the old run stopped
    assert [row['Progress/kimg']['mean'] for row in rows] == [pytest.approx(0.012)]  # one tick, not three
