"""Training statistics: per-step values in, per-tick {num, mean, std} out, summed over all ranks.

The loop calls `collector.add('Loss/G/loss', loss)` as often as it likes; each call folds the values
into three running moments (count, sum, sum of squares) on the values' own device, so adding never
waits for the GPU. Once per tick `summarize()` moves the moments to one device, sums them across
ranks with a single `all_reduce` when a process group is running, and turns them into the release's
`{'num': int, 'mean': float, 'std': float}` records; `reset()` starts the next window.

Moments are float64: a tick of a long run sums millions of per-sample scores, and float32 would
lose the variance in `E[x^2] - E[x]^2`.
"""
import math

import torch
import torch.distributed as dist

MOMENTS_DTYPE = torch.float64


def value_moments(value):
    """[count, sum, sum of squares] (float64) of every element of `value` (tensor, number or sequence),
    on the value's device, without reading the value back to the host."""
    elems = torch.as_tensor(value).detach().flatten().to(MOMENTS_DTYPE)
    return torch.stack([torch.ones_like(elems).sum(), elems.sum(), elems.square().sum()])


def moments_to_record(moments):
    """(count, sum, sum of squares) -> {'num', 'mean', 'std'}; population std, as the release reports it.
    An empty window is NaN, a single value has std 0, a non-finite sum has NaN std."""
    num, total, total_sq = (float(m) for m in moments)
    if num == 0:
        return {'num': 0, 'mean': math.nan, 'std': math.nan}
    mean = total / num
    if num == 1:
        std = 0.0
    elif not math.isfinite(total):
        std = math.nan
    else:
        std = math.sqrt(max(total_sq / num - mean * mean, 0.0))
    return {'num': int(num), 'mean': mean, 'std': std}


def default_sync_device():
    """The device collectives run on: the current CUDA device under NCCL, the CPU otherwise (gloo)."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def distributed_is_running():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class StatsCollector:
    """Running mean and std of named training statistics over a window of steps, on all ranks.

    Every rank must call `summarize()` at the same point (it is a collective when a process group is
    initialised); the names need not agree, the union is reduced and a rank that added nothing for
    a name contributes zero."""

    def __init__(self, sync_device=None):
        self.sync_device = sync_device
        self._moments = {}  # name -> {device: float64 [3]}

    def add(self, name, value):
        """Fold the values of `value` (tensor on any device, number, list) into statistic `name`.
        An empty value only registers the name."""
        per_device = self._moments.setdefault(name, {})
        value = torch.as_tensor(value)
        if value.numel() == 0:
            return
        moments = value_moments(value)
        if moments.device in per_device:
            per_device[moments.device].add_(moments)
        else:
            per_device[moments.device] = moments

    def add0(self, name, value, rank):
        """`add` on rank 0 only, so a value every rank knows (kimg, augment p) counts once."""
        self.add(name, value if rank == 0 else [])

    def names(self):
        return sorted(self._moments)

    def summarize(self):
        """{name: {'num', 'mean', 'std'}} over every value added since the last `reset()`, on all ranks
        together. Names with no values anywhere are left out. Costs one host sync (and, distributed,
        one all_reduce of [names, 3] float64 plus a gather of the name lists)."""
        device = self.sync_device if self.sync_device is not None else default_sync_device()
        names = self._all_rank_names()
        if not names:
            return {}
        moments = torch.stack([self._local_moments(name, device) for name in names])  # [names, 3]
        if distributed_is_running():
            dist.all_reduce(moments, op=dist.ReduceOp.SUM)
        moments = moments.cpu()
        records = {name: moments_to_record(row) for name, row in zip(names, moments)}
        return {name: record for name, record in records.items() if record['num'] > 0}

    def reset(self):
        """Forget all values; the next window starts empty."""
        self._moments.clear()

    def _local_moments(self, name, device):
        total = torch.zeros(3, dtype=MOMENTS_DTYPE, device=device)
        for moments in self._moments.get(name, {}).values():
            total += moments.to(device)
        return total

    def _all_rank_names(self):
        # The all_reduce needs the same rows in the same order on every rank; a name reported by one
        # rank only (a timing on rank 0, say) would otherwise misalign the rows or hang the reduce.
        local = self.names()
        if not distributed_is_running():
            return local
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        return sorted(set().union(*gathered))
