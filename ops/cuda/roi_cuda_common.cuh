// Device helpers shared by the CUDA RoI kernels (roi_align.cu, roi_pool.cu, multilevel_roi_align.cu).
//
// Layouts. A feature map is read through two strides, one per spatial axis, from a per-(image,
// channel) base pointer:
//   NCHW:          base = data + (n * C + c) * H * W,   row stride W,     column stride 1
//   channels_last: base = data + (n * H * W) * C + c,   row stride W * C, column stride C
// so one device function serves both layouts; only the thread-to-work mapping differs (channels
// fastest across a warp for channels_last, so that a warp reads C-contiguous memory).
//
// Levels. Single-level RoI Align is the fused multi-level kernel with one level: every kernel
// reads its feature maps from a LevelTable passed by value (base pointers, sizes and scales of up
// to kMaxLevels levels) and, when `levels` is given, pools RoI k from level levels[k].
//
// Bad RoIs. A RoI whose batch index is outside [0, N), whose level is outside [0, L) or whose
// coordinates are not finite is skipped: its outputs are 0 and it contributes no gradient. The
// host side raises on such RoIs before launching (see check_roi_values in roi_cuda_host.cuh); the
// skip keeps the kernels memory-safe when that check is not run (CUDA graph capture).
#pragma once

#include <cstdint>

#include "roi_common.h"

