// RoI Align on the CPU: the work of one RoI on one block of channels, forward and backward.
//
// The drivers in roi_align.cpp build the per-axis plans (align_plan.h) once per RoI and call
// these routines for a block of channels [c0, c1). Two memory layouts:
//   NCHW (CL = false): one channel plane at a time; the loops walk the taps of a bin.
//   channels_last (CL = true): the innermost loop runs over the block's contiguous channels,
//     so it vectorizes, and every tap weight is computed once per bin for all channels.
// Average mode reads the merged taps; max mode evaluates each valid sample exactly as the
// reference does ((wy * wx) * f summed over the four neighbours in order) so that ties are
// decided the same way.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/align_plan.h"
#include "cpu/parallel.h"
#include "cpu/simd_loops.h"

namespace maskrcnn {
namespace cpu {

// A feature map (one FPN level): element (n, c, y, x) is data[n*sN + c*sC + y*sH + x*sW].
// NCHW maps are contiguous (sW == 1), channels_last maps have sC == 1.
template <typename scalar_t>
struct FeatureMap {
  scalar_t* data;
  int64_t height, width;
  int64_t sN, sC, sH, sW;
};

// Where one RoI's (C, oh, ow) output (or output gradient) lives: element (c, ph, pw) is
// data[c*sC + ph*sH + pw*sW].
template <typename scalar_t>
struct RoiBlock {
  scalar_t* data;
  int64_t sC, sH, sW;
};

// The four bilinear neighbours of one sample point, from channel c0 on, and their weights (the
// products of the two axis interpolations). value(j) is the sample's value in channel c0 + j.
template <typename scalar_t, typename T>
struct BilinearTaps {
  const scalar_t *p00, *p01, *p10, *p11;
  T w00, w01, w10, w11;

  BilinearTaps(const scalar_t* image, int64_t sH, int64_t sW, int64_t c0, const roi::AxisInterp<T>& sy,
               const roi::AxisInterp<T>& sx)
      : p00(image + sy.low * sH + sx.low * sW + c0),
        p01(image + sy.low * sH + sx.high * sW + c0),
        p10(image + sy.high * sH + sx.low * sW + c0),
        p11(image + sy.high * sH + sx.high * sW + c0),
        w00(sy.w_low * sx.w_low),
        w01(sy.w_low * sx.w_high),
        w10(sy.w_high * sx.w_low),
        w11(sy.w_high * sx.w_high) {}

