// filtered_lrelu (ops/filtered_lrelu.py) as ONE fused kernel per direction.
//
// Forward:  x [N, C, H, W] + bias -> stage 1: upsample by `up`, pad1, filter f1 -> the middle
//           [N, C, mid_h, mid_w] -> clamp(lrelu(v) * gain) -> stage 2: pad2, filter f2, keep every
//           `down`-th -> out [N, C, out_h, out_w]; writes a 2-bit code per middle element.
// Masked:   the same stages with the middle multiplied by the leaky ReLU's derivative read back
//           from the codes ({clamped: 0, positive: gain, negative: gain * slope}). The backward
//           pass is this mode on the adjoint geometry (f2 then f1, flipped; stage 1 upsamples by
//           the forward's `down`, stage 2 downsamples by its `up`), and the adjoint of that is
//           this mode on the forward geometry: every order of gradient runs this kernel.
//
// Design, and why:
// - A block owns a tile of outputs [tile_h][tile_w] of one plane and computes the middle only
//   over the tile's footprint ([mid_h][mid_w] = (tile - 1) * down + f2 taps), from an input tile
//   staged in shared memory (the middle's footprint through stage 1). The middle never reaches
//   global memory: per output element the kernel reads the input once (plus halo) and writes
//   the output once, and the forward writes 2 bits per middle element, the backward reads them.
// - Separable filters (StyleGAN3's) run rows then columns; 2-D filters run a 2-D pass. Two
//   ping-pong buffers hold input -> rows -> middle -> rows -> output, so shared memory is
//   max(input, middle) + max(rows) rather than their sum.
// - The codes are packed 16 per 32-bit word over the flattened middle. Footprints of neighbouring
//   tiles overlap (by f2 taps - down); each middle element is written by exactly one block (the
//   tile whose footprint starts at or before it and the next one's does not), assembled from a
//   shared byte array into whole words and merged with atomicOr into a zeroed buffer (words
//   straddle tile borders). Middle elements in no footprint keep code 0: they reach no output,
//   so their derivative is never used.
// - Specialised for StyleGAN3's common layer (up 2, down 2, 12-tap filters) so its loops unroll.
#include "resample_tile.h"

