// Device helpers shared by the tiled resampling kernels (ops/upfirdn2d.cu, ops/filtered_lrelu.cu).
//
// Both kernels stage a tile of their input in shared memory and then evaluate 1-D or 2-D FIR
// passes over it. One pass maps a line of `src` samples to `dst` samples:
//     dst[k] = sum_j f[j] * U[k * down + j + offset],   U[u] = src[u / up] if u % up == 0 else 0,
// i.e. zero insertion by `up`, correlation with the (already flipped, gain-folded) taps `f`,
// keeping every `down`-th output. Coordinates are relative to the staged tile: `offset` in
// [0, up) is where the tile's first output's first tap lands in the tile's upsampled frame.
// Template arguments UP / TAPS are compile-time specialisations (0 = read the runtime value);
// with them the tap loop unrolls and the `% up` phase arithmetic becomes shifts.
#pragma once

#include <algorithm>

#include "fused_ops.h"

// floor(a / b) for b > 0 (C++ division truncates toward zero; tile origins can be negative).
__host__ __device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) {
    return (a >= 0) ? a / b : -((-a + b - 1) / b);
}

// Number of staged source samples a pass needs so that `count` outputs with stride `down`, a
// filter of `taps` taps and an offset in [0, up) never read past the tile:
// the last tap lands at u = (count - 1) * down + taps - 1 + offset <= ... + up - 1, whose source
// index is u / up. This is the halo of the tile (the extra samples around the outputs' own).
__host__ __device__ __forceinline__ int tile_source_length(int count, int down, int taps, int up) {
    return ((count - 1) * down + taps + up - 2) / up + 1;  // halo
}

// Leading source index of a tile whose first output is `out0`, and the offset of its first tap
// in the tile's upsampled frame: out0 * down - pad0 = src0 * up + offset, offset in [0, up).
struct TileOrigin {
    int64_t src0;
    int offset;
};

__host__ __device__ __forceinline__ TileOrigin tile_origin(int64_t out0, int down, int pad0, int up) {
    const int64_t u = out0 * down - pad0;
    const int64_t src0 = floor_div(u, up);
    return {src0, (int)(u - src0 * up)};
}

// One output of a 1-D pass: taps j with (base + j) % up == 0 read src[(base + j) / up * stride].
template <int UP, int TAPS>
__device__ __forceinline__ float fir_line(const float* src, int stride, const float* f, int taps_rt, int up_rt,
                                          int base) {
    const int up = UP ? UP : up_rt;
    const int taps = TAPS ? TAPS : taps_rt;
    const int phase = (up - base % up) % up;  // first tap that lands on a real (non-inserted) sample
    const float* s = src + (base + phase) / up * stride;
    float acc = 0.0f;
    if (UP != 0 && TAPS != 0) {
        // Fully unrolled: ceil(TAPS / UP) candidate taps, the last ones masked by the phase.
#pragma unroll
        for (int k = 0; k < TAPS; k += (UP ? UP : 1)) {
            if (phase + k < TAPS) acc += f[phase + k] * s[(k / (UP ? UP : 1)) * stride];
        }
    } else {
        for (int j = phase, i = 0; j < taps; j += up, i += stride) acc += f[j] * s[i];
    }
    return acc;
}

// One output of a 2-D pass over a staged tile with row pitch `pitch`: f is [taps_y][taps_x].
template <int UP, int TAPS>
__device__ __forceinline__ float fir_2d(const float* src, int pitch, const float* f, int taps_y_rt, int taps_x_rt,
                                        int up_y_rt, int up_x_rt, int base_y, int base_x) {
    const int up_y = UP ? UP : up_y_rt, up_x = UP ? UP : up_x_rt;
    const int taps_y = TAPS ? TAPS : taps_y_rt, taps_x = TAPS ? TAPS : taps_x_rt;
    const int phase_y = (up_y - base_y % up_y) % up_y;
    const float* s = src + (base_y + phase_y) / up_y * pitch;
    float acc = 0.0f;
    for (int jy = phase_y; jy < taps_y; jy += up_y, s += pitch)
        acc += fir_line<UP, TAPS>(s, 1, f + jy * taps_x, taps_x, up_x, base_x);
    return acc;
}

// Copies `n` floats from global to shared memory with the whole block (the caller syncs).
__device__ __forceinline__ void stage_floats(float* dst, const float* src, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

// Balanced tile extent: the fewest tiles of at most `limit`, all of (nearly) equal size (a
// 36-wide image gets two 18-wide tiles rather than 32 + 4, which would waste most of a block).
inline int balanced_tile(int64_t size, int limit) {
    const int64_t count = (size + limit - 1) / limit;
    return (int)((size + count - 1) / count);
}

// Shared memory the kernels may use without the opt-in attribute (48 KiB on every GPU since
// sm_30); the tile sizes are chosen on the host to fit under it.
constexpr int kMaxSharedBytes = 48 * 1024;
constexpr int kTileThreads = 256;  // 8 warps: enough to hide latency, small enough for 8 blocks per SM
