"""Work sharing across the ranks of a distributed run, with results independent of the rank count.

Items 0..N-1 are cut into batches of a fixed size; batch k belongs to rank k % num_gpus. Each
rank's random numbers are drawn from a generator seeded by the batch index (`batch_rng`), and
`gather_rows` puts every rank's rows back in item order, so an 8-rank run does an eighth of the
work per rank and returns bit for bit what a 1-rank run returns.
"""
import contextlib

import torch


def rank_batches(num_items, batch_size, rank=0, num_gpus=1):
    """[(batch index, start, stop)] of the batches that `rank` processes."""
    num_batches = -(-num_items // batch_size)
    return [(k, k * batch_size, min((k + 1) * batch_size, num_items)) for k in range(rank, num_batches, num_gpus)]


@contextlib.contextmanager
def batch_rng(seed, batch_index, device):
    """Seed torch's global generators for one batch, restoring them afterwards; everything random in
    the block (latents, labels, noise inputs of the networks) then depends on (seed, batch) only."""
    devices = [device] if torch.device(device).type == 'cuda' else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed * 1_000_003 + batch_index)
        yield


def gather_rows(local_rows, num_items, batch_size, rank=0, num_gpus=1):
    """Concatenate every rank's rows in item order on every rank.

    local_rows: [n_rank, ...], the rows of `rank_batches(num_items, batch_size, rank, num_gpus)` in
    that order, on the device the process group communicates on. Returns [num_items, ...]."""
    if num_gpus == 1:
        return local_rows
    batches = [rank_batches(num_items, batch_size, r, num_gpus) for r in range(num_gpus)]
    counts = [sum(stop - start for _, start, stop in b) for b in batches]
    assert local_rows.shape[0] == counts[rank], f'rank {rank} has {local_rows.shape[0]} rows, expected {counts[rank]}'
    padded = local_rows.new_zeros([max(counts), *local_rows.shape[1:]])
    padded[:counts[rank]] = local_rows
    gathered = [torch.empty_like(padded) for _ in range(num_gpus)]
    torch.distributed.all_gather(gathered, padded)
    pieces, offsets = [], [0] * num_gpus
    for k, start in enumerate(range(0, num_items, batch_size)):
        source, size = k % num_gpus, min(batch_size, num_items - start)
        pieces.append(gathered[source][offsets[source]:offsets[source] + size])
        offsets[source] += size
    return torch.cat(pieces)


def broadcast_flag(flag, device, num_gpus=1):
    """Rank 0's boolean, on every rank."""
    if num_gpus == 1:
        return bool(flag)
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    torch.distributed.broadcast(tensor, src=0)
    return bool(tensor.item())


def broadcast_results(results, device, num_gpus=1):
    """Rank 0's {name: float}, on every rank (other ranks pass the same keys with any values)."""
    if num_gpus == 1:
        return dict(results)
    keys = sorted(results)
    values = torch.tensor([float(results[k]) for k in keys], dtype=torch.float64, device=device)
    torch.distributed.broadcast(values, src=0)
    return dict(zip(keys, values.cpu().tolist()))
