"""Specification of ops/build.py, the loader of the fused CUDA kernels, on a machine without a
GPU: toolkit and header discovery, architecture choice, cache key, the build lock, the
failure paragraph and the auto/cuda/ref switch."""
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from ops import build, dispatch, kernels

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def make_toolkit(root, version=13000):
    """A folder that looks like a CUDA toolkit root: bin/nvcc and include/cuda.h."""
    (root / 'bin').mkdir(parents=True)
    (root / 'include').mkdir()
    (root / 'bin' / 'nvcc').write_text('#!/bin/sh\n')
    (root / 'bin' / 'nvcc').chmod(0o755)
    (root / 'include' / 'cuda.h').write_text(f'#pragma once\n#define CUDA_VERSION {version}\n')
    return root


def test_toolkit_is_found_through_an_nvcc_wrapper_script(tmp_path):
    real = make_toolkit(tmp_path / 'cuda-13.0')
    wrapper = tmp_path / 'wrappers' / 'nvcc'
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {real}/bin/nvcc "$@"\n')
    toolkit = build.find_cuda_toolkit(environ={}, which=lambda name: str(wrapper), search_roots=())
    assert toolkit.root == real.resolve() and toolkit.version == '13.0'


def test_toolkit_is_found_through_a_symlinked_nvcc(tmp_path):
    real = make_toolkit(tmp_path / 'cuda-12.4', version=12040)
    link = tmp_path / 'bin' / 'nvcc'
    link.parent.mkdir()
    link.symlink_to(real / 'bin' / 'nvcc')
    toolkit = build.find_cuda_toolkit(environ={}, which=lambda name: str(link), search_roots=())
    assert toolkit.root == real.resolve() and toolkit.version == '12.4'


def test_cuda_home_wins_and_an_invalid_one_is_skipped(tmp_path):
    chosen = make_toolkit(tmp_path / 'chosen')
    other = make_toolkit(tmp_path / 'other')
    found = build.find_cuda_toolkit(environ={'CUDA_HOME': str(chosen)}, which=lambda name: str(other / 'bin' / 'nvcc'),
                                    search_roots=())
    assert found.root == chosen.resolve()
    found = build.find_cuda_toolkit(environ={'CUDA_HOME': str(tmp_path / 'missing')},
                                    which=lambda name: str(other / 'bin' / 'nvcc'), search_roots=())
    assert found.root == other.resolve()


def test_newest_versioned_toolkit_folder_is_the_last_resort(tmp_path):
    make_toolkit(tmp_path / 'cuda-12.9', version=12090)
    make_toolkit(tmp_path / 'cuda-13.0')
    found = build.find_cuda_toolkit(environ={}, which=lambda name: None, search_roots=(str(tmp_path),))
    assert found.root.name == 'cuda-13.0'


def test_missing_toolkit_is_one_error_naming_where_it_looked(tmp_path):
    with pytest.raises(build.OpsBuildError, match=r'no CUDA toolkit found .*looked at .*nowhere'):
        build.find_cuda_toolkit(environ={'CUDA_HOME': str(tmp_path / 'nowhere')}, which=lambda name: None,
                                search_roots=())


def test_wheel_headers_are_the_nvidia_include_folders_beside_torch(tmp_path):
    for package in ('cu13', 'cudnn'):
        (tmp_path / 'nvidia' / package / 'include').mkdir(parents=True)
    (tmp_path / 'nvidia' / 'nccl' / 'lib').mkdir(parents=True)
    found = build.wheel_include_dirs([str(tmp_path)])
    assert found == [tmp_path / 'nvidia' / 'cu13' / 'include', tmp_path / 'nvidia' / 'cudnn' / 'include']


