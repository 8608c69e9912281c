// upfirdn2d (ops/upfirdn2d.py): upsample by zero insertion, pad, correlate with fp32 taps,
// downsample; one [H, W] plane per (n, c), fp32 accumulation for every storage type.
//
// Design, and why:
// - Tiled: a block computes a tile of outputs [tile_p planes][tile_h][tile_w] and first stages
//   the input samples the tile reads (its footprint: outputs plus halo) in shared memory, loaded
//   cooperatively with coalesced reads, then `__syncthreads`. Every input sample is read from
//   global memory about once instead of once per tap (taps / up^2 times per output before).
// - Separable path (StyleGAN's 1-D filters): rows then columns through shared memory, so an
//   output costs fw / up_x + fh / up_y multiply-adds instead of fw * fh / (up_x * up_y).
// - Template specialisations for the common cases (up 2 or down 2 with 4 taps (StyleGAN2's
//   [1, 3, 3, 1], a 2-D 4x4 filter) and 12 taps (StyleGAN3's separable filters), and up 1 down 1):
//   the tap loops unroll and the phase arithmetic is resolved at compile time.
// - Several planes per block when the planes are small (StyleGAN's 4x4 .. 16x16 layers), so a
//   block still has ~8 outputs per thread.
// - A general tiled fallback takes any up/down/padding/filter size; filters too large for a
//   48 KiB tile use the direct kernel (one thread per output, taps read from global memory).
#include "resample_tile.h"