namespace {

struct FlreluTile {
    int tile_w, tile_h;  // outputs per block
    int mid_w, mid_h;    // the tile's middle footprint
    int in_w, in_h;      // staged input: the middle footprint through stage 1, halo included
    int buf0, buf1;      // floats in the two ping-pong buffers
};

__host__ __device__ __forceinline__ int taps_floats(int h, int w, int separable) { return separable ? w + h : w * h; }

// Where the middle and the row pass of each stage live: the middle goes where stage 1's last pass
// writes (buf0 after a separable stage 1, whose row pass reads buf0 and writes buf1; buf1 after a
// 2-D stage 1, which reads buf0), the stage-2 rows into the other buffer.
__host__ __device__ __forceinline__ bool middle_in_buf0(const FilteredLreluParams& p) { return p.f1_separable != 0; }

template <class T, int UP, int DOWN, int T1, int T2>
__global__ void __launch_bounds__(kTileThreads)
filtered_lrelu_kernel(T* out, const T* x, const T* bias, const float* f1, const float* f2, uint32_t* record,
                      FilteredLreluParams p, FlreluTile t) {
    STYLEGAN_DYNAMIC_SHARED(float, shared);
    const int up = UP ? UP : p.up, down = DOWN ? DOWN : p.down;
    const int f1w = T1 ? T1 : p.f1_w, f1h = T1 ? T1 : p.f1_h, f2w = T2 ? T2 : p.f2_w, f2h = T2 ? T2 : p.f2_h;
    const bool sep1 = T1 != 0 || p.f1_separable, sep2 = T2 != 0 || p.f2_separable;
    float* s_f1 = shared;                                         // [f1 floats]
    float* s_f2 = s_f1 + taps_floats(f1h, f1w, sep1);             // [f2 floats]
    float* buf0 = s_f2 + taps_floats(f2h, f2w, sep2);             // [t.buf0]
    float* buf1 = buf0 + t.buf0;                                  // [t.buf1]
    uint8_t* s_code = reinterpret_cast<uint8_t*>(buf1 + t.buf1);  // forward: [mid_h][mid_w]
    float* mid = sep1 ? buf0 : buf1;
    float* rows2 = sep1 ? buf1 : buf0;
    stage_floats(s_f1, f1, taps_floats(f1h, f1w, sep1));
    stage_floats(s_f2, f2, taps_floats(f2h, f2w, sep2));

    const int64_t planes = p.batch * p.channels;
    const int64_t ox0 = (int64_t)blockIdx.x * t.tile_w, oy0 = (int64_t)blockIdx.y * t.tile_h;
    // Stage 2 has up 1, so its footprint starts exactly at out0 * down - pad2 (offset 0).
    const int64_t mx0 = ox0 * down - p.pad2_x0, my0 = oy0 * down - p.pad2_y0;
    const TileOrigin cx = tile_origin(mx0, 1, p.pad1_x0, up), cy = tile_origin(my0, 1, p.pad1_y0, up);
    const float code_gain[4] = {0.0f, p.gain, p.gain * p.slope, 0.0f};
    const int in_size = t.in_h * t.in_w, rows1_size = t.in_h * t.mid_w, mid_size = t.mid_h * t.mid_w;

    for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
        const int64_t mid_base = plane * p.mid_h * p.mid_w;  // flat index of the plane's first middle element
        __syncthreads();  // the filters are staged, and the previous plane's readers are done
        // Input tile (+ bias on real samples; zeros outside the image are stage 1's padding).
        const float b = (bias != nullptr && !p.masked) ? to_float(bias[plane % p.channels]) : 0.0f;
        for (int i = threadIdx.x; i < in_size; i += blockDim.x) {
            const int64_t iy = cy.src0 + i / t.in_w, ix = cx.src0 + i % t.in_w;
            const bool inside = iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w;
            buf0[i] = inside ? to_float(x[(plane * p.in_h + iy) * p.in_w + ix]) + b : 0.0f;
        }
        __syncthreads();
        if (sep1) {  // stage 1 along x: [in_h][in_w] (buf0) -> [in_h][mid_w] (buf1)
            for (int i = threadIdx.x; i < rows1_size; i += blockDim.x) {
                const int r = i / t.mid_w, c = i % t.mid_w;
                buf1[i] = fir_line<UP, T1>(buf0 + r * t.in_w, 1, s_f1, f1w, up, c + cx.offset);
            }
            __syncthreads();
        }
        // Stage 1's last pass and the pointwise step: [mid_h][mid_w] into `mid`.
        for (int i = threadIdx.x; i < mid_size; i += blockDim.x) {
            const int r = i / t.mid_w, c = i % t.mid_w;
            const int64_t my = my0 + r, mx = mx0 + c;
            const bool inside = my >= 0 && my < p.mid_h && mx >= 0 && mx < p.mid_w;
            float v = 0.0f;
            if (inside) {
                v = sep1 ? fir_line<UP, T1>(buf1 + c, t.mid_w, s_f1 + f1w, f1h, up, r + cy.offset)
                         : fir_2d<UP, T1>(buf0, t.in_w, s_f1, f1h, f1w, up, up, r + cy.offset, c + cx.offset);
            }
            if (p.masked) {
                if (inside) {
                    const int64_t e = mid_base + my * p.mid_w + mx;
                    v *= code_gain[(record[e / kCodesPerWord] >> (2 * (e % kCodesPerWord))) & 3u];
                }
            } else {
                float y = (v > 0.0f ? v : v * p.slope) * p.gain;
                uint8_t code = v > 0.0f ? kCodePositive : kCodeNegative;  // lrelu'(0) = slope, as torch
                if (p.clamp >= 0.0f && fabsf(y) > p.clamp) {
                    code = kCodeClamped;
                    y = y > 0.0f ? p.clamp : -p.clamp;
                }
                s_code[i] = inside ? code : (uint8_t)kCodeClamped;
                v = y;  // 0 outside: stage 2's padding (lrelu(0) = 0 and 0 is never clamped)
            }
            mid[i] = v;
        }
        __syncthreads();
        if (!p.masked) {
            // Codes of the middle elements this block owns: columns [0, own_w) and rows [0, own_h)
            // of the footprint (up to where the next tile's footprint starts; all of it on the
            // last tile), clipped to the image; whole 32-bit words, merged with atomicOr.
            const int own_w = blockIdx.x + 1 == gridDim.x ? t.mid_w : min(t.mid_w, t.tile_w * down);
            const int own_h = blockIdx.y + 1 == gridDim.y ? t.mid_h : min(t.mid_h, t.tile_h * down);
            const int c_lo = mx0 < 0 ? (int)-mx0 : 0;
            const int c_hi = p.mid_w - mx0 < own_w ? (int)(p.mid_w - mx0) : own_w;
            const int words_per_row = (c_hi - c_lo + kCodesPerWord - 1) / kCodesPerWord + 1;
            for (int i = threadIdx.x; c_lo < c_hi && i < own_h * words_per_row; i += blockDim.x) {
                const int r = i / words_per_row;
                const int64_t my = my0 + r;
                if (my < 0 || my >= p.mid_h) continue;
                const int64_t row = mid_base + my * p.mid_w + mx0;  // flat index of footprint column 0
                const int64_t word = (row + c_lo) / kCodesPerWord + i % words_per_row;
                uint32_t bits = 0;
                for (int k = 0; k < kCodesPerWord; ++k) {
                    const int64_t c = word * kCodesPerWord + k - row;
                    if (c >= c_lo && c < c_hi) bits |= (uint32_t)s_code[r * t.mid_w + c] << (2 * k);
                }
                if (bits != 0) atomicOr(record + word, bits);
            }
        }
        if (sep2) {  // stage 2 along x: [mid_h][mid_w] -> [mid_h][tile_w]
            for (int i = threadIdx.x; i < t.mid_h * t.tile_w; i += blockDim.x) {
                const int r = i / t.tile_w, c = i % t.tile_w;
                rows2[i] = fir_line<1, T2>(mid + r * t.mid_w, 1, s_f2, f2w, 1, c * down);
            }
            __syncthreads();
        }
        for (int i = threadIdx.x; i < t.tile_h * t.tile_w; i += blockDim.x) {
            const int r = i / t.tile_w, c = i % t.tile_w;
            const int64_t oy = oy0 + r, ox = ox0 + c;
            if (oy >= p.out_h || ox >= p.out_w) continue;
            const float v = sep2 ? fir_line<1, T2>(rows2 + c, t.tile_w, s_f2 + f2w, f2h, 1, r * down)
                                 : fir_2d<1, T2>(mid, t.mid_w, s_f2, f2h, f2w, 1, 1, r * down, c * down);
            out[(plane * p.out_h + oy) * p.out_w + ox] = from_float<T>(v);
        }
    }
}

