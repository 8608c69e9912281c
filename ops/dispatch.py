"""Choosing between an op's implementations, and the torch.library glue they share.

Every op takes `impl='cuda'` (the releases' default) or `impl='ref'`:
  'ref'  plain PyTorch reference ops (differentiable to any order by autograd);
  'cuda' the op registered with torch.library (`torch.ops.stylegan.*`): fused CUDA kernels on
         CUDA tensors of fp32/fp16/bf16 when they build (ops/build.py), the same math in
         PyTorch elsewhere. Registered ops have fake implementations and autograd formulas,
         so torch.compile(fullgraph=True) traces them without graph breaks.
Eager calls on CPU tensors take the reference path, as in the releases (the registered op would
run the same math with more overhead); under torch.compile they take the registered op, so a
model traces to the same graph on every device. STYLEGAN_OPS=ref sends every call to the
reference path.
"""

from typing import Callable, Sequence

import torch

from .build import ops_mode
from .kernels import emulation_active

IMPLEMENTATIONS = ('ref', 'cuda')


def resolve_impl(impl):
    """Return the path a call with `impl` takes: 'ref' or 'cuda' (the registered op)."""
    if not isinstance(impl, str) or impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}.")
    if impl == 'ref' or ops_mode() == 'ref':
        return 'ref'
    return 'cuda'


def use_registered_op(impl, x: torch.Tensor) -> bool:
    """Whether a call with `impl` on `x` goes to the registered op (else the reference path)."""
    if resolve_impl(impl) == 'ref':
        return False
    # CPU tensors go to the registered op too inside kernels.use_emulated (tests of the kernels).
    return x.device.type != 'cpu' or torch.compiler.is_compiling() or emulation_active()


def bias_under_autocast(x: torch.Tensor, b):
    """Under autocast a bias follows x's dtype (conv outputs arrive in fp16/bf16, biases stay
    fp32); outside autocast the ops insist on matching dtypes, as the releases do."""
    if isinstance(b, torch.Tensor) and b.dtype != x.dtype and torch.is_autocast_enabled(x.device.type):
        return b.to(x.dtype)
    return b


def fresh_output(y: torch.Tensor, *inputs) -> torch.Tensor:
    """A registered op may not return one of its inputs (or a view of one): copy if it would."""
    for t in inputs:
        if isinstance(t, torch.Tensor) and y.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
            return y.clone()
    return y


# Kept alive for the life of the process: dropping a Library removes its registrations.
_AUTOCAST_LIBRARIES = []


def register_autocast(qualname: str, cast_arguments: Callable[[tuple, torch.dtype], tuple],
                      device_types: Sequence[str] = ('cuda', 'cpu')):
    """Run `qualname` under autocast with the arguments `cast_arguments(args, autocast_dtype)`.

    torch.library.register_autocast casts to one fixed dtype; these ops follow the dtype of the
    active autocast region (fp16 or bf16) instead.
    """
    namespace, name = qualname.split('::')
    library = torch.library.Library(namespace, 'IMPL')
    _AUTOCAST_LIBRARIES.append(library)
    op = getattr(getattr(torch.ops, namespace), name).default
    for device_type in device_types:
        def autocast_kernel(*args, _device_type=device_type):
            dtype = torch.get_autocast_dtype(_device_type)
            with torch.autocast(device_type=_device_type, enabled=False):
                return op(*cast_arguments(args, dtype))
        library.impl(name, autocast_kernel, 'Autocast' + ('CUDA' if device_type == 'cuda' else 'CPU'))


def cast_floating(t, dtype):
    """Autocast's rule: floating tensors other than float64 take the autocast dtype."""
    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64:
        return t.to(dtype)
    return t
