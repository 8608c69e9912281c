"""Limits every loader of a network file, checkpoint or snapshot applies before it allocates.

A file of a few hundred kilobytes must not be able to make a loader allocate gigabytes, run for
minutes, or hand out tensors that read memory the file never held. The rules, checked here:

- a torch.save zip holds only uncompressed, unencrypted members whose sizes add up to at most the
  file's size (torch.save never compresses; a deflated member could expand a thousandfold);
- every tensor rebuilt from bytes stays inside those bytes (`check_view`) and has one of the plain
  numeric dtypes of `ALLOWED_DTYPES`;
- a pickle is scanned before it is unpickled (`check_pickle_nesting`): a tuple nested a million
  deep crashes the interpreter when it is hashed; after loading, the data around the tensors is
  walked at most `MAX_NESTING` deep and `MAX_NODES` values, counted with repetition, so shared
  references cannot make a later walk explode (`walk_checked`);
- a network's constructor arguments are within `NETWORK_ARG_LIMITS`; the network is then built
  under torch's FakeTensorMode (shapes, no storage), its tensors are compared with the file's, and
  only a network whose bytes fit the file's budget (`AllocationBudget`) is built for real.
"""
import math
import os
import pickle
import pickletools
import zipfile

import torch

MAX_NESTING = 100  # release pickles nest about 33 deep (a module tree in persistence records)
MAX_NODES = 1_000_000
MAX_ZIP_MEMBERS = 100_000
MAX_TENSOR_DIMS = 16
ALLOWED_DTYPES = frozenset([torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
                            torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool])
# Bytes a loader may allocate for a file's networks: a small multiple of the file plus a constant
# for the non-persistent buffers (resampling filters) that the file does not store.
BUDGET_FILE_MULTIPLE = 2
BUDGET_SLACK_BYTES = 16 << 20

# The largest constructor argument values accepted, by name, at any nesting level (mapping_kwargs,
# synthesis_kwargs, ...). The releases' largest configurations use a quarter of these or less.
NETWORK_ARG_LIMITS = {
    'z_dim': 4096, 'w_dim': 4096, 'c_dim': 65536, 'img_resolution': 4096, 'img_channels': 16,
    'channel_base': 1 << 17, 'channel_max': 4096, 'num_layers': 64, 'num_critical': 64,
    'num_fp16_res': 16, 'embed_features': 4096, 'layer_features': 4096, 'cmap_dim': 4096,
    'mbstd_group_size': 1024, 'mbstd_num_channels': 64, 'conv_kernel': 15, 'kernel_size': 15,
    'filter_size': 64, 'lrelu_upsampling': 8, 'margin_size': 1024,
}
MAX_OTHER_NUMBER = 1 << 17     # any other number among the arguments
MAX_ARG_LIST = 64              # length of a list argument (resample_filter is 4)
MAX_ARG_STRING = 256


class NetworkFileError(ValueError):
    """A network file that cannot be loaded; the message is one sentence naming the problem."""


# --- zip members -------------------------------------------------------------------------------------

def check_torch_zip(path):
    """Refuse a torch.save zip whose members could expand past the file: compressed or encrypted
    members, too many members, or declared sizes that add up to more than the file holds."""
    file_size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise NetworkFileError(f"'{path}' is a damaged zip file ({error}); expected a torch.save file") from None
    if len(members) > MAX_ZIP_MEMBERS:
        raise NetworkFileError(f"'{path}' has {len(members)} zip members; a torch.save file of this project "
                               f"has at most {MAX_ZIP_MEMBERS}")
    for info in members:
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            how = 'encrypted' if info.flag_bits & 0x1 else f'compressed (method {info.compress_type})'
            raise NetworkFileError(f"'{path}' has a {how} member '{info.filename}'; torch.save writes its "
                                   f"members stored and unencrypted, so the file was not written by torch.save")
    declared = sum(info.file_size for info in members)
    if declared > file_size:
        raise NetworkFileError(f"'{path}' declares {declared} bytes of zip members in a file of {file_size} "
                               f"bytes; a torch.save file's members fit inside it")


# --- tensors -----------------------------------------------------------------------------------------

def check_view(storage_numel, storage_offset, size, stride, what):
    """Refuse a tensor view (offset, size, stride in elements) that reaches outside a storage of
    `storage_numel` elements, or has negative, non-integer or absurd geometry."""
    ints = [storage_offset, *size, *stride]
    if (len(size) != len(stride) or len(size) > MAX_TENSOR_DIMS
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints)):
        raise NetworkFileError(f"{what} has a malformed view (offset {storage_offset!r}, size {list(size)!r}, "
                               f"stride {list(stride)!r}); expected non-negative integers, one stride per "
                               f"dimension, at most {MAX_TENSOR_DIMS} dimensions")
    numel = math.prod(size)
    # One past the last element the view reads; a view of no elements reads nothing.
    end = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else storage_offset
    if end > storage_numel:
        raise NetworkFileError(f"{what} claims size {list(size)} (offset {storage_offset}, stride {list(stride)}), "
                               f"reaching element {end} of a storage that holds {storage_numel}; a tensor must "
                               f"lie inside the bytes stored for it")


