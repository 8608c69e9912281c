"""stylegan.load_network: release pickles, this project's checkpoints, safety and bad input."""
import collections
import pickle
import pickletools
import struct
import sys
import types

import pytest
import torch

from conftest import DATA_DIR, RELEASE_FIXTURES
from stylegan import NetworkFileError, load_network, save_network
from stylegan.networks import stylegan2, stylegan3


def relative_error(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def tiny_stylegan2_generator(**overrides):
    kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), channel_base=64, channel_max=16)
    kwargs.update(overrides)
    return stylegan2.Generator(**kwargs)


# ---------------------------------------------------------------------------------------------
# Release pickles: the same numbers as the original code.

@pytest.mark.parametrize('name', RELEASE_FIXTURES)
def test_release_pickle_reproduces_expected_outputs(name):
    nets = load_network(DATA_DIR / f'{name}.pkl')
    expected = torch.load(DATA_DIR / f'{name}.expected.pt', weights_only=True)
    z, c = expected['z'], expected['c']
    outputs = {
        'img_psi1': nets['G_ema'](z, c, truncation_psi=1, noise_mode='const'),
        'img_psi07': nets['G_ema'](z, c, truncation_psi=0.7, noise_mode='const'),
        'ws_psi07': nets['G_ema'].mapping(z, c, truncation_psi=0.7),
        'g_train_psi1': nets['G'](z, c, noise_mode='const'),
        'd_logits': nets['D'](expected['img_psi1'], c),
    }
    for key, out in outputs.items():
        assert relative_error(out, expected[key]) < 1e-5, key


@pytest.mark.parametrize('name', RELEASE_FIXTURES)
def test_release_pickle_brings_augment_p_and_dataset_options(name):
    nets = load_network(DATA_DIR / f'{name}.pkl')
    assert nets['augment_p'] == pytest.approx(0.25)
    assert nets['training_set_kwargs']['resolution'] == 32
    expected_generator = stylegan3.Generator if 'sg3' in name.split('-')[1] else stylegan2.Generator
    assert type(nets['G_ema']) is expected_generator
    assert type(nets['D']) is stylegan2.Discriminator


def rewrite_pickle_strings(data, old, new):
    """Replace a SHORT_BINUNICODE string in a protocol-4 pickle, fixing the enclosing frame length."""
    out, frame_len_pos, frame_delta, last = bytearray(), None, 0, 0
    for op, arg, pos in pickletools.genops(data):
        if op.name == 'FRAME':
            out += data[last:pos + 1]
            if frame_len_pos is not None:  # close the previous frame
                _adjust_frame(out, frame_len_pos, frame_delta)
            frame_len_pos, frame_delta, last = len(out), 0, pos + 1
        elif op.name == 'SHORT_BINUNICODE' and arg == old:
            out += data[last:pos]
            encoded = new.encode()
            out += b'\x8c' + bytes([len(encoded)]) + encoded
            frame_delta += len(encoded) - len(old.encode())
            last = pos + 2 + len(old.encode())
    out += data[last:]
    if frame_len_pos is not None:
        _adjust_frame(out, frame_len_pos, frame_delta)
    return bytes(out)


def _adjust_frame(out, length_pos, delta):
    (length,) = struct.unpack('<Q', out[length_pos:length_pos + 8])
    out[length_pos:length_pos + 8] = struct.pack('<Q', length + delta)


def test_pickle_with_numpy_1_module_paths_loads(tmp_path):
    data = (DATA_DIR / 'sg3repo-sg3t-32.pkl').read_bytes()
    old_style = rewrite_pickle_strings(data, 'numpy._core.multiarray', 'numpy.core.multiarray')
    assert b'numpy._core' not in old_style and b'numpy.core.multiarray' in old_style
    (tmp_path / 'old.pkl').write_bytes(old_style)
    new_nets, old_nets = load_network(DATA_DIR / 'sg3repo-sg3t-32.pkl'), load_network(tmp_path / 'old.pkl')
    z = torch.randn(2, 64)
    assert torch.equal(new_nets['G_ema'](z, None, noise_mode='const'), old_nets['G_ema'](z, None, noise_mode='const'))


# ---------------------------------------------------------------------------------------------
# Safety: nothing in a file runs.

