"""The kernel tests catch races and tiling mistakes: a copy of the kernel sources with one
`__syncthreads()` deleted, or with a tile halo one sample short, is built with the CPU emulation
(ops/emu) and the run-time guard's cases (ops/guard.py CASES, the same comparisons with the
reference that tests/test_ops_cuda_kernels.py makes) must now fail. A deliberately wrong build is
also caught by the guard in use: disabled, with its paragraph, or an error under STYLEGAN_OPS=cuda.

Each mutation is found by pattern in the current sources, so the test follows kernel rewrites;
it skips (saying why) when a kernel has no such line.
"""
import pathlib
import re
import shutil

import pytest
import torch

from ops import build, guard
from ops import kernels as kernels_module
from ops.upfirdn2d import setup_filter, upfirdn2d

BARRIER = re.compile(r'__syncthreads\(\);')
HALO = re.compile(r'^(?P<code>[^\n]*?);(?P<comment>[ \t]*// halo\b[^\n]*)$', re.MULTILINE)
KERNEL_FILES = ('upfirdn2d.cu', 'filtered_lrelu.cu', 'bias_act.cu', 'resample_tile.h')

# A barrier that orders a block's next pass over the planes after its previous one matters only
# when blocks loop, i.e. when the grid has fewer z-blocks than plane groups. The emulated build
# caps the grid's z with STYLEGAN_MAX_GRID_Z=2 (ops/build.py) when the kernels read that macro;
# kernels that do not cannot have such a barrier tested at any size that fits a test.
LOOP_CARRIED = re.compile(r'previous plane')
GRID_CAP = 'STYLEGAN_MAX_GRID_Z'


def unobservable(name, line):
    """Why deleting this barrier cannot be observed, or None."""
    sources = ''.join(p.read_text() for p in build.kernel_sources() if p.exists())
    if LOOP_CARRIED.search(line) and GRID_CAP not in sources:
        return (f'{name}: a loop-carried barrier (blocks pass over the planes once at every test size); the '
                f'kernels must cap grid z with {GRID_CAP} for the emulated build to exercise it')
    return None


def barrier_sites():
    """(file, occurrence index, line text) of every __syncthreads(); in code (not comments)."""
    sites = []
    for name in KERNEL_FILES:
        path = build.OPS_DIR / name
        if not path.exists():
            continue
        count = 0
        for line in path.read_text().splitlines():
            if BARRIER.search(line.split('//')[0]):
                sites.append((name, count, line.strip()))
                count += 1
    return sites


def halo_sites():
    return [(name, match.group(0).strip()) for name in KERNEL_FILES if (build.OPS_DIR / name).exists()
            for match in HALO.finditer((build.OPS_DIR / name).read_text())]