  T value(int64_t j) const {
    return w00 * static_cast<T>(p00[j]) + w01 * static_cast<T>(p01[j]) + w10 * static_cast<T>(p10[j]) +
           w11 * static_cast<T>(p11[j]);
  }
};

// The plans of one RoI: its two axes, the divisor of the average, its image and level.
template <typename T>
struct RoiPlan {
  AxisPlan<T> y, x;
  int64_t count = 1;
  // Average mode, computed separably (roi_align_separable.h): first along y over the RoI's
  // column span, then along x. Chosen from the plan alone, so both layouts make the same choice
  // and give bit-identical results.
  bool separable = false;
};

// Separable pays when the RoI's column span is not much wider than the columns its taps read
// (it always is for dense sampling; a huge box with a small fixed grid is the exception).
template <typename T>
bool use_separable(const AxisPlan<T>& x) {
  const int64_t span = x.tap_hi - x.tap_lo;
  return span > 0 && span <= 3 * static_cast<int64_t>(x.tap_index.size());
}

// Per-thread scratch: per-channel buffers of the channels_last loops, and the gradient slice of
// half-precision inputs (accumulated in float, converted once at the end of the item).
template <typename T>
struct AlignScratch {
  std::vector<T> col;  // separable: partial sums over the column span
  std::vector<T> acc;
  std::vector<T> grad;
  std::vector<int> winner;
  std::vector<T> slice;
};

// Value of one sample point at plane offset `base` (the reference's order of operations).
template <typename T, typename scalar_t>
inline T sample_value(const scalar_t* base, const roi::AxisInterp<T>& sy, const roi::AxisInterp<T>& sx, int64_t sH,
                      int64_t sW) {
  const scalar_t* lo = base + sy.low * sH;
  const scalar_t* hi = base + sy.high * sH;
  return (sy.w_low * sx.w_low) * static_cast<T>(lo[sx.low * sW]) +
         (sy.w_low * sx.w_high) * static_cast<T>(lo[sx.high * sW]) +
         (sy.w_high * sx.w_low) * static_cast<T>(hi[sx.low * sW]) +
         (sy.w_high * sx.w_high) * static_cast<T>(hi[sx.high * sW]);
}

// Max mode, channels_last: the maximum over the valid samples of bin (ph, pw), for the nc
// channels from c0 on, into best[0, nc); with Winner also the row-major index iy * nx + ix of the
// first sample reaching it into win[0, nc) (the backward scatters to that sample). The bin has at
// least one valid sample. One loop for forward and backward, so both pick the same sample.
template <bool Winner, typename scalar_t, typename T>
inline void channels_last_bin_max(const scalar_t* image, const FeatureMap<const scalar_t>& f, int64_t c0, int64_t nc,
                                  const AxisPlan<T>& py, const AxisPlan<T>& px, int ph, int pw, T* best, int* win) {
  const int ny = py.num_valid(ph), nx = px.num_valid(pw);
  const int sy0 = py.sample_begin[ph], sx0 = px.sample_begin[pw];
  for (int iy = 0; iy < ny; ++iy) {
    for (int ix = 0; ix < nx; ++ix) {
      const BilinearTaps<scalar_t, T> taps(image, f.sH, f.sW, c0, py.samples[sy0 + iy], px.samples[sx0 + ix]);
      const int local = iy * nx + ix;
      if (local == 0) {
        for (int64_t j = 0; j < nc; ++j) {
          best[j] = taps.value(j);
          if constexpr (Winner) win[j] = 0;
        }
        continue;
      }
      for (int64_t j = 0; j < nc; ++j) {
        const T v = taps.value(j);
        if constexpr (Winner) {
          keep_first_max(v, best[j], win[j], local);
        } else {
          best[j] = v > best[j] ? v : best[j];
        }
      }
    }
  }
}

// Forward of one RoI on channels [c0, c1): writes the (c1 - c0, oh, ow) output block.
template <typename scalar_t, typename T, bool CL>
void align_forward_block(const FeatureMap<const scalar_t>& f, int64_t n, const RoiPlan<T>& plan, int pooled_h,
                         int pooled_w, bool max_mode, int64_t c0, int64_t c1, RoiBlock<scalar_t> out,
                         AlignScratch<T>& s) {
  const AxisPlan<T>& py = plan.y;
  const AxisPlan<T>& px = plan.x;
  const T divisor = static_cast<T>(plan.count);
  const scalar_t* image = f.data + n * f.sN;
  if (!CL) {
    // NCHW: one channel plane at a time, so the RoI's rows of that plane stay in cache.
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t* plane = image + c * f.sC;
      for (int ph = 0; ph < pooled_h; ++ph) {
        for (int pw = 0; pw < pooled_w; ++pw) {
          scalar_t* o = out.data + c * out.sC + ph * out.sH + pw * out.sW;
          if (!max_mode) {
            T sum = T(0);
            for (int ty = py.tap_begin[ph]; ty < py.tap_begin[ph + 1]; ++ty) {
              const scalar_t* row = plane + py.tap_index[ty] * f.sH;
              const T wy = py.tap_weight[ty];
              for (int tx = px.tap_begin[pw]; tx < px.tap_begin[pw + 1]; ++tx) {
                sum += (wy * px.tap_weight[tx]) * static_cast<T>(row[px.tap_index[tx]]);
              }
            }
            *o = static_cast<scalar_t>(sum / divisor);
            continue;
          }
          const int ny = py.num_valid(ph), nx = px.num_valid(pw);
          if (ny == 0 || nx == 0) {  // no sample on the map (or none at all): the bin is 0
            *o = static_cast<scalar_t>(0);
            continue;
          }
          const int sy0 = py.sample_begin[ph], sx0 = px.sample_begin[pw];
          T best = T(0);
          for (int iy = 0; iy < ny; ++iy) {
            for (int ix = 0; ix < nx; ++ix) {
              const T v = sample_value<T>(plane, py.samples[sy0 + iy], px.samples[sx0 + ix], f.sH, f.sW);
              if ((iy == 0 && ix == 0) || v > best) best = v;
            }
          }
          const bool has_off_map =
              roi::first_off_map_position(py.first_valid[ph], ny, py.grid, px.first_valid[pw], nx, px.grid) >= 0;
          if (has_off_map && best < T(0)) best = T(0);
          *o = static_cast<scalar_t>(best);
        }
      }
    }
    return;
  }
  // channels_last: the innermost loops run over the block's contiguous channels.
  const int64_t nc = c1 - c0;
  s.acc.resize(nc);
  T* acc = s.acc.data();
  for (int ph = 0; ph < pooled_h; ++ph) {
    for (int pw = 0; pw < pooled_w; ++pw) {
      scalar_t* o = out.data + ph * out.sH + pw * out.sW + c0 * out.sC;
      if (!max_mode) {
        for (int64_t j = 0; j < nc; ++j) acc[j] = T(0);
        for (int ty = py.tap_begin[ph]; ty < py.tap_begin[ph + 1]; ++ty) {
          const scalar_t* row = image + py.tap_index[ty] * f.sH + c0;
          for (int tx = px.tap_begin[pw]; tx < px.tap_begin[pw + 1]; ++tx) {
            const T w = py.tap_weight[ty] * px.tap_weight[tx];
            const scalar_t* p = row + px.tap_index[tx] * f.sW;
            for (int64_t j = 0; j < nc; ++j) acc[j] += w * static_cast<T>(p[j]);
          }
        }
        for (int64_t j = 0; j < nc; ++j) o[j * out.sC] = static_cast<scalar_t>(acc[j] / divisor);
        continue;
      }
      const int ny = py.num_valid(ph), nx = px.num_valid(pw);
      if (ny == 0 || nx == 0) {
        for (int64_t j = 0; j < nc; ++j) o[j * out.sC] = static_cast<scalar_t>(0);
        continue;
      }
      channels_last_bin_max<false>(image, f, c0, nc, py, px, ph, pw, acc, nullptr);
      const bool has_off_map =
          roi::first_off_map_position(py.first_valid[ph], ny, py.grid, px.first_valid[pw], nx, px.grid) >= 0;
      for (int64_t j = 0; j < nc; ++j) {
        const T v = has_off_map && acc[j] < T(0) ? T(0) : acc[j];
        o[j * out.sC] = static_cast<scalar_t>(v);
      }
    }
  }
}

// Backward of one RoI on channels [c0, c1): adds the RoI's output gradient `go` into `grad`,
// the gradient slice of image n and channels [c0, c1) in the accumulation type: element
// (c, y, x) at grad.data[(c - c0)*sC + y*sH + x*sW] (sN unused).
template <typename scalar_t, typename T, bool CL>
void align_backward_block(const FeatureMap<const scalar_t>& f, const FeatureMap<T>& grad, int64_t n,
                          const RoiPlan<T>& plan, int pooled_h, int pooled_w, bool max_mode, int64_t c0, int64_t c1,
                          RoiBlock<const scalar_t> go, AlignScratch<T>& s) {
  const AxisPlan<T>& py = plan.y;
  const AxisPlan<T>& px = plan.x;
  const T divisor = static_cast<T>(plan.count);
  const scalar_t* image = f.data + n * f.sN;

  // Max mode helpers: the winner is `local` = iy * nx + ix among the bin's valid samples.
  auto scatter = [&](int ph, int pw, int64_t c, int local, T gc) {
    const int nx = px.num_valid(pw);
    const roi::AxisInterp<T>& sy = py.samples[py.sample_begin[ph] + local / nx];
    const roi::AxisInterp<T>& sx = px.samples[px.sample_begin[pw] + local % nx];
    T* base = grad.data + (c - c0) * grad.sC;
    base[sy.low * grad.sH + sx.low * grad.sW] += (sy.w_low * sx.w_low) * gc;
    base[sy.low * grad.sH + sx.high * grad.sW] += (sy.w_low * sx.w_high) * gc;
    base[sy.high * grad.sH + sx.low * grad.sW] += (sy.w_high * sx.w_low) * gc;
    base[sy.high * grad.sH + sx.high * grad.sW] += (sy.w_high * sx.w_high) * gc;
  };
  auto grid_position = [&](int ph, int pw, int local) {
    const int nx = px.num_valid(pw);
    return static_cast<int64_t>(py.first_valid[ph] + local / nx) * px.grid + (px.first_valid[pw] + local % nx);
  };

  if (!CL) {
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t* plane = image + c * f.sC;
      T* gplane = grad.data + (c - c0) * grad.sC;
      for (int ph = 0; ph < pooled_h; ++ph) {
        for (int pw = 0; pw < pooled_w; ++pw) {
          const T g = static_cast<T>(go.data[c * go.sC + ph * go.sH + pw * go.sW]);
          if (!max_mode) {
            const T gc = g / divisor;
            for (int ty = py.tap_begin[ph]; ty < py.tap_begin[ph + 1]; ++ty) {
              T* row = gplane + py.tap_index[ty] * grad.sH;
              const T wy = py.tap_weight[ty];
              for (int tx = px.tap_begin[pw]; tx < px.tap_begin[pw + 1]; ++tx) {
                row[px.tap_index[tx]] += (wy * px.tap_weight[tx]) * gc;
              }
            }
            continue;
          }
          const int ny = py.num_valid(ph), nx = px.num_valid(pw);
          if (ny == 0 || nx == 0) continue;
          const int sy0 = py.sample_begin[ph], sx0 = px.sample_begin[pw];
          T best = T(0);
          int win = 0;
          for (int iy = 0; iy < ny; ++iy) {
            for (int ix = 0; ix < nx; ++ix) {
              const T v = sample_value<T>(plane, py.samples[sy0 + iy], px.samples[sx0 + ix], f.sH, f.sW);
              if ((iy == 0 && ix == 0) || v > best) {
                best = v;
                win = iy * nx + ix;
              }
            }
          }
          const int64_t first_invalid =
              roi::first_off_map_position(py.first_valid[ph], ny, py.grid, px.first_valid[pw], nx, px.grid);
          if (!roi::off_map_wins(best, grid_position(ph, pw, win), first_invalid)) scatter(ph, pw, c, win, g);
        }
      }
    }
    return;
  }

