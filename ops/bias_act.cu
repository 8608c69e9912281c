// Fused bias + activation + gain + clamp (ops/bias_act.py), forward and the two derivative
// passes its autograd uses. Math in fp32 for every storage type; vectorised 4 elements per
// thread and iteration, grid sized to the device (see launch()).
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
    case kElu: {  // at z == 0: f' = 1 from the exp branch, f'' = 0 (torch masks its double backward with z < 0)
        if (z > 0.0f) return {z, 1.0f, 0.0f};
        const float e = expf(z);
        return {expm1f(z), e, z < 0.0f ? e : 0.0f};
    }
    case kSelu: {
        if (z > 0.0f) return {kSeluScale * z, kSeluScale, 0.0f};
        const float e = kSeluScale * kSeluAlpha * expf(z);
        return {kSeluScale * kSeluAlpha * expm1f(z), e, z < 0.0f ? e : 0.0f};
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

// One element: the forward value (order 0) or g times the order-th derivative, clamp-masked.
__device__ __forceinline__ float bias_act_element(float z, float g, const BiasActParams& p) {
    const ActivationValue a = activation(p.act, z, p.alpha);
    const float y = a.value * p.gain;
    if (p.order == 0) return (p.clamp >= 0.0f) ? fminf(fmaxf(y, -p.clamp), p.clamp) : y;
    // torch.clamp passes the gradient where -clamp <= y <= clamp.
    const bool passes = p.clamp < 0.0f || fabsf(y) <= p.clamp;
    return passes ? g * ((p.order == 1) ? a.first : a.second) * p.gain : 0.0f;
}

// Four elements in one aligned load/store per tensor (16 bytes for fp32, 8 for fp16/bf16):
// the op is memory-bound, and wide transactions need a quarter of the load/store instructions.
constexpr int kVector = 4;
template <class T>
struct alignas(kVector * sizeof(T)) Vector {
    T v[kVector];
};

// Bias index of element i; 32-bit arithmetic when the tensor allows it (64-bit division is
// several times slower, and the division is most of this kernel's arithmetic).
__device__ __forceinline__ int64_t bias_index(int64_t i, const BiasActParams& p, bool small) {
    if (small) return (int64_t)(((uint32_t)i / (uint32_t)p.bias_stride) % (uint32_t)p.bias_size);
    return (i / p.bias_stride) % p.bias_size;
}

// Grid-stride loops over 4-element vectors, then the scalar tail (and everything when a pointer
// is not aligned to a vector, e.g. a view into a larger tensor).
template <class T>
__global__ void __launch_bounds__(256)
bias_act_kernel(T* out, const T* x, const T* grad, const T* bias, BiasActParams p, int vectorised) {
    const int64_t stride = (int64_t)blockDim.x * gridDim.x;
    const int64_t first = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool small = p.num_elements <= 0xffffffffLL;
    const int64_t vectors = vectorised ? p.num_elements / kVector : 0;
    for (int64_t v = first; v < vectors; v += stride) {
        const Vector<T> xv = reinterpret_cast<const Vector<T>*>(x)[v];
        Vector<T> gv;
        if (p.order != 0) gv = reinterpret_cast<const Vector<T>*>(grad)[v];
        Vector<T> result;
#pragma unroll
        for (int k = 0; k < kVector; ++k) {
            const int64_t i = v * kVector + k;
            float z = to_float(xv.v[k]);
            if (bias != nullptr) z += to_float(bias[bias_index(i, p, small)]);
            result.v[k] = from_float<T>(bias_act_element(z, p.order != 0 ? to_float(gv.v[k]) : 0.0f, p));
        }
        reinterpret_cast<Vector<T>*>(out)[v] = result;
    }
    for (int64_t i = vectors * kVector + first; i < p.num_elements; i += stride) {
        float z = to_float(x[i]);
        if (bias != nullptr) z += to_float(bias[bias_index(i, p, small)]);
        out[i] = from_float<T>(bias_act_element(z, p.order != 0 ? to_float(grad[i]) : 0.0f, p));
    }
}

bool aligned(const void* pointer, size_t bytes) { return pointer == nullptr || (uintptr_t)pointer % bytes == 0; }

template <class T>
int launch(void* out, const void* x, const void* grad, const void* bias, const BiasActParams& p, void* stream) {
    const size_t vector_bytes = sizeof(Vector<T>);
    const int vectorised = aligned(out, vector_bytes) && aligned(x, vector_bytes) && aligned(grad, vector_bytes);
    // Grid sized to the device: at most 8 resident 256-thread blocks per SM (2048 threads) times
    // the SM count, so every SM gets the same number of blocks and the grid-stride loop covers
    // the rest without launching blocks that wait for a free SM; fewer for small tensors.
    const int64_t work = vectorised ? (p.num_elements + kVector - 1) / kVector : p.num_elements;
    const int64_t needed = (work + 255) / 256;
    const int64_t resident = 8 * (int64_t)(p.num_sms > 0 ? p.num_sms : 1);
    const unsigned blocks = (unsigned)(needed < resident ? needed : resident);
    return stylegan_launch(bias_act_kernel<T>, dim3(blocks), dim3(256), 0, stream, static_cast<T*>(out),
                           static_cast<const T*>(x), static_cast<const T*>(grad), static_cast<const T*>(bias), p,
                           vectorised);
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
    switch (dtype) {
    case kFloat32: return launch<float>(out, x, grad, bias, p, stream);
    case kFloat16: return launch<__half>(out, x, grad, bias, p, stream);
    case kBFloat16: return launch<__nv_bfloat16>(out, x, grad, bias, p, stream);
    default: return cudaErrorInvalidValue;
    }
}
