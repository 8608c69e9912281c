"""PPL as the releases define it, checked with a pluggable distance on a generator linear in W, and
the LPIPS distance it uses by default equal to torch-fidelity's LPIPS with the same weights."""
import numpy as np
import pytest
import torch
import torch_fidelity.sample_similarity_lpips as fidelity_lpips
import torchvision

from metrics import extractors, ppl
from metrics.features import MetricOptions
from metrics.lpips import LPIPS


class LinearToyGenerator(torch.nn.Module):
    """mapping: z -> w = z M (broadcast to 2 ws); synthesis: image = reshape(w A). Linear in W."""
    z_dim = w_dim = 6
    c_dim = 0
    img_resolution = 4
    img_channels = 3

    def __init__(self, scale=1.0):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.M = torch.randn([6, 6], generator=generator) / 6
        self.A = torch.randn([6, 3 * 4 * 4], generator=generator) * scale / 10

    def mapping(self, z, c):
        return (z @ self.M)[:, None, :].repeat([1, 2, 1])

    def synthesis(self, ws, noise_mode, force_fp32):
        return (ws[:, 0] @ self.A).reshape([-1, 3, 4, 4])


def squared_l2(a, b):
    return (a - b).square().sum(dim=[1, 2, 3])


def toy_ppl(G, space='w', sampling='end', num_samples=200):
    opts = MetricOptions(G=G)
    return ppl.compute_ppl(opts, num_samples=num_samples, epsilon=1e-4, space=space, sampling=sampling, crop=False,
                           batch_size=2, distance=squared_l2)


def test_ppl_of_a_generator_linear_in_w_is_the_expected_squared_step():
    # Each value is |(255/2) (w1 - w0) A|^2 with w1 - w0 = (z1 - z0) M ~ N(0, 2 (MA)^T (MA)):
    # its mean is 2 (255/2)^2 |MA|_F^2 (the 1%/99% trimming lowers it a little).
    G = LinearToyGenerator()
    expected = 2 * (255 / 2) ** 2 * (G.M @ G.A).square().sum().item()
    assert toy_ppl(G, num_samples=600) == pytest.approx(expected, rel=0.15)


def test_ppl_in_w_is_the_same_at_the_ends_and_along_the_path_for_a_linear_generator():
    G = LinearToyGenerator()
    assert toy_ppl(G, sampling='full') == pytest.approx(toy_ppl(G, sampling='end'), rel=1e-2)


def test_ppl_scales_with_the_square_of_the_image_change_and_is_zero_for_a_constant_generator():
    assert toy_ppl(LinearToyGenerator(scale=2)) == pytest.approx(4 * toy_ppl(LinearToyGenerator()), rel=1e-2)
    assert toy_ppl(LinearToyGenerator(scale=0)) == 0


def test_trimmed_mean_keeps_values_between_the_lower_1st_and_higher_99th_percentile():
    values = np.random.RandomState(0).permutation(np.concatenate([np.arange(1.0, 999.0), [-1e6, 1e6]]))
    ordered = np.sort(values)
    lo, hi = ordered[int(np.floor(0.01 * 999))], ordered[int(np.ceil(0.99 * 999))]  # rank 9 and rank 990
    assert ppl.trimmed_mean(values) == pytest.approx(np.arange(lo, hi + 1).mean())


def test_images_for_distance_crops_the_face_region_and_scales_to_0_255():
    images = torch.linspace(-1, 1, 16 * 16).reshape(1, 1, 16, 16)
    out = ppl.images_for_distance(images, crop=True)
    assert out.shape == (1, 3, 8, 8)  # rows 6..13, columns 4..11, grey repeated to RGB
    torch.testing.assert_close(out[0, 0], (images[0, 0, 6:14, 4:12] + 1) * 127.5)


def test_slerp_interpolates_along_the_great_circle():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    torch.testing.assert_close(ppl.slerp(a, b, torch.tensor([[0.5]])), torch.tensor([[2 ** -0.5, 2 ** -0.5]]))


def test_lpips_equals_torch_fidelity_lpips_with_the_same_weights(monkeypatch):
    vgg_state, lin_state = extractors.random_state_dict('vgg16'), extractors.random_state_dict('lpips')

    def pretrained_vgg16(**_kwargs):
        vgg = torchvision.models.vgg16(weights=None)
        vgg.load_state_dict(vgg_state)
        return vgg
    monkeypatch.setattr(fidelity_lpips, 'load_state_dict_from_url', lambda *args, **kwargs: dict(lin_state))
    monkeypatch.setattr(fidelity_lpips, 'torchvision_load_pretrained_vgg16', pretrained_vgg16)
    reference = fidelity_lpips.SampleSimilarityLPIPS('lpips-vgg16', sample_similarity_resize=None,
                                                     sample_similarity_dtype=None)

    generator = torch.Generator().manual_seed(1)
    a = torch.rand([2, 3, 32, 32], generator=generator) * 255
    b = (a + torch.randn([2, 3, 32, 32], generator=generator) * 20).clamp(0, 255)
    ours = LPIPS(vgg_state, lin_state)
    torch.testing.assert_close(ours(a, b), reference(a, b), rtol=1e-5, atol=1e-7)
    assert torch.all(ours(a, a) == 0) and torch.all(ours(a, b) > 0)
