"""Training snapshots: a network checkpoint of this project plus everything an exact resume needs.

A snapshot `network-snapshot-<kimg:06d>.pt` is the checkpoint that `stylegan.save_network` writes
(so `stylegan.load_network` reads its networks) with one more top-level key:

    'training_state': {
        'version': 1,
        'loop': {'cur_nimg': int, 'cur_tick': int, 'batch_idx': int, 'data_position': int},
        'G_opt': Adam state_dict, 'D_opt': Adam state_dict,
        'ada': AdaptiveAugment state_dict or None, 'loss': loss state (path-length mean) or {},
        'nonfinite': {...} counters of skipped steps,
        'rng': {'latents': uint8 tensor, 'ranks': [per-rank RNG states]},
        'options': TrainOptions as a dict, 'config': TrainingConfig as a dict,
    }

It loads with `torch.load(weights_only=True)`: only tensors, numbers, strings, lists and dicts
(random number generator states are stored as tensors). It is written atomically (temporary file,
fsync, rename), so a run killed while saving leaves the previous snapshot whole.
"""
import os
import random
import re
import zipfile

import numpy as np
import torch

from stylegan.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, atomic_torch_save, network_record)
from stylegan.legacy import NetworkFileError
from stylegan.safeload import load_torch_file

TRAINING_STATE_VERSION = 1
SNAPSHOT_PATTERN = re.compile(r'^network-snapshot-(\d+)\.pt$')
RUN_DIR_PATTERN = re.compile(r'^(\d+)-')


def snapshot_name(cur_nimg):
    return f'network-snapshot-{cur_nimg // 1000:06d}.pt'


# --- random number generator states as tensors ------------------------------------------------------

def capture_rng_state(device):
    """This process's torch (CPU and, on CUDA, the device's), numpy and Python RNG states."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        'torch': torch.get_rng_state(),
        'numpy_keys': torch.from_numpy(np_keys.astype(np.int64)),
        'numpy_pos': torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        'numpy_gauss': torch.tensor(np_gauss, dtype=torch.float64),
        'python_internal': torch.tensor(py_internal, dtype=torch.int64),
        'python_version': int(py_version),
        'python_gauss': py_gauss,
    }
    if torch.device(device).type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state, device):
    torch.set_rng_state(state['torch'])
    pos, has_gauss = (int(x) for x in state['numpy_pos'])
    np.random.set_state(('MT19937', state['numpy_keys'].numpy().astype(np.uint32), pos, has_gauss,
                         float(state['numpy_gauss'])))
    random.setstate((state['python_version'], tuple(int(x) for x in state['python_internal']), state['python_gauss']))
    if torch.device(device).type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)


# --- writing ----------------------------------------------------------------------------------------

def save_training_snapshot(path, G, D, G_ema, training_state, augment_p=None, training_set_kwargs=None):
    """Write a snapshot atomically. Refuses (ValueError) to write networks holding NaN or Inf, so a
    snapshot on disk is always one a run can continue from."""
    modules = {'G': G, 'D': D, 'G_ema': G_ema}
    for key, module in modules.items():
        bad = [name for name, tensor in module.state_dict().items()
               if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
        if bad:
            raise ValueError(f"{key} holds non-finite values in {bad[0]}; the snapshot '{path}' was not written.")
    payload = {
        'format': CHECKPOINT_FORMAT,
        'version': CHECKPOINT_VERSION,
        'networks': {key: network_record(module) for key, module in modules.items()},
        'augment_p': None if augment_p is None else float(augment_p),
        'training_set_kwargs': None if training_set_kwargs is None else dict(training_set_kwargs),
        'training_state': dict(training_state, version=TRAINING_STATE_VERSION),
    }
    atomic_torch_save(payload, path)


def prune_snapshots(run_dir, keep):
    """Delete all but the `keep` newest network snapshots in `run_dir` (keep=0: delete none)."""
    if keep <= 0:
        return []
    snapshots = sorted(_snapshots_in(run_dir))
    doomed = [path for _kimg, path in snapshots[:-keep]]
    for path in doomed:
        os.remove(path)
    return doomed


# --- reading ----------------------------------------------------------------------------------------

def read_checkpoint_payload(path):
    """The raw dict of a checkpoint/snapshot of this project (weights_only), or None when `path` is
    not a torch.save zip (a release pickle). Raises NetworkFileError for a damaged file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NetworkFileError(f"--resume file '{path}' does not exist or is not a file.")
    if not zipfile.is_zipfile(path):
        return None
    payload = load_torch_file(path, 'expected a checkpoint or snapshot written by this project.')
    if not isinstance(payload, dict) or payload.get('format') != CHECKPOINT_FORMAT:
        raise NetworkFileError(f"'{path}' is a torch.save file but not a checkpoint of this project.")
    return payload


def training_state_of(payload):
    """The training state of a snapshot payload, or None for a bare network checkpoint."""
    state = payload.get('training_state') if isinstance(payload, dict) else None
    if state is None:
        return None
    if not isinstance(state, dict) or state.get('version') != TRAINING_STATE_VERSION:
        version = state.get('version') if isinstance(state, dict) else state
        raise NetworkFileError(f"snapshot training state version {version!r} is not "
                               f"{TRAINING_STATE_VERSION}, the version this project continues from.")
    check_training_state(state)
    return state


