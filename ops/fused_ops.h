// Shared declarations of the fused kernels (ops/*.cu). The library exports plain C functions
// that take raw device pointers, a parameter struct and a CUDA stream; ops/kernels.py mirrors
// the structs with ctypes, so the field order and types below are part of that interface.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

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
};

// Upsample (zero insertion), pad, correlate with a 2-D fp32 filter, downsample; one [H, W]
// plane per (n, c). Optional bias on the input samples and a pointwise epilogue.
struct UpfirdnParams {
    int64_t batch, channels, in_h, in_w, out_h, out_w;
    int32_t up_x, up_y, down_x, down_y;
    int32_t pad_x0, pad_y0;     // leading padding of the upsampled image (negative crops)
    int32_t filter_h, filter_w;
    int32_t epilogue;           // EpilogueKind
    float slope, gain, clamp;   // leaky ReLU of the epilogue; clamp < 0: none
};

enum EpilogueKind : int32_t {
    kEpilogueNone = 0,
    kEpilogueLeakyRelu = 1,  // v -> clamp(lrelu(v) * gain); writes a code per element
    kEpilogueMaskedGain = 2, // v -> v * {0, gain, gain * slope}[code]: the leaky ReLU's derivative
};

// Codes written by kEpilogueLeakyRelu and read by kEpilogueMaskedGain.
enum LeakyReluCode : int8_t { kCodeClamped = 0, kCodePositive = 1, kCodeNegative = 2 };

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Grid for a grid-stride loop over `n` elements with 256-thread blocks.
inline unsigned int grid_size_for(int64_t n) {
    const int64_t blocks = (n + 255) / 256;
    return (unsigned int)(blocks < (1 << 20) ? blocks : (1 << 20));
}

extern "C" {
int stylegan_bias_act(int32_t dtype, void* out, const void* x, const void* grad, const void* bias,
                      const BiasActParams* params, void* stream);
int stylegan_upfirdn2d(int32_t in_dtype, int32_t out_dtype, void* out, const void* x, const void* bias,
                       const float* filter, const int8_t* codes_in, int8_t* codes_out,
                       const UpfirdnParams* params, void* stream);
const char* stylegan_ops_error_string(int error);
const char* stylegan_ops_source_hash();
}
