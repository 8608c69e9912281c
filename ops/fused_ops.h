// Shared declarations of the fused kernels (ops/*.cu). The library exports plain C functions
// that take raw device pointers, a parameter struct and a CUDA stream; ops/kernels.py mirrors
// the structs with ctypes, so the field order and types below are part of that interface.
#pragma once

#include <cstdint>

#include "cuda_compat.h"

// Element types, as numbered in ops/kernels.py (DTYPE_CODES).
enum StyleganDType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// y = clamp(act(x + b) * gain) and its derivatives, elementwise over a contiguous tensor.
struct BiasActParams {
    int64_t num_elements;  // x.numel()
    int64_t bias_stride;   // prod(x.shape[dim + 1:]): elements between consecutive bias entries
    int64_t bias_size;     // x.shape[dim]; 0 when there is no bias
    int32_t act;           // activation code, ActivationSpec.cuda_idx in ops/bias_act.py
    int32_t order;         // 0: y; 1: g * dy/dx; 2: g * d2y/dx2 (zero where the clamp is active)
    float alpha;           // shape parameter (lrelu slope)
    float gain;
    float clamp;           // < 0: no clamp
    int32_t num_sms;       // multiprocessors of the device (the grid is a multiple of it); host: cores
};

// Upsample (zero insertion), pad, correlate with fp32 taps, downsample; one [H, W] plane per
// (n, c). The taps are already flipped and scaled by the caller (ops/upfirdn2d.py kernel_taps).
struct UpfirdnParams {
    int64_t batch, channels, in_h, in_w, out_h, out_w;
    int32_t up_x, up_y, down_x, down_y;
    int32_t pad_x0, pad_y0;     // leading padding of the upsampled image (negative crops)
    int32_t filter_h, filter_w;
    int32_t separable;          // 1: filter = filter_w x-taps then filter_h y-taps; 0: [filter_h][filter_w]
};

// filtered_lrelu as one fused kernel (ops/filtered_lrelu.cu), two modes:
//   forward: x [N, C, H, W] + bias -> stage 1 (upsample by `up`, pad1, filter f1) -> middle
//            [N, C, mid_h, mid_w] -> clamp(lrelu(.) * gain), recording 2 bits per middle element
//            -> stage 2 (pad2, filter f2, downsample by `down`) -> out [N, C, out_h, out_w];
//   masked:  the same two stages with the middle multiplied by the leaky ReLU's derivative read
//            from the record ({0, gain, gain * slope}[code]): the linear map whose adjoint is the
//            backward pass (run with the adjoint geometry), and whose adjoint is itself again.
// The middle exists only in shared memory, one tile at a time.
struct FilteredLreluParams {
    int64_t batch, channels, in_h, in_w, mid_h, mid_w, out_h, out_w;
    int32_t up, down;                              // stage 1 has down 1, stage 2 has up 1
    int32_t pad1_x0, pad1_y0, pad2_x0, pad2_y0;    // leading padding of each stage's input
    int32_t f1_h, f1_w, f2_h, f2_w;
    int32_t f1_separable, f2_separable;            // as UpfirdnParams::separable, per filter
    int32_t masked;                                // 0: forward, 1: masked
    float slope, gain, clamp;                      // clamp < 0: none
};

// The record: 2 bits per middle element, 16 per 32-bit word, flat over [N, C, mid_h, mid_w]
// (element e in word e / 16, bits 2 * (e % 16)); the buffer is zeroed before the forward.
enum LeakyReluCode : uint32_t { kCodeClamped = 0, kCodePositive = 1, kCodeNegative = 2 };
constexpr int kCodesPerWord = 16;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Most blocks along a grid's z (the CUDA limit). The tiled kernels loop over planes in steps of
// gridDim.z; the emulated build defines a small cap so that the loop's later passes (and the
// barrier at its top) run in the tests too.
#ifndef STYLEGAN_MAX_GRID_Z
#define STYLEGAN_MAX_GRID_Z 65535
#endif

// Grid for a grid-stride loop over `n` elements with 256-thread blocks.
inline unsigned int grid_size_for(int64_t n) {
    const int64_t blocks = (n + 255) / 256;
    return (unsigned int)(blocks < (1 << 20) ? blocks : (1 << 20));
}

extern "C" {
int stylegan_bias_act(int32_t dtype, void* out, const void* x, const void* grad, const void* bias,
                      const BiasActParams* params, void* stream);
int stylegan_upfirdn2d(int32_t dtype, void* out, const void* x, const float* filter, const UpfirdnParams* params,
                       void* stream);
int stylegan_filtered_lrelu(int32_t dtype, void* out, const void* x, const void* bias, const float* f1,
                            const float* f2, uint32_t* record, const FilteredLreluParams* params, void* stream);
const char* stylegan_ops_error_string(int error);
const char* stylegan_ops_source_hash();
}
