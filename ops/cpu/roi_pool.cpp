// RoI Pool (Fast R-CNN) on the CPU: torch.ops.maskrcnn.roi_pool and _roi_pool_backward.
//
// Forward items are (image, channel block) and visit the image's RoIs; the argmax (h * W + w of
// the winning cell in its plane, -1 for an empty bin) is stored so that the backward is a plain
// scatter. Backward items are the same: each owns its gradient planes and visits the image's RoIs
// in order (no atomics, deterministic). Two forward kernels, chosen per RoI by its bin size (both
// give the same result, see docs/ops.md):
//   large bins: one NCHW plane at a time, separably (column maxima over a bin's rows, then the
//     maximum of each column bin over those);
//   small bins (and channels_last inputs): the innermost loop runs over contiguous channels; an
//     NCHW block is first staged channels-last in the accumulation type, once per item.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/prepare.h"
#include "cpu/simd_loops.h"
#include "roi_checks.h"
#include "roi_common.h"

namespace maskrcnn {
namespace cpu {
namespace {

// A RoI whose bins average at most `small_bin_cells` cells is pooled by the channels-last kernel
// (on a staged copy for NCHW inputs): per bin, its work is shared by the block's channels, so
// it pays for small bins and wide blocks; larger bins pay for the separable plane kernel's
// per-bin overhead. Measured with tools/bench_ops.py: twice the channels of a nominal block
// (kBlockBytes of planes). It depends on the map's shape only, not on the thread count, so
// the choice of kernel (which matters only for NaN inputs) is deterministic.
double small_bin_cells(int64_t channels, int64_t plane_bytes) {
  return 2.0 *
         static_cast<double>(std::min(channels, std::max<int64_t>(kBlockBytes / std::max<int64_t>(plane_bytes, 1), 1)));
}

// The quantized bins of every RoI (rows then columns, pooled_h + pooled_w ranges per RoI) and
// whether its bins are small.
struct PoolBins {
  std::vector<roi::PoolRange> ranges;
  std::vector<char> small;
  int pooled_h, pooled_w;

