"""Specification of the StyleGAN3 generator (stylegan/networks/stylegan3.py).

The release fixtures prove faithfulness (same numbers as the NVlabs StyleGAN3 code); the tiny
networks check the properties the architecture promises: shapes, gradients, running averages,
truncation, conditioning and translation equivariance.
"""
import pathlib

import pytest
import torch

from stylegan.legacy import read_release_pickle
from stylegan.networks import stylegan3 as sg3

DATA_DIR = pathlib.Path(__file__).parent / "data"
SG3_FIXTURES = ["sg3repo-sg3t-32", "sg3repo-sg3r-32"]
CONFIG_T = dict()
CONFIG_R = dict(conv_kernel=1, use_radial_filters=True)


def relative_error(out, ref):
    return float((out - ref).norm() / ref.norm())


@pytest.fixture(scope="module", params=SG3_FIXTURES)
def release(request):
    """(release pickle contents, expected outputs) of one StyleGAN3 fixture."""
    data = read_release_pickle(DATA_DIR / f"{request.param}.pkl")
    expected = torch.load(DATA_DIR / f"{request.param}.expected.pt", weights_only=True)
    return data, expected


def build_from_release(record):
    generator = sg3.Generator(**record.init_kwargs).eval()
    generator.load_state_dict(record.state_dict(), strict=True)
    return generator


def tiny_generator(c_dim=0, img_resolution=16, num_layers=4, **kwargs):
    torch.manual_seed(0)
    return sg3.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=img_resolution,
        img_channels=3, channel_base=256, channel_max=8, num_layers=num_layers,
        num_fp16_res=0, **kwargs)


# --- Faithfulness to the release -------------------------------------------------------------

def test_release_generator_reproduces_expected_outputs(release):
    data, expected = release
    z, c = expected["z"], expected["c"]
    G_ema = build_from_release(data["G_ema"])
    G = build_from_release(data["G"])
    with torch.no_grad():
        img_psi1 = G_ema(z, c, truncation_psi=1, noise_mode="const")
        img_psi07 = G_ema(z, c, truncation_psi=0.7, noise_mode="const")
        ws_psi07 = G_ema.mapping(z, c, truncation_psi=0.7)
        g_train = G(z, c, noise_mode="const")
    assert img_psi1.shape == (4, 3, 32, 32) and img_psi1.dtype == torch.float32
    assert relative_error(img_psi1, expected["img_psi1"]) < 1e-5
    assert relative_error(img_psi07, expected["img_psi07"]) < 1e-5
    assert relative_error(ws_psi07, expected["ws_psi07"]) < 1e-5
    assert relative_error(g_train, expected["g_train_psi1"]) < 1e-5


def test_designed_filters_and_padding_equal_the_release_ones(release):
    data, _ = release
    record = data["G_ema"]
    generator = sg3.Generator(**record.init_kwargs)  # random weights: filters come from the design
    designed = generator.state_dict()
    stored = record.state_dict()
    filter_keys = [k for k in stored if k.endswith(("up_filter", "down_filter"))]
    assert filter_keys and set(filter_keys) == {
        k for k in designed if k.endswith(("up_filter", "down_filter"))}
    for key in filter_keys:
        assert designed[key].shape == stored[key].shape, key
        torch.testing.assert_close(designed[key], stored[key].float(), rtol=1e-6, atol=1e-7, msg=key)
    release_layers = record.submodules["synthesis"].submodules
    for name in generator.synthesis.layer_names:
        assert getattr(generator.synthesis, name).padding == list(release_layers[name].state["padding"])


def test_radial_config_uses_2d_filters_except_in_critically_sampled_layers(release):
    data, _ = release
    generator = sg3.Generator(**data["G_ema"].init_kwargs)
    radial = data["G_ema"].init_kwargs.get("use_radial_filters", False)
    for name in generator.synthesis.layer_names[:-1]:
        layer = getattr(generator.synthesis, name)
        expected_ndim = 2 if radial and not layer.is_critically_sampled else 1
        assert layer.down_filter.ndim == expected_ndim, name
        assert layer.up_filter.ndim == 1, name


