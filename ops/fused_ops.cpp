// Library-level entry points: the source hash the loader checks against ops/*.cu, so a stale
// prebuilt library is never used, and readable CUDA error messages for ops/kernels.py.
#include "fused_ops.h"

#define STYLEGAN_STRINGIFY_(x) #x
#define STYLEGAN_STRINGIFY(x) STYLEGAN_STRINGIFY_(x)

#ifndef STYLEGAN_OPS_SOURCE_HASH
#define STYLEGAN_OPS_SOURCE_HASH unknown
#endif

extern "C" const char* stylegan_ops_source_hash() { return STYLEGAN_STRINGIFY(STYLEGAN_OPS_SOURCE_HASH); }

extern "C" const char* stylegan_ops_error_string(int error) {
    return cudaGetErrorString(static_cast<cudaError_t>(error));
}
