// The RoI Pool CPU kernels for one RoI (ops/cpu/roi_pool.cpp drives them): the quantized bins,
// the labels of the winning cells, the separable plane kernel for large bins and the
// channels-last kernel for small bins (and channels_last inputs).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/simd_loops.h"
#include "roi_common.h"

namespace maskrcnn {
namespace cpu {

// A RoI whose bins average at most `small_bin_cells` cells is pooled by the channels-last kernel
// (on a staged copy for NCHW inputs): per bin, its work is shared by the block's channels, so
// it pays for small bins and wide blocks; larger bins pay for the separable plane kernel's
// per-bin overhead. Measured with tools/bench_ops.py: twice the channels of a nominal block
// (kBlockBytes of planes). It depends on the map's shape only, not on the thread count, so
// the choice of kernel (which matters only for NaN inputs) is deterministic.
inline double small_bin_cells(int64_t channels, int64_t plane_bytes) {
  return 2.0 *
         static_cast<double>(std::min(channels, std::max<int64_t>(kBlockBytes / std::max<int64_t>(plane_bytes, 1), 1)));
}

// The compact op's codes of a bin's winning cell (dh, dw) inside its bin: (dh << shift) + dw, for
// bins at most max_extent cells high and wide; all ones (255, or -1) for an empty bin, which no
// cell's code reaches. uint8 (4 bits per axis) where the map's shape bounds the bins of RoIs
// inside it to 15 cells (codes_fit_in_byte), else int16 (7 bits).
template <typename code_t>
struct Codes;

template <>
struct Codes<uint8_t> {
  static constexpr int shift = 4;
  static constexpr int64_t max_extent = 15;
};

template <>
struct Codes<int16_t> {
  static constexpr int shift = 7;
  static constexpr int64_t max_extent = 127;
};

// Whether every bin of a RoI inside a height x width map (roi size at most the map's + 1 cells,
// bins at most ceil(size / pooled) + 1 cells) fits uint8 codes. The same rule is in
// maskrcnn/ops/_registration.py (the fake kernel).
inline bool codes_fit_in_byte(int64_t height, int64_t width, int64_t pooled_h, int64_t pooled_w) {
  const auto fits = [](int64_t size, int64_t pooled) {
    return (size + 1 + pooled - 1) / pooled + 1 <= Codes<uint8_t>::max_extent;
  };
  return fits(height, pooled_h) && fits(width, pooled_w);
}

// The quantized bins of every RoI (rows then columns, pooled_h + pooled_w ranges per RoI),
// whether its bins are small, and the largest height or width of its bins (whether the compact
// op codes its winners).
struct PoolBins {
  std::vector<roi::PoolRange> ranges;
  std::vector<char> small;
  std::vector<int64_t> extent;
  int pooled_h, pooled_w;

  const roi::PoolRange* rows(int64_t k) const { return ranges.data() + k * (pooled_h + pooled_w); }
  const roi::PoolRange* cols(int64_t k) const { return rows(k) + pooled_h; }
};

template <typename T>
PoolBins pool_bins(const T* rois, int64_t num_rois, double scale, int pooled_h, int pooled_w, int64_t height,
                   int64_t width, double small) {
  PoolBins bins{std::vector<roi::PoolRange>(num_rois * (pooled_h + pooled_w)), std::vector<char>(num_rois),
                std::vector<int64_t>(num_rois), pooled_h, pooled_w};
  for (int64_t k = 0; k < num_rois; ++k) {
    const T* box = rois + k * 5;
    const roi::PoolGeometry g = roi::pool_geometry<T>(box[1], box[2], box[3], box[4], static_cast<T>(scale));
    roi::PoolRange* r = bins.ranges.data() + k * (pooled_h + pooled_w);
    for (int b = 0; b < pooled_h; ++b) r[b] = roi::pool_bin_range<T>(g.start_h, g.roi_h, b, pooled_h, height);
    for (int b = 0; b < pooled_w; ++b) r[pooled_h + b] = roi::pool_bin_range<T>(g.start_w, g.roi_w, b, pooled_w, width);
    const double cells = static_cast<double>(g.roi_h) / pooled_h * (static_cast<double>(g.roi_w) / pooled_w);
    bins.small[k] = cells <= small;
    int64_t extent = 0;
    for (int b = 0; b < pooled_h + pooled_w; ++b) extent = std::max(extent, r[b].end - r[b].begin);
    bins.extent[k] = extent;
  }
  return bins;
}

template <typename T>
struct PoolScratch {
  std::vector<T> best;
  std::vector<int> where;
  std::vector<T> staged;  // an NCHW block, channels-last

