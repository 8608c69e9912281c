"""Read network pickles written by the NVlabs StyleGAN2-ADA (PyTorch) and StyleGAN3 releases
without running any code they carry.

A release pickle stores each network through `torch_utils.persistence`: unpickling it with the
release's own code calls `_reconstruct_persistent_obj(meta)`, which runs `exec(meta['module_src'])`
to recreate the class and then fills the new object's `__dict__` from `meta['state']`. That is
arbitrary code execution from a data file. Here the same pickle is read by an unpickler that
resolves only an allow-list of globals (tensor and numpy rebuilders, `OrderedDict`, `EasyDict`) and
turns every persistent object into an inert `ReleaseObject` record: class name, constructor
arguments and the tensors of its `state`. The module source is never looked at. Building this
project's networks from those records is `stylegan.checkpoint`'s job.
"""
import collections
import io
import pickle

import numpy as np
import torch


class NetworkFileError(ValueError):
    """A network file that cannot be loaded; the message is one sentence naming the problem."""


class ReleaseObject:
    """What one `torch_utils.persistence` object of a release pickle becomes: data, no code."""

    def __init__(self, class_name, state):
        self.class_name = class_name
        self.state = state  # the object's __dict__ as pickled

    @property
    def init_args(self):
        return tuple(to_plain(self.state.get('_init_args', ())))

    @property
    def init_kwargs(self):
        return to_plain(dict(self.state.get('_init_kwargs', {})))

    @property
    def submodules(self):
        return dict(self.state.get('_modules', {}))

    def state_dict(self, prefix=''):
        """Parameters and persistent buffers of this object and its submodules, keyed like
        `torch.nn.Module.state_dict()` (`synthesis.b4.conv1.weight`, ...)."""
        result = collections.OrderedDict()
        non_persistent = set(self.state.get('_non_persistent_buffers_set', ()))
        for group in ('_parameters', '_buffers'):
            for name, value in self.state.get(group, {}).items():
                if value is None or (group == '_buffers' and name in non_persistent):
                    continue
                result[prefix + name] = value.detach() if isinstance(value, torch.Tensor) else value
        for name, child in self.submodules.items():
            if isinstance(child, ReleaseObject):
                result.update(child.state_dict(prefix + name + '.'))
        return result

    def __repr__(self):
        return f'ReleaseObject({self.class_name!r})'


def to_plain(value):
    """Numpy scalars and arrays inside init arguments -> Python numbers and lists, recursively."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


class EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict` (a dict with attribute access)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _reconstruct_persistent_obj(meta):
    # The release's version execs meta['module_src']; this one only keeps the data.
    if not (isinstance(meta, dict) and meta.get('type') == 'class'
            and isinstance(meta.get('class_name'), str) and isinstance(meta.get('state'), dict)):
        raise pickle.UnpicklingError('a persistent object lacks the class_name/state of the release format')
    return ReleaseObject(meta['class_name'], meta['state'])


def _storage_from_bytes(data):
    # torch.storage._load_from_bytes calls torch.load(weights_only=False) on the embedded bytes,
    # a second door to code execution; weights_only=True reads the same storages.
    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    # Hooks are callables run at backward time; a network file has no business carrying any.
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad, backward_hooks=None, *unused_state):
    return torch.nn.Parameter(data, requires_grad)


_TORCH_DTYPES = {('torch', name): getattr(torch, name) for name in (
    'float64', 'float32', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool')}


def numpy_reconstruct(subtype, shape, dtype):
    """numpy's array rebuilder for restricted unpicklers: plain ndarrays only, no subclasses."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError('numpy arrays in a pickle read here must be plain ndarrays')
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError('numpy scalars in a network pickle must have a plain numeric dtype')
    return np.frombuffer(data, dtype=dtype, count=1)[0]


ALLOWED_GLOBALS = {
    ('torch_utils.persistence', '_reconstruct_persistent_obj'): _reconstruct_persistent_obj,
    ('dnnlib.util', 'EasyDict'): EasyDict,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch.storage', '_load_from_bytes'): _storage_from_bytes,
    ('torch', 'Size'): torch.Size,
    ('numpy', 'dtype'): np.dtype,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy.core.multiarray', '_reconstruct'): numpy_reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): numpy_reconstruct,
    ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
    **_TORCH_DTYPES,
}


class _ReleaseUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise NetworkFileError(
                f"refusing to load it: it references '{module}.{name}', which is not among the tensor, "
                f"numpy and container types a StyleGAN2-ADA/StyleGAN3 network pickle is made of, "
                f"so it could run code") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError('persistent ids (torch.save zip format) are not part of a release pickle')


def read_release_pickle(path):
    """Unpickle a release network pickle into plain data: a dict whose networks
    (`G`, `D`, `G_ema`, `augment_pipe`) are `ReleaseObject` records. Raises `NetworkFileError`."""
    try:
        with open(path, 'rb') as file:
            data = _ReleaseUnpickler(file).load()
    except NetworkFileError as error:
        raise NetworkFileError(f"'{path}': {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError, MemoryError, UnicodeDecodeError) as error:
        raise NetworkFileError(
            f"'{path}' is truncated or not a network pickle ({type(error).__name__}: {error}); expected a "
            f"StyleGAN2-ADA/StyleGAN3 release pickle or a checkpoint written by this project") from None
    if not isinstance(data, dict) or not any(isinstance(data.get(k), ReleaseObject) for k in ('G', 'D', 'G_ema')):
        kind = f"a dict with keys {sorted(map(str, data))}" if isinstance(data, dict) else f"a {type(data).__name__}"
        raise NetworkFileError(
            f"'{path}' holds {kind}, not networks; expected a dict with 'G', 'D' and 'G_ema' as the "
            f"StyleGAN2-ADA/StyleGAN3 releases write it, or a checkpoint written by this project")
    return data
