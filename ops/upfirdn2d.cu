// Generic upfirdn2d (ops/upfirdn2d.py) with runtime factors, padding and filter size, plus the
// epilogues that make it the two stages of filtered_lrelu (ops/filtered_lrelu.py):
//   stage 1: bias + upsample + filter fu, then clamp(lrelu(.) * gain) with a code per element;
//   stage 2: filter fd + downsample.
// The backward passes are the same two stages run on the adjoint geometry, with the codes
// turning stage 1's epilogue into the leaky ReLU's derivative.
// One thread per output element, fp32 accumulation; the filter is fp32, already flipped and
// scaled by the caller so that the kernel computes a plain correlation.
#include "fused_ops.h"

namespace {

__device__ __forceinline__ int64_t positive_mod(int64_t a, int64_t m) {
    const int64_t r = a % m;
    return r < 0 ? r + m : r;
}

template <class TIn, class TOut>
__global__ void upfirdn2d_kernel(TOut* out, const TIn* x, const TIn* bias, const float* filter,
                                 const int8_t* codes_in, int8_t* codes_out, UpfirdnParams p) {
    const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
    const int64_t stride = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int64_t ox = i % p.out_w;
        const int64_t oy = (i / p.out_w) % p.out_h;
        const int64_t plane = i / (p.out_w * p.out_h);  // n * channels + c
        const TIn* x_plane = x + plane * p.in_h * p.in_w;
        const float b = (bias != nullptr) ? to_float(bias[plane % p.channels]) : 0.0f;

        // Tap (jy, jx) reads the upsampled+padded image at (oy * down_y + jy, ox * down_x + jx),
        // i.e. upsampled pixel u = that - pad0, which is a real input sample only when u % up == 0.
        const int64_t uy0 = oy * p.down_y - p.pad_y0;
        const int64_t ux0 = ox * p.down_x - p.pad_x0;
        const int first_jx = (int)positive_mod(-ux0, p.up_x);
        float acc = 0.0f;
        for (int jy = (int)positive_mod(-uy0, p.up_y); jy < p.filter_h; jy += p.up_y) {
            const int64_t iy = (uy0 + jy) / p.up_y;  // exact: uy0 + jy is a multiple of up_y
            if (uy0 + jy < 0) continue;
            if (iy >= p.in_h) break;
            const float* taps = filter + (int64_t)jy * p.filter_w;
            const TIn* row = x_plane + iy * p.in_w;
            for (int jx = first_jx; jx < p.filter_w; jx += p.up_x) {
                const int64_t ix = (ux0 + jx) / p.up_x;
                if (ux0 + jx < 0) continue;
                if (ix >= p.in_w) break;
                acc += taps[jx] * (to_float(row[ix]) + b);
            }
        }

        if (p.epilogue == kEpilogueLeakyRelu) {
            float y = (acc > 0.0f ? acc : acc * p.slope) * p.gain;
            int8_t code = acc > 0.0f ? kCodePositive : kCodeNegative;  // lrelu'(0) = slope, as torch
            if (p.clamp >= 0.0f && fabsf(y) > p.clamp) {
                code = kCodeClamped;
                y = y > 0.0f ? p.clamp : -p.clamp;
            }
            if (codes_out != nullptr) codes_out[i] = code;
            acc = y;
        } else if (p.epilogue == kEpilogueMaskedGain) {
            const int8_t code = codes_in[i];
            acc *= (code == kCodePositive) ? p.gain : (code == kCodeNegative) ? p.gain * p.slope : 0.0f;
        }
        out[i] = from_float<TOut>(acc);
    }
}

template <class TIn, class TOut>
cudaError_t launch(void* out, const void* x, const void* bias, const float* filter, const int8_t* codes_in,
                   int8_t* codes_out, const UpfirdnParams& p, cudaStream_t stream) {
    const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
    upfirdn2d_kernel<TIn, TOut><<<grid_size_for(total), 256, 0, stream>>>(
        static_cast<TOut*>(out), static_cast<const TIn*>(x), static_cast<const TIn*>(bias), filter,
        codes_in, codes_out, p);
    return cudaGetLastError();
}

// Same-type launches for upfirdn2d, and to/from an fp32 intermediate for filtered_lrelu.
template <class T>
cudaError_t launch_with_output(int32_t out_dtype, void* out, const void* x, const void* bias, const float* filter,
                               const int8_t* codes_in, int8_t* codes_out, const UpfirdnParams& p, cudaStream_t s) {
    switch (out_dtype) {
    case kFloat32: return launch<T, float>(out, x, bias, filter, codes_in, codes_out, p, s);
    case kFloat16: return launch<T, __half>(out, x, bias, filter, codes_in, codes_out, p, s);
    case kBFloat16: return launch<T, __nv_bfloat16>(out, x, bias, filter, codes_in, codes_out, p, s);
    default: return cudaErrorInvalidValue;
    }
}

}  // namespace

extern "C" int stylegan_upfirdn2d(int32_t in_dtype, int32_t out_dtype, void* out, const void* x, const void* bias,
                                  const float* filter, const int8_t* codes_in, int8_t* codes_out,
                                  const UpfirdnParams* params, void* stream) {
    const UpfirdnParams& p = *params;
    if (p.batch * p.channels * p.out_h * p.out_w == 0) return cudaSuccess;
    if (p.up_x < 1 || p.up_y < 1 || p.down_x < 1 || p.down_y < 1 || p.filter_h < 1 || p.filter_w < 1)
        return cudaErrorInvalidValue;
    if (p.epilogue == kEpilogueMaskedGain && codes_in == nullptr) return cudaErrorInvalidValue;
    // Mixed types only to or from fp32 (the filtered_lrelu intermediate): 7 instantiations.
    if (in_dtype != out_dtype && in_dtype != kFloat32 && out_dtype != kFloat32) return cudaErrorInvalidValue;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    switch (in_dtype) {
    case kFloat32: return launch_with_output<float>(out_dtype, out, x, bias, filter, codes_in, codes_out, p, s);
    case kFloat16:
        return out_dtype == kFloat32 ? launch<__half, float>(out, x, bias, filter, codes_in, codes_out, p, s)
                                     : launch<__half, __half>(out, x, bias, filter, codes_in, codes_out, p, s);
    case kBFloat16:
        return out_dtype == kFloat32
                   ? launch<__nv_bfloat16, float>(out, x, bias, filter, codes_in, codes_out, p, s)
                   : launch<__nv_bfloat16, __nv_bfloat16>(out, x, bias, filter, codes_in, codes_out, p, s);
    default: return cudaErrorInvalidValue;
    }
}
