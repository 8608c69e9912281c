// The CUDA the kernels may use (see ops/cuda_compat.h), emulated on the CPU so that the same
// ops/*.cu sources run on CPU tensors in every test run. Semantics, chosen so that tests catch
// the bugs a GPU would show (runtime in cuda_emu.cpp):
//   - the threads of a block run as fibers (own stacks) that switch only at __syncthreads and
//     warp intrinsics, scheduled in a seeded permutation that differs from the natural order,
//     so reading shared memory another thread writes without a barrier in between reads
//     garbage; blocks run one after another, last block first; threads that returned count
//     as arrived at later barriers (as on sm_70 and newer);
//   - __shared__ arrays and dynamic shared memory are filled with 0xFF bytes (NaN for
//     float/half/bf16, -1 for ints) at every block start;
//   - warp intrinsics meet at a warp barrier; full-warp masks only; reading a lane that exited
//     gives 0xFF bytes;
//   - __half / __nv_bfloat16 convert with the device's round-to-nearest-even.
// Nothing here is thread-safe across blocks because blocks never run concurrently on one OS
// thread; different OS threads (concurrent launches) have their own state (thread_local).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One copy per OS thread; blocks on one OS thread run one after another, and the runtime
// poisons the copies at every block start (it finds them in this library's TLS segment).
#define __shared__ static thread_local

// ---------------------------------------------------------------------------------------------
// Vector and index types.

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned int x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned int x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned int x, unsigned int y) { return {x, y}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

namespace stylegan_emu {

// Everything the kernel-visible names read, for the fiber now running on this OS thread.
struct ThreadState {
    uint3 thread_idx;
    uint3 block_idx;
    dim3 block_dim, grid_dim;
    unsigned char* dynamic_shared;
    void* scheduler;  // the runtime's per-OS-thread scheduler
    int last_error;
};
extern thread_local ThreadState state;

inline const uint3& thread_idx() { return state.thread_idx; }
inline const uint3& block_idx() { return state.block_idx; }
inline const dim3& block_dim() { return state.block_dim; }
inline const dim3& grid_dim() { return state.grid_dim; }

// Runs `body(payload)` once per thread of every block; returns a cudaError_t code.
int run_grid(dim3 grid, dim3 block, size_t dynamic_shared_bytes, void (*body)(void*), void* payload);

// One lane's deposit at a warp intrinsic: the value's bytes and the lane's count of warp
// intrinsics so far (a lane that exited or diverged has a different count: its slot is stale).
struct WarpSlot {
    uint64_t value;
    uint64_t generation;
};
// Deposits `value`, waits for the other live lanes of the warp, returns the warp's 32 slots for
// this intrinsic; `*generation` is the count a fresh slot carries; `*lane` this thread's lane.
const WarpSlot* warp_exchange(unsigned int mask, uint64_t value, uint64_t* generation, int* lane);

template <class T>
inline T read_lane(const WarpSlot* slots, int source, uint64_t generation) {
    T result;
    if (source < 0 || source >= 32 || slots[source].generation != generation) {
        std::memset(&result, 0xFF, sizeof(T));  // an exited or missing lane: garbage, visibly
    } else {
        std::memcpy(&result, &slots[source].value, sizeof(T));
    }
    return result;
}

// Source lane of a shuffle within segments of `width` lanes; `fallback` (the caller's own lane)
// when the source falls outside the caller's segment, as the device does.
template <class T, class SourceOf>
inline T shuffle(unsigned int mask, T var, int width, SourceOf source_of) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp shuffles move up to 8 bytes");
    uint64_t bits = 0, generation = 0;
    std::memcpy(&bits, &var, sizeof(T));
    int lane = 0;
    const WarpSlot* slots = warp_exchange(mask, bits, &generation, &lane);
    if (width < 1 || width > 32 || (width & (width - 1)) != 0) width = 32;
    const int base = lane & ~(width - 1);
    const int source = source_of(lane, base, width);
    return read_lane<T>(slots, (source >= base && source < base + width) ? source : lane, generation);
}

}  // namespace stylegan_emu

#define threadIdx (::stylegan_emu::thread_idx())
#define blockIdx (::stylegan_emu::block_idx())
#define blockDim (::stylegan_emu::block_dim())
#define gridDim (::stylegan_emu::grid_dim())
#define STYLEGAN_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::stylegan_emu::state.dynamic_shared)

// ---------------------------------------------------------------------------------------------
// Barriers and warp intrinsics (warp size 32, full masks).

void __syncthreads();
void __syncwarp(unsigned int mask = 0xffffffffu);

template <class T>
inline T __shfl_sync(unsigned int mask, T var, int src_lane, int width = 32) {
    return stylegan_emu::shuffle(mask, var, width, [&](int, int base, int w) { return base + (src_lane & (w - 1)); });
}
template <class T>
inline T __shfl_xor_sync(unsigned int mask, T var, int lane_mask, int width = 32) {
    return stylegan_emu::shuffle(mask, var, width, [&](int lane, int, int) { return lane ^ lane_mask; });
}
template <class T>
inline T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = 32) {
    return stylegan_emu::shuffle(mask, var, width, [&](int lane, int, int) { return lane + (int)delta; });
}
inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
    uint64_t generation = 0;
    int lane = 0;
    const stylegan_emu::WarpSlot* slots = stylegan_emu::warp_exchange(mask, predicate != 0, &generation, &lane);
    unsigned int bits = 0;
    for (int i = 0; i < 32; ++i) {
        if (slots[i].generation == generation && slots[i].value != 0) bits |= 1u << i;
    }
    return bits;
}

