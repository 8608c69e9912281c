"""Specification of ops.bias_act: y = clamp(act(x + b) * gain), as in the releases."""
import math

import pytest
import torch

from ops.bias_act import activation_funcs, bias_act

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805

# Independent formulas, written from the definitions rather than with torch.nn.functional.
FORMULAS = {
    'linear':   lambda x, a: x,
    'relu':     lambda x, a: torch.where(x > 0, x, torch.zeros_like(x)),
    'lrelu':    lambda x, a: torch.where(x > 0, x, a * x),
    'tanh':     lambda x, a: (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1),
    'sigmoid':  lambda x, a: 1 / (1 + torch.exp(-x)),
    'elu':      lambda x, a: torch.where(x > 0, x, torch.exp(x) - 1),
    'selu':     lambda x, a: SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * (torch.exp(x) - 1)),
    'softplus': lambda x, a: torch.log(1 + torch.exp(x)),
    'swish':    lambda x, a: x / (1 + torch.exp(-x)),
}

# (default alpha, default gain) of the StyleGAN2-ADA/StyleGAN3 releases.
RELEASE_DEFAULTS = {
    'linear': (0, 1), 'relu': (0, math.sqrt(2)), 'lrelu': (0.2, math.sqrt(2)), 'tanh': (0, 1),
    'sigmoid': (0, 1), 'elu': (0, 1), 'selu': (0, 1), 'softplus': (0, 1), 'swish': (0, math.sqrt(2)),
}


def inputs_away_from_zero(shape, bias, dim, seed=0):
    """x such that x + b has magnitudes in [0.1, 2], away from the kinks of relu/lrelu at 0."""
    g = torch.Generator().manual_seed(seed)
    magnitude = 0.1 + 1.9 * torch.rand(shape, generator=g, dtype=torch.float64)
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    b = bias.reshape([-1 if i == dim else 1 for i in range(len(shape))])
    return magnitude * sign - b


def clamp_in_widest_gap(values):
    """A clamp level halfway across the widest gap between output magnitudes, so that no test
    point sits on the clamp's kink and some points are clamped."""
    levels = values.abs().flatten().sort().values
    gaps = levels[1:] - levels[:-1]
    i = int(gaps[len(gaps) // 4: 3 * len(gaps) // 4].argmax()) + len(gaps) // 4
    return float((levels[i] + levels[i + 1]) / 2)


def test_activation_table_has_the_release_activations_and_defaults():
    assert set(activation_funcs) == set(RELEASE_DEFAULTS)
    for name, (alpha, gain) in RELEASE_DEFAULTS.items():
        assert activation_funcs[name].def_alpha == pytest.approx(alpha), name
        assert activation_funcs[name].def_gain == pytest.approx(gain), name


@pytest.mark.parametrize('act', sorted(FORMULAS))
@pytest.mark.parametrize('dim', [0, 1, 2])
def test_bias_act_matches_formula_with_default_alpha_and_gain(act, dim):
    shape = [3, 4, 5]
    b = torch.randn(shape[dim], dtype=torch.float64)
    x = inputs_away_from_zero(shape, b, dim)
    alpha, gain = RELEASE_DEFAULTS[act]
    expected = FORMULAS[act](x + b.reshape([-1 if i == dim else 1 for i in range(3)]), alpha) * gain
    torch.testing.assert_close(bias_act(x, b, dim=dim, act=act), expected)


@pytest.mark.parametrize('act', sorted(FORMULAS))
def test_bias_act_applies_explicit_alpha_gain_then_clamp(act):
    b = torch.randn(4, dtype=torch.float64)
    x = inputs_away_from_zero([2, 4, 3, 3], b, dim=1)
    pre_clamp = FORMULAS[act](x + b.reshape(1, -1, 1, 1), 0.3) * 1.7
    clamp = clamp_in_widest_gap(pre_clamp)
    y = bias_act(x, b, act=act, alpha=0.3, gain=1.7, clamp=clamp)
    torch.testing.assert_close(y, pre_clamp.clamp(-clamp, clamp))
    assert (pre_clamp.abs() > clamp).any(), 'the test should exercise the clamp'


def test_bias_act_without_bias_or_activation_is_identity():
    x = torch.randn(2, 3)
    assert torch.equal(bias_act(x), x)


@pytest.mark.parametrize('act', sorted(FORMULAS))
@pytest.mark.parametrize('clamped', [False, True], ids=['noclamp', 'clamp'])
def test_bias_act_gradients_match_finite_differences(act, clamped):
    b = torch.randn(3, dtype=torch.float64)
    x = inputs_away_from_zero([2, 3, 2, 2], b, dim=1)
    clamp = clamp_in_widest_gap(bias_act(x, b, act=act)) if clamped else None
    x.requires_grad_(True)
    b.requires_grad_(True)

    def fn(x, b):
        return bias_act(x, b, act=act, clamp=clamp)

    assert torch.autograd.gradcheck(fn, [x, b])
    assert torch.autograd.gradgradcheck(fn, [x, b])


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_bias_act_keeps_dtype_and_matches_float64(dtype):
    b = torch.randn(4, dtype=torch.float64)
    x = inputs_away_from_zero([2, 4, 3], b, dim=1)
    expected = bias_act(x, b, act='lrelu', clamp=1.0)
    y = bias_act(x.to(dtype), b.to(dtype), act='lrelu', clamp=1.0)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), expected, atol=2e-2, rtol=2e-2)


def test_unknown_activation_is_rejected_by_name():
    with pytest.raises(ValueError, match="'gelu'"):
        bias_act(torch.zeros(2, 3), act='gelu')


@pytest.mark.parametrize('b, dim, message', [
    (torch.zeros(4), 1, 'has 4 elements'),
    (torch.zeros(3, 1), 1, '1-D'),
    (torch.zeros(3), 2, 'dim must be'),
    (torch.zeros(3, dtype=torch.float64), 1, 'dtype'),
], ids=['wrong-length', 'not-1d', 'dim-out-of-range', 'wrong-dtype'])
def test_bad_bias_is_rejected_with_a_clear_message(b, dim, message):
    with pytest.raises(ValueError, match=message):
        bias_act(torch.zeros(2, 3), b, dim=dim)


def test_negative_clamp_is_rejected():
    with pytest.raises(ValueError, match='clamp'):
        bias_act(torch.zeros(2, 3), clamp=-1)
