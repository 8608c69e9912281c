"""The CPU emulation of CUDA (ops/emu) behaves like a GPU where tests need it to: a missing
`__syncthreads` gives wrong output and a present one the right output, shared memory starts as
garbage in every block, warp intrinsics exchange values between lanes, launches outside the
contract fail, and fp16/bf16 round as the device does. Uses the tiny kernels of
tests/kernels/emu_selftest.cu, built through the same loader as the kernels (ops/build.py)."""
import ctypes
import pathlib
import threading

import numpy as np
import pytest
import torch

from ops import build, kernels

SELFTEST = pathlib.Path(__file__).parent / 'kernels' / 'emu_selftest.cu'
EMULATION = [build.OPS_DIR / name for name in ('cuda_compat.h', *build.EMULATION_SOURCES)]


@pytest.fixture(scope='module')
def selftest():
    spec = build.BuildSpec(name='stylegan_emu_selftest', sources=(SELFTEST, *EMULATION),
                           cache_root=build.default_cache_root(), toolkit=None, arch_list='host', emulated=True,
                           include_dirs=(build.OPS_DIR,))
    library = ctypes.CDLL(str(build.build_library(spec).library_path))
    library.stylegan_emu_last_message.restype = ctypes.c_char_p
    return library


def ptr(t):
    return ctypes.c_void_p(t.data_ptr())


def reverse(selftest, blocks, threads, with_barrier):
    x = torch.arange(blocks * threads, dtype=torch.float32)
    out = torch.zeros_like(x)
    assert selftest.emu_reverse(ptr(out), ptr(x), blocks, threads, int(with_barrier)) == 0
    return out, x.reshape(blocks, threads).flip(1).reshape(-1)


@pytest.mark.parametrize('threads', [2, 33, 256])
def test_missing_syncthreads_gives_wrong_output_and_the_barrier_fixes_it(selftest, threads):
    out, expected = reverse(selftest, 3, threads, with_barrier=True)
    assert torch.equal(out, expected)
    out, expected = reverse(selftest, 3, threads, with_barrier=False)
    assert not torch.equal(out, expected)
    assert out.isnan().any()  # the unsynchronised reads saw the poisoned shared memory


def test_the_thread_order_is_fixed_per_launch_so_failures_reproduce(selftest):
    first, _ = reverse(selftest, 4, 64, with_barrier=False)
    second, _ = reverse(selftest, 4, 64, with_barrier=False)
    assert torch.equal(first.nan_to_num(-1), second.nan_to_num(-1))


@pytest.mark.parametrize('dynamic', [False, True], ids=['static', 'dynamic'])
def test_shared_memory_is_poisoned_at_every_block_start(selftest, dynamic):
    out = torch.zeros(4 * 64)
    assert selftest.emu_read_unwritten(ptr(out), 4, 64, int(dynamic)) == 0
    assert out.isnan().all()  # every block, not only the first, sees NaN rather than stale 1.0


def test_warp_intrinsics_exchange_values_between_lanes(selftest):
    blocks, threads = 2, 96
    x = torch.randint(0, 100, [blocks * threads]).float()
    sums, broadcast, down = (torch.zeros_like(x) for _ in range(3))
    ballots = torch.zeros(blocks * threads, dtype=torch.int32)
    assert selftest.emu_warp(ptr(sums), ptr(broadcast), ptr(down), ptr(ballots), ptr(x), blocks, threads) == 0
    warps = x.reshape(-1, 32)
    assert torch.equal(sums.reshape(-1, 32), warps.sum(1, keepdim=True).expand(-1, 32))
    assert torch.equal(broadcast.reshape(-1, 32), warps[:, :1].expand(-1, 32))
    assert torch.equal(down.reshape(-1, 32), torch.cat([warps[:, 1:], warps[:, -1:]], 1))
    odd_bits = ((warps.long() & 1) << torch.arange(32)).sum(1)
    assert torch.equal(ballots.reshape(-1, 32).long() & 0xffffffff,
                       odd_bits.unsqueeze(1).expand(-1, 32) & 0xffffffff)


def test_a_partial_warp_mask_is_a_launch_failure_with_a_message(selftest):
    out = torch.zeros(32)
    assert selftest.emu_partial_mask(ptr(out)) == 719  # cudaErrorLaunchFailure
    assert b'partial mask' in selftest.stylegan_emu_last_message()


@pytest.mark.parametrize('index, error', [(0, 0), (63, 0), (64, 719), (-1, 719)])
def test_writing_outside_the_dynamic_shared_memory_is_a_launch_failure(selftest, index, error):
    assert selftest.emu_write_shared(index, 64) == error
    if error:
        assert f'wrote at byte {4 * index} of its 256 bytes'.encode() in selftest.stylegan_emu_last_message()


@pytest.mark.parametrize('block, shared, error', [((1024, 2), 0, 9), ((0, 1), 0, 9), ((64, 1), 64 * 1024, 1)],
                         ids=['too-many-threads', 'empty-block', 'too-much-shared-memory'])
def test_launches_the_device_rejects_are_rejected(selftest, block, shared, error):
    x, out = torch.zeros(4096), torch.zeros(4096)
    assert selftest.emu_launch_with_block(ptr(out), ptr(x), block[0], block[1], shared) == error


@pytest.mark.skipif(not pathlib.Path('/proc/self/maps').exists(), reason='needs /proc (Linux)')
def test_threads_that_launched_kernels_leave_no_fiber_stacks_behind(selftest):
    def launch_in_a_thread():
        thread = threading.Thread(target=reverse, args=(selftest, 2, 256, True))
        thread.start()
        thread.join()

    launch_in_a_thread()  # warm-up: whatever the first launch maps once
    before = len(pathlib.Path('/proc/self/maps').read_text().splitlines())
    for _ in range(4):
        launch_in_a_thread()
    after = len(pathlib.Path('/proc/self/maps').read_text().splitlines())
    assert after - before < 256  # 4 threads x 256 fiber stacks would be >= 1024 mappings


def round_with(function, values):
    out = np.zeros(values.size, dtype=np.uint16)
    function(values.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(values.size))
    return out


def test_half_and_bfloat16_round_to_nearest_even_as_torch_does():
    library = kernels.emulated_kernels().library
    generator = torch.Generator().manual_seed(0)
    every_half = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    # Random magnitudes over the whole float range, exact halfway points, and the edges.
    special = torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e-8, 2.0 ** -25, 2.0 ** -24 * 1.5, 2.0 ** -14,
                            2.0 ** -14 * (1 - 2.0 ** -12), float('inf'), -float('inf'), 3.4e38, 1e-40])
    values = torch.cat([every_half, torch.randn(200000, generator=generator) * 10.0 ** torch.randint(
        -12, 12, [200000], generator=generator).float(), every_half * (1 + 2.0 ** -11), special]).numpy()
    nan = np.isnan(values)
    for function, dtype in ((library.stylegan_emu_round_to_half, torch.float16),
                            (library.stylegan_emu_round_to_bfloat16, torch.bfloat16)):
        expected = torch.from_numpy(values).to(dtype).view(torch.int16).numpy().view(np.uint16)
        rounded = round_with(function, values)
        assert np.array_equal(rounded[~nan], expected[~nan]), dtype
        # NaN becomes the device's canonical NaN (torch on the CPU keeps payloads instead).
        assert ((rounded[nan] & 0x7fff) == 0x7fff).all(), dtype
