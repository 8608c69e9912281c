"""The CPU path of impl='cuda' (eager, CPU tensors): upsampling by transposed convolution instead
of zero insertion (ops/upfirdn2d.py `_upfirdn2d_cpu`, also inside filtered_lrelu) gives the
reference's values and gradients for every geometry, filter kind and flip."""
import pytest
import torch

from ops import upfirdn2d as upfirdn2d_module
from ops.filtered_lrelu import filtered_lrelu
from ops.upfirdn2d import setup_filter, upfirdn2d


@pytest.mark.parametrize('kind', ['separable', 'full'])
@pytest.mark.parametrize('up,padding,taps', [(2, (2, 1, 2, 1), 4), ((3, 1), (-3, 2, 1, -2), 5),
                                             (4, (13, 12, 12, 13), 12), ((1, 2), (0, 0, 0, 0), 1)])
@pytest.mark.parametrize('flip_filter', [False, True], ids=['conv', 'corr'])
def test_upsampling_equals_the_reference(kind, up, padding, taps, flip_filter):
    g = torch.Generator().manual_seed(taps)
    f = setup_filter(torch.rand([taps], generator=g) + 0.1, separable=True) if kind == 'separable' else \
        setup_filter(torch.rand([taps, taps + 1], generator=g) + 0.1)
    x = torch.randn([2, 3, 7, 9], generator=g, dtype=torch.float64, requires_grad=True)
    args = dict(up=up, padding=padding, flip_filter=flip_filter, gain=3)
    y, y_ref = upfirdn2d(x, f, **args), upfirdn2d(x, f, impl='ref', **args)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(y_ref, x, dy)[0],
                               rtol=1e-12, atol=1e-12)


def test_filtered_lrelu_on_the_cpu_takes_the_transposed_path_and_equals_the_reference(monkeypatch):
    calls = []
    fast = upfirdn2d_module._upfirdn2d_cpu
    monkeypatch.setattr(upfirdn2d_module, '_upfirdn2d_cpu', lambda *a, **k: calls.append(1) or fast(*a, **k))
    g = torch.Generator().manual_seed(0)
    fu = setup_filter(torch.rand([12], generator=g) + 0.1, separable=True)
    fd = setup_filter(torch.rand([12], generator=g) + 0.1, separable=True)
    x = torch.randn([2, 4, 9, 10], generator=g, requires_grad=True)
    b = torch.randn([4], generator=g, requires_grad=True)
    args = dict(up=2, down=2, padding=10, clamp=0.5)
    y, y_ref = filtered_lrelu(x, fu, fd, b, **args), filtered_lrelu(x, fu, fd, b, impl='ref', **args)
    assert calls  # the upsampling went through the CPU path
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for grad, grad_ref in zip(torch.autograd.grad(y.sum(), [x, b]), torch.autograd.grad(y_ref.sum(), [x, b])):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-4)


def test_filtered_lrelu_cpu_path_clamps_and_differentiates_twice_as_the_reference():
    g = torch.Generator().manual_seed(1)
    f = setup_filter(torch.rand([6], generator=g) + 0.1, separable=True)
    x = torch.randn([2, 3, 8, 8], generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn([3], generator=g, dtype=torch.float64, requires_grad=True)
    outs = []
    for impl in ('cuda', 'ref'):
        y = filtered_lrelu(x, f, f, b, up=2, down=2, padding=3, gain=1.7, slope=0.3, clamp=0.4, impl=impl)
        dx, db = torch.autograd.grad((y * torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape)).sum(), [x, b],
                                     create_graph=True)
        outs.append([y, dx, db, *torch.autograd.grad((dx.sin().sum() + db.sum()), [x, b], allow_unused=True)])
    for actual, expected in zip(*outs):
        if expected is None:
            assert actual is None or not actual.abs().max() > 0
        else:
            torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
