"""The fused kernels (ops/*.cu) compile for sm_80 and sm_90 from a clean cache. Needs nvcc,
not a GPU: CI runs it. Skipped only where no nvcc is installed at all."""
import ctypes
import os
import shutil

import pytest

from ops import build

HAS_NVCC = bool(shutil.which('nvcc') or os.environ.get('CUDA_HOME') or os.path.isdir('/usr/local/cuda'))


@pytest.mark.skipif(not HAS_NVCC, reason='no nvcc on this machine')
def test_every_kernel_compiles_for_sm80_and_sm90_from_a_clean_cache(tmp_path):
    environ = {**os.environ, 'TORCH_CUDA_ARCH_LIST': '8.0;9.0'}
    spec = build.kernel_build_spec(environ, cache_root=tmp_path)
    assert not spec.build_dir.exists()
    try:
        result = build.build_library(spec)
    except build.OpsBuildError as error:
        log = open(error.log_path).read() if error.log_path else ''
        pytest.fail(f'{build.fallback_message(error)}\n{log[-6000:]}')
    assert result.compiled
    ninja = (spec.build_dir / 'build.ninja').read_text()
    for arch in ('sm_80', 'sm_90'):
        assert f'code={arch}' in ninja
    for source in ('bias_act.cu', 'upfirdn2d.cu', 'fused_ops.cpp'):
        assert source in ninja
    library = ctypes.CDLL(str(result.library_path))
    assert build.library_source_hash(library) == 'h' + build.source_hash(build.kernel_sources())[:16]
    for symbol in ('stylegan_bias_act', 'stylegan_upfirdn2d', 'stylegan_ops_error_string'):
        assert hasattr(library, symbol)
