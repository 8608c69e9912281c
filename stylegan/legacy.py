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

Nothing read can reach memory the file did not hold: each embedded storage is rebuilt from its own
bytes by a reader of torch's legacy format (not `torch.load`), each tensor view is checked to lie
inside its storage, numpy dtypes must be plain numbers (a pickled dtype state can otherwise claim
to hold Python objects) and numpy arrays must be filled exactly by their bytes. The pickle is
scanned for deep nesting before it is unpickled and walked within limits after
(`stylegan.safeload`).
"""
import collections
import io
import math
import os
import pickle

import numpy as np
import torch

from stylegan.safeload import NetworkFileError, check_pickle_nesting, check_view, walk_checked

# A release pickle's size limit: the largest releases (1024x1024 StyleGAN3 with G, D, G_ema) are
# under 1 GB; a larger file is refused before it is read (it is read twice: scanned, then unpickled).
MAX_RELEASE_PICKLE_BYTES = 4 << 30


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


class TFNetwork:
    """What a `dnnlib.tflib.network.Network` of a TensorFlow-era pickle (StyleGAN, StyleGAN2) becomes:
    its pickled state (version, name, static_kwargs, components, build_module_src, build_func_name,
    variables) as data. The original's `__setstate__` execs `build_module_src`; this one never reads
    it. `stylegan.tf_pickles` converts the variables."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError('a TensorFlow network is pickled without its state dict')
        self.state = state

    def __repr__(self):
        return f"TFNetwork({self.__dict__.get('state', {}).get('name')!r})"


def is_tf_pickle(data):
    """Whether unpickled data is a TensorFlow-era pickle: `(G, D, Gs)` or `Gs` alone."""
    return isinstance(data, TFNetwork) or (
        isinstance(data, tuple) and len(data) == 3 and all(isinstance(net, TFNetwork) for net in data))


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


# --- tensors: storages rebuilt from the bytes present, views checked against them ----------------------

LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c  # torch.save's legacy (non-zip) format
LEGACY_PROTOCOL_VERSION = 1001
_LEGACY_STORAGE_DTYPES = {
    'FloatStorage': torch.float32, 'DoubleStorage': torch.float64, 'HalfStorage': torch.float16,
    'BFloat16Storage': torch.bfloat16, 'LongStorage': torch.int64, 'IntStorage': torch.int32,
    'ShortStorage': torch.int16, 'CharStorage': torch.int8, 'ByteStorage': torch.uint8,
    'BoolStorage': torch.bool, 'UntypedStorage': torch.uint8}


class LoadedStorage:
    """A storage of a release pickle: a 1-d tensor over exactly the bytes the file holds for it.
    Tensors are views of it, checked to stay inside; it is never resized."""

    def __init__(self, flat):
        self.flat = flat  # [numel] of the storage's dtype


class _LegacyStorageUnpickler(pickle.Unpickler):
    """The pickles of one embedded torch.save legacy file: numbers, the system info, one storage's
    persistent id (naming its storage class) and its key list. No other global resolves."""

    def find_class(self, module, name):
        if module == 'torch' and name in _LEGACY_STORAGE_DTYPES:
            return _LEGACY_STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"an embedded storage references '{module}.{name}', not a torch storage type")

    def persistent_load(self, pid):
        return pid