def check_tensor(tensor, what):
    """Refuse a loaded tensor of a dtype outside `ALLOWED_DTYPES`, or one that claims more elements
    than its storage holds (a stride-0 view of one value claiming a billion: free to load, but a
    later copy or arithmetic would allocate all of it)."""
    if tensor.dtype not in ALLOWED_DTYPES:
        raise NetworkFileError(f"{what} has dtype {tensor.dtype}; accepted are "
                               f"{', '.join(sorted(str(d).replace('torch.', '') for d in ALLOWED_DTYPES))}")
    if tensor.numel() * tensor.element_size() > tensor.untyped_storage().nbytes():
        raise NetworkFileError(f"{what} claims shape {list(tensor.shape)}, more elements than the "
                               f"{tensor.untyped_storage().nbytes()} bytes stored for it; a tensor of a network "
                               f"file, checkpoint or snapshot is stored in full")


def load_torch_file(path, expected, allow_legacy_format=False):
    """`torch.load(path, weights_only=True)` on the CPU, after `check_torch_zip` and a nesting scan of
    its pickle, followed by `walk_checked`. `expected` ends each refusal: what the file should be.
    torch's weights_only loader itself refuses records shorter than their storages claim and views
    past their storage. torch's pre-1.6 (non-zip) format is refused unless `allow_legacy_format`
    (published weight files of the metrics): its storages are allocated at their claimed size."""
    if not zipfile.is_zipfile(path) and not allow_legacy_format:
        raise NetworkFileError(f"'{path}' is not a torch.save zip file; {expected}")
    try:
        if zipfile.is_zipfile(path):
            check_torch_zip(path)
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.filename.endswith('.pkl'):
                        check_pickle_nesting(archive.read(info), f"'{path}'")
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except NetworkFileError as error:
        raise NetworkFileError(f"{error}; {expected}") from None
    except Exception as error:  # a damaged zip, a short record, a non-allowlisted global, a bad view
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ''
        raise NetworkFileError(f"'{path}' is a torch.save file that cannot be read safely "
                               f"({type(error).__name__}: {reason[:300]}); {expected}") from None
    walk_checked(payload, f"'{path}'")
    return payload


# --- nested data -------------------------------------------------------------------------------------

