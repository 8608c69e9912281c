"""Features of generated and of real images, shared across ranks, with the real ones cached.

Every function here is called on every rank of a distributed run with the same arguments; each
rank processes its share of the batches (`sharding.rank_batches`) and all ranks receive all rows.
"""
import dataclasses
import typing

import numpy as np
import torch

from metrics import cache as cache_lib
from metrics import sharding
from metrics.extractors import FeatureExtractor, load_extractor
from metrics.formulas import mean_and_covariance

GEN_BATCH = 4  # images per generator call (the releases' batch_gen); the unit of random seeding


@dataclasses.dataclass
class MetricOptions:
    """Everything a metric reads besides its own parameters."""
    G: torch.nn.Module
    dataset: typing.Any = None              # ImageDataset-like: len(), ds[i] -> (uint8 [C,H,W], label), get_label
    device: torch.device = torch.device('cpu')
    rank: int = 0
    num_gpus: int = 1
    cache: bool = True                      # read/write the real-features cache
    cache_dir: typing.Optional[str] = None  # None: cache.default_cache_dir()
    weights_dir: typing.Optional[str] = None
    download: bool = True                   # may fetch missing extractor weights
    verbose: bool = False
    seed: int = 0                           # of latents, labels, noise and the metrics' own random draws
    batch_size: int = 64                    # images per extractor call and per rank; a multiple of GEN_BATCH
    G_kwargs: dict = dataclasses.field(default_factory=dict)  # extra arguments of G's forward

    def extractor(self, key, layer):
        return load_extractor(key, layer, self.device, self.weights_dir, self.download, self.verbose and self.rank == 0)


def random_labels(opts, batch_size):
    """Conditioning labels [batch, c_dim] drawn uniformly from the dataset's labels (zeros [batch, 0]
    for an unconditional G), from torch's global generator."""
    if opts.G.c_dim == 0:
        return torch.zeros([batch_size, 0], device=opts.device)
    indices = torch.randint(len(opts.dataset), [batch_size]).tolist()
    return torch.from_numpy(np.stack([opts.dataset.get_label(i) for i in indices])).to(opts.device)


def randomize_noise_buffers(G):
    """New constant noise inputs (StyleGAN2's `noise_const` buffers), from torch's global generator."""
    for name, buffer in G.named_buffers():
        if name.endswith('.noise_const'):
            buffer.copy_(torch.randn_like(buffer))


def to_uint8(images):
    """G's output in [-1, 1] [N, C, H, W] -> uint8, rounded as the releases do."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def generate_images(opts, start, stop):
    """uint8 [stop - start, C, H, W]: generated images start..stop-1 (start a multiple of GEN_BATCH).
    Each group of GEN_BATCH images is a function of (seed, group index) only, so the images do not
    depend on the batch size or on the number of ranks."""
    assert start % GEN_BATCH == 0, f'generation must start at a multiple of {GEN_BATCH}, not {start}'
    images = []
    for group_start in range(start, stop, GEN_BATCH):
        size = min(GEN_BATCH, stop - group_start)
        with sharding.batch_rng(opts.seed, group_start // GEN_BATCH, opts.device):
            z = torch.randn([size, opts.G.z_dim], device=opts.device)
            c = random_labels(opts, size)
            images.append(to_uint8(opts.G(z=z, c=c, **opts.G_kwargs)))
    return torch.cat(images)


def real_images(opts, start, stop):
    """uint8 [stop - start, C, H, W]: dataset items start..stop-1."""
    return torch.from_numpy(np.stack([opts.dataset[i][0] for i in range(start, stop)])).to(opts.device)


def _sharded_features(opts, extractor, num_items, images_of_range):
    """float32 [num_items, D] on the CPU, every rank extracting its batches."""
    assert opts.batch_size % GEN_BATCH == 0, f'batch_size must be a multiple of {GEN_BATCH}, not {opts.batch_size}'
    batches = sharding.rank_batches(num_items, opts.batch_size, opts.rank, opts.num_gpus)
    if batches:
        local = torch.cat([extractor(images_of_range(start, stop)) for _, start, stop in batches])
    else:  # more ranks than batches: this rank still joins the gather, with rows of the right width
        local = extractor(images_of_range(0, 1))[:0]
    return sharding.gather_rows(local, num_items, opts.batch_size, opts.rank, opts.num_gpus).cpu()


def generated_features(opts, extractor: FeatureExtractor, num_gen):
    """float32 [num_gen, D]: features of `num_gen` images of G."""
    return _sharded_features(opts, extractor, num_gen, lambda start, stop: generate_images(opts, start, stop))


def real_features(opts, extractor: FeatureExtractor, max_items, what='features'):
    """Features of the first min(max_items, len(dataset)) items (all of them for max_items None):
    {'features': float32 [N, D]}, or with what='stats' {'mu': [D], 'sigma': [D, D]} (float64).
    Rank 0 consults the cache; on a miss all ranks extract and rank 0 writes the entry. Ranks other
    than 0 return None on a hit: only rank 0 computes the metric from them."""
    num_items = len(opts.dataset) if max_items is None else min(max_items, len(opts.dataset))
    path = None
    if opts.cache and opts.rank == 0:
        path = cache_lib.real_cache_path(opts.cache_dir, opts.dataset, num_items, extractor.identity, what)
    entry = cache_lib.load_entry(path) if path else None
    if sharding.broadcast_flag(entry is not None, opts.device, opts.num_gpus):
        return entry
    features = _sharded_features(opts, extractor, num_items, lambda start, stop: real_images(opts, start, stop))
    if what == 'stats':
        mu, sigma = mean_and_covariance(features.numpy())
        entry = {'mu': torch.from_numpy(mu), 'sigma': torch.from_numpy(sigma)}
    else:
        entry = {'features': features}
    if path:
        cache_lib.save_entry(path, entry)
    return entry