def _storage_from_bytes(data):
    """Read the storage `torch.storage._load_from_bytes(data)` would, without torch.load: a release
    pickle embeds each storage as a torch.save legacy file, i.e. the pickles magic number, protocol
    version, system info, persistent id ('storage', <dtype class>, key, location, numel, view
    metadata) and [key], then an int64 element count and the raw bytes. The storage is built from
    the bytes present, so a claimed size can neither allocate nor read past them."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError('an embedded storage is not bytes')
    stream = io.BytesIO(data)
    header = []
    for _ in range(5):
        position = stream.tell()
        check_pickle_nesting(stream, 'an embedded storage', limit=8)  # reads up to the pickle's STOP
        stream.seek(position)
        header.append(_LegacyStorageUnpickler(stream).load())
    magic, protocol, sys_info, pid, keys = header
    if (magic != LEGACY_MAGIC_NUMBER or protocol != LEGACY_PROTOCOL_VERSION or not isinstance(sys_info, dict)
            or sys_info.get('little_endian') is not True):
        raise pickle.UnpicklingError('an embedded storage is not a little-endian torch.save legacy file')
    if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == 'storage' and isinstance(pid[1], torch.dtype)
            and pid[5] is None and keys == [pid[2]] and isinstance(pid[4], int) and pid[4] >= 0):
        raise pickle.UnpicklingError('an embedded storage has no valid storage record')
    dtype, numel = pid[1], pid[4]
    count = int.from_bytes(stream.read(8), 'little', signed=True)
    start = stream.tell()
    stored = (len(data) - start) // dtype.itemsize
    if count != numel or stored < numel:
        raise NetworkFileError(f"an embedded storage claims {numel} elements of {dtype} but holds "
                               f"{stored}; the file is truncated or crafted")
    raw = bytearray(memoryview(data)[start:start + numel * dtype.itemsize])  # the storage's own copy
    flat = torch.frombuffer(raw, dtype=dtype) if numel else torch.empty([0], dtype=dtype)
    return LoadedStorage(flat)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    # Hooks are callables run at backward time; a network file has no business carrying any.
    # torch's own rebuild calls set_() on the storage, which grows a resizable storage to fit any
    # claimed size (uninitialised memory); here the view must lie inside the bytes read.
    if not isinstance(storage, LoadedStorage):
        raise pickle.UnpicklingError('a tensor is rebuilt from something other than a stored storage')
    size, stride = tuple(size), tuple(stride)
    check_view(storage.flat.numel(), storage_offset, size, stride, 'a tensor of the pickle')
    return storage.flat.as_strided(size, stride, storage_offset)


def _rebuild_parameter(data, requires_grad, backward_hooks=None, *unused_state):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError('a parameter is rebuilt from something other than a tensor')
    return torch.nn.Parameter(data, bool(requires_grad))


_TORCH_DTYPES = {('torch', name): getattr(torch, name) for name in (
    'float64', 'float32', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool')}


# --- numpy: plain numeric arrays and scalars only ------------------------------------------------------

# numpy pickles a dtype as dtype(code, align, copy) and then BUILDs it with a state tuple whose
# flags can mark any dtype as holding Python objects: an array of raw file bytes would then be
# read as object pointers (a crash, or worse). So `numpy.dtype` resolves to this record, which
# becomes a real dtype only for a plain numeric code with a plain state.
_PLAIN_NUMPY_CODES = frozenset(['b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4', 'f8'])


class NumpyDtypeRecord:
    def __init__(self, code, align=False, copy=False):
        self.code, self.state = code, None

    def __setstate__(self, state):
        self.state = state

    def resolve(self):
        """The numpy dtype, or UnpicklingError for anything but a plain numeric one."""
        state = self.state if isinstance(self.state, tuple) else ()
        order = state[1] if len(state) > 1 else '|'
        plain_state = len(state) < 5 or all(v is None for v in state[2:5])
        if self.code not in _PLAIN_NUMPY_CODES or order not in ('<', '>', '|', '=') or not plain_state:
            raise pickle.UnpicklingError(f"numpy dtype {self.code!r} is not a plain bool, integer or float type")
        dtype = np.dtype(self.code)
        return dtype.newbyteorder(order) if order in '<>' else dtype


def _plain_bytes(data):
    # Python-2 pickles read with encoding='latin1' (CIFAR-10) give numpy's raw bytes as str.
    return data.encode('latin1') if isinstance(data, str) else data


class NumpyArrayRecord(np.ndarray):
    """What `numpy.core.multiarray._reconstruct` gives here: an empty array whose BUILD state is
    checked (plain dtype, shape matching the bytes present) before numpy sees it."""

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], NumpyDtypeRecord)):
            raise pickle.UnpicklingError('a numpy array has a malformed state')
        version, shape, dtype_record, is_fortran, rawdata = state
        dtype, rawdata = dtype_record.resolve(), _plain_bytes(rawdata)
        if not (isinstance(shape, tuple) and len(shape) <= 32 and isinstance(rawdata, (bytes, bytearray))
                and all(isinstance(n, int) and n >= 0 for n in shape)
                and math.prod(shape) * dtype.itemsize == len(rawdata)):
            raise pickle.UnpicklingError('a numpy array claims a shape its stored bytes do not fill')
        super().__setstate__((version, shape, dtype, bool(is_fortran), rawdata))


def numpy_reconstruct(subtype, shape, dtype):
    """numpy's array rebuilder for restricted unpicklers: plain ndarrays only, no subclasses; numpy
    always pickles the placeholder with shape (0,), the real shape comes with the bytes."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError('numpy arrays in a pickle read here must be plain ndarrays')
    if not isinstance(shape, tuple) or shape != (0,):
        raise pickle.UnpicklingError('a numpy array placeholder must have the shape (0,) numpy pickles')
    return NumpyArrayRecord.__new__(NumpyArrayRecord, (0,), np.uint8)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, NumpyDtypeRecord):
        raise pickle.UnpicklingError('numpy scalars in a network pickle must have a plain numeric dtype')
    dtype, data = dtype.resolve(), _plain_bytes(data)
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError(f'a numpy {dtype} scalar is not stored in {dtype.itemsize} bytes')
    return np.frombuffer(data, dtype=dtype, count=1)[0]