def walk_checked(value, what, visit=None):
    """Visit loaded data depth-first, at most `MAX_NESTING` deep and `MAX_NODES` values in all (shared
    references counted each time), checking every tensor (`check_tensor`). `visit(value, walk)` is called on
    each value that is not a container; `walk(child)` lets it walk data of its own (a release
    object's state) within the same limits."""
    nodes = 0

    def walk(value, depth):
        nonlocal nodes
        nodes += 1
        if depth > MAX_NESTING or nodes > MAX_NODES:
            limit = f'nests more than {MAX_NESTING} deep' if depth > MAX_NESTING else f'has more than {MAX_NODES} values'
            raise NetworkFileError(f"{what} {limit} (counting shared references each time); network files, "
                                   f"checkpoints and snapshots are far smaller and flatter")
        if isinstance(value, dict):
            for key, child in value.items():
                walk(key, depth + 1)
                walk(child, depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for child in value:
                walk(child, depth + 1)
        else:
            if isinstance(value, torch.Tensor):
                check_tensor(value, f"a tensor in {what}")
            if visit is not None:
                visit(value, lambda child: walk(child, depth + 1))

    walk(value, 0)
    return value


# --- networks ----------------------------------------------------------------------------------------

def check_network_args(kwargs, what):
    """Refuse constructor arguments outside `NETWORK_ARG_LIMITS` (or non-plain values) before anything
    is built: a huge z_dim or a million layers would allocate or loop long before a shape check."""
    def check(name, value, depth):
        if depth > 4:
            raise NetworkFileError(f"{what}'s constructor arguments nest deeper than 4 levels at '{name}'")
        if value is None or isinstance(value, (bool, str)):
            if isinstance(value, str) and len(value) > MAX_ARG_STRING:
                raise NetworkFileError(f"{what}'s argument {name} is a string of {len(value)} characters; "
                                       f"at most {MAX_ARG_STRING} are accepted")
            return
        if isinstance(value, (int, float)):
            limit = NETWORK_ARG_LIMITS.get(name, MAX_OTHER_NUMBER)
            if not math.isfinite(value) or abs(value) > limit:
                raise NetworkFileError(f"{what} has {name}={value!r}; this project builds networks with "
                                       f"|{name}| <= {limit}")
            return
        if isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    raise NetworkFileError(f"{what}'s argument {name} has a non-string key {key!r}")
                check(key, child, depth + 1)
            return
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_ARG_LIST:
                raise NetworkFileError(f"{what}'s argument {name} is a list of {len(value)} items; "
                                       f"at most {MAX_ARG_LIST} are accepted")
            for child in value:
                check(name, child, depth + 1)
            return
        raise NetworkFileError(f"{what}'s argument {name} is a {type(value).__name__}; constructor "
                               f"arguments are numbers, strings, booleans, None, lists and dicts")

    if not isinstance(kwargs, dict):
        raise NetworkFileError(f"{what}'s constructor arguments are a {type(kwargs).__name__}, not a dict")
    check('init_kwargs', kwargs, 0)


def shapes_without_storage(cls, kwargs):
    """{state_dict key: (shape, dtype)} of `cls(**kwargs)`, built with fake tensors (no storage)."""
    from torch._subclasses.fake_tensor import FakeTensorMode  # torch's own shape-only tensors
    with FakeTensorMode(allow_non_fake_inputs=True):
        module = cls(**kwargs)
        return {key: (tuple(value.shape), value.dtype) for key, value in module.state_dict().items()}


class AllocationBudget:
    """Bytes the networks of one file may take: `BUDGET_FILE_MULTIPLE` times the file's size plus
    `BUDGET_SLACK_BYTES`; charged before each network is built for real."""

    def __init__(self, path):
        self.path = path
        self.left = BUDGET_FILE_MULTIPLE * os.path.getsize(path) + BUDGET_SLACK_BYTES

    def charge(self, shapes, what):
        nbytes = sum(math.prod(shape) * dtype.itemsize for shape, dtype in shapes.values())
        if nbytes > self.left:
            raise NetworkFileError(f"{what} would take {nbytes} bytes, more than the {self.left} bytes left of "
                                   f"the budget for the file '{self.path}' (a loader allocates at most "
                                   f"{BUDGET_FILE_MULTIPLE}x the file's size), so its tensors are not all stored")
        self.left -= nbytes


# --- pickle nesting, before unpickling ---------------------------------------------------------------

# Opcodes that pop their MARK-delimited items and push one container of them.
_FROM_MARK = {'TUPLE', 'LIST', 'DICT', 'FROZENSET', 'OBJ', 'INST'}
# Opcodes that pop their MARK-delimited items into the object below the mark.
_INTO_BELOW_MARK = {'APPENDS', 'SETITEMS', 'ADDITEMS'}
# Opcodes that pop n items and push one object holding them.
_POP_N_PUSH_1 = {'TUPLE1': 1, 'TUPLE2': 2, 'TUPLE3': 3, 'REDUCE': 2, 'NEWOBJ': 2, 'NEWOBJ_EX': 3,
                 'STACK_GLOBAL': 2, 'BINPERSID': 1}
# Opcodes that pop n items into the object below them.
_POP_N_INTO = {'APPEND': 1, 'SETITEM': 2, 'BUILD': 1}
_NO_STACK_EFFECT = {'PROTO', 'FRAME', 'STOP', 'PUT', 'BINPUT', 'LONG_BINPUT', 'MEMOIZE'}


def check_pickle_nesting(data, what, limit=MAX_NESTING):
    """Refuse a pickle (bytes, or a binary file read up to its STOP) that builds objects nested more than `limit` deep, without loading it.
    Unpickling a tuple nested a million deep (two bytes a level) crashes Python outright when it is
    hashed as a dict key, so the depth is computed on the opcodes: each stack slot carries the depth
    of the object it stands for. A truncated pickle raises pickle.UnpicklingError."""
    stack, marks, memo = [], [], {}
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name == 'MARK':
                marks.append(len(stack))
            elif name in _FROM_MARK or name in _INTO_BELOW_MARK or name == 'POP_MARK':
                start = marks.pop()
                items, stack[start:] = stack[start:], []
                depth = max(items, default=0) + 1
                if name in _FROM_MARK:
                    stack.append(depth)
                elif name in _INTO_BELOW_MARK:
                    stack[-1] = max(stack[-1], depth)
            elif name in _POP_N_PUSH_1:
                n = _POP_N_PUSH_1[name]
                items, stack[-n:] = stack[-n:], []
                stack.append(max(items) + 1)
            elif name in _POP_N_INTO:
                n = _POP_N_INTO[name]
                items, stack[-n:] = stack[-n:], []
                stack[-1] = max(stack[-1], max(items) + 1)
            elif name in ('PUT', 'BINPUT', 'LONG_BINPUT', 'MEMOIZE'):
                memo[arg if name != 'MEMOIZE' else len(memo)] = stack[-1]
            elif name in ('GET', 'BINGET', 'LONG_BINGET'):
                stack.append(memo.get(arg, 1))
            elif name == 'POP':
                stack.pop()
            elif name == 'DUP':
                stack.append(stack[-1])
            elif name not in _NO_STACK_EFFECT:
                stack.append(1)  # a value or an empty container
            if stack and stack[-1] > limit:
                raise NetworkFileError(f"{what} builds objects nested more than {limit} deep; network files, "
                                       f"checkpoints and snapshots are far flatter")
    except (ValueError, IndexError) as error:  # pickletools' word for a truncated or foreign pickle
        if isinstance(error, NetworkFileError):
            raise
        raise pickle.UnpicklingError(str(error)) from None
