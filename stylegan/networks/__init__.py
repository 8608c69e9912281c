"""The networks: StyleGAN2 (`stylegan2.py`) and StyleGAN3 (`stylegan3.py`), with the releases'
constructor arguments and state_dict keys, and the layers they share (`layers.py`).

May import: torch, numpy, scipy and `ops`. Knows nothing of checkpoints, data or training."""
from stylegan.networks import stylegan2, stylegan3

# The classes a checkpoint may name. Loading looks names up here; it never imports a name from a file.
ARCHITECTURES = {
    'stylegan2.Generator': stylegan2.Generator,
    'stylegan2.Discriminator': stylegan2.Discriminator,
    'stylegan3.Generator': stylegan3.Generator,
}


def architecture_name(module):
    """The ARCHITECTURES key of a network instance, e.g. 'stylegan3.Generator'."""
    for name, cls in ARCHITECTURES.items():
        if type(module) is cls:
            return name
    raise ValueError(f'{type(module).__name__} is not one of the saveable architectures {sorted(ARCHITECTURES)}')
