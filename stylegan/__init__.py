"""StyleGAN2 and StyleGAN3 in PyTorch: networks, loading of checkpoints and release pickles.

    networks/      the generators and discriminators (StyleGAN2, StyleGAN3) and their layers
    checkpoint.py  load_network / save_network: this project's checkpoints and release pickles
    legacy.py      the restricted reader of the NVlabs releases' pickles (runs no code from a file)
    tf_pickles.py  TensorFlow-era StyleGAN2 pickles converted by variable name
    safeload.py    the limits every loader applies before it allocates (docs/threat-model.md)
    files.py       atomic file writes;  durations.py  time spans for logs
    data/          datasets: reading them, and the dataset tool that makes them
    training/      options, the loop, loss, ADA, snapshots, ranks, the training monitor
    generate.py    images, grids, interpolations, style mixing (behind the top-level generate.py)
    projector.py   the W of a real image, the release's projector (behind the top-level projector.py)
    serve/         the web explorer and HTTP image server (`python -m stylegan.serve`)
    watermark.py   the invisible provenance mark;  demo.py  `make demo`
    dataset_tool.py  `python -m stylegan.dataset_tool` (code in data/tool.py)

Layers, lowest first; a module imports only from its own layer or lower ones:
`ops` -> `networks` -> `safeload`, `legacy`, `tf_pickles`, `checkpoint`, `files`, `durations` ->
`data` -> `metrics` -> `training` -> the tools (`generate`, `projector`, `serve`, `watermark`,
`demo`, `dataset_tool`). Networks and ops know nothing of training; nothing imports the
command-line scripts.
"""
from stylegan.checkpoint import load_network, save_network
from stylegan.legacy import NetworkFileError

__all__ = ['load_network', 'save_network', 'NetworkFileError']