  void resize(int64_t n) {  // running maxima (and their cells) of n columns or channels
    best.resize(n);
    where.resize(n);
  }
};

// How the kernels label the winning cell (h, w) of a bin: mul * h + w - origin, with origin 0
// (the argmax: mul = W) or mul * (the bin's first row) + its first column (the codes: mul = 16).
// An empty bin is labelled -1, which is 255 as a code.
struct Labels {
  int64_t mul;
  bool relative;

  int64_t origin(const roi::PoolRange& r, const roi::PoolRange& q) const {
    return relative ? r.begin * mul + q.begin : 0;
  }
};

// One RoI on one NCHW plane, separably: for each row bin, first the maxima of every column over
// the bin's rows (a contiguous, vectorizable loop over the RoI's columns), then the maximum of
// each column bin over those. Ties go to the first cell in row-major order: the smallest row,
// then the smallest column (the smallest label, for either kind). `arg` may be null (no labels).
template <typename scalar_t, typename T, typename arg_t>
void pool_plane(const scalar_t* plane, int64_t sH, int64_t width, const roi::PoolRange* rows,
                const roi::PoolRange* cols, int pooled_h, int pooled_w, scalar_t* out, arg_t* arg, int64_t oH,
                int64_t oW, Labels labels, PoolScratch<T>& s) {
  // Column span of the non-empty column bins (bins are ordered along the axis).
  int64_t x0 = width, x1 = 0;
  for (int pw = 0; pw < pooled_w; ++pw) {
    if (cols[pw].end > cols[pw].begin) {
      x0 = std::min(x0, cols[pw].begin);
      x1 = std::max(x1, cols[pw].end);
    }
  }
  s.resize(width);
  T* __restrict cm = s.best.data();
  int* __restrict ch = s.where.data();
  for (int ph = 0; ph < pooled_h; ++ph) {
    const roi::PoolRange r = rows[ph];
    const bool empty_row = r.end <= r.begin || x1 <= x0;
    if (!empty_row) {
      const scalar_t* first = plane + r.begin * sH;
      for (int64_t w = x0; w < x1; ++w) {
        cm[w] = static_cast<T>(first[w]);
        ch[w] = static_cast<int>(r.begin);
      }
      for (int64_t h = r.begin + 1; h < r.end; ++h) {
        const scalar_t* row = plane + h * sH;
        const int hi = static_cast<int>(h);
        if (std::is_same<scalar_t, float>::value && x1 - x0 >= 32) {  // worth a call
          keep_first_max_f32(reinterpret_cast<const float*>(row) + x0, reinterpret_cast<float*>(cm) + x0, ch + x0,
                             x1 - x0, hi);
        } else {
          for (int64_t w = x0; w < x1; ++w) keep_first_max(static_cast<T>(row[w]), cm[w], ch[w], hi);
        }
      }
    }
    for (int pw = 0; pw < pooled_w; ++pw) {
      const roi::PoolRange q = cols[pw];
      const int64_t o = ph * oH + pw * oW;
      if (empty_row || q.end <= q.begin) {
        out[o] = static_cast<scalar_t>(0);
        if (arg) arg[o] = static_cast<arg_t>(-1);
        continue;
      }
      const int64_t origin = labels.origin(r, q);
      // Branch-free (the winner's position is unpredictable): the maximum, then the smallest
      // row-major label among the columns that reach it.
      if (q.end - q.begin == 1) {  // one column (small RoIs): its maximum is the bin's
        out[o] = static_cast<scalar_t>(cm[q.begin]);
        if (arg) arg[o] = static_cast<arg_t>(ch[q.begin] * labels.mul + q.begin - origin);
        continue;
      }
      T best = cm[q.begin];
      for (int64_t w = q.begin + 1; w < q.end; ++w) best = cm[w] > best ? cm[w] : best;
      constexpr int64_t none = std::numeric_limits<int64_t>::max();
      int64_t index = none;
      for (int64_t w = q.begin; w < q.end; ++w) {
        const int64_t reaches = -static_cast<int64_t>(cm[w] == best);  // all ones or zero
        const int64_t candidate = ((ch[w] * labels.mul + w) & reaches) | (none & ~reaches);
        index = std::min(index, candidate);
      }
      if (index == none) index = ch[q.begin] * labels.mul + q.begin;  // NaN
      out[o] = static_cast<scalar_t>(best);
      if (arg) arg[o] = static_cast<arg_t>(index - origin);
    }
  }
}

// One RoI on a block of nc channels laid out channels-last: cell (h, w) of channel c0 + j at
// image[h * sH + w * sW + j]. The innermost loops run over the contiguous channels (they
// vectorize); the running maxima of every bin live in a float/double tile (bin i, channel j at
// i * nc + j) that is written out once per RoI. Output element (j, ph, pw) at
// out[j * oC + ph * oH + pw * oW], the same for arg (which may be null: no labels). For an NCHW
// output the RoI's block is one contiguous range, written in order: a scattered store per bin
// and channel (nc streams at once) cost about half of the kernel's time on the large mask and
// C4 outputs.
template <typename in_t, typename scalar_t, typename T, typename arg_t>
void pool_channels_last(const in_t* image, int64_t sH, int64_t sW, const roi::PoolRange* rows,
                        const roi::PoolRange* cols, int pooled_h, int pooled_w, int64_t nc, scalar_t* out, arg_t* arg,
                        int64_t oC, int64_t oH, int64_t oW, Labels labels, PoolScratch<T>& s) {
  const int64_t bins = static_cast<int64_t>(pooled_h) * pooled_w;
  s.resize(bins * nc);
  for (int ph = 0; ph < pooled_h; ++ph) {
    const roi::PoolRange r = rows[ph];
    for (int pw = 0; pw < pooled_w; ++pw) {
      const roi::PoolRange q = cols[pw];
      T* __restrict best = s.best.data() + (ph * pooled_w + pw) * nc;
      int* __restrict where = s.where.data() + (ph * pooled_w + pw) * nc;
      if (r.end <= r.begin || q.end <= q.begin) {
        std::fill(best, best + nc, T(0));
        std::fill(where, where + nc, -1);
        continue;
      }
      const in_t* __restrict first = image + r.begin * sH + q.begin * sW;
      const int64_t origin = labels.origin(r, q);
      const int first_index = static_cast<int>(r.begin * labels.mul + q.begin - origin);
      for (int64_t j = 0; j < nc; ++j) {
        best[j] = static_cast<T>(first[j]);
        where[j] = first_index;
      }
      for (int64_t h = r.begin; h < r.end; ++h) {
        for (int64_t w = (h == r.begin ? q.begin + 1 : q.begin); w < q.end; ++w) {
          const in_t* __restrict p = image + h * sH + w * sW;
          const int index = static_cast<int>(h * labels.mul + w - origin);
          if constexpr (std::is_same<in_t, float>::value && std::is_same<T, float>::value) {
            if (nc >= 16) {  // worth a call (the AVX2 build where there is one)
              keep_first_max_f32(p, best, where, nc, index);
              continue;
            }
          }
          for (int64_t j = 0; j < nc; ++j) keep_first_max(static_cast<T>(p[j]), best[j], where[j], index);
        }
      }
    }
  }
  const T* __restrict best = s.best.data();
  const int* __restrict where = s.where.data();
  if (oC == 1) {  // channels_last output: a bin's channels are contiguous
    for (int64_t i = 0; i < bins; ++i) {
      const int64_t o = (i / pooled_w) * oH + (i % pooled_w) * oW;
      for (int64_t j = 0; j < nc; ++j) out[o + j] = static_cast<scalar_t>(best[i * nc + j]);
      if (arg) {
        for (int64_t j = 0; j < nc; ++j) arg[o + j] = static_cast<arg_t>(where[i * nc + j]);
      }
    }
    return;
  }
  for (int64_t j = 0; j < nc; ++j) {
    for (int ph = 0; ph < pooled_h; ++ph) {
      scalar_t* __restrict ov = out + j * oC + ph * oH;
      arg_t* __restrict oa = arg ? arg + j * oC + ph * oH : nullptr;
      const int64_t i0 = static_cast<int64_t>(ph) * pooled_w;
      for (int pw = 0; pw < pooled_w; ++pw) ov[pw * oW] = static_cast<scalar_t>(best[(i0 + pw) * nc + j]);
      if (arg) {
        for (int pw = 0; pw < pooled_w; ++pw) oa[pw * oW] = static_cast<arg_t>(where[(i0 + pw) * nc + j]);
      }
    }
  }
}

// Copies channels [0, nc) of an NCHW image (plane stride sC) channels-last into `staged`:
// cell i = h * W + w of channel j at staged[i * nc + j].
template <typename scalar_t, typename T>
void stage_channels_last(const scalar_t* image, int64_t sC, int64_t plane, int64_t nc, std::vector<T>& staged) {
  staged.resize(plane * nc);
  T* __restrict dst = staged.data();
  constexpr int64_t tile = 64;  // cells per pass: the nc source rows stay in cache
  for (int64_t i0 = 0; i0 < plane; i0 += tile) {
    const int64_t i1 = std::min(i0 + tile, plane);
    for (int64_t j = 0; j < nc; ++j) {
      const scalar_t* __restrict src = image + j * sC;
      for (int64_t i = i0; i < i1; ++i) dst[i * nc + j] = static_cast<T>(src[i]);
    }
  }
}

}  // namespace cpu
}  // namespace maskrcnn
