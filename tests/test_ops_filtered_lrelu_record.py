"""filtered_lrelu keeps 2 bits per upsampled element for its backward pass, and nothing larger.

The registered op saves (through autograd's saved-tensor hooks, i.e. what really stays alive
between forward and backward) only its two filters and the packed sign/clamp record: int32 words
of 16 codes, ceil(N * C * Hm * Wm / 16) of them for the middle (upsampled) resolution Hm x Wm.
Checked for the fused kernel (the emulated build on the CPU; the CUDA build where a GPU is
present) and for the registered op's PyTorch path, at a StyleGAN3 layer geometry.
"""
import pytest
import torch

from ops import kernels as kernels_module
from ops.filtered_lrelu import filtered_lrelu, pack_codes, unpack_codes
from ops.upfirdn2d import output_size, setup_filter

BACKENDS = ['torch', 'emulated', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                               reason='needs a CUDA GPU'))]


@pytest.fixture(params=BACKENDS)
def device(request):
    """The device of the tensors, with the kernels the registered op runs there."""
    if request.param == 'cuda':
        assert kernels_module._load_for_mode('cuda') is not None
        yield torch.device('cuda')
    elif request.param == 'emulated':
        with kernels_module.use_emulated(kernels_module.emulated_kernels()):
            yield torch.device('cpu')
    else:
        yield torch.device('cpu')


def saved_during(fn):
    """fn()'s result and the tensors autograd keeps for its backward."""
    saved = []

    def pack(t):
        saved.append(t)
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        return fn(), saved


@pytest.mark.parametrize('shape', [[2, 3, 9, 10], [1, 2, 7, 7]], ids=['even-words', 'odd-tail'])
def test_backward_keeps_two_bits_per_upsampled_element(device, shape):
    # A StyleGAN3-T layer: up 2, down 2, separable 12-tap filters, padding 10 per side, clamp.
    fu = setup_filter(torch.rand([12]) + 0.1, separable=True).to(device)
    fd = setup_filter(torch.rand([12]) + 0.1, separable=True).to(device)
    x = torch.randn(shape, device=device, requires_grad=True)
    b = torch.randn([shape[1]], device=device, requires_grad=True)
    call = lambda: torch.ops.stylegan.filtered_lrelu(x, fu, fd, b, 2, 2, [10, 10, 10, 10], 2 ** 0.5, 0.2, 0.5,  # noqa
                                                     False)
    (y, record), saved = saved_during(call)
    middle = output_size(shape[2:], fu, (2, 2), (1, 1), (10, 10, 10, 10))
    elements = shape[0] * shape[1] * middle[0] * middle[1]
    assert record.dtype == torch.int32 and record.numel() == -(-elements // 16)
    activations = [t for t in saved if t.numel() > fu.numel()]  # everything but the filters
    assert len(activations) == 1 and activations[0].data_ptr() == record.data_ptr()
    # The record is what the backward uses: the gradients equal the reference's.
    dy = torch.randn_like(y)
    dx, db = torch.autograd.grad(y, [x, b], dy)
    x_ref, b_ref = (t.detach().double().cpu().requires_grad_() for t in (x, b))
    y_ref = filtered_lrelu(x_ref, fu.cpu(), fd.cpu(), b_ref, up=2, down=2, padding=10, clamp=0.5, impl='ref')
    for actual, expected in zip((dx, db), torch.autograd.grad(y_ref, [x_ref, b_ref], dy.double().cpu())):
        torch.testing.assert_close(actual.double().cpu(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_record_packs_sixteen_codes_per_word_in_element_order():
    codes = torch.randint(0, 3, [2, 3, 5, 7], dtype=torch.int8)
    record = pack_codes(codes)
    assert record.dtype == torch.int32 and record.numel() == -(-codes.numel() // 16)
    flat = codes.reshape(-1).long()
    assert int(record[0]) & 0xffffffff == sum(int(flat[k]) << (2 * k) for k in range(16))
    torch.testing.assert_close(unpack_codes(record, codes.shape), codes.long())