  const roi::PoolRange* rows(int64_t k) const { return ranges.data() + k * (pooled_h + pooled_w); }
  const roi::PoolRange* cols(int64_t k) const { return rows(k) + pooled_h; }
};

template <typename T>
PoolBins pool_bins(const T* rois, int64_t num_rois, double scale, int pooled_h, int pooled_w, int64_t height,
                   int64_t width, double small) {
  PoolBins bins{std::vector<roi::PoolRange>(num_rois * (pooled_h + pooled_w)), std::vector<char>(num_rois), pooled_h,
                pooled_w};
  for (int64_t k = 0; k < num_rois; ++k) {
    const T* box = rois + k * 5;
    const roi::PoolGeometry g = roi::pool_geometry<T>(box[1], box[2], box[3], box[4], static_cast<T>(scale));
    roi::PoolRange* r = bins.ranges.data() + k * (pooled_h + pooled_w);
    for (int b = 0; b < pooled_h; ++b) r[b] = roi::pool_bin_range<T>(g.start_h, g.roi_h, b, pooled_h, height);
    for (int b = 0; b < pooled_w; ++b) r[pooled_h + b] = roi::pool_bin_range<T>(g.start_w, g.roi_w, b, pooled_w, width);
    const double cells = static_cast<double>(g.roi_h) / pooled_h * (static_cast<double>(g.roi_w) / pooled_w);
    bins.small[k] = cells <= small;
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

// One RoI on one NCHW plane, separably: for each row bin, first the maxima of every column over
// the bin's rows (a contiguous, vectorizable loop over the RoI's columns), then the maximum of
// each column bin over those. Ties go to the first cell in row-major order: the smallest row,
// then the smallest column.
template <typename scalar_t, typename T>
void pool_plane(const scalar_t* plane, int64_t sH, int64_t width, const roi::PoolRange* rows,
                const roi::PoolRange* cols, int pooled_h, int pooled_w, scalar_t* out, int* arg, int64_t oH, int64_t oW,
                PoolScratch<T>& s) {
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
        arg[o] = -1;
        continue;
      }
      // Branch-free (the winner's position is unpredictable): the maximum, then the smallest
      // row-major index h * W + w among the columns that reach it.
      if (q.end - q.begin == 1) {  // one column (small RoIs): its maximum is the bin's
        out[o] = static_cast<scalar_t>(cm[q.begin]);
        arg[o] = static_cast<int>(ch[q.begin] * width + q.begin);
        continue;
      }
      T best = cm[q.begin];
      for (int64_t w = q.begin + 1; w < q.end; ++w) best = cm[w] > best ? cm[w] : best;
      constexpr int64_t none = std::numeric_limits<int64_t>::max();
      int64_t index = none;
      for (int64_t w = q.begin; w < q.end; ++w) {
        const int64_t reaches = -static_cast<int64_t>(cm[w] == best);  // all ones or zero
        const int64_t candidate = ((ch[w] * width + w) & reaches) | (none & ~reaches);
        index = std::min(index, candidate);
      }
      if (index == none) index = ch[q.begin] * width + q.begin;  // NaN
      out[o] = static_cast<scalar_t>(best);
      arg[o] = static_cast<int>(index);
    }
  }
}

// One RoI on a block of nc channels laid out channels-last: cell (h, w) of channel c0 + j at
// image[h * sH + w * sW + j]. The innermost loops run over the contiguous channels (they
// vectorize); the running maxima of every bin live in a float/double tile (bin i, channel j at
// i * nc + j) that is written out once per RoI. Output element (j, ph, pw) at
// out[j * oC + ph * oH + pw * oW], the same for arg. For an NCHW output the RoI's block is one
// contiguous range, written in order: a scattered store per bin and channel (nc streams at once)
// cost about half of the kernel's time on the large mask and C4 outputs.
template <typename in_t, typename scalar_t, typename T>
void pool_channels_last(const in_t* image, int64_t sH, int64_t sW, int64_t width, const roi::PoolRange* rows,
                        const roi::PoolRange* cols, int pooled_h, int pooled_w, int64_t nc, scalar_t* out, int* arg,
                        int64_t oC, int64_t oH, int64_t oW, PoolScratch<T>& s) {
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
      const int first_index = static_cast<int>(r.begin * width + q.begin);
      for (int64_t j = 0; j < nc; ++j) {
        best[j] = static_cast<T>(first[j]);
        where[j] = first_index;
      }
      for (int64_t h = r.begin; h < r.end; ++h) {
        for (int64_t w = (h == r.begin ? q.begin + 1 : q.begin); w < q.end; ++w) {
          const in_t* __restrict p = image + h * sH + w * sW;
          const int index = static_cast<int>(h * width + w);
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
      for (int64_t j = 0; j < nc; ++j) {
        out[o + j] = static_cast<scalar_t>(best[i * nc + j]);
        arg[o + j] = where[i * nc + j];
      }
    }
    return;
  }
  for (int64_t j = 0; j < nc; ++j) {
    for (int ph = 0; ph < pooled_h; ++ph) {
      scalar_t* __restrict ov = out + j * oC + ph * oH;
      int* __restrict oa = arg + j * oC + ph * oH;
      const int64_t i0 = static_cast<int64_t>(ph) * pooled_w;
      for (int pw = 0; pw < pooled_w; ++pw) ov[pw * oW] = static_cast<scalar_t>(best[(i0 + pw) * nc + j]);
      for (int pw = 0; pw < pooled_w; ++pw) oa[pw * oW] = where[(i0 + pw) * nc + j];
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

[[noreturn]] C10_NOINLINE void bad_argmax(int64_t k, int a, int64_t plane) {
  TORCH_CHECK_VALUE(false, "argmax of RoI ", k, " must be -1 or a cell index in [0, H * W = ", plane, "), got ", a);
  std::abort();  // not reached
}

// Adds the bins' gradients g[i] into the cells arg[i] (h * W + w, -1 for an empty bin) of one
// NCHW gradient plane, in the order of the bins. (Summing runs of equal cells in a register was
// slower: the branch on a new cell mispredicts.)
template <typename scalar_t, typename T>
void scatter_plane(const scalar_t* __restrict g, const int* __restrict arg, int64_t bins, int64_t plane, int64_t k,
                   T* __restrict plane_grad) {
  for (int64_t i = 0; i < bins; ++i) {
    const int a = arg[i];
    if (static_cast<uint32_t>(a) >= static_cast<uint32_t>(plane)) {
      if (a == -1) continue;  // empty bin
      bad_argmax(k, a, plane);
    }
    plane_grad[a] += static_cast<T>(g[i]);
  }
}

PoolBins bins_of(const Prepared& prep, double spatial_scale, int pooled_h, int pooled_w) {
  const at::Tensor& input = prep.maps[0];
  const double small =
      small_bin_cells(input.size(1), input.size(2) * input.size(3) * static_cast<int64_t>(input.element_size()));
  if (input.scalar_type() == at::kDouble) {
    return pool_bins<double>(prep.rois.data_ptr<double>(), prep.rois.size(0), spatial_scale, pooled_h, pooled_w,
                             input.size(2), input.size(3), small);
  }
  return pool_bins<float>(prep.rois.data_ptr<float>(), prep.rois.size(0), spatial_scale, pooled_h, pooled_w,
                          input.size(2), input.size(3), small);
}

Prepared prepare_pool(const at::Tensor& input, const at::Tensor& rois, double spatial_scale) {
  return prepare({input}, rois, at::Tensor(), [&](const Prepared& p) {
    checks::check_roi_values(p.rois, input.size(0), at::scalar_tensor(spatial_scale, at::kDouble));
  });
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cpu(const at::Tensor& input_, const at::Tensor& rois_, double spatial_scale,
                                                int64_t pooled_h_, int64_t pooled_w_) {
  checks::check_roi_pool_args(input_, rois_, spatial_scale, pooled_h_, pooled_w_);
  const Prepared prep = prepare_pool(input_, rois_, spatial_scale);
  const at::Tensor& input = prep.maps[0];
  const bool cl = prep.channels_last[0];
  const int pooled_h = static_cast<int>(pooled_h_), pooled_w = static_cast<int>(pooled_w_);
  const int64_t num_rois = prep.rois.size(0), channels = input.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  at::Tensor output =
      at::empty({num_rois, channels, pooled_h, pooled_w}, input.options().memory_format(prep.out_format));
  at::Tensor argmax = at::empty(output.sizes(), output.options().dtype(at::kInt).memory_format(prep.out_format));
  if (num_rois == 0 || channels == 0) return {output, argmax};
  const PoolBins bins = bins_of(prep, spatial_scale, pooled_h, pooled_w);
  std::vector<char> stage(input.size(0), 0);  // NCHW images with small-bin RoIs
  for (int64_t n = 0; n < input.size(0); ++n) {
    for (const int64_t k : prep.bucket[n]) stage[n] = stage[n] || (!cl && bins.small[k]);
  }
  const int64_t work = std::max<int64_t>(num_rois / input.size(0), 1) * prep.split.block[0] * pooled_h * pooled_w * 4;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* in = input.data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    int* arg = argmax.data_ptr<int>();
    const int64_t sN = input.stride(0), sC = input.stride(1), sH = input.stride(2), sW = input.stride(3);
    const int64_t oK = output.stride(0), oC = output.stride(1), oH = output.stride(2), oW = output.stride(3);
    parallel_items<PoolScratch<T>>(prep.split.items(), work, [&](int64_t item, PoolScratch<T>& s) {
      const ChannelSplit::Item it = prep.split.decode(item);
      const int64_t c0 = it.c0, nc = it.c1 - it.c0;
      const scalar_t* image = in + it.n * sN + c0 * sC;
      if (stage[it.n]) stage_channels_last<scalar_t, T>(image, sC, height * width, nc, s.staged);
      for (const int64_t k : prep.bucket[it.n]) {
        const roi::PoolRange* rows = bins.rows(k);
        const roi::PoolRange* cols = bins.cols(k);
        scalar_t* ok = out + k * oK + c0 * oC;
        int* ak = arg + k * oK + c0 * oC;
        if (cl) {
          pool_channels_last<scalar_t, scalar_t, T>(image, sH, sW, width, rows, cols, pooled_h, pooled_w, nc, ok, ak,
                                                    oC, oH, oW, s);
        } else if (bins.small[k]) {
          pool_channels_last<T, scalar_t, T>(s.staged.data(), width * nc, nc, width, rows, cols, pooled_h, pooled_w, nc,
                                             ok, ak, oC, oH, oW, s);
        } else {
          for (int64_t c = 0; c < nc; ++c) {
            pool_plane<scalar_t, T>(image + c * sC, sH, width, rows, cols, pooled_h, pooled_w, ok + c * oC, ak + c * oC,
                                    oH, oW, s);
          }
        }
      }
    });
  });
  return {output, argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad_, const at::Tensor& input_, const at::Tensor& rois_,
                                 const at::Tensor& argmax_, double spatial_scale, int64_t pooled_h, int64_t pooled_w) {
  checks::check_roi_pool_args(input_, rois_, spatial_scale, pooled_h, pooled_w);
  checks::check_grad(grad_, rois_.size(0), input_, pooled_h, pooled_w);
  checks::check_argmax(argmax_, grad_);
  const Prepared prep = prepare_pool(input_, rois_, spatial_scale);
  const bool cl = prep.channels_last[0];
  const auto format = prep.out_format;
  const int64_t channels = input_.size(1), height = input_.size(2), width = input_.size(3);
  at::Tensor grad_input = at::empty(input_.sizes(), input_.options(), format);
  if (channels == 0) return grad_input;
  const at::Tensor grad = grad_.contiguous(format);
  const at::Tensor argmax = argmax_.contiguous(format);
  const int64_t num_rois = prep.rois.size(0);
  const int64_t plane = height * width;
  const int64_t bins = pooled_h * pooled_w;
  const int64_t work = std::max<int64_t>(num_rois / input_.size(0), 1) * prep.split.block[0] * bins;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input_.scalar_type(), "roi_pool_backward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const int* arg = argmax.data_ptr<int>();
    scalar_t* gi = grad_input.data_ptr<scalar_t>();
    const int64_t gN = grad_input.stride(0), gC = grad_input.stride(1), gH = grad_input.stride(2),
                  gW = grad_input.stride(3);
    const int64_t oK = grad.stride(0);
    parallel_items<std::vector<T>>(prep.split.items(), work, [&](int64_t item, std::vector<T>& buffer) {
      const ChannelSplit::Item it = prep.split.decode(item);
      const int64_t nc = it.c1 - it.c0;
      const GradSlice<scalar_t, T> slice(gi + it.n * gN + it.c0 * gC, gC, gH, gW, nc, height, width, cl, buffer);
      // Per RoI in order, and each channel's bins in order (the reference's order of the sums);
      // the loops follow the memory order of grad and argmax.
      for (const int64_t k : prep.bucket[it.n]) {
        if (cl) {
          for (int64_t i = 0; i < bins; ++i) {
            const int64_t o = k * oK + i * channels + it.c0;
            for (int64_t j = 0; j < nc; ++j) {
              const int a = arg[o + j];
              if (static_cast<uint32_t>(a) >= static_cast<uint32_t>(plane)) {
                if (a == -1) continue;  // empty bin
                bad_argmax(k, a, plane);
              }
              slice.data[j * slice.sC + a * slice.sW] += static_cast<T>(g[o + j]);
            }
          }
        } else {
          for (int64_t j = 0; j < nc; ++j) {
            // NCHW: the cells of a plane are adjacent (slice.sW == 1).
            scatter_plane<scalar_t, T>(g + k * oK + (it.c0 + j) * bins, arg + k * oK + (it.c0 + j) * bins, bins, plane,
                                       k, slice.data + j * slice.sC);
          }
        }
      }
      slice.finish();
    });
  });
  return grad_input;
}

}  // namespace
}  // namespace cpu
}  // namespace maskrcnn

TORCH_LIBRARY_IMPL(maskrcnn, CPU, m) {
  m.impl("roi_pool", &maskrcnn::cpu::roi_pool_cpu);
  m.impl("_roi_pool_backward", &maskrcnn::cpu::roi_pool_backward_cpu);
}
