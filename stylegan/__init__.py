"""StyleGAN2 and StyleGAN3 in PyTorch: networks, loading of checkpoints and release pickles."""
from stylegan.checkpoint import load_network, save_network
from stylegan.legacy import NetworkFileError

__all__ = ['load_network', 'save_network', 'NetworkFileError']