// ---------------------------------------------------------------------------------------------
// Atomics (blocks run one at a time per OS thread; atomic anyway, for concurrent launches).

inline float atomicAdd(float* address, float value) {
    uint32_t* word = reinterpret_cast<uint32_t*>(address);
    uint32_t old = __atomic_load_n(word, __ATOMIC_RELAXED), updated;
    float old_value;
    do {
        std::memcpy(&old_value, &old, 4);
        const float sum = old_value + value;
        std::memcpy(&updated, &sum, 4);
    } while (!__atomic_compare_exchange_n(word, &old, updated, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old_value;
}
inline int atomicAdd(int* address, int value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); }
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline unsigned int atomicOr(unsigned int* address, unsigned int value) {
    return __atomic_fetch_or(address, value, __ATOMIC_RELAXED);
}

// ---------------------------------------------------------------------------------------------
// Half precision storage types: no arithmetic or implicit conversions (torch builds the CUDA
// side with __CUDA_NO_HALF_OPERATORS__ / __CUDA_NO_HALF_CONVERSIONS__ too).

struct __half { uint16_t bits_; };
struct __nv_bfloat16 { uint16_t bits_; };

// STYLEGAN_EMU_FAULT_HALF_LOADS: a deliberately wrong build for the run-time guard's test,
// where every fp16/bf16 load reads 1/16 too large.
#ifdef STYLEGAN_EMU_FAULT_HALF_LOADS
#define STYLEGAN_EMU_LOAD_FACTOR 1.0625f
#else
#define STYLEGAN_EMU_LOAD_FACTOR 1.0f
#endif

inline float stylegan_emu_bits_to_float(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, 4);
    return value;
}

inline float __half2float(__half h) {
    const uint32_t sign = (uint32_t)(h.bits_ & 0x8000u) << 16;
    const uint32_t exponent = (h.bits_ >> 10) & 0x1fu, mantissa = h.bits_ & 0x3ffu;
    float value;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
        value = std::ldexp((float)mantissa, -24);
        if (sign) value = -value;
    } else if (exponent == 31) {  // inf / NaN
        value = stylegan_emu_bits_to_float(sign | 0x7f800000u | (mantissa << 13));
    } else {
        value = stylegan_emu_bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
    }
    return value * STYLEGAN_EMU_LOAD_FACTOR;
}

// Round to nearest even, overflow to inf, subnormals kept, NaN -> the device's 0x7fff.
inline __half __float2half_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000u, magnitude = u & 0x7fffffffu;
    uint32_t h;
    if (magnitude > 0x7f800000u) {
        h = 0x7fffu;
    } else if (magnitude >= 0x477ff000u) {  // >= 65520 (halfway past 65504) and inf
        h = 0x7c00u;
    } else if (magnitude >= 0x38800000u) {  // normal: 2^-14 and above
        const uint32_t mantissa = magnitude & 0x7fffffu;
        h = ((((magnitude >> 23) - 112u) << 10) | (mantissa >> 13));
        const uint32_t rest = mantissa & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry moves into the exponent
    } else if (magnitude <= 0x33000000u) {  // <= 2^-25: rounds to zero (2^-25 ties to even 0)
        h = 0;
    } else {  // subnormal: units of 2^-24
        const uint32_t exponent = magnitude >> 23, mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - exponent;  // 14..24
        h = mantissa >> shift;
        const uint32_t rest = mantissa & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
        if (rest > halfway || (rest == halfway && (h & 1u))) ++h;
    }
    return __half{(uint16_t)(sign | h)};
}

inline float __bfloat162float(__nv_bfloat16 b) {
    return stylegan_emu_bits_to_float((uint32_t)b.bits_ << 16) * STYLEGAN_EMU_LOAD_FACTOR;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fffu};
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(u >> 16)};
}

// ---------------------------------------------------------------------------------------------
// Math and memory intrinsics.

template <class A, class B, class C = typename std::common_type<A, B>::type>
inline C min(A a, B b) {
    if constexpr (std::is_floating_point<C>::value) return std::fmin((C)a, (C)b);
    else return (C)b < (C)a ? (C)b : (C)a;
}
template <class A, class B, class C = typename std::common_type<A, B>::type>
inline C max(A a, B b) {
    if constexpr (std::is_floating_point<C>::value) return std::fmax((C)a, (C)b);
    else return (C)a < (C)b ? (C)b : (C)a;
}
inline float __expf(float x) { return expf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <class T>
inline T __ldg(const T* pointer) { return *pointer; }

// ---------------------------------------------------------------------------------------------
// The runtime API the kernels' entry points use.

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t : int {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorLaunchFailure = 719,
};
cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t error);

// The emulated launch: runs every block of `grid` on this OS thread before returning.
template <class... KernelArgs, class Stream, class... Args>
inline int stylegan_launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t dynamic_shared_bytes,
                           Stream, Args&&... args) {
    static_assert(sizeof...(KernelArgs) == sizeof...(Args), "stylegan_launch: wrong number of kernel arguments");
    // Converted to the parameter types once; each thread then gets its own by-value copies.
    struct Launch {
        void (*kernel)(KernelArgs...);
        std::tuple<typename std::decay<KernelArgs>::type...> arguments;
    };
    Launch launch{kernel, std::tuple<typename std::decay<KernelArgs>::type...>(std::forward<Args>(args)...)};
    auto body = [](void* payload) {
        Launch* l = static_cast<Launch*>(payload);
        std::apply(l->kernel, l->arguments);
    };
    return stylegan_emu::run_grid(grid, block, dynamic_shared_bytes, body, &launch);
}