# --- Building blocks -------------------------------------------------------------------------

def test_modulated_conv2d_matches_per_sample_convolution():
    torch.manual_seed(1)
    x = torch.randn(3, 4, 7, 7)
    weight = torch.randn(5, 4, 3, 3)
    styles = torch.randn(3, 4)
    input_gain = torch.tensor(0.7)
    out = sg3.modulated_conv2d(x, weight, styles, demodulate=True, padding=1, input_gain=input_gain)
    for i in range(3):
        w_i = weight * styles[i].reshape(1, 4, 1, 1)
        w_i = w_i / w_i.square().sum(dim=[1, 2, 3], keepdim=True).sqrt()
        ref = torch.nn.functional.conv2d(x[i:i + 1] * input_gain, w_i, padding=1)
        torch.testing.assert_close(out[i:i + 1], ref, rtol=1e-5, atol=1e-5)

    plain = sg3.modulated_conv2d(x, weight, styles, demodulate=False)
    ref0 = torch.nn.functional.conv2d(x[:1], weight * styles[0].reshape(1, 4, 1, 1))
    torch.testing.assert_close(plain[:1], ref0, rtol=1e-5, atol=1e-5)


def test_radial_lowpass_filter_is_symmetric_with_unit_dc_gain():
    for numtaps in (12, 13):  # odd sizes put a tap at r = 0, the jinc's removable singularity
        taps = sg3.design_lowpass_filter(numtaps, cutoff=4, width=8, fs=32, radial=True)
        assert taps.shape == (numtaps, numtaps) and torch.isfinite(taps).all()
        torch.testing.assert_close(taps, taps.t())
        torch.testing.assert_close(taps, taps.flip(0))
        assert abs(float(taps.sum()) - 1) < 1e-5
    assert sg3.design_lowpass_filter(1, cutoff=4, width=8, fs=32) is None


def test_layer_names_encode_index_size_and_channels():
    synthesis = tiny_generator().synthesis
    assert synthesis.num_ws == 4 + 2
    for idx, name in enumerate(synthesis.layer_names):
        layer = getattr(synthesis, name)
        assert name == f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
    assert synthesis.layer_names[-1] == "L4_16_3" and getattr(synthesis, "L4_16_3").is_torgb


# --- Behaviour of tiny networks --------------------------------------------------------------

@pytest.mark.parametrize("config", [CONFIG_T, CONFIG_R], ids=["T", "R"])
def test_generator_forward_and_backward_shapes(config):
    G = tiny_generator(**config)
    z = torch.randn(2, 8)
    img = G(z, None)
    assert img.shape == (2, 3, 16, 16) and img.dtype == torch.float32
    img.square().mean().backward()
    for name, param in G.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert G.synthesis.L0_36_8.weight.shape[-1] == (3 if config is CONFIG_T else 1)
    assert G.synthesis.L0_36_8.weight.grad.abs().sum() > 0


def test_constructor_kwargs_rebuild_the_same_architecture():
    G = tiny_generator(c_dim=2, **CONFIG_R)
    rebuilt = sg3.Generator(**G.init_kwargs)
    rebuilt.load_state_dict(G.state_dict(), strict=True)
    z, c = torch.randn(2, 8), torch.randn(2, 2)
    torch.testing.assert_close(rebuilt(z, c), G(z, c))


def test_magnitude_ema_and_w_avg_move_only_when_update_emas():
    G = tiny_generator()
    z = torch.randn(4, 8)
    layers = [getattr(G.synthesis, name) for name in G.synthesis.layer_names]
    with torch.no_grad():
        G(z, None)
    assert all(float(layer.magnitude_ema) == 1 for layer in layers)
    assert float(G.mapping.w_avg.abs().sum()) == 0
    with torch.no_grad():
        G(z, None, update_emas=True)
    assert all(float(layer.magnitude_ema) != 1 for layer in layers)
    assert float(G.mapping.w_avg.abs().sum()) > 0
    # One step of the running average: ema <- mean_square + beta * (ema - mean_square).
    x = G.synthesis.input(G.mapping(z, None)[:, 0])
    layer = layers[0]
    expected = x.square().mean().lerp(torch.tensor(1.0), layer.magnitude_ema_beta)
    torch.testing.assert_close(layer.magnitude_ema, expected.detach())


