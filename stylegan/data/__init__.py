"""Datasets: reading them for training, and making them from images.

    dataset.py  ImageDataset (a folder or zip in the releases' layout) and the infinite sampler
    sources.py  what the dataset tool converts: image folders and zips, CIFAR-10, MNIST idx files
    tool.py     the dataset tool (`python -m stylegan.dataset_tool`)

May import: numpy, Pillow, torch, `stylegan.legacy` (its restricted numpy unpickler) and
`stylegan.files`. Knows nothing of networks or training.
"""
from stylegan.data.dataset import DatasetError, ImageDataset, InfiniteSampler

__all__ = ['DatasetError', 'ImageDataset', 'InfiniteSampler']