def test_arch_list_comes_from_the_environment_then_the_gpus_then_the_default():
    assert build.pick_arch_list({'TORCH_CUDA_ARCH_LIST': '8.0 9.0+PTX'}, gpu_archs=['8.6']) == '8.0;9.0+PTX'
    assert build.pick_arch_list({}, gpu_archs=['9.0', '8.6', '9.0']) == '8.6;9.0'
    assert build.pick_arch_list({}, gpu_archs=[]) == build.DEFAULT_ARCH_LIST
    assert {'8.0', '9.0'} <= set(build.DEFAULT_ARCH_LIST.replace('+PTX', '').split(';'))
    with pytest.raises(build.OpsBuildError, match="TORCH_CUDA_ARCH_LIST entries must look like"):
        build.pick_arch_list({'TORCH_CUDA_ARCH_LIST': 'sm_90'})


def test_cache_key_changes_with_sources_torch_cuda_and_archs(tmp_path):
    source = tmp_path / 'k.cu'
    source.write_text('// v1\n')
    base = ([source], '2.4.0', '12.4', '8.0;9.0')
    key = build.cache_key(*base)
    assert build.cache_key(*base) == key
    assert build.cache_key([source], '2.5.0', '12.4', '8.0;9.0') != key
    assert build.cache_key([source], '2.4.0', '13.0', '8.0;9.0') != key
    assert build.cache_key([source], '2.4.0', '12.4', '9.0') != key
    source.write_text('// v2\n')
    assert build.cache_key(*base) != key


def test_ops_mode_reads_auto_cuda_or_ref_and_rejects_anything_else():
    assert build.ops_mode({}) == 'auto'
    assert build.ops_mode({'STYLEGAN_OPS': ' CUDA '}) == 'cuda'
    assert build.ops_mode({'STYLEGAN_OPS': 'ref'}) == 'ref'
    with pytest.raises(ValueError, match=r"STYLEGAN_OPS must be one of \('auto', 'cuda', 'ref'\), got 'fast'"):
        build.ops_mode({'STYLEGAN_OPS': 'fast'})


@pytest.mark.parametrize('mode, path', [('auto', 'cuda'), ('cuda', 'cuda'), ('ref', 'ref')])
def test_environment_switch_picks_the_path_of_impl_cuda(monkeypatch, mode, path):
    monkeypatch.setenv('STYLEGAN_OPS', mode)
    assert dispatch.resolve_impl('cuda') == path
    assert dispatch.resolve_impl('ref') == 'ref'


