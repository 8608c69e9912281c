// Fused bias + activation + gain + clamp (ops/bias_act.py), forward and the two derivative
// passes its autograd uses. Math in fp32 for every storage type; one thread per element.
#include "fused_ops.h"

namespace {

// Activation codes: ActivationSpec.cuda_idx in ops/bias_act.py.
enum Activation : int32_t { kLinear = 1, kRelu = 2, kLrelu = 3, kTanh = 4, kSigmoid = 5,
                            kElu = 6, kSelu = 7, kSoftplus = 8, kSwish = 9 };

constexpr float kSeluScale = 1.0507009873554804934193349852946f;
constexpr float kSeluAlpha = 1.6732632423543772848170429916717f;
constexpr float kSoftplusThreshold = 20.0f;  // F.softplus: linear above this, as torch does

struct ActivationValue {
    float value, first, second;  // f(z), f'(z), f''(z)
};

__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

// f, f' and f'' at z, with the branch conventions of torch's autograd (e.g. relu'(0) = 0,
// lrelu'(0) = alpha, elu'(0) = 1).
__device__ ActivationValue activation(int32_t act, float z, float alpha) {
    switch (act) {
    case kRelu:
        return {z > 0.0f ? z : 0.0f, z > 0.0f ? 1.0f : 0.0f, 0.0f};
    case kLrelu:
        return {z > 0.0f ? z : z * alpha, z > 0.0f ? 1.0f : alpha, 0.0f};
    case kTanh: {
        const float t = tanhf(z), d = 1.0f - t * t;
        return {t, d, -2.0f * t * d};
    }
    case kSigmoid: {
        const float s = sigmoid(z), d = s * (1.0f - s);
        return {s, d, d * (1.0f - 2.0f * s)};
    }
    case kElu: {
        if (z > 0.0f) return {z, 1.0f, 0.0f};
        const float e = expf(z);
        return {expm1f(z), e, e};
    }
    case kSelu: {
        if (z > 0.0f) return {kSeluScale * z, kSeluScale, 0.0f};
        const float e = kSeluScale * kSeluAlpha * expf(z);
        return {kSeluScale * kSeluAlpha * expm1f(z), e, e};
    }
    case kSoftplus: {
        if (z > kSoftplusThreshold) return {z, 1.0f, 0.0f};
        const float s = sigmoid(z);
        return {log1pf(expf(z)), s, s * (1.0f - s)};
    }
    case kSwish: {
        const float s = sigmoid(z), d = s * (1.0f - s);
        return {z * s, s + z * d, d * (2.0f + z * (1.0f - 2.0f * s))};
    }
    default:  // kLinear
        return {z, 1.0f, 0.0f};
    }
}

template <class T>
__global__ void bias_act_kernel(T* out, const T* x, const T* grad, const T* bias, BiasActParams p) {
    const int64_t stride = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.num_elements; i += stride) {
        float z = to_float(x[i]);
        if (bias != nullptr) z += to_float(bias[(i / p.bias_stride) % p.bias_size]);
        const ActivationValue a = activation(p.act, z, p.alpha);
        const float y = a.value * p.gain;
        float result;
        if (p.order == 0) {
            result = (p.clamp >= 0.0f) ? fminf(fmaxf(y, -p.clamp), p.clamp) : y;
        } else {
            // torch.clamp passes the gradient where -clamp <= y <= clamp.
            const bool passes = p.clamp < 0.0f || fabsf(y) <= p.clamp;
            const float derivative = (p.order == 1) ? a.first : a.second;
            result = passes ? to_float(grad[i]) * derivative * p.gain : 0.0f;
        }
        out[i] = from_float<T>(result);
    }
}

template <class T>
cudaError_t launch(void* out, const void* x, const void* grad, const void* bias, const BiasActParams& p,
                   cudaStream_t stream) {
    bias_act_kernel<T><<<grid_size_for(p.num_elements), 256, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(x), static_cast<const T*>(grad),
        static_cast<const T*>(bias), p);
    return cudaGetLastError();
}

}  // namespace

extern "C" int stylegan_bias_act(int32_t dtype, void* out, const void* x, const void* grad, const void* bias,
                                 const BiasActParams* params, void* stream) {
    BiasActParams p = *params;
    if (p.num_elements == 0) return cudaSuccess;
    if (bias == nullptr || p.bias_size <= 0 || p.bias_stride <= 0) {
        bias = nullptr;
        p.bias_size = p.bias_stride = 1;
    }
    if (p.order != 0 && grad == nullptr) return cudaErrorInvalidValue;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    switch (dtype) {
    case kFloat32: return launch<float>(out, x, grad, bias, p, s);
    case kFloat16: return launch<__half>(out, x, grad, bias, p, s);
    case kBFloat16: return launch<__nv_bfloat16>(out, x, grad, bias, p, s);
    default: return cudaErrorInvalidValue;
    }
}