def _reduce_payload(marker):
    """Pickles that run code the moment a plain pickle.load reads them; each creates `marker`."""
    cmd = f'touch {marker}'
    write = f"open({str(marker)!r}, 'w').write('ran')"

    class Reduce:
        def __init__(self, func, *args):
            self.func, self.args = func, args

        def __reduce__(self):
            return self.func, self.args

    import builtins
    import os
    import subprocess
    getattr_chain = (b'cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V'
                     + cmd.encode() + b'\ntR.')
    return {
        'os.system': pickle.dumps({'G': Reduce(os.system, cmd)}),
        'builtins.exec': pickle.dumps({'G': Reduce(builtins.exec, write)}),
        'builtins.eval': pickle.dumps({'G': Reduce(builtins.eval, write)}),
        'subprocess.check_call': pickle.dumps({'G': Reduce(subprocess.check_call, ['touch', str(marker)])}),
        'builtins.getattr': getattr_chain,
    }


@pytest.mark.parametrize('payload_name, global_name', [
    ('os.system', 'posix.system'), ('builtins.exec', 'builtins.exec'), ('builtins.eval', 'builtins.eval'),
    ('subprocess.check_call', 'subprocess.check_call'), ('builtins.getattr', 'builtins.getattr')])
def test_reduce_payload_is_refused_without_side_effect(tmp_path, payload_name, global_name):
    live_marker, marker = tmp_path / 'live', tmp_path / 'marker'
    # The payload is live: a plain unpickler runs it.
    pickle.loads(_reduce_payload(live_marker)[payload_name])
    assert live_marker.exists()
    path = tmp_path / 'evil.pkl'
    path.write_bytes(_reduce_payload(marker)[payload_name])
    with pytest.raises(NetworkFileError, match=f"refusing to load it: it references '{global_name}'"):
        load_network(path)
    assert not marker.exists()


class _FakeReleasePersistence:
    """Writes release-format pickles: a module `torch_utils.persistence` whose
    `_reconstruct_persistent_obj` execs the embedded source, as the release's does."""

    def __enter__(self):
        package, module = types.ModuleType('torch_utils'), types.ModuleType('torch_utils.persistence')

        def _reconstruct_persistent_obj(meta):
            exec(meta['module_src'], {})  # what the release does on load
            return meta['class_name']
        _reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'
        _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
        module._reconstruct_persistent_obj = _reconstruct_persistent_obj
        package.persistence = module
        self.saved = {k: sys.modules.get(k) for k in ('torch_utils', 'torch_utils.persistence')}
        sys.modules.update({'torch_utils': package, 'torch_utils.persistence': module})
        self.reconstruct = _reconstruct_persistent_obj
        return self

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value

    def persistent(self, module, source, init_kwargs=None):
        """The release's pickled form of `module` and its children, each carrying `source`."""
        state = {
            'training': module.training,
            '_parameters': collections.OrderedDict(module._parameters),
            '_buffers': collections.OrderedDict(module._buffers),
            '_non_persistent_buffers_set': set(),
            '_modules': collections.OrderedDict((n, self.persistent(m, source)) for n, m in module._modules.items()),
            '_init_args': (),
            '_init_kwargs': dict(init_kwargs or {}),
        }
        meta = dict(type='class', version=6, module_src=source, class_name=type(module).__name__, state=state)
        reconstruct = self.reconstruct

        class Persistent:
            def __reduce__(self):
                return reconstruct, (meta,)
        return Persistent()


def test_release_format_pickle_with_code_in_its_source_imports_without_running_it(tmp_path):
    marker = tmp_path / 'marker'
    source = f"open({str(marker)!r}, 'w').write('the embedded source ran')\n"
    G = tiny_stylegan2_generator().eval()
    with _FakeReleasePersistence() as release:
        data = pickle.dumps({'G_ema': release.persistent(G, source, G.init_kwargs)})
        pickle.loads(data)  # the release's loader would run the source: the payload is live
        assert marker.exists()
        marker.unlink()
    path = tmp_path / 'release-format.pkl'
    path.write_bytes(data)
    imported = load_network(path)['G_ema']
    assert not marker.exists()
    z = torch.randn(3, 8)
    assert torch.equal(imported(z, None, noise_mode='const'), G(z, None, noise_mode='const'))


# ---------------------------------------------------------------------------------------------
# This project's checkpoints.

