// Tiny kernels that show the CPU emulation (ops/emu) behaves like a GPU where it matters for
// tests: a missing barrier reads garbage, shared memory starts as garbage, warp intrinsics
// exchange values between lanes. Built by tests/test_ops_emulation.py.
#include <cstdint>

#include "cuda_compat.h"

namespace {

constexpr int kMaxThreads = 256;

// out[block][i] = in[block][blockDim - 1 - i] through shared memory, with or without the barrier
// between the writes and the reads of other threads' elements.
__global__ void reverse_kernel(float* out, const float* in, int with_barrier) {
    __shared__ float tile[kMaxThreads];
    const int i = threadIdx.x, n = blockDim.x, base = blockIdx.x * n;
    tile[i] = in[base + i];
    if (with_barrier) __syncthreads();
    out[base + i] = tile[n - 1 - i];
}

// Dynamic shared memory, read back without being written: shows the poison at block start.
__global__ void read_unwritten_kernel(float* out, int dynamic) {
    __shared__ float tile[kMaxThreads];
    STYLEGAN_DYNAMIC_SHARED(float, extra);
    const int i = threadIdx.x;
    out[blockIdx.x * blockDim.x + i] = dynamic ? extra[i] : tile[i];
    tile[i] = 1.0f;  // a stale 1.0 for the next block, if it were not poisoned
    if (dynamic) extra[i] = 1.0f;
}

// Per warp: the sum of the lanes' values by butterfly shuffles, lane 0's value broadcast, the
// next lane's value (shfl_down; the last lane keeps its own) and the ballot of odd values.
__global__ void warp_kernel(float* sums, float* broadcast, float* down, unsigned int* ballots, const float* in) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float v = in[i];
    float sum = v;
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    sums[i] = sum;
    broadcast[i] = __shfl_sync(0xffffffffu, v, 0);
    down[i] = __shfl_down_sync(0xffffffffu, v, 1);
    ballots[i] = __ballot_sync(0xffffffffu, ((int)v) & 1);
}

// A shuffle with a partial mask: outside the emulation's contract, so a launch failure.
__global__ void partial_mask_kernel(float* out) {
    out[threadIdx.x] = __shfl_sync(0x0000ffffu, 1.0f, 0);
}

// One write to dynamic shared memory at `index` (floats).
__global__ void write_shared_kernel(int index) {
    STYLEGAN_DYNAMIC_SHARED(float, extra);
    if (threadIdx.x == 0) extra[index] = 1.0f;
}

}  // namespace

extern "C" int emu_reverse(float* out, const float* in, int blocks, int threads, int with_barrier) {
    return stylegan_launch(reverse_kernel, dim3(blocks), dim3(threads), 0, nullptr, out, in, with_barrier);
}

extern "C" int emu_read_unwritten(float* out, int blocks, int threads, int dynamic) {
    return stylegan_launch(read_unwritten_kernel, dim3(blocks), dim3(threads), dynamic ? threads * sizeof(float) : 0,
                           nullptr, out, dynamic);
}

extern "C" int emu_warp(float* sums, float* broadcast, float* down, unsigned int* ballots, const float* in,
                        int blocks, int threads) {
    return stylegan_launch(warp_kernel, dim3(blocks), dim3(threads), 0, nullptr, sums, broadcast, down, ballots, in);
}

extern "C" int emu_partial_mask(float* out) {
    return stylegan_launch(partial_mask_kernel, dim3(1), dim3(32), 0, nullptr, out);
}

extern "C" int emu_launch_with_block(float* out, const float* in, int threads_x, int threads_y, int shared_bytes) {
    return stylegan_launch(reverse_kernel, dim3(1), dim3(threads_x, threads_y), shared_bytes, nullptr, out, in, 1);
}

extern "C" int emu_write_shared(int index, int floats) {
    return stylegan_launch(write_shared_kernel, dim3(2), dim3(32), floats * sizeof(float), nullptr, index);
}
