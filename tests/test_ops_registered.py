"""Specification of the ops registered with torch.library (`torch.ops.stylegan.*`), on the CPU
where the reference math runs behind them: called directly they pass torch.library.opcheck
(schema, fake implementation, autograd registration) and equal the reference path with first-
and second-order gradients; inside a generator they trace without graph breaks under
torch.compile(fullgraph=True) (where impl='cuda' selects them on every device); they follow
autocast's dtype."""
import pytest
import torch

from ops.bias_act import activation_funcs, bias_act
from ops.filtered_lrelu import filtered_lrelu
from ops.upfirdn2d import setup_filter, upfirdn2d
from stylegan.networks import stylegan2


def sample_filters():
    g = torch.Generator().manual_seed(3)
    return setup_filter(torch.rand([8], generator=g) + 0.1, separable=True), setup_filter(torch.rand([3, 4], generator=g))


def registered_calls():
    """(name, op, args) of representative calls of every registered op."""
    fu, fd = sample_filters()
    x = torch.randn([2, 3, 6, 7], dtype=torch.float64, requires_grad=True)
    b = torch.randn([3], dtype=torch.float64, requires_grad=True)
    codes = torch.ops.stylegan.filtered_lrelu(x, fu, fd, b, 2, 2, [5, 4, 3, 6], 1.3, 0.1, 0.5, False)[1]
    s1, s2 = [2, 2, 1, 1, 5, 4, 3, 6], [1, 1, 2, 2, 0, 0, 0, 0]
    ops = torch.ops.stylegan
    return [
        ('bias_act', ops.bias_act.default, (x, b, 1, 'swish', 0.0, 1.4, 0.8)),
        ('bias_act_grad', ops.bias_act_grad.default, (torch.randn_like(x), x, b, 1, 'tanh', 0.0, 1.0, -1.0, 1)),
        ('upfirdn2d', ops.upfirdn2d.default, (x, fu, [2, 1], [1, 2], [3, 2, -1, 4], False, 2.0)),
        ('filtered_lrelu', ops.filtered_lrelu.default, (x, fu, fd, b, 2, 2, [5, 4, 3, 6], 1.3, 0.1, 0.5, True)),
        ('filtered_lrelu_masked', ops.filtered_lrelu_masked.default,
         (x, fu, fd, codes, s1, s2, 4.0, 1.0, 1.3, 0.1, False)),
    ]


@pytest.mark.parametrize('index', range(5), ids=[c[0] for c in registered_calls()])
def test_registered_op_passes_opcheck(index):
    _name, op, args = registered_calls()[index]
    torch.library.opcheck(op, args, test_utils=('test_schema', 'test_autograd_registration', 'test_faketensor',
                                                'test_aot_dispatch_dynamic'))


def gradients_to_second_order(fn, inputs):
    """y, first-order gradients for a random dy, and gradients of a random mix of those."""
    y = fn(*inputs)
    dy = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
    firsts = torch.autograd.grad(y, inputs, dy, create_graph=True)
    mix = sum((g.sin() * (i + 1)).sum() for i, g in enumerate(firsts))
    seconds = torch.autograd.grad(mix, inputs, allow_unused=True) if mix.requires_grad else [None] * len(inputs)
    return [y, *firsts, *[torch.zeros_like(t) if s is None else s for s, t in zip(seconds, inputs)]]


def leaf(shape, seed):
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).requires_grad_()


