// Average-mode RoI Align computed separably, forward and backward, both layouts.
//
// A bin's average is sum_ty sum_tx wy * wx * f(ty, tx) / count over its merged taps. Summing
// along y first, for every column of the RoI's span at once, turns the inner loop into a
// contiguous, vectorizable sweep over columns (NCHW) or channels (channels_last), and leaves a
// short sum along x per bin:
//   col[w] = sum_ty wy * f(ty, w)            for w in the span    (y pass, per bin row)
//   out    = sum_tx wx * col[tx] / count                          (x pass, per bin)
// The backward is the transpose: col[w] = sum over the row's bins and x taps of wx * g / count,
// then grad(ty, w) += wy * col[w]. Both layouts perform the same operations in the same order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu/roi_align_kernel.h"
#include "cpu/simd_loops.h"

namespace maskrcnn {
namespace cpu {

template <typename scalar_t, typename T, bool CL>
void align_forward_separable(const FeatureMap<const scalar_t>& f, int64_t n, const RoiPlan<T>& plan, int pooled_h,
                             int pooled_w, int64_t c0, int64_t c1, RoiBlock<scalar_t> out, AlignScratch<T>& s) {
  const AxisPlan<T>& py = plan.y;
  const AxisPlan<T>& px = plan.x;
  const T divisor = static_cast<T>(plan.count);
  const int64_t x0 = px.tap_lo, span = px.tap_hi - px.tap_lo;
  const int64_t nc = CL ? c1 - c0 : 1;  // NCHW: one channel at a time
  s.col.resize(span * nc);
  s.acc.resize(nc);
  T* __restrict col = s.col.data();
  T* __restrict acc = s.acc.data();
  const scalar_t* image = f.data + n * f.sN + x0 * f.sW;
  for (int64_t c = c0; c < (CL ? c0 + 1 : c1); ++c) {
    const scalar_t* base = CL ? image + c0 : image + c * f.sC;
    for (int ph = 0; ph < pooled_h; ++ph) {
      std::fill(col, col + span * nc, T(0));
      for (int ty = py.tap_begin[ph]; ty < py.tap_begin[ph + 1]; ++ty) {
        const T wy = py.tap_weight[ty];
        const scalar_t* __restrict row = base + py.tap_index[ty] * f.sH;
        if (CL) {
          for (int64_t w = 0; w < span; ++w) {
            const scalar_t* __restrict p = row + w * f.sW;
            T* __restrict cw = col + w * nc;
            for (int64_t j = 0; j < nc; ++j) cw[j] += wy * static_cast<T>(p[j]);
          }
        } else {
          if constexpr (std::is_same<scalar_t, float>::value) {
            axpy_f32(wy, row, col, span);
          } else {
            for (int64_t w = 0; w < span; ++w) col[w] += wy * static_cast<T>(row[w]);
          }
        }
      }
      for (int pw = 0; pw < pooled_w; ++pw) {
        for (int64_t j = 0; j < nc; ++j) acc[j] = T(0);
        for (int tx = px.tap_begin[pw]; tx < px.tap_begin[pw + 1]; ++tx) {
          const T wx = px.tap_weight[tx];
          const T* __restrict cw = col + (px.tap_index[tx] - x0) * nc;
          for (int64_t j = 0; j < nc; ++j) acc[j] += wx * cw[j];
        }
        scalar_t* o = out.data + ph * out.sH + pw * out.sW + (CL ? c0 : c) * out.sC;
        for (int64_t j = 0; j < nc; ++j) o[j * out.sC] = static_cast<scalar_t>(acc[j] / divisor);
      }
    }
  }
}

// `grad` is the item's gradient slice (see align_backward_block).
template <typename scalar_t, typename T, bool CL>
void align_backward_separable(const FeatureMap<T>& grad, const RoiPlan<T>& plan, int pooled_h, int pooled_w, int64_t c0,
                              int64_t c1, RoiBlock<const scalar_t> go, AlignScratch<T>& s) {
  const AxisPlan<T>& py = plan.y;
  const AxisPlan<T>& px = plan.x;
  const T divisor = static_cast<T>(plan.count);
  const int64_t x0 = px.tap_lo, span = px.tap_hi - px.tap_lo;
  const int64_t nc = CL ? c1 - c0 : 1;
  s.col.resize(span * nc);
  s.acc.resize(nc);
  T* __restrict col = s.col.data();
  T* __restrict gb = s.acc.data();
  for (int64_t c = c0; c < (CL ? c0 + 1 : c1); ++c) {
    T* base = grad.data + (c - c0) * grad.sC + x0 * grad.sW;  // CL: c == c0, the slice start
    for (int ph = 0; ph < pooled_h; ++ph) {
      if (py.tap_begin[ph] == py.tap_begin[ph + 1]) continue;  // no sample on the map
      std::fill(col, col + span * nc, T(0));
      for (int pw = 0; pw < pooled_w; ++pw) {
        const scalar_t* g = go.data + ph * go.sH + pw * go.sW + c * go.sC;
        for (int64_t j = 0; j < nc; ++j) gb[j] = static_cast<T>(g[j * go.sC]) / divisor;
        for (int tx = px.tap_begin[pw]; tx < px.tap_begin[pw + 1]; ++tx) {
          const T wx = px.tap_weight[tx];
          T* __restrict cw = col + (px.tap_index[tx] - x0) * nc;
          for (int64_t j = 0; j < nc; ++j) cw[j] += wx * gb[j];
        }
      }
      for (int ty = py.tap_begin[ph]; ty < py.tap_begin[ph + 1]; ++ty) {
        const T wy = py.tap_weight[ty];
        T* __restrict row = base + py.tap_index[ty] * grad.sH;
        if (CL) {
          for (int64_t w = 0; w < span; ++w) {
            T* __restrict p = row + w * grad.sW;
            const T* __restrict cw = col + w * nc;
            for (int64_t j = 0; j < nc; ++j) p[j] += wy * cw[j];
          }
        } else {
          if constexpr (std::is_same<T, float>::value) {
            axpy_f32(wy, col, row, span);
          } else {
            for (int64_t w = 0; w < span; ++w) row[w] += wy * col[w];
          }
        }
      }
    }
  }
}

}  // namespace cpu
}  // namespace maskrcnn