# The numpy globals a restricted unpickler may resolve (release pickles, CIFAR-10 batches).
NUMPY_GLOBALS = {
    ('numpy', 'dtype'): NumpyDtypeRecord,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy.core.multiarray', '_reconstruct'): numpy_reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): numpy_reconstruct,
    ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
}


ALLOWED_GLOBALS = {
    ('torch_utils.persistence', '_reconstruct_persistent_obj'): _reconstruct_persistent_obj,
    ('dnnlib.util', 'EasyDict'): EasyDict,
    ('dnnlib.tflib.network', 'Network'): TFNetwork,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch.storage', '_load_from_bytes'): _storage_from_bytes,
    ('torch', 'Size'): torch.Size,
    **NUMPY_GLOBALS,
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
        size = os.path.getsize(path)
        if size > MAX_RELEASE_PICKLE_BYTES:
            raise NetworkFileError(f"it is {size} bytes, more than the {MAX_RELEASE_PICKLE_BYTES} bytes of the "
                                   f"largest release pickle this loader reads")
        with open(path, 'rb') as file:  # read twice rather than held in memory whole
            check_pickle_nesting(file, 'the pickle')
            file.seek(0)
            data = _ReleaseUnpickler(file).load()
        walk_checked(data, 'the pickle', _walk_release_object)
    except NetworkFileError as error:
        raise NetworkFileError(f"'{path}': {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError, MemoryError, UnicodeDecodeError, OverflowError) as error:
        raise NetworkFileError(
            f"'{path}' is truncated or not a network pickle ({type(error).__name__}: {error}); expected a "
            f"StyleGAN2-ADA/StyleGAN3 release pickle or a checkpoint written by this project") from None
    if is_tf_pickle(data):
        return data  # a TensorFlow-era (G, D, Gs) or Gs, for stylegan.tf_pickles
    if not isinstance(data, dict) or not any(isinstance(data.get(k), ReleaseObject) for k in ('G', 'D', 'G_ema')):
        kind = f"a dict with keys {sorted(map(str, data))[:10]}" if isinstance(data, dict) else f"a {type(data).__name__}"
        raise NetworkFileError(
            f"'{path}' holds {kind}, not networks; expected a dict with 'G', 'D' and 'G_ema' as the "
            f"StyleGAN2-ADA/StyleGAN3 releases write it, or a checkpoint written by this project")
    return data


def _walk_release_object(value, walk):
    if isinstance(value, (ReleaseObject, TFNetwork)):
        walk(value.__dict__.get('state'))
