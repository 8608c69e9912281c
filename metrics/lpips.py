"""LPIPS distance (Zhang et al. 2018, v0.1 'vgg' linear layers) on float images, for PPL.

Same network and numbers as torch-fidelity's `lpips-vgg16` sample similarity (which PPL in the
releases also computes, through NVlabs' TorchScript VGG16), but built from local weight files and
without its uint8 input requirement: PPL compares images epsilon = 1e-4 apart in latent space, whose
difference would vanish if they were rounded to uint8.
"""
import torch
import torchvision
from torch_fidelity.sample_similarity_lpips import SampleSimilarityLPIPS, normalize_tensor

from metrics import weights as weights_lib

# Ends of the five VGG16 `features` slices whose outputs LPIPS compares: relu1_2, relu2_2, relu3_3,
# relu4_3, relu5_3, with their channel counts.
SLICE_ENDS = (4, 9, 16, 23, 30)
SLICE_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(torch.nn.Module):
    """distance(a, b): a, b float [N, 3, H, W] in [0, 255] -> [N] LPIPS distances."""

    def __init__(self, vgg16_state, lpips_state):
        super().__init__()
        vgg = torchvision.models.vgg16(weights=None)
        vgg.load_state_dict(vgg16_state)
        starts = (0,) + SLICE_ENDS[:-1]
        self.slices = torch.nn.ModuleList(vgg.features[start:end] for start, end in zip(starts, SLICE_ENDS))
        self.lins = torch.nn.ModuleList(torch.nn.Conv2d(c, 1, 1, bias=False) for c in SLICE_CHANNELS)
        for k, lin in enumerate(self.lins):
            lin.weight.data.copy_(lpips_state[f'lin{k}.model.1.weight'])
        self.eval().requires_grad_(False)

    def layer_features(self, images):
        """[N, 3, H, W] in [0, 255] -> five [N, C_k, H_k, W_k], each unit-normalised over channels."""
        x = SampleSimilarityLPIPS.normalize(images)
        features = []
        for block in self.slices:
            x = block(x)
            features.append(normalize_tensor(x))
        return features

    def forward(self, a, b):
        distance = 0
        for lin, fa, fb in zip(self.lins, self.layer_features(a), self.layer_features(b)):
            distance = distance + lin((fa - fb).square()).mean(dim=[1, 2, 3])  # [N, 1, H, W] -> [N]
        return distance


def load_lpips(device, weights_dir=None, download=True, verbose=False):
    """LPIPS on `device` from the 'vgg16' and 'lpips' weights files (see metrics/weights.py)."""
    states = {}
    for key in ('vgg16', 'lpips'):
        path = weights_lib.weights_path(key, weights_dir, download=download, verbose=verbose)
        states[key] = weights_lib.load_state_dict_file(path, weights_lib.WEIGHTS_FILES[key].what)
    try:
        return LPIPS(states['vgg16'], states['lpips']).to(device)
    except (RuntimeError, KeyError) as error:
        raise weights_lib.MissingWeightsError(
            f"the VGG16/LPIPS weights files do not fit the LPIPS network ({str(error).splitlines()[0]}); "
            f"replace them with the published files.") from None