def test_ref_mode_never_builds(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError('ref mode must not build')
    monkeypatch.setattr(build, 'load_kernel_library', fail)
    kernels._load_for_mode.cache_clear()
    assert kernels._load_for_mode('ref') is None


# ----------------------------------------------------------------------------------------------
# Real builds of tiny C++ sources (g++ only: fast, and no CUDA needed).

GOOD_SOURCE = 'extern "C" int stylegan_test_answer() { return 42; }\n'
BROKEN_SOURCE = 'extern "C" int stylegan_test_answer() { return 42 }  // missing semicolon\n'


def tiny_spec(tmp_path, text, name='tiny_ops'):
    source = tmp_path / f'{name}.cpp'
    source.write_text(text)
    return build.BuildSpec(name=name, sources=(source,), cache_root=tmp_path / 'cache', toolkit=None, arch_list='')


BUILD_IN_CHILD = textwrap.dedent('''
    import ctypes, pathlib, sys
    from ops import build
    spec = build.BuildSpec(name='tiny_ops', sources=(pathlib.Path(sys.argv[1]),), cache_root=pathlib.Path(sys.argv[2]),
                           toolkit=None, arch_list='')
    result = build.build_library(spec)
    print('compiled' if result.compiled else 'reused', ctypes.CDLL(str(result.library_path)).stylegan_test_answer())
''')


def test_two_processes_building_at_once_compile_once_and_both_get_the_library(tmp_path):
    spec = tiny_spec(tmp_path, GOOD_SOURCE)
    children = [subprocess.Popen([sys.executable, '-c', BUILD_IN_CHILD, str(spec.sources[0]), str(spec.cache_root)],
                                 cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    results = sorted(out.split()[-2:][0] + ' ' + out.split()[-1] for out, _ in outputs)
    assert results == ['compiled 42', 'reused 42']


HOLD_LOCK_IN_CHILD = textwrap.dedent('''
    import sys, time
    from ops import build
    with build.build_lock(sys.argv[1]):
        print('locked', flush=True)
        time.sleep(600)
''')


def test_a_killed_builder_leaves_no_lock_behind(tmp_path):
    lock_path = tmp_path / 'build.lock'
    child = subprocess.Popen([sys.executable, '-c', HOLD_LOCK_IN_CHILD, str(lock_path)], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == 'locked'
    waited = []
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    with build.build_lock(lock_path, on_wait=lambda: waited.append(True)):
        pass  # acquired: the kernel released the dead holder's lock
    assert lock_path.exists()  # the file may stay; it is the flock, not the file, that locks


def test_a_stale_torch_lock_file_from_a_killed_build_does_not_block(tmp_path):
    spec = tiny_spec(tmp_path, GOOD_SOURCE)
    spec.build_dir.mkdir(parents=True)
    (spec.build_dir / 'lock').write_text('')  # what torch < 2.12 leaves when a build is killed
    result = build.build_library(spec)
    assert result.compiled and result.library_path.is_file()
    assert build.build_library(spec).compiled is False


def test_broken_source_fails_with_its_log_and_one_paragraph(tmp_path):
    spec = tiny_spec(tmp_path, BROKEN_SOURCE, name='broken_ops')
    with pytest.raises(build.OpsBuildError) as caught:
        build.build_library(spec)
    log = pathlib.Path(caught.value.log_path).read_text()
    assert 'broken_ops.cpp' in log and 'error' in log
    message = build.fallback_message(caught.value)
    assert '\n' not in message
    for expected in (str(caught.value.log_path), 'CUDA_HOME', 'TORCH_CUDA_ARCH_LIST', 'STYLEGAN_OPS=ref',
                     'STYLEGAN_OPS=cuda', 'reference ops'):
        assert expected in message


def test_a_failure_is_retried_by_a_later_run(tmp_path):
    spec = tiny_spec(tmp_path, BROKEN_SOURCE, name='fixed_ops')
    with pytest.raises(build.OpsBuildError):
        build.build_library(spec)
    failed_marker = spec.build_dir / 'FAILED'
    old = time.time() - 60
    os.utime(failed_marker, (old, old))  # a failure from an earlier run, not one we waited for
    with pytest.raises(build.OpsBuildError):
        build.build_library(spec)  # same key, still broken: compiled again, not the old verdict
    assert failed_marker.stat().st_mtime > old + 30


def test_auto_mode_falls_back_with_the_paragraph_and_cuda_mode_raises(tmp_path, monkeypatch, capsys):
    spec = tiny_spec(tmp_path, BROKEN_SOURCE, name='kernel_stub')
    monkeypatch.setattr(build, 'load_kernel_library',
                        lambda environ, cache_root=None: build.build_library(spec))
    kernels._load_for_mode.cache_clear()
    try:
        assert kernels._load_for_mode('auto') is None
        err = capsys.readouterr().err
        assert 'building the fused CUDA kernels' in err and 'Continuing with the reference ops' in err
        with pytest.raises(build.OpsBuildError, match='STYLEGAN_OPS=cuda asks for the fused kernels'):
            kernels._load_for_mode('cuda')
    finally:
        kernels._load_for_mode.cache_clear()


def test_cpu_tensors_never_ask_for_the_kernels(monkeypatch):
    monkeypatch.setattr(kernels, '_load_for_mode', lambda mode: pytest.fail('CPU tensors must not build'))
    assert kernels.fused_kernels_for(torch.zeros(1)) is None
