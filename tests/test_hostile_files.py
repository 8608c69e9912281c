"""Hostile network files, checkpoints and snapshots: each is refused with one sentence, and loading
any of them (each under 1 MB) stays under a 3 GB memory cap and a 60 s time cap.

Every file is crafted here: release-format pickles through the fake `torch_utils.persistence` of
test_load_network, torch.save zips with a hand-written data.pkl (`torch_zip`)."""
import collections
import io
import json
import os
import pickle
import re
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch

from conftest import DATA_DIR
from stylegan import NetworkFileError, load_network, save_network
from stylegan.training import snapshot as snapshots
from test_load_network import _FakeReleasePersistence, tiny_stylegan2_generator
from test_load_tf_network import fake_tflib, tf_network

MEMORY_CAP = 3 << 30
TIME_CAP_S = 60


# ---------------------------------------------------------------------------------------------
# Crafting.

class ClaimedTensor:
    """Pickles as torch's tensor rebuild of `storage` with any claimed offset, size and stride."""

    def __init__(self, storage, size, stride=None, offset=0):
        stride = stride or [int(np.prod(size[i + 1:])) for i in range(len(size))]
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


def short_storage(numel=4):
    with warnings.catch_warnings():  # TypedStorage is deprecated, and exactly what releases pickle
        warnings.simplefilter('ignore')
        return torch.full([numel], 7.0).storage()


def persistent_state(record):
    """The pickled state dict inside one fake-persistence record."""
    return record.__reduce__()[1][0]['state']


def release_pickle(path, G=None, init_kwargs=None, tamper=None):
    """A release-format pickle {'G_ema': G} (its persistence state as the releases write it);
    `tamper(state)` edits the pickled state of G before it is written."""
    G = G or tiny_stylegan2_generator()
    with _FakeReleasePersistence() as release:
        record = release.persistent(G, '', G.init_kwargs if init_kwargs is None else init_kwargs)
        if tamper is not None:
            tamper(persistent_state(record))
        data = pickle.dumps({'G_ema': record})
    path.write_bytes(data)
    return path


class StoredRecord:
    """A storage of a hand-written torch.save zip: record `key`, claiming `numel` elements."""

    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _ZipPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StoredRecord):
            return ('storage', torch.FloatStorage, obj.key, 'cpu', obj.numel)
        return None


def torch_zip(path, obj, records, compression=zipfile.ZIP_STORED, data_pkl=None):
    """A torch.save zip of `obj` (with StoredRecord storages; or the pickle `data_pkl` as it is),
    records {key: bytes} (compressed with `compression`)."""
    buffer = io.BytesIO()
    _ZipPickler(buffer, protocol=2).dump(obj)
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('archive/data.pkl', buffer.getvalue() if data_pkl is None else data_pkl)
        archive.writestr('archive/byteorder', 'little')
        for key, data in records.items():
            archive.writestr(f'archive/data/{key}', data, compress_type=compression)
        archive.writestr('archive/version', '3\n')
    return path


def checkpoint_payload(state_dict):
    """A checkpoint of this project's format whose G has `state_dict` (tensors or ClaimedTensors)."""
    return {'format': 'stylegan-networks', 'version': 1, 'augment_p': None, 'training_set_kwargs': None,
            'networks': {'G': {'architecture': 'stylegan2.Generator',
                               'init_kwargs': tiny_stylegan2_generator().init_kwargs, 'state_dict': state_dict}}}


def tf_gs_pickle(path, static_kwargs, variables=None):
    """A TensorFlow-era pickle of a lone Gs with these arguments and variables (protocol 3: no frames,
    so a test may edit its bytes)."""
    with fake_tflib() as Network:
        path.write_bytes(pickle.dumps(tf_network(Network, 'G', variables or {}, static_kwargs), protocol=3))
    return path