FlreluTile tile_for(const FilteredLreluParams& p, int tile_w, int tile_h) {
    FlreluTile t;
    t.tile_w = tile_w;
    t.tile_h = tile_h;
    t.mid_w = (tile_w - 1) * p.down + p.f2_w;
    t.mid_h = (tile_h - 1) * p.down + p.f2_h;
    t.in_w = tile_source_length(t.mid_w, 1, p.f1_w, p.up);
    t.in_h = tile_source_length(t.mid_h, 1, p.f1_h, p.up);
    const int in = t.in_w * t.in_h, mid = t.mid_w * t.mid_h, rows2 = p.f2_separable ? t.mid_h * tile_w : 0;
    if (middle_in_buf0(p)) {
        t.buf0 = std::max(in, mid);
        t.buf1 = std::max(t.in_h * t.mid_w, rows2);
    } else {
        t.buf0 = std::max(in, rows2);
        t.buf1 = mid;
    }
    return t;
}

size_t shared_bytes(const FilteredLreluParams& p, const FlreluTile& t) {
    const int filters = taps_floats(p.f1_h, p.f1_w, p.f1_separable) + taps_floats(p.f2_h, p.f2_w, p.f2_separable);
    const size_t codes = p.masked ? 0 : (size_t)t.mid_w * t.mid_h;
    return sizeof(float) * (filters + t.buf0 + t.buf1) + codes;
}