namespace maskrcnn {
namespace cuda {

constexpr int kMaxLevels = 8;
constexpr int kThreads = 256;

template <typename scalar_t, typename acc_t>
struct LevelTable {
  const scalar_t* data[kMaxLevels];
  acc_t* grad[kMaxLevels];  // backward: gradient buffer of each level (same layout as data)
  int64_t height[kMaxLevels];
  int64_t width[kMaxLevels];
  acc_t scale[kMaxLevels];
  int num_levels;
  int64_t batch;     // N, shared by all levels
  int64_t channels;  // C, shared by all levels
};

// One RoI, read from the (K, 5) rois (already converted to the accumulation type) and `levels`.
template <typename acc_t>
struct RoiRef {
  bool ok;
  int level;
  int64_t n;
  acc_t x1, y1, x2, y2;
};

template <typename acc_t>
__device__ __forceinline__ bool roi_finite(acc_t v) {
  return isfinite(v);
}

template <typename acc_t>
__device__ __forceinline__ RoiRef<acc_t> load_roi(const acc_t* rois, const int64_t* levels, int64_t k, int64_t batch,
                                                  int num_levels) {
  RoiRef<acc_t> r;
  const acc_t* p = rois + k * 5;
  const acc_t b = p[0];
  r.x1 = p[1];
  r.y1 = p[2];
  r.x2 = p[3];
  r.y2 = p[4];
  r.level = levels == nullptr ? 0 : static_cast<int>(levels[k] < 0 || levels[k] >= num_levels ? -1 : levels[k]);
  // Compare in floating point before converting, so that a huge or NaN index is never cast.
  r.ok = roi_finite(b) && b >= acc_t(0) && b < static_cast<acc_t>(batch) && roi_finite(r.x1) && roi_finite(r.y1) &&
         roi_finite(r.x2) && roi_finite(r.y2) && r.level >= 0;
  r.n = r.ok ? static_cast<int64_t>(b) : 0;
  return r;
}

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Loads of the storage type into the accumulation type.
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t load(const scalar_t* p) {
  return static_cast<acc_t>(*p);
}

// The position of output element i of a (K, C, oh, ow) output (or gradient) stored NCHW
// (pw fastest) or channels_last (c fastest); the kernels give one thread per element this way.
template <typename index_t>
struct OutputIndex {
  index_t k, c;
  int ph, pw;
};

template <bool kChannelsLast, typename index_t>
__device__ __forceinline__ OutputIndex<index_t> decode_output_index(index_t i, index_t channels, int pooled_h,
                                                                    int pooled_w) {
  // Widened before any product: pooled_h * pooled_w alone can pass 2^31 in the int64 path.
  const index_t oh = static_cast<index_t>(pooled_h), ow = static_cast<index_t>(pooled_w);
  OutputIndex<index_t> o;
  if (kChannelsLast) {
    o.c = i % channels;
    const index_t bin = i / channels;
    o.pw = static_cast<int>(bin % ow);
    o.ph = static_cast<int>((bin / ow) % oh);
    o.k = bin / (ow * oh);
  } else {
    o.pw = static_cast<int>(i % ow);
    o.ph = static_cast<int>((i / ow) % oh);
    const index_t plane = i / (ow * oh);
    o.c = plane % channels;
    o.k = plane / channels;
  }
  return o;
}

// One (image, channel) plane of a (N, C, H, W) map: cell (y, x) is at offset + y * row + x * col.
template <typename index_t>
struct PlaneView {
  index_t offset, row, col;
};

template <bool kChannelsLast, typename index_t>
__device__ __forceinline__ PlaneView<index_t> plane_view(int64_t n, int64_t c, int64_t channels, int64_t height,
                                                         int64_t width) {
  const index_t C = static_cast<index_t>(channels), H = static_cast<index_t>(height), W = static_cast<index_t>(width);
  PlaneView<index_t> v;
  if (kChannelsLast) {
    v.offset = static_cast<index_t>(n) * H * W * C + static_cast<index_t>(c);
    v.row = W * C;
    v.col = C;
  } else {
    v.offset = (static_cast<index_t>(n) * C + static_cast<index_t>(c)) * H * W;
    v.row = W;
    v.col = 1;
  }
  return v;
}

// RoI Align of one output bin over one plane (docs/ops.md), visiting only the bin's samples that
// lie on the map (roi::valid_sample_range): the average over all grid_h x grid_w samples (an
// off-map one adds 0), or the maximum. Max mode follows the CPU kernel and the reference exactly:
// the maximum starts from the first on-map sample (so a NaN there stays), and an off-map sample
// (value 0) wins when the best on-map value is below 0, or equals 0 and comes later in row-major
// order. *winner receives the row-major index of the winning sample, -1 when none is on the map
// or an off-map sample wins (no gradient), which the backward passes use to route the gradient.
template <bool kMax, typename acc_t, typename scalar_t, typename index_t>
__device__ __forceinline__ acc_t align_bin(const scalar_t* base, index_t row_stride, index_t col_stride, int64_t height,
                                           int64_t width, const roi::AlignGeometry<acc_t>& g, int ph, int pw,
                                           int* winner) {
  int y0, y1, x0, x1;
  roi::valid_sample_range(g.start_h, g.bin_h, ph, g.grid_h, height, &y0, &y1);
  roi::valid_sample_range(g.start_w, g.bin_w, pw, g.grid_w, width, &x0, &x1);
  acc_t sum = 0;
  acc_t best = 0;
  int64_t best_pos = -1;
  for (int iy = y0; iy < y1; ++iy) {
    const roi::AxisInterp<acc_t> ay = roi::axis_interp(roi::sample_coord(g.start_h, g.bin_h, ph, iy, g.grid_h), height);
    const index_t r_lo = static_cast<index_t>(ay.low) * row_stride;
    const index_t r_hi = static_cast<index_t>(ay.high) * row_stride;
    for (int ix = x0; ix < x1; ++ix) {
      const roi::AxisInterp<acc_t> ax =
          roi::axis_interp(roi::sample_coord(g.start_w, g.bin_w, pw, ix, g.grid_w), width);
      const index_t c_lo = static_cast<index_t>(ax.low) * col_stride;
      const index_t c_hi = static_cast<index_t>(ax.high) * col_stride;
      // Same operation order as torchvision: w1 v1 + w2 v2 + w3 v3 + w4 v4.
      const acc_t v = ay.w_low * ax.w_low * load<acc_t>(base + r_lo + c_lo) +
                      ay.w_low * ax.w_high * load<acc_t>(base + r_lo + c_hi) +
                      ay.w_high * ax.w_low * load<acc_t>(base + r_hi + c_lo) +
                      ay.w_high * ax.w_high * load<acc_t>(base + r_hi + c_hi);
      if (kMax) {
        if (best_pos < 0 || v > best) {
          best = v;
          best_pos = static_cast<int64_t>(iy) * g.grid_w + ix;
        }
      } else {
        sum += v;
      }
    }
  }
  if (kMax) {
    const int64_t first_off = roi::first_off_map_position(y0, y1 - y0, g.grid_h, x0, x1 - x0, g.grid_w);
    if (best_pos < 0 || roi::off_map_wins(best, best_pos, first_off)) {
      *winner = -1;
      return acc_t(0);
    }
    *winner = static_cast<int>(best_pos);
    return best;
  }
  return sum / static_cast<acc_t>(g.count);
}

// Scatters `value` (the gradient of one sample point) onto its four neighbours with atomics.
template <typename acc_t, typename index_t>
__device__ __forceinline__ void scatter_sample(acc_t* base, index_t row_stride, index_t col_stride,
                                               const roi::AxisInterp<acc_t>& ay, const roi::AxisInterp<acc_t>& ax,
                                               acc_t value) {
  if (!ay.valid || !ax.valid) return;
  const index_t r_lo = static_cast<index_t>(ay.low) * row_stride;
  const index_t r_hi = static_cast<index_t>(ay.high) * row_stride;
  const index_t c_lo = static_cast<index_t>(ax.low) * col_stride;
  const index_t c_hi = static_cast<index_t>(ax.high) * col_stride;
  atomicAdd(base + r_lo + c_lo, value * (ay.w_low * ax.w_low));
  atomicAdd(base + r_lo + c_hi, value * (ay.w_low * ax.w_high));
  atomicAdd(base + r_hi + c_lo, value * (ay.w_high * ax.w_low));
  atomicAdd(base + r_hi + c_hi, value * (ay.w_high * ax.w_high));
}

// Grid size of a grid-stride loop over `total` items (the loop covers the rest).
inline unsigned int blocks_for(int64_t total, int threads = kThreads) {
  const int64_t blocks = (total + threads - 1) / threads;
  const int64_t cap = int64_t(1) << 20;  // enough to fill any GPU; the kernels grid-stride
  return static_cast<unsigned int>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

}  // namespace cuda
}  // namespace maskrcnn