def nested_tuple_key_pickle(depth):
    """{((...(1,)...),): 0} with the tuple `depth` deep: two bytes a level. A plain pickle.loads of it
    crashes the interpreter (hashing the key recurses in C), so the loader must refuse it unread."""
    return b'\x80\x04}' + b'K\x01' + b'\x85' * depth + b'K\x00s.'


def shared_reference_bomb(levels):
    """[x, x] nested `levels` deep by reference: a few bytes a level, 2**levels values when walked."""
    value = [1]
    for _ in range(levels):
        value = [value, value]
    return value


def crafted_files(folder):
    """{name: (path, loader)} of hostile files, each under 1 MB; loader 'network' or 'snapshot'."""
    files = {}

    def add(name, path, loader='network'):
        assert path.stat().st_size < 1 << 20, name
        files[name] = (path, loader)

    # Release pickles.
    def short_weight(state):  # G.mapping.fc0.weight: [8, 8] claimed over 4 stored values
        fc0 = persistent_state(persistent_state(state['_modules']['mapping'])['_modules']['fc0'])
        fc0['_parameters']['weight'] = ClaimedTensor(short_storage(), [8, 8])
    add('release_view_past_storage', release_pickle(folder / 'short.pkl', tamper=short_weight))
    add('release_huge_z_dim', release_pickle(folder / 'z.pkl', init_kwargs=dict(
        tiny_stylegan2_generator().init_kwargs, z_dim=60000)))
    add('release_million_layers', release_pickle(folder / 'layers.pkl', init_kwargs=dict(
        tiny_stylegan2_generator().init_kwargs, mapping_kwargs={'num_layers': 10 ** 6})))
    add('release_big_network_few_weights', release_pickle(folder / 'big.pkl', init_kwargs=dict(
        z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3, channel_max=1024)))
    (folder / 'deep.pkl').write_bytes(nested_tuple_key_pickle(400_000))
    add('release_deeply_nested', folder / 'deep.pkl')
    add('release_shared_reference_bomb', release_pickle(folder / 'bomb.pkl', init_kwargs=dict(
        tiny_stylegan2_generator().init_kwargs, resample_filter=shared_reference_bomb(40))))
    add('tf_million_mapping_layers', tf_gs_pickle(folder / 'tf-layers.pkl', {'mapping_layers': 10 ** 6}))
    add('tf_big_network_no_variables', tf_gs_pickle(folder / 'tf-big.pkl', {'resolution': 1024, 'fmap_max': 1024}))
    add('tf_array_claiming_more_than_its_bytes', tf_gs_pickle(folder / 'tf-array.pkl', {}, {'x': np.zeros(4)}))
    data = (folder / 'tf-array.pkl').read_bytes()
    (folder / 'tf-array.pkl').write_bytes(data.replace(b'K\x04\x85', b'J\x00\x00\x00\x01\x85', 1))
    # Checkpoints (torch.save zips).
    payload = checkpoint_payload(dict(tiny_stylegan2_generator().state_dict()))
    payload['networks']['G']['init_kwargs']['w_dim'] = 50_000
    torch.save(payload, folder / 'w.pt')
    add('checkpoint_huge_w_dim', folder / 'w.pt')
    add('checkpoint_expanded_view', torch_zip(folder / 'expanded.pt', checkpoint_payload(
        {'x': ClaimedTensor(StoredRecord('0', 4), [10 ** 5, 10 ** 4], [0, 0])}), {'0': b'\0' * 16}))
    add('checkpoint_view_past_storage', torch_zip(folder / 'view.pt', checkpoint_payload(
        {'x': ClaimedTensor(StoredRecord('0', 4), [64, 64])}), {'0': b'\0' * 16}))
    add('checkpoint_storage_claims_more_than_its_record', torch_zip(folder / 'record.pt', checkpoint_payload(
        {'x': ClaimedTensor(StoredRecord('0', 10 ** 10), [4])}), {'0': b'\0' * 16}))
    add('checkpoint_zip_bomb', torch_zip(folder / 'bomb.pt', {'x': ClaimedTensor(StoredRecord('0', 10 ** 8), [4])},
                                         {'0': b'\0' * (4 * 10 ** 8)}, compression=zipfile.ZIP_DEFLATED))
    add('checkpoint_deeply_nested', torch_zip(folder / 'deep.pt', None, {}, data_pkl=nested_tuple_key_pickle(400_000)))
    payload = checkpoint_payload({})
    payload['training_set_kwargs'] = shared_reference_bomb(40)
    add('snapshot_shared_reference_bomb', torch_zip(folder / 'snapshot-bomb.pt', payload, {}), 'snapshot')
    return files


