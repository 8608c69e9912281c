"""Save and load networks: this project's checkpoints and the NVlabs releases' pickles.

This project's checkpoint is a `torch.save` file that loads with `weights_only=True`:

    {'format': 'stylegan-networks', 'version': 1,
     'networks': {'G': {'architecture': 'stylegan2.Generator', 'init_kwargs': {...}, 'state_dict': {...}},
                  'D': {...}, 'G_ema': {...}},
     'augment_p': 0.25 or None, 'training_set_kwargs': {...} or None}

A network is rebuilt by calling the class that `architecture` names in
`stylegan.networks.ARCHITECTURES` (a fixed table, never an import of a name read from the file)
with its `init_kwargs`, then loading its `state_dict`. Before anything is allocated, the arguments
are checked against limits and the network is built with fake (storage-less) tensors, whose shapes
must match the file's tensors and whose bytes must fit the file's allocation budget
(`stylegan.safeload`).
"""
import inspect
import os
import zipfile

import torch

from stylegan import networks
from stylegan.files import atomic_write
from stylegan.legacy import NetworkFileError, ReleaseObject, is_tf_pickle, read_release_pickle
from stylegan.tf_pickles import tf_network_records
from stylegan.safeload import AllocationBudget, check_network_args, load_torch_file, shapes_without_storage
from stylegan.networks import stylegan2

CHECKPOINT_FORMAT = 'stylegan-networks'
CHECKPOINT_VERSION = 1
NETWORK_KEYS = ('G', 'D', 'G_ema')


def load_network(path, device='cpu'):
    """Load `G`, `D`, `G_ema` (those present), `augment_p` and `training_set_kwargs` from a checkpoint
    of this project or a StyleGAN2-ADA/StyleGAN3 release pickle, as this project's modules in eval
    mode with gradients off. Raises `NetworkFileError` with one sentence for any bad file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NetworkFileError(f"network file '{path}' does not exist or is not a file")
    budget = AllocationBudget(path)
    if zipfile.is_zipfile(path):
        result = _load_checkpoint(path, budget)
    else:
        result = _load_release_pickle(path, budget)
    for key in NETWORK_KEYS:
        if key in result:
            result[key] = result[key].to(device).eval().requires_grad_(False)
    return result


def save_network(path, G=None, D=None, G_ema=None, augment_p=None, training_set_kwargs=None):
    """Write the given networks as a checkpoint of this project, atomically: a crash mid-write
    leaves any previous file at `path` intact."""
    modules = {'G': G, 'D': D, 'G_ema': G_ema}
    payload = {
        'format': CHECKPOINT_FORMAT,
        'version': CHECKPOINT_VERSION,
        'networks': {key: network_record(module) for key, module in modules.items() if module is not None},
        'augment_p': None if augment_p is None else float(augment_p),
        'training_set_kwargs': None if training_set_kwargs is None else dict(training_set_kwargs),
    }
    atomic_torch_save(payload, path)


def network_record(module):
    """The checkpoint entry of one network: its architecture name, constructor kwargs and weights."""
    return {
        'architecture': networks.architecture_name(module),
        'init_kwargs': dict(module.init_kwargs),
        'state_dict': {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }


def build_network(record, what, budget=None):
    """Rebuild a network from `network_record`'s dict; `what` names it in error messages; `budget`
    (an `AllocationBudget`, for a record read from a file) is charged before it is allocated."""
    architecture = record.get('architecture') if isinstance(record, dict) else None
    if not isinstance(architecture, str) or architecture not in networks.ARCHITECTURES:
        raise NetworkFileError(
            f"{what} has architecture {architecture!r}; this project builds {sorted(networks.ARCHITECTURES)}")
    state_dict = record.get('state_dict') or {}
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in state_dict.items()):
        raise NetworkFileError(f"{what}'s state_dict is not a dict of names to tensors; the file is damaged")
    return _construct(networks.ARCHITECTURES[architecture], record.get('init_kwargs') or {}, state_dict, what, budget)


def atomic_torch_save(obj, path):
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    atomic_write(path, lambda file: torch.save(obj, file))


def load_state_strictly(module, state_dict, what):
    """`module.load_state_dict(strict=True)`, with shape and key mismatches told in one sentence."""
    check_state_fits(type(module).__name__, module.state_dict(), state_dict, what)
    with torch.no_grad():
        module.load_state_dict(state_dict, strict=True)


def check_state_fits(class_name, expected, state_dict, what):
    """Refuse `state_dict` unless its keys and shapes are those of `expected` (tensors or (shape, dtype))."""
    def shape(value):
        return tuple(value[0]) if isinstance(value, tuple) else tuple(value.shape)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f'{k} {tuple(state_dict[k].shape)} vs {shape(v)}' for k, v in expected.items()
                  if k in state_dict and tuple(state_dict[k].shape) != shape(v)]
    if missing or unexpected or mismatched:
        problems = []
        for label, items in (('missing', missing), ('unexpected', unexpected), ('wrong shape (file vs built)', mismatched)):
            if items:
                problems.append(f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}")
        raise NetworkFileError(
            f"{what}'s weights do not fit a {class_name} built from its own arguments "
            f"({'; '.join(problems)}), so the file holds another architecture or is damaged")


def _construct(cls, kwargs, state_dict, what, budget):
    """`cls(**kwargs)` with `state_dict` loaded, allocated only once the arguments are within limits,
    a storage-less build's shapes match `state_dict` and its bytes fit `budget`."""
    check_network_args(kwargs, what)
    try:
        shapes = shapes_without_storage(cls, kwargs)
    except (TypeError, ValueError, AssertionError, IndexError, KeyError, RuntimeError, ZeroDivisionError) as error:
        raise NetworkFileError(
            f"{what} cannot be built as {cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__} "
            f"from its arguments {kwargs} ({type(error).__name__}: {error})") from None
    check_state_fits(cls.__name__, shapes, state_dict, what)
    if budget is not None:
        budget.charge(shapes, what)
    module = cls(**kwargs)
    with torch.no_grad():
        module.load_state_dict(state_dict, strict=True)
    return module


