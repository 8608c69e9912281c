"""Choosing between an op's implementations.

Every op takes `impl='cuda'` (the releases' default) or `impl='ref'`. Only the pure-PyTorch
reference path exists so far; fused CUDA kernels will be registered here when they land, so
this module stays the single place that decides which implementation runs.
"""

IMPLEMENTATIONS = ('ref', 'cuda')


def resolve_impl(impl):
    """Return the implementation that will actually run for a requested `impl`.

    'cuda' asks for the fused kernel where one exists and falls back to the reference path
    otherwise (as the releases do on CPU); today that is always 'ref'.
    """
    if not isinstance(impl, str) or impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}.")
    return 'ref'
