"""Snapshot image grids: which training images fill `reals.png`, and how a batch becomes one PNG.

The grid's size and the choice of images follow the releases, so a run here and a run of the
release on the same dataset show the same `reals.png`: as many cells as fit a 7680x4320 canvas,
at least 7x4 and at most 32x32; random images when unlabelled, one class per row (classes in
ascending order, cycling) when labelled.
"""

import numpy as np
import PIL.Image
import torch

from stylegan.files import atomic_write

GRID_CANVAS = (7680, 4320)  # pixels (width, height) the grid aims to fill
GRID_MIN_CELLS = (7, 4)     # (columns, rows)
GRID_MAX_CELLS = 32
PIL_MODES = {1: 'L', 3: 'RGB', 4: 'RGBA'}


def snapshot_grid_size(image_shape):
    """(columns, rows) of the snapshot grid for images of shape [C, H, W]."""
    _, height, width = image_shape
    columns = int(np.clip(GRID_CANVAS[0] // width, GRID_MIN_CELLS[0], GRID_MAX_CELLS))
    rows = int(np.clip(GRID_CANVAS[1] // height, GRID_MIN_CELLS[1], GRID_MAX_CELLS))
    return columns, rows


def setup_snapshot_image_grid(dataset, random_seed=0):
    """Pick the training images shown in `reals.png` and paired with the fixed latents of `fakes*.png`.

    Returns ((columns, rows), images uint8 [N, C, H, W], labels [N, label_dim]) with N = columns * rows,
    cells in row-major order. Uses `len(dataset)`, `dataset[i] -> (image, label)`, `image_shape`,
    `has_labels` and, when labelled, `get_label(i)`."""
    columns, rows = snapshot_grid_size(dataset.image_shape)
    rng = np.random.RandomState(random_seed)
    if dataset.has_labels:
        indices = _class_rows(dataset, columns, rows, rng)
    else:
        indices = _random_cells(len(dataset), columns * rows, rng)
    images, labels = zip(*(dataset[i] for i in indices))
    images = np.stack([np.asarray(image) for image in images])
    labels = np.stack([np.asarray(label) for label in labels])
    return (columns, rows), images, labels


def _random_cells(num_images, num_cells, rng):
    order = list(range(num_images))
    rng.shuffle(order)
    return [order[i % num_images] for i in range(num_cells)]


def _class_rows(dataset, columns, rows, rng):
    # A one-hot label read back to front sorts class 0 first, so the rows come in class order;
    # for vector labels this is the release's order of raw labels as well.
    groups = {}
    for idx in range(len(dataset)):
        key = tuple(np.asarray(dataset.get_label(idx)).flat[::-1])
        groups.setdefault(key, []).append(idx)
    keys = sorted(groups)
    for key in keys:
        rng.shuffle(groups[key])
    indices = []
    for row in range(rows):
        key = keys[row % len(keys)]
        members = groups[key]
        indices += [members[col % len(members)] for col in range(columns)]
        # The next row of the same class continues where this one stopped.
        groups[key] = members[columns % len(members):] + members[:columns % len(members)]
    return indices


def to_uint8_images(images):
    """uint8 [N, C, H, W] from a tensor or array: uint8 is taken as is; floats are read in [-1, 1]
    (generator output), rounded and clipped."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    pixels = (images.astype(np.float32) + 1) * (255 / 2)
    return np.rint(pixels).clip(0, 255).astype(np.uint8)


def tile_image_grid(images, grid_size):
    """uint8 [N, C, H, W] with N = columns * rows -> one image uint8 [rows * H, columns * W, C]."""
    columns, rows = grid_size
    num, channels, height, width = images.shape
    if num != columns * rows:
        raise ValueError(f'a {columns}x{rows} grid needs {columns * rows} images, got {num}')
    grid = images.reshape(rows, columns, channels, height, width)
    grid = grid.transpose(0, 3, 1, 4, 2)  # [rows, H, columns, W, C]
    return grid.reshape(rows * height, columns * width, channels)


def save_image_grid(images, path, grid_size):
    """Write images (uint8, or float in [-1, 1]; [N, C, H, W] with C in 1, 3, 4) as one PNG grid,
    atomically: a reader never sees a half-written file."""
    grid = tile_image_grid(to_uint8_images(images), grid_size)
    channels = grid.shape[2]
    if channels not in PIL_MODES:
        raise ValueError(f'an image grid needs 1, 3 or 4 channels, got {channels}')
    picture = PIL.Image.fromarray(grid[:, :, 0] if channels == 1 else grid, PIL_MODES[channels])
    atomic_write(path, lambda file: picture.save(file, format='PNG'))