def _load_checkpoint(path, budget):
    payload = load_torch_file(path, 'expected a checkpoint written by this project')
    if not isinstance(payload, dict) or payload.get('format') != CHECKPOINT_FORMAT:
        raise NetworkFileError(
            f"'{path}' is a torch.save file but not a checkpoint of this project (no format "
            f"'{CHECKPOINT_FORMAT}'); pass a checkpoint written by stylegan.save_network or a release pickle")
    if payload.get('version') != CHECKPOINT_VERSION:
        raise NetworkFileError(
            f"'{path}' is checkpoint version {payload.get('version')!r}; this project reads version {CHECKPOINT_VERSION}")
    records = payload.get('networks') or {}
    if not isinstance(records, dict):
        raise NetworkFileError(f"'{path}' stores its networks as a {type(records).__name__}, not a dict of "
                               f"network records; the file is damaged")
    result = {key: build_network(record, f"{key} in '{path}'", budget)
              for key, record in records.items() if key in NETWORK_KEYS}
    result['augment_p'] = payload.get('augment_p')
    result['training_set_kwargs'] = payload.get('training_set_kwargs')
    return result


def _load_release_pickle(path, budget):
    data = read_release_pickle(path)
    if is_tf_pickle(data):  # TensorFlow-era: converted networks, no augment p or dataset options
        networks_of_file = {key: build_network(record, f"{key} in '{path}'", budget)
                            for key, record in tf_network_records(data, path).items()}
        return dict(networks_of_file, augment_p=None, training_set_kwargs=None)
    semantics = release_semantics(data)
    result = {}
    for key in NETWORK_KEYS:
        if isinstance(data.get(key), ReleaseObject):
            result[key] = _build_release_network(data[key], f"{key} in '{path}'", semantics, budget)
    augment_pipe = data.get('augment_pipe')
    result['augment_p'] = None
    if isinstance(augment_pipe, ReleaseObject) and 'p' in augment_pipe.state_dict():
        result['augment_p'] = float(augment_pipe.state_dict()['p'])
    training_set_kwargs = data.get('training_set_kwargs')
    result['training_set_kwargs'] = dict(training_set_kwargs) if isinstance(training_set_kwargs, dict) else None
    return result


def release_semantics(data):
    """'sg2ada' for a pickle written by the StyleGAN2-ADA release, else 'sg3'. That release's
    Generator takes its synthesis arguments as one dict `synthesis_kwargs` (the StyleGAN3 release's
    as **kwargs), so a generator in the file tells; D follows the generator of the same file."""
    for key in NETWORK_KEYS:
        record = data.get(key)
        if isinstance(record, ReleaseObject) and record.class_name == 'Generator':
            return 'sg2ada' if 'synthesis_kwargs' in record.init_kwargs else 'sg3'
    return 'sg3'


def _build_release_network(record, what, semantics='sg3', budget=None):
    """Map a release persistence record to this project's class by class name and structure."""
    if record.class_name == 'Generator':
        synthesis = record.submodules.get('synthesis')
        is_stylegan3 = isinstance(synthesis, ReleaseObject) and 'input' in synthesis.submodules
        cls = networks.ARCHITECTURES['stylegan3.Generator' if is_stylegan3 else 'stylegan2.Generator']
    elif record.class_name == 'Discriminator':
        cls = networks.ARCHITECTURES['stylegan2.Discriminator']
    else:
        raise NetworkFileError(
            f"{what} is a release '{record.class_name}', which this project does not import; "
            f"it imports the releases' Generator and Discriminator")
    kwargs = _release_kwargs(cls, record)
    if semantics == 'sg2ada' and cls is not networks.ARCHITECTURES['stylegan3.Generator']:
        # That release's rules, and its defaults for arguments the file leaves out (the Generator
        # fills its own from `semantics`).
        kwargs['semantics'] = semantics
        if cls is networks.ARCHITECTURES['stylegan2.Discriminator']:
            kwargs = {**stylegan2.SG2ADA_DEFAULTS['discriminator'], **kwargs}
    return _construct(cls, kwargs, record.state_dict(), what, budget)


def _release_kwargs(cls, record):
    """The release's constructor arguments as keyword arguments of this project's class."""
    kwargs = dict(record.init_kwargs)
    if record.init_args:  # positional arguments, in the order of the (release-compatible) signature
        names = [p for p in inspect.signature(cls).parameters if p not in kwargs]
        kwargs.update(zip(names, record.init_args))
    # The StyleGAN2-ADA release passes the synthesis arguments as one dict; StyleGAN3's as **kwargs.
    synthesis_kwargs = kwargs.pop('synthesis_kwargs', None) or {}
    kwargs.update(synthesis_kwargs)
    return kwargs
