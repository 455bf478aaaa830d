// Per-RoI and per-sample arithmetic of RoI Align and RoI Pool, shared by the CPU and CUDA kernels.
//
// Everything here follows docs/ops.md and torchvision's kernels operation for operation,
// so that our outputs match torchvision's to the last bit where the accumulation order is the same.
// RoI Align is separable: a sample point (y, x) has bilinear weight wy * wx on each of its four
// neighbours, and it is zero (invalid) when y or x falls outside [-1, size]. The kernels therefore
// compute the per-axis interpolation once per (bin, sample) along each axis and combine them,
// instead of once per (bin, sample_y, sample_x, channel).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define ROI_HD __host__ __device__ __forceinline__
#else
#define ROI_HD inline
#endif

namespace maskrcnn {
namespace roi {

// ---------------------------------------------------------------------------------------------
// RoI Align
// ---------------------------------------------------------------------------------------------

// Geometry of one RoI on the feature map, in feature cells. T is the accumulation type
// (float for half, bfloat16 and float; double for double).
template <typename T>
struct AlignGeometry {
  T start_h;      // top edge of the RoI, after scaling and the optional half-pixel offset
  T start_w;      // left edge
  T bin_h;        // height of one output bin
  T bin_w;        // width of one output bin
  int grid_h;     // sample points per bin along y (>= 0)
  int grid_w;     // sample points per bin along x (>= 0)
  int64_t count;  // divisor of the average: max(grid_h * grid_w, 1), in 64 bits (each grid < 2^31)
};

// ceil(bin_size) as a sample count: 0 for empty or negative bins. The float-to-int conversion is
// bounded so that an absurd (but finite) box cannot overflow it; callers reject non-finite boxes.
template <typename T>
ROI_HD int adaptive_grid(T bin_size) {
  const T grid = ceil(bin_size);
  if (!(grid > T(0))) return 0;
  return grid < T(1 << 30) ? static_cast<int>(grid) : (1 << 30);
}

// box: the four corners x1, y1, x2, y2 of the RoI in input-image coordinates.
template <typename T>
ROI_HD AlignGeometry<T> align_geometry(T x1, T y1, T x2, T y2, T spatial_scale, int pooled_h, int pooled_w,
                                       int sampling_ratio, bool aligned) {
  // The half-pixel offset maps continuous image coordinates to pixel centres (Detectron2).
  const T offset = aligned ? T(0.5) : T(0);
  AlignGeometry<T> g;
  g.start_w = x1 * spatial_scale - offset;
  g.start_h = y1 * spatial_scale - offset;
  const T end_w = x2 * spatial_scale - offset;
  const T end_h = y2 * spatial_scale - offset;
  T roi_w = end_w - g.start_w;
  T roi_h = end_h - g.start_h;
  if (!aligned) {
    // The original Detectron forced malformed RoIs to be 1x1; the aligned variant keeps them.
    roi_w = roi_w > T(1) ? roi_w : T(1);
    roi_h = roi_h > T(1) ? roi_h : T(1);
  }
  g.bin_h = roi_h / static_cast<T>(pooled_h);
  g.bin_w = roi_w / static_cast<T>(pooled_w);
  // Adaptive sampling: ceil(roi_size / output_size) points per bin and axis. A RoI of negative
  // size (aligned) gets no sample points, hence a zero output.
  g.grid_h = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(roi_h / pooled_h);
  g.grid_w = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(roi_w / pooled_w);
  const int64_t count = static_cast<int64_t>(g.grid_h) * g.grid_w;
  g.count = count > 1 ? count : 1;
  return g;
}

// Coordinate of sample point i (of grid) in output bin `bin` along one axis.
template <typename T>
ROI_HD T sample_coord(T start, T bin_size, int bin, int i, int grid) {
  return start + static_cast<T>(bin) * bin_size + (static_cast<T>(i) + T(0.5)) * bin_size / static_cast<T>(grid);
}

// Linear interpolation along one axis of length `size`: the two neighbouring cells and their
// weights. `valid` is false when the coordinate lies outside [-1, size]; such a sample point is
// zero whatever the other axis says (zero padding beyond one cell of the border).
template <typename T>
struct AxisInterp {
  int64_t low;
  int64_t high;
  T w_low;   // weight of `low`  (1 - fraction)
  T w_high;  // weight of `high` (fraction)
  bool valid;
};

template <typename T>
ROI_HD AxisInterp<T> axis_interp(T coord, int64_t size) {
  AxisInterp<T> a;
  if (coord < T(-1) || coord > static_cast<T>(size)) {
    a.low = a.high = 0;
    a.w_low = a.w_high = T(0);
    a.valid = false;
    return a;
  }
  a.valid = true;
  if (coord <= T(0)) coord = T(0);
  a.low = static_cast<int64_t>(coord);
  if (a.low >= size - 1) {
    // Clamp onto the last cell: both neighbours are that cell, the whole weight on `low`.
    a.low = a.high = size - 1;
    coord = static_cast<T>(a.low);
  } else {
    a.high = a.low + 1;
  }
  a.w_high = coord - static_cast<T>(a.low);
  a.w_low = T(1) - a.w_high;
  return a;
}

// First sample i in [from, grid) of bin `bin` whose coordinate is past `bound` in the direction
// the coordinates travel (rising for a non-negative bin size): coord > bound (strict) or
// coord >= bound when rising, coord < bound or coord <= bound when falling; `grid` if none. The
// coordinates of a bin's samples are monotone in i, so a binary search finds it.
template <typename T>
ROI_HD int first_sample_past(T start, T bin_size, int bin, int grid, int from, T bound, bool rising, bool strict) {
  int lo = from, hi = grid;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    const T c = sample_coord(start, bin_size, bin, mid, grid);
    const bool past = rising ? (strict ? c > bound : c >= bound) : (strict ? c < bound : c <= bound);
    if (past) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// The samples of bin `bin` that lie on an axis of `size` cells (axis_interp's rule: the
// coordinate in [-1, size]) form one run [*lo, *hi) of its grid. Visiting only that run keeps
// the work proportional to the samples on the map, even for huge boxes with adaptive sampling.
template <typename T>
ROI_HD void valid_sample_range(T start, T bin_size, int bin, int grid, int64_t size, int* lo, int* hi) {
  const T lower = T(-1);
  const T upper = static_cast<T>(size);
  if (bin_size >= T(0)) {
    *lo = first_sample_past(start, bin_size, bin, grid, 0, lower, true, false);
    *hi = first_sample_past(start, bin_size, bin, grid, *lo, upper, true, true);
  } else {  // an inverted box with fixed sampling: the coordinates fall
    *lo = first_sample_past(start, bin_size, bin, grid, 0, upper, false, false);
    *hi = first_sample_past(start, bin_size, bin, grid, *lo, lower, false, true);
  }
}

// Max mode. The on-map samples of a bin are the rectangle [ly, ly + ny) x [lx, lx + nx) of its
// grid_y x grid_x grid; every other sample lies off the map, has value 0 and competes for the
// maximum, ties going to the first sample in row-major order (docs/ops.md). Returns the row-major
// position of the first off-map sample, -1 when there is none.
ROI_HD int64_t first_off_map_position(int ly, int ny, int grid_y, int lx, int nx, int grid_x) {
  if (ny == 0 || nx == 0 || ly > 0 || lx > 0) return 0;
  if (nx < grid_x) return nx;
  if (ny < grid_y) return static_cast<int64_t>(ny) * grid_x;
  return -1;
}

// Does an off-map sample (value 0, first at `first_off_map`) beat the best on-map sample `best`
// at row-major position `best_pos`? Ties go to the first sample; a NaN best stays.
template <typename T>
ROI_HD bool off_map_wins(T best, int64_t best_pos, int64_t first_off_map) {
  return first_off_map >= 0 && (best < T(0) || (best == T(0) && first_off_map < best_pos));
}

// ---------------------------------------------------------------------------------------------
// RoI Pool
// ---------------------------------------------------------------------------------------------

// Fast R-CNN rounds the box to the grid (first quantization) with round-half-away-from-zero.
struct PoolGeometry {
  int64_t start_h;
  int64_t start_w;
  int64_t roi_h;  // max(end - start + 1, 1)
  int64_t roi_w;
};

template <typename T>
ROI_HD PoolGeometry pool_geometry(T x1, T y1, T x2, T y2, T spatial_scale) {
  PoolGeometry g;
  g.start_w = static_cast<int64_t>(round(x1 * spatial_scale));
  g.start_h = static_cast<int64_t>(round(y1 * spatial_scale));
  const int64_t end_w = static_cast<int64_t>(round(x2 * spatial_scale));
  const int64_t end_h = static_cast<int64_t>(round(y2 * spatial_scale));
  const int64_t w = end_w - g.start_w + 1;
  const int64_t h = end_h - g.start_h + 1;
  g.roi_w = w > 1 ? w : 1;
  g.roi_h = h > 1 ? h : 1;
  return g;
}

// The cells [begin, end) of output bin `bin` along one axis (second quantization: floor / ceil),
// offset by the RoI start and clipped to the map. Empty when end <= begin.
struct PoolRange {
  int64_t begin;
  int64_t end;
};

template <typename T>
ROI_HD PoolRange pool_bin_range(int64_t roi_start, int64_t roi_size, int bin, int pooled, int64_t size) {
  const T bin_size = static_cast<T>(roi_size) / static_cast<T>(pooled);
  int64_t begin = static_cast<int64_t>(floor(static_cast<T>(bin) * bin_size)) + roi_start;
  int64_t end = static_cast<int64_t>(ceil(static_cast<T>(bin + 1) * bin_size)) + roi_start;
  begin = begin < 0 ? 0 : (begin > size ? size : begin);
  end = end < 0 ? 0 : (end > size ? size : end);
  PoolRange r;
  r.begin = begin;
  r.end = end;
  return r;
}

}  // namespace roi
}  // namespace maskrcnn