namespace {

struct UpfirdnTile {
    int tile_w, tile_h, tile_p;  // outputs per block: tile_p planes of tile_h x tile_w
    int in_w, in_h;              // staged input per plane (the outputs' footprint, halo included)
};

// Filter floats staged in shared memory: separable x-taps then y-taps, or the full 2-D filter.
__host__ __device__ __forceinline__ int filter_floats(const UpfirdnParams& p) {
    return p.separable ? p.filter_w + p.filter_h : p.filter_w * p.filter_h;
}

template <class T, bool SEP, int UP, int DOWN, int TAPS>
__global__ void __launch_bounds__(kTileThreads)
upfirdn2d_tiled_kernel(T* out, const T* x, const float* filter, UpfirdnParams p, UpfirdnTile t) {
    STYLEGAN_DYNAMIC_SHARED(float, shared);
    const int up_x = UP ? UP : p.up_x, up_y = UP ? UP : p.up_y;
    const int down_x = DOWN ? DOWN : p.down_x, down_y = DOWN ? DOWN : p.down_y;
    const int fw = TAPS ? TAPS : p.filter_w, fh = TAPS ? TAPS : p.filter_h;
    const int in_plane = t.in_h * t.in_w;        // staged floats per plane
    const int rows_plane = t.in_h * t.tile_w;    // separable: input rows filtered along x
    const int out_plane = t.tile_h * t.tile_w;
    float* s_filter = shared;                    // [filter_floats]
    float* s_in = s_filter + filter_floats(p);   // [tile_p][in_h][in_w]
    float* s_rows = s_in + t.tile_p * in_plane;  // SEP: [tile_p][in_h][tile_w]
    stage_floats(s_filter, filter, filter_floats(p));

    const int64_t planes = p.batch * p.channels;
    const int64_t ox0 = (int64_t)blockIdx.x * t.tile_w, oy0 = (int64_t)blockIdx.y * t.tile_h;
    const TileOrigin cx = tile_origin(ox0, down_x, p.pad_x0, up_x);
    const TileOrigin cy = tile_origin(oy0, down_y, p.pad_y0, up_y);
    for (int64_t plane0 = (int64_t)blockIdx.z * t.tile_p; plane0 < planes; plane0 += (int64_t)gridDim.z * t.tile_p) {
        __syncthreads();  // the filter is staged, and the previous planes' readers are done
        // Zeros outside the image are the padding of the upsampled image (negative padding
        // never reaches here: the tile origin simply starts inside).
        for (int i = threadIdx.x; i < t.tile_p * in_plane; i += blockDim.x) {
            const int pl = i / in_plane, r = (i / t.in_w) % t.in_h, c = i % t.in_w;
            const int64_t plane = plane0 + pl, iy = cy.src0 + r, ix = cx.src0 + c;
            float v = 0.0f;
            if (plane < planes && iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w)
                v = to_float(x[(plane * p.in_h + iy) * p.in_w + ix]);
            s_in[i] = v;
        }
        __syncthreads();
        if (SEP) {
            // Along x: every staged row -> tile_w outputs, [tile_p][in_h][in_w] -> [tile_p][in_h][tile_w].
            for (int i = threadIdx.x; i < t.tile_p * rows_plane; i += blockDim.x) {
                const int pl = i / rows_plane, r = (i / t.tile_w) % t.in_h, c = i % t.tile_w;
                s_rows[i] = fir_line<UP, TAPS>(s_in + pl * in_plane + r * t.in_w, 1, s_filter, fw, up_x,
                                               c * down_x + cx.offset);
            }
            __syncthreads();
        }
        for (int i = threadIdx.x; i < t.tile_p * out_plane; i += blockDim.x) {
            const int pl = i / out_plane, r = (i / t.tile_w) % t.tile_h, c = i % t.tile_w;
            const int64_t plane = plane0 + pl, oy = oy0 + r, ox = ox0 + c;
            if (plane >= planes || oy >= p.out_h || ox >= p.out_w) continue;
            const float v = SEP ? fir_line<UP, TAPS>(s_rows + pl * rows_plane + c, t.tile_w, s_filter + fw, fh, up_y,
                                                     r * down_y + cy.offset)
                                : fir_2d<UP, TAPS>(s_in + pl * in_plane, t.in_w, s_filter, fh, fw, up_y, up_x,
                                                   r * down_y + cy.offset, c * down_x + cx.offset);
            out[(plane * p.out_h + oy) * p.out_w + ox] = from_float<T>(v);
        }
    }
}

// The last resort for filters whose tile does not fit in shared memory: one thread per output.
template <class T>
__global__ void upfirdn2d_direct_kernel(T* out, const T* x, const float* filter, UpfirdnParams p) {
    const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
    const int64_t stride = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int64_t ox = i % p.out_w, oy = (i / p.out_w) % p.out_h, plane = i / (p.out_w * p.out_h);
        const T* x_plane = x + plane * p.in_h * p.in_w;
        const TileOrigin cx = tile_origin(ox, p.down_x, p.pad_x0, p.up_x);
        const TileOrigin cy = tile_origin(oy, p.down_y, p.pad_y0, p.up_y);
        float acc = 0.0f;
        // Tap j reads source index src0 + (offset + j) / up when (offset + j) % up == 0.
        for (int jy = (p.up_y - cy.offset) % p.up_y; jy < p.filter_h; jy += p.up_y) {
            const int64_t iy = cy.src0 + (cy.offset + jy) / p.up_y;
            if (iy < 0 || iy >= p.in_h) continue;
            for (int jx = (p.up_x - cx.offset) % p.up_x; jx < p.filter_w; jx += p.up_x) {
                const int64_t ix = cx.src0 + (cx.offset + jx) / p.up_x;
                if (ix < 0 || ix >= p.in_w) continue;
                const float tap = p.separable ? filter[jx] * filter[p.filter_w + jy] : filter[jy * p.filter_w + jx];
                acc += tap * to_float(x_plane[iy * p.in_w + ix]);
            }
        }
        out[i] = from_float<T>(acc);
    }
}

size_t tile_shared_bytes(const UpfirdnParams& p, const UpfirdnTile& t) {
    const size_t rows = p.separable ? (size_t)t.tile_p * t.in_h * t.tile_w : 0;
    return sizeof(float) * (filter_floats(p) + (size_t)t.tile_p * t.in_h * t.in_w + rows);
}

UpfirdnTile tile_with_halo(const UpfirdnParams& p, int tile_w, int tile_h, int tile_p) {
    return {tile_w, tile_h, tile_p, tile_source_length(tile_w, p.down_x, p.filter_w, p.up_x),
            tile_source_length(tile_h, p.down_y, p.filter_h, p.up_y)};
}