def test_input_transform_translation_translates_the_image():
    # At 32 px the early layers sample at 16 px, so a 1-pixel shift of the output is a half-pixel
    # shift there: equivariance then holds only approximately, through the alias-free filters.
    G = tiny_generator(img_resolution=32, num_layers=4)
    z = torch.randn(2, 8)
    dx, dy = 1, 2  # pixels, along width and height
    with torch.no_grad():
        img = G(z, None)
        G.synthesis.input.transform[0, 2] = -dx / 32  # the transform is the inverse one
        G.synthesis.input.transform[1, 2] = -dy / 32
        moved = G(z, None)
    crop = 4  # stay away from the border, where content enters from outside the image
    reference = img[..., crop:-crop - dy, crop:-crop - dx]
    shifted = moved[..., crop + dy:-crop, crop + dx:-crop]
    unshifted = img[..., crop + dy:-crop, crop + dx:-crop]
    def rel_rms(a, b):
        return float((a - b).square().mean().sqrt() / b.square().mean().sqrt())
    assert rel_rms(shifted, reference) < 0.01
    assert rel_rms(unshifted, reference) > 0.05  # the check would fail without translation


def test_truncation_psi_zero_gives_w_avg():
    G = tiny_generator()
    torch.nn.init.normal_(G.mapping.w_avg)
    z = torch.randn(3, 8)
    ws = G.mapping(z, None, truncation_psi=0)
    torch.testing.assert_close(ws, G.mapping.w_avg.expand(3, G.num_ws, 8))
    ws_cut = G.mapping(z, None, truncation_psi=0, truncation_cutoff=2)
    ws_full = G.mapping(z, None)
    torch.testing.assert_close(ws_cut[:, :2], G.mapping.w_avg.expand(3, 2, 8))
    torch.testing.assert_close(ws_cut[:, 2:], ws_full[:, 2:])
    half = G.mapping(z, None, truncation_psi=0.5)
    torch.testing.assert_close(half, (ws_full + G.mapping.w_avg) / 2)


def test_label_conditioning_changes_the_output():
    G = tiny_generator(c_dim=3)
    assert G.mapping.embed is not None
    z = torch.randn(2, 8).repeat(2, 1)
    c = torch.eye(3)[[0, 0, 1, 1]]
    img = G(z, c)
    assert img.shape == (4, 3, 16, 16)
    assert (img[:2] - img[2:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"c has shape \[4, 2\], expected \[\*, 3\]"):
        G(z, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="the label c is None, but this mapping network has c_dim=3"):
        G(z, None)


def test_bad_shapes_and_modes_are_rejected_with_clear_errors():
    G = tiny_generator()
    with pytest.raises(ValueError, match=r"ws has shape \[2, 5, 8\], expected \[\*, 6, 8\]"):
        G.synthesis(torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match=r"z has shape \[2, 7\], expected \[\*, 8\]"):
        G(torch.zeros(2, 7), None)
    with pytest.raises(ValueError, match="noise_mode='loud'"):
        G(torch.zeros(2, 8), None, noise_mode="loud")


@pytest.mark.slow  # about a minute of Inductor compilation on a 2-core CPU
def test_stylegan3_generator_compiles_without_graph_breaks():
    torch.manual_seed(0)
    G = sg3.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=64,
                      channel_max=16, mapping_kwargs=dict(num_layers=1)).eval()
    z = torch.randn(2, 8)
    compiled = torch.compile(G, fullgraph=True)  # fullgraph: any graph break raises
    assert torch.allclose(compiled(z, None), G(z, None), atol=1e-5)