def check_training_state(state):
    """Refuse a training state whose parts are not the types and sizes `write_snapshot` stores, so
    that resuming never fails half-way (a wrong RNG state size, a tensor where a number belongs).
    The optimizer states are checked against the run's parameters by `check_optimizer_state`."""
    def expect(ok, where, expected):
        if not ok:
            raise NetworkFileError(f"the snapshot's training_state{where} is not {expected}, so the snapshot is "
                                   f"damaged or was not written by this project.")

    def tensor(value, dtype, numel):
        return isinstance(value, torch.Tensor) and value.dtype == dtype and value.numel() == numel

    for key in ('loop', 'G_opt', 'D_opt', 'loss', 'nonfinite', 'rng', 'options', 'config'):
        expect(isinstance(state.get(key), dict), f"['{key}']", 'a dict')
    expect(all(_is_int(v) for v in state['loop'].values()), "['loop']", 'a dict of integers')
    pl_mean = state['loss'].get('pl_mean')
    expect(pl_mean is None or (isinstance(pl_mean, torch.Tensor) and pl_mean.numel() == 1), "['loss']", 'a pl_mean scalar')
    nonfinite = state['nonfinite']
    expect(_is_int(nonfinite.get('streak')) and _is_int(nonfinite.get('total'))
           and isinstance(nonfinite.get('per_phase'), dict), "['nonfinite']", 'the counters of skipped steps')
    ada = state.get('ada')
    expect(ada is None or (isinstance(ada, dict) and isinstance(ada.get('p'), torch.Tensor) and ada['p'].numel() == 1
                           and isinstance(ada.get('sign_stats'), torch.Tensor) and ada['sign_stats'].numel() <= 16
                           and _is_int(ada.get('num_batches'))), "['ada']", "ADA's state (p, sign_stats, num_batches)")
    rng = state['rng']
    expect(tensor(rng.get('latents'), torch.uint8, torch.Generator().get_state().numel()), "['rng']['latents']",
           "a CPU generator's state")
    ranks = rng.get('ranks')
    expect(isinstance(ranks, list) and len(ranks) <= 4096, "['rng']['ranks']", 'a list of per-rank RNG states')
    for rank, rank_state in enumerate(ranks):
        where = f"['rng']['ranks'][{rank}]"
        expect(isinstance(rank_state, dict), where, 'a dict')
        expect(tensor(rank_state.get('torch'), torch.uint8, torch.get_rng_state().numel())
               and tensor(rank_state.get('numpy_keys'), torch.int64, 624)
               and tensor(rank_state.get('numpy_pos'), torch.int64, 2)
               and tensor(rank_state.get('numpy_gauss'), torch.float64, 1)
               and tensor(rank_state.get('python_internal'), torch.int64, 625)
               and _is_int(rank_state.get('python_version'))
               and (rank_state.get('python_gauss') is None or isinstance(rank_state.get('python_gauss'), float))
               and ('cuda' not in rank_state or (isinstance(rank_state['cuda'], torch.Tensor)
                                                 and rank_state['cuda'].dtype == torch.uint8
                                                 and rank_state['cuda'].numel() <= 1 << 20)),
               where, 'the torch, numpy and Python RNG states capture_rng_state stores')


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_optimizer_state(optimizer, state, what):
    """Refuse an optimizer state_dict that does not fit `optimizer`: other parameter groups or counts,
    or per-parameter tensors (Adam's exp_avg, exp_avg_sq) of another shape than their parameter.
    torch's own load_state_dict would take them and fail at the next step, or allocate what the
    file claims when it casts them."""
    params = [p for group in optimizer.param_groups for p in group['params']]
    groups = state.get('param_groups') if isinstance(state, dict) else None
    per_param = state.get('state') if isinstance(state, dict) else None
    if (not isinstance(groups, list) or not isinstance(per_param, dict)
            or len(groups) != len(optimizer.param_groups)
            or any(not isinstance(g, dict) or not isinstance(g.get('params'), list) or len(g['params']) != len(og['params'])
                   for g, og in zip(groups, optimizer.param_groups))):
        raise NetworkFileError(f"{what} is not the state of an optimizer of {len(params)} parameters in "
                               f"{len(optimizer.param_groups)} group(s), the optimizer this run builds.")
    for index, entry in per_param.items():
        if not (isinstance(index, int) and 0 <= index < len(params) and isinstance(entry, dict)):
            raise NetworkFileError(f"{what} has state for parameter {index!r}; the optimizer has parameters "
                                   f"0 to {len(params) - 1}.")
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.numel() != 1 and value.shape != params[index].shape:
                raise NetworkFileError(f"{what}: '{name}' of parameter {index} has shape {list(value.shape)}, "
                                       f"its parameter {list(params[index].shape)}; the snapshot is of another network.")


def find_latest_snapshot(outdir):
    """The newest snapshot under `outdir`: highest run number, then highest kimg. None if there is none.
    Temporary files of interrupted writes (`*.tmp`) are never candidates."""
    newest_first = snapshots_newest_first(outdir)
    return newest_first[0] if newest_first else None


def snapshots_newest_first(outdir):
    """Paths of the snapshots in the run folders of `outdir`, newest (run number, kimg) first."""
    if not os.path.isdir(outdir):
        return []
    candidates = []
    for entry in os.listdir(outdir):
        match = RUN_DIR_PATTERN.match(entry)
        run_dir = os.path.join(outdir, entry)
        if match and os.path.isdir(run_dir):
            candidates += [((int(match.group(1)), kimg), path) for kimg, path in _snapshots_in(run_dir)]
    return [path for _key, path in sorted(candidates, reverse=True)]


def _snapshots_in(run_dir):
    """[(kimg, path)] of the network snapshots in one run folder."""
    found = []
    for name in os.listdir(run_dir):
        match = SNAPSHOT_PATTERN.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(run_dir, name)))
    return found
