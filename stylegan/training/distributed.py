"""One training run over several processes: starting them, their process group, and the few
collectives the loop needs.

Three ways to run, chosen by `launch`:
- one process (`--gpus=1`, no torchrun): rank 0, no process group;
- `--gpus=N` on one machine: N processes spawned here, rendezvous through a file in a temporary folder;
- under `torchrun` (WORLD_SIZE/RANK/LOCAL_RANK set): this process is one rank, rendezvous `env://`,
  so the same train.py trains across machines.
NCCL on CUDA, gloo on the CPU. When one spawned rank dies (an exception or a signal), the others
are stopped and `launch` raises `RankFailure` naming the rank and its error, instead of the others
waiting forever in a collective; under torchrun the process-group timeout bounds that wait.
"""
import datetime
import os
import re
import tempfile
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# How long a collective waits for a missing peer before failing (torchrun across machines).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
_ERROR_FILE = 'error-rank{rank}.txt'


class RankFailure(RuntimeError):
    """A rank of a multi-process run failed; the message names the rank and its error."""


def torchrun_world():
    """(rank, world_size, local_rank) when started by torchrun, else None."""
    if 'RANK' in os.environ and 'WORLD_SIZE' in os.environ and 'LOCAL_RANK' in os.environ:
        return int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ['LOCAL_RANK'])
    return None


def launch(run_rank, num_gpus, device_type):
    """Run `run_rank(rank, world_size, local_rank)` on every rank: in this process, or in `num_gpus`
    spawned ones. `run_rank` must be picklable (a module-level function or a functools.partial)."""
    world = torchrun_world()
    if world is not None:
        rank, world_size, local_rank = world
        init_process_group('env://', rank, world_size, local_rank, device_type)
        try:
            run_rank(rank, world_size, local_rank)
        finally:
            dist.destroy_process_group()
        return
    if num_gpus == 1:
        run_rank(0, 1, 0)
        return
    with tempfile.TemporaryDirectory() as temp_dir:
        init_method = 'file://' + os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        try:
            mp.spawn(_spawned_rank, args=(run_rank, num_gpus, init_method, device_type, temp_dir), nprocs=num_gpus)
        except mp.ProcessRaisedException as error:
            raise RankFailure(_failure_message(error.error_index, temp_dir, error)) from None
        except mp.ProcessExitedException as error:
            cause = f'was killed by signal {error.signal_name}' if error.signal_name else f'exited with code {error.exit_code}'
            raise RankFailure(f'rank {error.error_index} of {num_gpus} {cause}; all ranks were stopped.') from None


def _spawned_rank(rank, run_rank, world_size, init_method, device_type, temp_dir):
    try:
        init_process_group(init_method, rank, world_size, rank, device_type)
        run_rank(rank, world_size, rank)
    except BaseException as error:
        # The parent reads this one line; the traceback still reaches stderr through mp.spawn.
        with open(os.path.join(temp_dir, _ERROR_FILE.format(rank=rank)), 'w', encoding='utf-8') as file:
            file.write(one_line_error(error))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def one_line_error(error):
    """The last line of an error's message: DataLoader workers wrap the original in a traceback."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1].strip() if lines else ''
    name = type(error).__name__
    return text if text.startswith(name) else f'{name}: {text}' if text else name


def _failure_message(rank, temp_dir, error):
    """Name the rank that failed first: when one rank raises, its peers fail next in a collective
    ('connection reset'), and mp.spawn may report one of those; the earliest error file is the cause."""
    written = [os.path.join(temp_dir, name) for name in os.listdir(temp_dir) if re.fullmatch(r'error-rank\d+\.txt', name)]
    if written:
        first = min(written, key=lambda path: os.stat(path).st_mtime_ns)
        rank = int(re.search(r'\d+', os.path.basename(first)).group())
        with open(first, encoding='utf-8') as file:
            text = file.read().strip()
    else:
        text = traceback.format_exception_only(type(error), error)[-1].strip()
    return f'rank {rank} failed ({text}); all ranks were stopped.'


def init_process_group(init_method, rank, world_size, local_rank, device_type):
    if device_type == 'cuda':
        torch.cuda.set_device(local_rank)
    else:
        # CPU ranks share the machine's cores: with more threads than cores in total, torch's
        # intra-op threads spin against each other and a step gets tens of times slower.
        ranks_here = int(os.environ.get('LOCAL_WORLD_SIZE', world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks_here))
    backend = 'nccl' if device_type == 'cuda' else 'gloo'
    dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=COLLECTIVE_TIMEOUT)


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_mean_(tensor):
    """Average `tensor` over ranks in place (no-op in a single process)."""
    if world_size() > 1:
        dist.all_reduce(tensor)
        tensor /= world_size()
    return tensor


def all_reduce_sum_(tensor):
    if world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def average_running_buffers_(module, suffixes=('w_avg', 'magnitude_ema')):
    """Average the running-average buffers (G's w_avg, StyleGAN3's magnitude EMAs) over ranks in one
    all_reduce. Each rank updates them from its share of the batch; since the update is a lerp
    towards the batch mean, the average over equal shares equals the single-process update. (The
    releases left them rank-local and saved rank 0's.)"""
    if world_size() == 1:
        return
    buffers = [b for name, b in module.named_buffers() if name.endswith(suffixes) and b.is_floating_point()]
    if buffers:
        flat = torch.cat([b.flatten() for b in buffers])
        all_reduce_mean_(flat)
        for buffer, values in zip(buffers, flat.split([b.numel() for b in buffers])):
            buffer.copy_(values.reshape(buffer.shape))


def broadcast_module_(module):
    """Copy rank 0's parameters and buffers to every rank."""
    if world_size() > 1:
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.numel() > 0:
                dist.broadcast(tensor.data, src=0)


def all_gather_objects(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank (a list of one in a single process)."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_from_rank0(obj):
    if world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
