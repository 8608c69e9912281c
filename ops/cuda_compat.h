// What the kernel sources (ops/*.cu) may use from CUDA, for both of their builds:
//   nvcc (__CUDACC__ defined): the CUDA headers, and launches through `<<<...>>>`;
//   the host C++ compiler with STYLEGAN_EMULATED defined (the emulated build, ops/build.py):
//   the project's own emulation ops/emu/cuda_emu.h, where each block's threads run as fibers.
// The CUDA build's .cpp files (host compiler, no STYLEGAN_EMULATED) get the CUDA headers.
// The list of what kernels may use is in the contract (see ops/build.py's docstring); anything
// else from CUDA compiles with nvcc but not here, which is how the contract is enforced.
#pragma once

#include <cstddef>
#include <utility>

#if defined(STYLEGAN_EMULATED) && !defined(__CUDACC__)

#include "emu/cuda_emu.h"

#else

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// `type* name` pointing at the block's dynamic shared memory. One untyped array for every
// kernel: `extern __shared__` arrays of different types under one name would conflict.
#if defined(__CUDACC__)
#define STYLEGAN_DYNAMIC_SHARED(type, name)                                      \
    extern __shared__ __align__(16) unsigned char stylegan_dynamic_shared_[];    \
    type* name = reinterpret_cast<type*>(stylegan_dynamic_shared_)

// kernel<<<grid, block, shared, stream>>>(args...), then the launch's error code (0: success).
// `stream` is the void* the C entry points receive (or a cudaStream_t).
template <class... KernelArgs, class Stream, class... Args>
inline int stylegan_launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t dynamic_shared_bytes,
                           Stream stream, Args&&... args) {
    kernel<<<grid, block, dynamic_shared_bytes, (cudaStream_t)(stream)>>>(std::forward<Args>(args)...);
    return (int)cudaGetLastError();
}
#endif  // __CUDACC__

#endif