@pytest.mark.parametrize('act', ['linear', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish', 'relu'])
@pytest.mark.parametrize('clamp', [None, 0.6], ids=['noclamp', 'clamp'])
def test_registered_bias_act_equals_reference_to_second_order(act, clamp):
    x, b = leaf([3, 4, 5], 0), leaf([4], 1)
    alpha = float(activation_funcs[act].def_alpha)

    def registered(x, b):
        return torch.ops.stylegan.bias_act(x, b, 1, act, alpha, 1.3, -1.0 if clamp is None else clamp)

    def reference(x, b):
        return bias_act(x, b, act=act, gain=1.3, clamp=clamp, impl='ref')
    for got, expected in zip(gradients_to_second_order(registered, [x, b]), gradients_to_second_order(reference, [x, b])):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize('geometry', [([2, 2], [1, 1], [2, 1, 2, 1]), ([1, 1], [2, 3], [1, 1, 1, 1]),
                                      ([1, 3], [2, 2], [-1, 2, 3, 0])], ids=['up', 'down', 'mixed'])
def test_registered_upfirdn2d_equals_reference_to_second_order(geometry):
    up, down, padding = geometry
    fu, fd = sample_filters()
    for f in (fu, fd, torch.ones([1, 1])):
        x = leaf([2, 3, 7, 8], 2)

        def registered(x):
            return torch.ops.stylegan.upfirdn2d(x, f, up, down, padding, False, 1.5)

        def reference(x):
            return upfirdn2d(x, f, up=up, down=down, padding=padding, gain=1.5, impl='ref')
        for got, expected in zip(gradients_to_second_order(registered, [x]), gradients_to_second_order(reference, [x])):
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize('case', [(2, 2, [8, 8, 8, 8]), (4, 2, [13, 12, 12, 13]), (1, 2, [-1, 11, 10, 0]),
                                  (2, 1, [6, 6, 5, 5])])
@pytest.mark.parametrize('clamp', [None, 0.5], ids=['noclamp', 'clamp'])
def test_registered_filtered_lrelu_equals_reference_to_second_order(case, clamp):
    up, down, padding = case
    fu, fd = sample_filters()
    x, b = leaf([2, 3, 6, 7], 3), leaf([3], 4)
    flip_filter = up == 4

    def registered(x, b):
        return torch.ops.stylegan.filtered_lrelu(x, fu, fd, b, up, down, padding, 1.3, 0.1,
                                                 -1.0 if clamp is None else clamp, flip_filter)[0]

    def reference(x, b):
        return filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=1.3, slope=0.1, clamp=clamp,
                              flip_filter=flip_filter, impl='ref')
    for got, expected in zip(gradients_to_second_order(registered, [x, b]),
                             gradients_to_second_order(reference, [x, b])):
        torch.testing.assert_close(got, expected)


def test_third_order_bias_act_gradient_asks_for_the_reference_path():
    x = leaf([4, 3], 5)
    y = torch.ops.stylegan.bias_act(x, None, 1, 'tanh', 0.0, 1.0, -1.0)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="third-order gradients .* impl='ref'"):
        torch.autograd.grad(h.sum(), x)


def test_eager_cpu_calls_take_the_reference_path_and_compiled_ones_the_registered_op():
    x = torch.randn([2, 3, 4, 4])
    torch._dynamo.reset()
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward
    fn = lambda x: bias_act(x, act='lrelu')  # noqa: E731
    torch.compile(fn, fullgraph=True, backend=record)(x)
    assert 'stylegan.bias_act' in str(graphs[0].graph)
    eager = fn(x.requires_grad_())
    assert 'stylegan' not in type(eager.grad_fn).__name__  # plain aten ops: the reference path
    assert 'stylegan' in type(torch.ops.stylegan.bias_act(x, None, 1, 'lrelu', 0.2, 1.4, -1.0).grad_fn).__name__


def compile_and_compare(module, *inputs):
    """torch.compile(fullgraph=True) raises on any graph break; the result equals eager."""
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend='aot_eager')
    torch.testing.assert_close(compiled(*inputs), module(*inputs))


def test_stylegan2_generator_compiles_without_graph_breaks():
    torch.manual_seed(0)
    generator = stylegan2.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=128,
                                    channel_max=16, num_fp16_res=0, mapping_kwargs=dict(num_layers=2)).eval()
    compile_and_compare(lambda z: generator(z, None, noise_mode='const'), torch.randn([2, 8]))


def test_compiled_ops_train_like_eager():
    fu, fd = sample_filters()
    x = torch.randn([2, 3, 8, 8])
    b = torch.randn([3], requires_grad=True)

    def layer(x, b):
        y = filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=8)
        return bias_act(upfirdn2d(y, fd, down=2, padding=1), b, act='lrelu').square().mean()
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend='aot_eager')
    (g_compiled,) = torch.autograd.grad(compiled(x, b), b)
    (g_eager,) = torch.autograd.grad(layer(x, b), b)
    torch.testing.assert_close(g_compiled, g_eager)


def test_autocast_gives_each_op_the_dtype_its_reference_gives():
    fu, fd = sample_filters()
    x, b = torch.randn([1, 3, 8, 8]), torch.randn([3])
    ops = torch.ops.stylegan
    with torch.autocast('cpu', dtype=torch.bfloat16):
        # Convolutions run in the autocast dtype: the reference's conv2d and the registered ops.
        assert upfirdn2d(x, fd, padding=1, impl='ref').dtype == torch.bfloat16
        assert ops.upfirdn2d(x, fd, [1, 1], [1, 1], [1, 2, 1, 2], False, 1.0).dtype == torch.bfloat16
        assert filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=8, impl='ref').dtype == torch.bfloat16
        assert ops.filtered_lrelu(x, fu, fd, b, 2, 2, [8] * 4, 1.4, 0.2, -1.0, False)[0].dtype == torch.bfloat16
        # bias_act is elementwise: it keeps x's dtype and casts the bias to it.
        assert ops.bias_act(x, b, 1, 'lrelu', 0.2, 1.4, -1.0).dtype == torch.float32
        registered = ops.bias_act(x.bfloat16(), b, 1, 'lrelu', 0.2, 1.4, -1.0)
        wrapped = bias_act(x.bfloat16(), b, act='lrelu', gain=1.4)
    expected = bias_act(x.bfloat16(), b.bfloat16(), act='lrelu', gain=1.4, impl='ref')
    for y in (registered, wrapped):
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y, expected)