  const int64_t nc = c1 - c0;
  s.grad.resize(nc);
  s.acc.resize(nc);
  s.winner.resize(nc);
  T* gb = s.grad.data();
  T* best = s.acc.data();
  int* win = s.winner.data();
  for (int ph = 0; ph < pooled_h; ++ph) {
    for (int pw = 0; pw < pooled_w; ++pw) {
      const scalar_t* g = go.data + ph * go.sH + pw * go.sW + c0 * go.sC;
      if (!max_mode) {
        for (int64_t j = 0; j < nc; ++j) gb[j] = static_cast<T>(g[j * go.sC]) / divisor;
        for (int ty = py.tap_begin[ph]; ty < py.tap_begin[ph + 1]; ++ty) {
          T* row = grad.data + py.tap_index[ty] * grad.sH;
          for (int tx = px.tap_begin[pw]; tx < px.tap_begin[pw + 1]; ++tx) {
            const T w = py.tap_weight[ty] * px.tap_weight[tx];
            T* p = row + px.tap_index[tx] * grad.sW;
            for (int64_t j = 0; j < nc; ++j) p[j] += w * gb[j];
          }
        }
        continue;
      }
      const int ny = py.num_valid(ph), nx = px.num_valid(pw);
      if (ny == 0 || nx == 0) continue;
      channels_last_bin_max<true>(image, f, c0, nc, py, px, ph, pw, best, win);
      const int64_t first_invalid =
          roi::first_off_map_position(py.first_valid[ph], ny, py.grid, px.first_valid[pw], nx, px.grid);
      for (int64_t j = 0; j < nc; ++j) {
        if (roi::off_map_wins(best[j], grid_position(ph, pw, win[j]), first_invalid)) continue;
        scatter(ph, pw, c0 + j, win[j], static_cast<T>(g[j * go.sC]));
      }
    }
  }
}

}  // namespace cpu
}  // namespace maskrcnn
