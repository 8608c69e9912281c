"""Specification of ops.dispatch: every op accepts impl='ref' or 'cuda' (the releases'
default), rejects anything else with one clear error; 'cuda' runs the op registered with
torch.library (the reference math behind it on the CPU), which equals the reference path."""
import pytest
import torch

from ops.bias_act import bias_act
from ops.dispatch import resolve_impl
from ops.filtered_lrelu import filtered_lrelu
from ops.upfirdn2d import downsample2d, filter2d, upfirdn2d, upsample2d


@pytest.mark.parametrize('impl', ['ref', 'cuda'])
def test_known_implementations_resolve_to_themselves(impl, monkeypatch):
    monkeypatch.delenv('STYLEGAN_OPS', raising=False)
    assert resolve_impl(impl) == impl


@pytest.mark.parametrize('impl', ['CUDA', 'triton', None, 0])
def test_unknown_implementation_is_rejected_by_name(impl):
    with pytest.raises(ValueError, match=r"impl must be one of \('ref', 'cuda'\)"):
        resolve_impl(impl)


OPS_WITH_IMPL = {
    'bias_act': lambda x, impl: bias_act(x, act='lrelu', impl=impl),
    'upfirdn2d': lambda x, impl: upfirdn2d(x, None, impl=impl),
    'filter2d': lambda x, impl: filter2d(x, None, impl=impl),
    'upsample2d': lambda x, impl: upsample2d(x, None, impl=impl),
    'downsample2d': lambda x, impl: downsample2d(x, None, impl=impl),
    'filtered_lrelu': lambda x, impl: filtered_lrelu(x, impl=impl),
}


@pytest.mark.parametrize('op', sorted(OPS_WITH_IMPL))
def test_every_op_gives_the_same_result_for_cuda_and_ref_and_rejects_others(op):
    x = torch.randn([1, 2, 4, 4])
    torch.testing.assert_close(OPS_WITH_IMPL[op](x, 'cuda'), OPS_WITH_IMPL[op](x, 'ref'))
    with pytest.raises(ValueError, match='impl must be one of'):
        OPS_WITH_IMPL[op](x, 'triton')