// 32x32 outputs (a 74x74 middle at StyleGAN3's up 2 / down 2 / 12 taps: ~34 KiB), balanced over
// the image and halved along the longer side until it fits in 48 KiB.
bool choose_tile(const FilteredLreluParams& p, FlreluTile* tile) {
    int tile_w = balanced_tile(p.out_w, 32), tile_h = balanced_tile(p.out_h, 32);
    FlreluTile t = tile_for(p, tile_w, tile_h);
    while (shared_bytes(p, t) > (size_t)kMaxSharedBytes) {
        if (tile_h > 1 && tile_h >= tile_w) tile_h = (tile_h + 1) / 2;
        else if (tile_w > 1) tile_w = (tile_w + 1) / 2;
        else return false;
        t = tile_for(p, tile_w, tile_h);
    }
    *tile = t;
    return true;
}

template <class T, int UP, int DOWN, int T1, int T2>
int launch_with(void* out, const void* x, const void* bias, const float* f1, const float* f2, uint32_t* record,
                const FilteredLreluParams& p, const FlreluTile& t, void* stream) {
    const dim3 grid((unsigned)((p.out_w + t.tile_w - 1) / t.tile_w), (unsigned)((p.out_h + t.tile_h - 1) / t.tile_h),
                    (unsigned)std::min<int64_t>(p.batch * p.channels, STYLEGAN_MAX_GRID_Z));
    return stylegan_launch(filtered_lrelu_kernel<T, UP, DOWN, T1, T2>, grid, dim3(kTileThreads), shared_bytes(p, t),
                           stream, static_cast<T*>(out), static_cast<const T*>(x), static_cast<const T*>(bias), f1,
                           f2, record, p, t);
}

template <class T>
int launch(void* out, const void* x, const void* bias, const float* f1, const float* f2, uint32_t* record,
           const FilteredLreluParams& p, void* stream) {
    FlreluTile t;
    if (!choose_tile(p, &t)) return cudaErrorInvalidValue;  // filters beyond any 48 KiB tile
    const bool stylegan3_layer = p.up == 2 && p.down == 2 && p.f1_separable && p.f2_separable && p.f1_w == 12 &&
                                 p.f1_h == 12 && p.f2_w == 12 && p.f2_h == 12;
    if (stylegan3_layer) return launch_with<T, 2, 2, 12, 12>(out, x, bias, f1, f2, record, p, t, stream);
    return launch_with<T, 0, 0, 0, 0>(out, x, bias, f1, f2, record, p, t, stream);
}

}  // namespace

extern "C" int stylegan_filtered_lrelu(int32_t dtype, void* out, const void* x, const void* bias, const float* f1,
                                       const float* f2, uint32_t* record, const FilteredLreluParams* params,
                                       void* stream) {
    const FilteredLreluParams& p = *params;
    if (p.batch * p.channels * p.out_h * p.out_w == 0) return cudaSuccess;
    if (p.up < 1 || p.down < 1 || p.f1_h < 1 || p.f1_w < 1 || p.f2_h < 1 || p.f2_w < 1 || record == nullptr)
        return cudaErrorInvalidValue;
    switch (dtype) {
    case kFloat32: return launch<float>(out, x, bias, f1, f2, record, p, stream);
    case kFloat16: return launch<__half>(out, x, bias, f1, f2, record, p, stream);
    case kBFloat16: return launch<__nv_bfloat16>(out, x, bias, f1, f2, record, p, stream);
    default: return cudaErrorInvalidValue;
    }
}