def mutated_copy(tmp_path, name, mutate):
    """A copy of every source of the emulated build, with `mutate(text)` applied to ops/`name`."""
    root = tmp_path / 'ops'
    for source in build.emulated_sources():
        target = root / source.relative_to(build.OPS_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    path = root / name
    text = path.read_text()
    mutated = mutate(text)
    assert mutated != text, f'the mutation did not change {name}'
    path.write_text(mutated)
    return root


def failing_ops(kernels):
    """{op: what went wrong} for the guard's cases run with `kernels` on CPU tensors."""
    with kernels_module.use_emulated(kernels):
        problems = {op: guard.verify(op, torch.device('cpu')) for op in guard.CASES}
    return {op: problem for op, problem in problems.items() if problem is not None}


def test_the_unmutated_sources_pass_the_cases():
    assert failing_ops(kernels_module.emulated_kernels()) == {}


def _site_id(site):
    return f'{site[0]}:{site[1]}'


@pytest.mark.parametrize('site', barrier_sites() or [None], ids=lambda s: 'none' if s is None else _site_id(s))
def test_deleting_a_syncthreads_makes_the_cases_fail(tmp_path, site):
    if site is None:
        pytest.skip('no kernel in ops/ has a __syncthreads(); line (the one-thread-per-output kernels need none)')
    name, index, line = site
    if unobservable(name, line):
        pytest.skip(unobservable(name, line))

    def delete_barrier(text):
        matches = [m for m in BARRIER.finditer(text) if '//' not in text[text.rfind('\n', 0, m.start()) + 1:m.start()]]
        m = matches[index]
        return text[:m.start()] + '/* mutation: barrier deleted */;' + text[m.end():]

    root = mutated_copy(tmp_path, name, delete_barrier)
    failures = failing_ops(kernels_module.emulated_kernels(source_dir=root, cache_root=tmp_path / 'cache'))
    assert failures, f'deleting barrier {index} of {name} ({line}) went unnoticed'


@pytest.mark.parametrize('site', halo_sites() or [None], ids=lambda s: 'none' if s is None else s[0])
def test_a_tile_halo_one_short_makes_the_cases_fail(tmp_path, site):
    if site is None:
        pytest.skip('no kernel source marks a halo line with `// halo`')
    name, line = site
    root = mutated_copy(tmp_path, name, lambda text: HALO.sub(
        lambda m: f"{m.group('code')} - 1;{m.group('comment')}" if m.group(0).strip() == line else m.group(0), text))
    failures = failing_ops(kernels_module.emulated_kernels(source_dir=root, cache_root=tmp_path / 'cache'))
    assert failures, f'a halo one short ({line}) went unnoticed'


# ----------------------------------------------------------------------------------------------
# The run-time guard in use, with a deliberately wrong build: every fp16/bf16 load reads 1/16
# too large (STYLEGAN_EMU_FAULT_HALF_LOADS in ops/emu/cuda_emu.h), whatever the kernels are.

@pytest.fixture(scope='module')
def wrong_build(tmp_path_factory):
    return kernels_module.emulated_kernels(defines=('STYLEGAN_EMU_FAULT_HALF_LOADS',),
                                           cache_root=tmp_path_factory.mktemp('cache'))


@pytest.fixture
def wrong_kernels(wrong_build):
    guard.reset()  # each test sees the guard's first verdict
    yield wrong_build
    guard.reset()


def test_the_guard_disables_a_wrong_op_with_one_paragraph_and_the_reference_takes_over(wrong_kernels, capsys,
                                                                                        monkeypatch):
    monkeypatch.setenv('STYLEGAN_OPS', 'auto')
    x = torch.randn([2, 3, 8, 8]).half()
    f = setup_filter([1, 3, 3, 1])
    with kernels_module.use_emulated(wrong_kernels):
        y = upfirdn2d(x, f, up=2, padding=2)
        assert kernels_module.fused_kernels_for(x, 'upfirdn2d') is None  # disabled for the process
    err = capsys.readouterr().err
    paragraphs = [p for p in err.split('\n') if 'start-up check' in p]
    assert len(paragraphs) == 1, err
    assert 'fused upfirdn2d kernel disagrees' in paragraphs[0] and "'down 2, 12-tap separable filter, float16'" \
        in paragraphs[0] and 'disabled for this process' in paragraphs[0]
    torch.testing.assert_close(y, upfirdn2d(x, f, up=2, padding=2, impl='ref'))  # the reference's result


def test_one_failing_case_disables_the_op_for_every_dtype(wrong_kernels, capsys):
    x = torch.randn([2, 3, 8, 8])
    with kernels_module.use_emulated(wrong_kernels):
        assert guard.verify('upfirdn2d', torch.device('cpu')) is not None  # fp16 cases fail ...
        # ... so the op is off for every dtype, fp32 included: one verdict per op.
        assert kernels_module.fused_kernels_for(x, 'upfirdn2d') is None
    assert 'start-up check' in capsys.readouterr().err


def test_the_guard_makes_a_wrong_op_an_error_under_strict_mode(wrong_kernels, monkeypatch):
    monkeypatch.setenv('STYLEGAN_OPS', 'cuda')
    x = torch.randn([1, 3, 5, 7]).to(torch.bfloat16)
    from ops.bias_act import bias_act
    with kernels_module.use_emulated(wrong_kernels):
        for _ in range(2):  # every call, not only the first that ran the check
            with pytest.raises(guard.KernelCheckError, match=(
                    r'fused bias_act kernel disagrees .* case .*STYLEGAN_OPS=cuda asks for the fused kernels')):
                bias_act(x, torch.zeros([3]).to(torch.bfloat16), act='lrelu')


def test_a_kernel_using_cuda_outside_the_contract_fails_to_build_with_one_paragraph(tmp_path):
    root = mutated_copy(tmp_path, 'bias_act.cu', lambda text: text + '\n__device__ float fetch(float* p) { '
                                                                    'return __shfl_up_sync(0xffffffffu, *p, 1); }\n')
    with pytest.raises(build.OpsBuildError) as raised:
        kernels_module.emulated_kernels(source_dir=root, cache_root=tmp_path / 'cache')
    message = str(raised.value)
    assert message.startswith('stylegan ops: building the emulated kernels') and 'ops/emu/cuda_emu.h' in message
    assert '__shfl_up_sync' in pathlib.Path(raised.value.log_path).read_text()  # the compiler's words


def test_the_emulated_build_has_its_own_cache_folder_and_key():
    spec = build.emulated_build_spec()
    assert spec.emulated and spec.toolkit is None
    assert spec.build_dir.name.startswith(build.LIBRARY_NAME + '_emulated-')
    assert set(build.kernel_sources()) < set(spec.sources)  # the kernels plus the emulation
    assert build.emulated_build_spec(defines=('STYLEGAN_EMU_FAULT_HALF_LOADS',)).key != spec.key