# What each refusal says.
EXPECTED = {
    'release_view_past_storage': r'claims size \[8, 8\] .* storage that holds 4',
    'release_huge_z_dim': r'has z_dim=60000; this project builds networks with \|z_dim\| <= 4096',
    'release_million_layers': r'num_layers=1000000; .* <= 64',
    'release_big_network_few_weights': r"weights do not fit a Generator built from its own arguments",
    'release_deeply_nested': r'nested more than 100 deep',
    'release_shared_reference_bomb': r'has more than 1000000 values',
    'tf_million_mapping_layers': r'has num_layers=1000000',
    'tf_big_network_no_variables': r'has no TensorFlow variable',
    'tf_array_claiming_more_than_its_bytes': r'a numpy array claims a shape its stored bytes do not fill',
    'checkpoint_huge_w_dim': r'has w_dim=50000',
    'checkpoint_expanded_view': r'claims shape \[100000, 10000\], more elements than the 16 bytes stored',
    'checkpoint_view_past_storage': r'cannot be read safely .*resize storage that is not resizable',
    'checkpoint_storage_claims_more_than_its_record': r'cannot be read safely .*record size \(16 bytes\) does not match',
    'checkpoint_zip_bomb': r"has a compressed \(method 8\) member 'archive/data/0'; torch.save writes",
    'checkpoint_deeply_nested': r'nested more than 100 deep',
    'snapshot_shared_reference_bomb': r'has more than 1000000 values',
}


# ---------------------------------------------------------------------------------------------
# The caps: every crafted file, loaded in a child process under RLIMIT_AS and a timeout.

_CAPPED_LOADER = r'''
import json, resource, sys, time
import torch, stylegan
from stylegan.training import snapshot
# torch alone maps gigabytes of address space (CUDA libraries); the cap is on top of that.
baseline = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (baseline + int(sys.argv[1]), baseline + int(sys.argv[1])))
for loader, path in zip(sys.argv[2::2], sys.argv[3::2]):
    start = time.monotonic()
    try:
        stylegan.load_network(path) if loader == 'network' else snapshot.read_checkpoint_payload(path)
        outcome = 'loaded'
    except stylegan.NetworkFileError as error:
        outcome = str(error)
    print(json.dumps([path, outcome, time.monotonic() - start]), flush=True)
'''


@pytest.fixture(scope='module')
def hostile_files(tmp_path_factory):
    return crafted_files(tmp_path_factory.mktemp('hostile'))


def test_crafted_files_are_refused_within_memory_and_time_caps(hostile_files):
    files = hostile_files
    genuine = [DATA_DIR / 'sg3repo-sg3r-32.pkl', DATA_DIR / 'snapshot-before-layout-move.pt']  # load under the cap
    args = [str(MEMORY_CAP)] + [arg for path, loader in files.values() for arg in (loader, str(path))]
    args += [arg for path in genuine for arg in ('network', str(path))]
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-c', _CAPPED_LOADER, *args], capture_output=True, text=True,
                            env=env, timeout=TIME_CAP_S * len(files) + 120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    outcomes = {path: (message, seconds) for path, message, seconds in map(json.loads, result.stdout.splitlines())}
    for name, (path, _loader) in files.items():
        message, seconds = outcomes[str(path)]
        assert re.search(EXPECTED[name], message), (name, message)
        assert seconds < TIME_CAP_S, (name, seconds)
        assert '\n' not in message and 'Traceback' not in message, (name, message)
    assert [outcomes[str(path)][0] for path in genuine] == ['loaded', 'loaded']