def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    G = tiny_stylegan2_generator(c_dim=3)
    D = stylegan2.Discriminator(c_dim=3, img_resolution=16, img_channels=3, channel_base=64, channel_max=16)
    G_ema = stylegan3.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                                channel_base=64, channel_max=16, mapping_kwargs=dict(num_layers=1))
    save_network(tmp_path / 'net.pt', G=G, D=D, G_ema=G_ema, augment_p=0.3, training_set_kwargs={'resolution': 16})
    loaded = load_network(tmp_path / 'net.pt')
    z, c = torch.randn(2, 8), torch.eye(3)[:2]
    img = G(z, c, noise_mode='const')
    assert torch.equal(loaded['G'](z, c, noise_mode='const'), img)
    assert torch.equal(loaded['D'](img, c), D(img, c))
    assert torch.equal(loaded['G_ema'](z, None), G_ema(z, None))
    assert loaded['augment_p'] == pytest.approx(0.3) and loaded['training_set_kwargs'] == {'resolution': 16}
    # The file is plain data: it loads with weights_only=True.
    torch.load(tmp_path / 'net.pt', weights_only=True)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / 'net.pt'
    G = tiny_stylegan2_generator()
    save_network(path, G=G)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr('os.fsync', crash)
    with pytest.raises(KeyboardInterrupt):
        save_network(path, G=tiny_stylegan2_generator())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['net.pt']


# ---------------------------------------------------------------------------------------------
# Bad input: one clear sentence each.

def test_missing_file_is_named(tmp_path):
    with pytest.raises(NetworkFileError, match=r"network file '.*nope\.pkl' does not exist"):
        load_network(tmp_path / 'nope.pkl')


def test_truncated_pickle_is_reported(tmp_path):
    data = (DATA_DIR / 'sg2ada-sg2-32.pkl').read_bytes()
    (tmp_path / 'cut.pkl').write_bytes(data[:len(data) // 2])
    with pytest.raises(NetworkFileError, match=r"'.*cut\.pkl' is truncated or not a network pickle"):
        load_network(tmp_path / 'cut.pkl')


@pytest.mark.parametrize('obj, described', [([1, 2, 3], 'a list'), ({'model': 1}, r"a dict with keys \['model'\]")])
def test_pickle_of_something_else_is_reported(tmp_path, obj, described):
    (tmp_path / 'other.pkl').write_bytes(pickle.dumps(obj))
    with pytest.raises(NetworkFileError, match=f"holds {described}, not networks"):
        load_network(tmp_path / 'other.pkl')


def test_torch_file_of_another_kind_is_reported(tmp_path):
    torch.save({'model': {'weight': torch.zeros(2)}}, tmp_path / 'other.pt')
    with pytest.raises(NetworkFileError, match='not a checkpoint of this project'):
        load_network(tmp_path / 'other.pt')


def _tampered_checkpoint(tmp_path, edit):
    save_network(tmp_path / 'net.pt', G=tiny_stylegan2_generator())
    payload = torch.load(tmp_path / 'net.pt', weights_only=True)
    edit(payload['networks']['G'])
    torch.save(payload, tmp_path / 'net.pt')
    return tmp_path / 'net.pt'


def test_checkpoint_of_unknown_architecture_is_reported(tmp_path):
    path = _tampered_checkpoint(tmp_path, lambda record: record.update(architecture='biggan.Generator'))
    with pytest.raises(NetworkFileError, match=r"G in '.*' has architecture 'biggan.Generator'; this project builds"):
        load_network(path)


def test_checkpoint_whose_weights_belong_to_another_architecture_is_reported(tmp_path):
    path = _tampered_checkpoint(tmp_path, lambda record: record['init_kwargs'].update(img_resolution=32))
    with pytest.raises(NetworkFileError, match=r"G in '.*'s weights do not fit a Generator built from its own arguments \(missing: synthesis.b32"):
        load_network(path)


def test_saved_files_get_the_usual_permissions_not_private_ones(tmp_path):
    import os
    old_mask = os.umask(0o022)
    try:
        save_network(tmp_path / 'net.pt', G=tiny_stylegan2_generator())
    finally:
        os.umask(old_mask)
    assert (tmp_path / 'net.pt').stat().st_mode & 0o777 == 0o644