// ~2048 outputs per block (8 per 256 threads: enough work per thread to amortise the staging),
// 64 wide for coalesced rows; shrunk (planes, then the longer side) until it fits in 48 KiB.
// Returns false when even one output's footprint does not fit.
bool choose_tile(const UpfirdnParams& p, UpfirdnTile* tile) {
    int tile_w = balanced_tile(p.out_w, 64);
    int tile_h = balanced_tile(p.out_h, (int)std::max<int64_t>(1, 2048 / tile_w));
    int tile_p = (int)std::min<int64_t>(p.batch * p.channels, std::max(1, 2048 / (tile_w * tile_h)));
    UpfirdnTile t = tile_with_halo(p, tile_w, tile_h, tile_p);
    while (tile_shared_bytes(p, t) > (size_t)kMaxSharedBytes) {
        if (tile_p > 1) tile_p = (tile_p + 1) / 2;
        else if (tile_h > 1 && tile_h >= tile_w) tile_h = (tile_h + 1) / 2;
        else if (tile_w > 1) tile_w = (tile_w + 1) / 2;
        else return false;
        t = tile_with_halo(p, tile_w, tile_h, tile_p);
    }
    *tile = t;
    return true;
}

template <class T, bool SEP, int UP, int DOWN, int TAPS>
int launch_tiled(void* out, const void* x, const float* filter, const UpfirdnParams& p, const UpfirdnTile& t,
                 void* stream) {
    const int64_t planes = p.batch * p.channels;
    const dim3 grid((unsigned)((p.out_w + t.tile_w - 1) / t.tile_w), (unsigned)((p.out_h + t.tile_h - 1) / t.tile_h),
                    (unsigned)std::min<int64_t>((planes + t.tile_p - 1) / t.tile_p, STYLEGAN_MAX_GRID_Z));
    return stylegan_launch(upfirdn2d_tiled_kernel<T, SEP, UP, DOWN, TAPS>, grid, dim3(kTileThreads),
                           tile_shared_bytes(p, t), stream, static_cast<T*>(out), static_cast<const T*>(x), filter,
                           p, t);
}

// The specialisation for p, if any, else the general tiled kernel.
template <class T, bool SEP>
int launch_specialised(void* out, const void* x, const float* filter, const UpfirdnParams& p, const UpfirdnTile& t,
                       void* stream) {
    const bool square = p.up_x == p.up_y && p.down_x == p.down_y && p.filter_w == p.filter_h;
    const int up = p.up_x, down = p.down_x, taps = p.filter_w;
    // StyleGAN2's resampling filter is 4x4 (2-D), StyleGAN3's 12 taps (separable).
    constexpr int kTaps = SEP ? 12 : 4;
    if (square && up == 2 && down == 1 && taps == kTaps) return launch_tiled<T, SEP, 2, 1, kTaps>(out, x, filter, p, t, stream);
    if (square && up == 1 && down == 2 && taps == kTaps) return launch_tiled<T, SEP, 1, 2, kTaps>(out, x, filter, p, t, stream);
    if (square && up == 1 && down == 1) return launch_tiled<T, SEP, 1, 1, 0>(out, x, filter, p, t, stream);
    return launch_tiled<T, SEP, 0, 0, 0>(out, x, filter, p, t, stream);
}

template <class T>
int launch(void* out, const void* x, const float* filter, const UpfirdnParams& p, void* stream) {
    UpfirdnTile t;
    if (!choose_tile(p, &t)) {
        const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
        return stylegan_launch(upfirdn2d_direct_kernel<T>, dim3(grid_size_for(total)), dim3(256), 0, stream,
                               static_cast<T*>(out), static_cast<const T*>(x), filter, p);
    }
    return p.separable ? launch_specialised<T, true>(out, x, filter, p, t, stream)
                       : launch_specialised<T, false>(out, x, filter, p, t, stream);
}

}  // namespace

extern "C" int stylegan_upfirdn2d(int32_t dtype, void* out, const void* x, const float* filter,
                                  const UpfirdnParams* params, void* stream) {
    const UpfirdnParams& p = *params;
    if (p.batch * p.channels * p.out_h * p.out_w == 0) return cudaSuccess;
    if (p.up_x < 1 || p.up_y < 1 || p.down_x < 1 || p.down_y < 1 || p.filter_h < 1 || p.filter_w < 1)
        return cudaErrorInvalidValue;
    switch (dtype) {
    case kFloat32: return launch<float>(out, x, filter, p, stream);
    case kFloat16: return launch<__half>(out, x, filter, p, stream);
    case kBFloat16: return launch<__nv_bfloat16>(out, x, filter, p, stream);
    default: return cudaErrorInvalidValue;
    }
}