# ---------------------------------------------------------------------------------------------
# The same refusals in this process (the files are refused before anything large is allocated).

@pytest.mark.parametrize('name', [name for name in EXPECTED if not name.startswith('snapshot')])
def test_crafted_network_file_is_refused_with_one_sentence(hostile_files, name):
    path, _loader = hostile_files[name]
    with pytest.raises(NetworkFileError, match=EXPECTED[name]):
        load_network(path)


def test_release_view_past_storage_would_read_memory_the_file_never_held(tmp_path):
    # The tensor rebuild the release pickles name, unrestricted: it grows the storage to the claimed size.
    grown = torch._utils._rebuild_tensor_v2(short_storage(), 0, (8, 8), (8, 1), False, collections.OrderedDict())
    assert grown.shape == (8, 8) and grown.untyped_storage().nbytes() == 8 * 8 * 4


def test_snapshot_shared_reference_bomb_is_refused(hostile_files):
    path, _loader = hostile_files['snapshot_shared_reference_bomb']
    with pytest.raises(NetworkFileError, match='has more than 1000000 values'):
        snapshots.read_checkpoint_payload(path)


def test_numpy_dtype_other_than_plain_numbers_is_refused(tmp_path):
    # numpy's own unpickling lets a dtype's state set the "holds Python objects" flag; the bytes of
    # an array of it would then be used as object pointers.
    dtype = np.dtype('V8', False, True)
    dtype.__setstate__((3, '|', None, None, None, 8, 1, 0x3f))
    assert dtype.hasobject
    path = tmp_path / 'forged.pkl'
    path.write_bytes(pickle.dumps({'G_ema': np.float32(1.5)}, protocol=3).replace(b'X\x02\x00\x00\x00f4', b'X\x02\x00\x00\x00V8'))
    with pytest.raises(NetworkFileError, match="numpy dtype 'V8' is not a plain bool, integer or float type"):
        load_network(path)


def test_numpy_array_claiming_more_than_its_bytes_is_refused(tmp_path):
    data = pickle.dumps({'G_ema': np.zeros(4, np.float32)}, protocol=3)  # protocol 3: no frames to fix
    path = tmp_path / 'array.pkl'
    path.write_bytes(data.replace(b'K\x04\x85', b'J\x00\x00\x00\x01\x85', 1))  # shape (4,) -> (2**24,)
    with pytest.raises(NetworkFileError, match='a numpy array claims a shape its stored bytes do not fill'):
        load_network(path)


def test_mismatched_optimizer_state_is_refused_before_loading():
    G = tiny_stylegan2_generator()
    optimizer = torch.optim.Adam(G.parameters())
    G(torch.randn(2, 8), None).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    snapshots.check_optimizer_state(optimizer, state, 'G_opt')  # its own state fits
    state['state'][0]['exp_avg'] = torch.zeros(3, 3)
    with pytest.raises(NetworkFileError, match=r"G_opt: 'exp_avg' of parameter 0 has shape \[3, 3\]"):
        snapshots.check_optimizer_state(optimizer, state, 'G_opt')
    with pytest.raises(NetworkFileError, match='is not the state of an optimizer of'):
        snapshots.check_optimizer_state(optimizer, {'state': {}, 'param_groups': []}, 'G_opt')


def test_checkpoints_and_release_pickles_still_load_within_the_budget(tmp_path):
    G = tiny_stylegan2_generator()
    save_network(tmp_path / 'net.pt', G=G, G_ema=G)
    z = torch.randn(2, 8)
    assert torch.equal(load_network(tmp_path / 'net.pt')['G_ema'](z, None, noise_mode='const'),
                       G.eval()(z, None, noise_mode='const'))
    assert torch.equal(load_network(release_pickle(tmp_path / 'ok.pkl', G))['G_ema'](z, None, noise_mode='const'),
                       G(z, None, noise_mode='const'))


