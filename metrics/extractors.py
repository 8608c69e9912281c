"""Feature extractors of the metrics: torch-fidelity's Inception-v3 and VGG16, loaded from local files.

An extractor maps uint8 images [N, C, H, W] (C = 1 or 3, any size; each network resizes to its own
input size as the papers' TF graphs did) to float32 features [N, D]:

| extractor | layer | D | metrics |
| --- | --- | --- | --- |
| `inception` | `2048` (pool3) | 2048 | FID, KID |
| `inception` | `logits_unbiased` (logits without the output bias, as the releases' IS) | 1008 | IS |
| `vgg16` | `fc2_relu` | 4096 | precision/recall (torch-fidelity's `prc` default) |

`write_random_weights` writes a randomly initialised weights file of the same layout, for tests and
benchmarks on machines that have no published weights.
"""
import dataclasses
import os
import tempfile

import torch
import torchvision
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16

from metrics import weights as weights_lib

EXTRACTOR_CLASSES = {'inception': FeatureExtractorInceptionV3, 'vgg16': FeatureExtractorVGG16}
TORCH_FIDELITY_NAMES = {'inception': 'inception-v3-compat', 'vgg16': 'vgg16'}


@dataclasses.dataclass
class FeatureExtractor:
    """A torch-fidelity extractor asked for one layer, with the identity of its weights."""
    key: str               # 'inception' or 'vgg16'
    layer: str             # torch-fidelity feature name, e.g. '2048'
    module: torch.nn.Module
    weights_sha256: str

    @property
    def identity(self):
        """What the features depend on besides the images: part of the real-statistics cache key."""
        return f'{TORCH_FIDELITY_NAMES[self.key]}/{self.layer}/{self.weights_sha256}'

    @torch.no_grad()
    def __call__(self, images):
        """uint8 [N, C, H, W] -> float32 [N, D]; grey images are repeated to RGB as in the releases."""
        if images.shape[1] == 1:
            images = images.repeat([1, 3, 1, 1])
        (features,) = self.module(images)
        return features


def load_extractor(key, layer, device, weights_dir=None, download=True, verbose=False):
    """The `key` extractor ('inception' or 'vgg16') on `device`, reading its weights file."""
    path = weights_lib.weights_path(key, weights_dir, download=download, verbose=verbose)
    what = weights_lib.WEIGHTS_FILES[key].what
    weights_lib.load_state_dict_file(path, what)  # refuses pickles that would run code, before torch-fidelity loads it
    try:
        module = EXTRACTOR_CLASSES[key](TORCH_FIDELITY_NAMES[key], [layer], feature_extractor_weights_path=path)
    except RuntimeError as error:  # load_state_dict: missing/unexpected keys or shapes
        raise weights_lib.MissingWeightsError(
            f"{what} weights file '{path}' does not fit the network ({str(error).splitlines()[0]}); "
            f"replace it with '{weights_lib.WEIGHTS_FILES[key].file_name}' as published.") from None
    module = module.to(device).eval().requires_grad_(False)
    return FeatureExtractor(key, layer, module, weights_lib.file_sha256(path))


def random_state_dict(key, seed=0):
    """A randomly initialised state dict in the layout of weights file `key`, with variance-preserving
    (He) initialisation so that features stay O(1) through the deep networks."""
    generator = torch.Generator().manual_seed(seed)
    if key == 'lpips':
        channels = [64, 128, 256, 512, 512]
        return {f'lin{k}.model.1.weight': torch.rand([1, c, 1, 1], generator=generator) / c
                for k, c in enumerate(channels)}
    if key == 'vgg16':
        module = torchvision.models.vgg16(weights=None)
    else:
        module = _UnloadedInception()
    state = module.state_dict()
    for name, tensor in state.items():
        if name.endswith('weight') and tensor.ndim >= 2:  # conv [O, I, kh, kw] or linear [O, I]
            fan_in = tensor[0].numel()
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2 / fan_in) ** 0.5)
        elif name.endswith('bias'):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.01)
    return state


def write_random_weights(key, folder, seed=0):
    """Write `random_state_dict(key)` under the published file name into `folder`; returns the path."""
    path = os.path.join(os.fspath(folder), weights_lib.WEIGHTS_FILES[key].file_name)
    torch.save(random_state_dict(key, seed), path)
    return path


class _UnloadedInception(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception with PyTorch's default initialisation. Its constructor always loads
    a weights file, so it is given an empty one and the loading is skipped."""

    def __init__(self):
        with tempfile.TemporaryDirectory() as folder:
            empty = os.path.join(folder, 'empty.pth')
            torch.save({}, empty)
            super().__init__(TORCH_FIDELITY_NAMES['inception'], ['2048'], feature_extractor_weights_path=empty)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None