# ---------------------------------------------------------------------------------------------
# Content keys: every field of a hash over several files is length-prefixed.

def test_metrics_cache_key_tells_apart_folders_whose_name_and_bytes_streams_coincide(tmp_path):
    from metrics import cache as cache_lib
    (tmp_path / 'two').mkdir()
    (tmp_path / 'two' / 'a').write_bytes(b'1')
    (tmp_path / 'two' / 'b').write_bytes(b'2')
    (tmp_path / 'one').mkdir()
    (tmp_path / 'one' / 'a').write_bytes(b'1b\0' + b'2')  # name + NUL + bytes of both give one stream
    assert cache_lib.source_content_hash(tmp_path / 'two') != cache_lib.source_content_hash(tmp_path / 'one')


def test_ops_build_key_tells_apart_sources_whose_streams_coincide(tmp_path):
    from ops import build
    (tmp_path / 'x').mkdir()
    (tmp_path / 'x' / 'a.cu').write_bytes(b'1')
    (tmp_path / 'x' / 'b.cu').write_bytes(b'2')
    (tmp_path / 'y').mkdir()
    (tmp_path / 'y' / 'a.cu').write_bytes(b'1\0b.cu\0' + b'2')
    assert (build.source_hash([tmp_path / 'x' / 'a.cu', tmp_path / 'x' / 'b.cu'])
            != build.source_hash([tmp_path / 'y' / 'a.cu']))
    assert build.cache_key([], 'a\nb', 'c', 'd') != build.cache_key([], 'a', 'b\nc', 'd')


# ---------------------------------------------------------------------------------------------
# Snapshots whose training state has the wrong structure: refused when read, before any resume.

def _tamper_rng(state):
    state['rng']['ranks'][0]['torch'] = torch.zeros(10, dtype=torch.uint8)


def _tamper_ada(state):
    state['ada'] = {'p': torch.zeros(10 ** 6), 'sign_stats': torch.zeros(2), 'num_batches': 0, 'last_rt': 0.0}


@pytest.mark.parametrize('tamper, where', [
    (_tamper_rng, r"training_state\['rng'\]\['ranks'\]\[0\] is not the torch, numpy and Python RNG states"),
    (lambda state: state.update(G_opt=[1, 2]), r"training_state\['G_opt'\] is not a dict"),
    (lambda state: state['loop'].update(cur_nimg='8'), r"training_state\['loop'\] is not a dict of integers"),
    (_tamper_ada, r"training_state\['ada'\] is not ADA's state"),
])
def test_snapshot_with_a_wrongly_shaped_training_state_is_refused_when_read(tmp_path, tamper, where):
    payload = torch.load(DATA_DIR / 'snapshot-before-layout-move.pt', weights_only=True)
    snapshots.training_state_of(payload)  # the real snapshot passes
    tamper(payload['training_state'])
    torch.save(payload, tmp_path / 'snapshot.pt')
    with pytest.raises(NetworkFileError, match=where + r'.*, so the snapshot is damaged or was not written by this project\.$'):
        snapshots.training_state_of(snapshots.read_checkpoint_payload(tmp_path / 'snapshot.pt'))


def test_cifar10_batch_nested_a_million_deep_is_refused_without_crashing(tmp_path):
    import tarfile
    from stylegan.data.sources import SourceError, open_source
    with tarfile.open(tmp_path / 'cifar.tar.gz', 'w:gz') as tar:
        for batch in range(1, 6):
            blob = nested_tuple_key_pickle(1_000_000)
            info = tarfile.TarInfo(f'cifar-10-batches-py/data_batch_{batch}')
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(SourceError, match=r"unreadable 'cifar-10-batches-py/data_batch_1' \(.*nested more than 100 deep"):
        open_source(tmp_path / 'cifar.tar.gz')
