// RoI Pool (Fast R-CNN) on the CPU: torch.ops.maskrcnn.roi_pool and _roi_pool_backward.
//
// Forward items are (RoI, channel block); the argmax (h * W + w of the winning cell in its plane,
// -1 for an empty bin) is stored so that the backward is a plain scatter. Backward items are
// (image, channel block): each owns its gradient planes and visits the image's RoIs in order
// (no atomics, deterministic). channels_last inputs run the channel loop innermost.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/simd_loops.h"
#include "roi_checks.h"
#include "roi_common.h"

namespace maskrcnn {
namespace cpu {
namespace {

// The quantized bins of every RoI: rows then columns, (pooled_h + pooled_w) ranges per RoI.
template <typename T>
std::vector<roi::PoolRange> pool_ranges(const T* rois, int64_t num_rois, double scale, int pooled_h,
                                        int pooled_w, int64_t height, int64_t width) {
  std::vector<roi::PoolRange> ranges(num_rois * (pooled_h + pooled_w));
  for (int64_t k = 0; k < num_rois; ++k) {
    const T* box = rois + k * 5;
    const roi::PoolGeometry g = roi::pool_geometry<T>(box[1], box[2], box[3], box[4], static_cast<T>(scale));
    roi::PoolRange* r = ranges.data() + k * (pooled_h + pooled_w);
    for (int b = 0; b < pooled_h; ++b) r[b] = roi::pool_bin_range<T>(g.start_h, g.roi_h, b, pooled_h, height);
    for (int b = 0; b < pooled_w; ++b) r[pooled_h + b] = roi::pool_bin_range<T>(g.start_w, g.roi_w, b, pooled_w, width);
  }
  return ranges;
}

template <typename T>
struct PoolScratch {
  std::vector<T> best;
  std::vector<int> where;
};

// One RoI on one NCHW plane. Max over a rectangle is separable: for each row bin, first the
// maxima of every column over the bin's rows (a contiguous, vectorizable loop over the RoI's
// columns), then the maximum of each column bin over those. Ties go to the first cell in
// row-major order: the smallest row, then the smallest column.
template <typename scalar_t, typename T>
void pool_plane(const scalar_t* plane, int64_t sH, int64_t width, const roi::PoolRange* rows,
                const roi::PoolRange* cols, int pooled_h, int pooled_w, scalar_t* out, int* arg,
                int64_t oH, int64_t oW, PoolScratch<T>& s) {
  // Column span of the non-empty column bins (bins are ordered along the axis).
  int64_t x0 = width, x1 = 0;
  for (int pw = 0; pw < pooled_w; ++pw) {
    if (cols[pw].end > cols[pw].begin) {
      x0 = std::min(x0, cols[pw].begin);
      x1 = std::max(x1, cols[pw].end);
    }
  }
  s.best.resize(width);
  s.where.resize(width);
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
          keep_first_max_f32(reinterpret_cast<const float*>(row) + x0, reinterpret_cast<float*>(cm) + x0,
                             ch + x0, x1 - x0, hi);
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

// One RoI on channels [c0, c1) of a channels_last image: the innermost loop runs over the
// contiguous channels (vectorizes); the running maxima live in a float/double scratch.
template <typename scalar_t, typename T>
void pool_block_channels_last(const scalar_t* image, int64_t sH, int64_t sW, int64_t width,
                              const roi::PoolRange* rows, const roi::PoolRange* cols, int pooled_h,
                              int pooled_w, int64_t c0, int64_t c1, scalar_t* out, int* arg,
                              int64_t oH, int64_t oW, PoolScratch<T>& s) {
  const int64_t nc = c1 - c0;
  s.best.resize(nc);
  s.where.resize(nc);
  T* best = s.best.data();
  int* where = s.where.data();
  for (int ph = 0; ph < pooled_h; ++ph) {
    const roi::PoolRange r = rows[ph];
    for (int pw = 0; pw < pooled_w; ++pw) {
      const roi::PoolRange q = cols[pw];
      scalar_t* ov = out + ph * oH + pw * oW + c0;  // channels contiguous
      int* oa = arg + ph * oH + pw * oW + c0;
      if (r.end <= r.begin || q.end <= q.begin) {
        for (int64_t j = 0; j < nc; ++j) {
          ov[j] = static_cast<scalar_t>(0);
          oa[j] = -1;
        }
        continue;
      }
      const scalar_t* first = image + r.begin * sH + q.begin * sW + c0;
      const int first_index = static_cast<int>(r.begin * width + q.begin);
      for (int64_t j = 0; j < nc; ++j) {
        best[j] = static_cast<T>(first[j]);
        where[j] = first_index;
      }
      for (int64_t h = r.begin; h < r.end; ++h) {
        for (int64_t w = (h == r.begin ? q.begin + 1 : q.begin); w < q.end; ++w) {
          const scalar_t* p = image + h * sH + w * sW + c0;
          const int index = static_cast<int>(h * width + w);
          for (int64_t j = 0; j < nc; ++j) keep_first_max(static_cast<T>(p[j]), best[j], where[j], index);
        }
      }
      for (int64_t j = 0; j < nc; ++j) {
        ov[j] = static_cast<scalar_t>(best[j]);
        oa[j] = where[j];
      }
    }
  }
}

struct PoolPrepared {
  at::Tensor input;  // NCHW- or channels_last-contiguous
  bool channels_last;
  at::Tensor rois;   // (K, 5) accumulation dtype
  std::vector<std::vector<int64_t>> bucket;
  ChannelSplit split;
};

PoolPrepared prepare(const at::Tensor& input, const at::Tensor& rois, double spatial_scale) {
  PoolPrepared out;
  out.channels_last = checks::is_channels_last(input);
  out.input = input.contiguous(checks::memory_format_of(input));
  const auto acc = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  out.rois = rois.to(acc).contiguous();
  checks::check_roi_values(out.rois, input.size(0), at::scalar_tensor(spatial_scale, at::kDouble));
  const at::Tensor image = out.rois.select(1, 0).to(at::kLong).contiguous();
  out.bucket = bucket_rois(image.data_ptr<int64_t>(), nullptr, rois.size(0), input.size(0), 1);
  out.split = split_channels(input.size(0), input.size(1),
                             {input.size(2) * input.size(3) * static_cast<int64_t>(input.element_size())},
                             {out.channels_last});
  return out;
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cpu(const at::Tensor& input_, const at::Tensor& rois_,
                                                double spatial_scale, int64_t pooled_h_,
                                                int64_t pooled_w_) {
  checks::check_roi_pool_args(input_, rois_, spatial_scale, pooled_h_, pooled_w_);
  const PoolPrepared prep = prepare(input_, rois_, spatial_scale);
  const at::Tensor& input = prep.input;
  const bool cl = prep.channels_last;
  const int pooled_h = static_cast<int>(pooled_h_), pooled_w = static_cast<int>(pooled_w_);
  const int64_t num_rois = prep.rois.size(0), channels = input.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  const auto format = checks::memory_format_of(input_);
  at::Tensor output = at::empty({num_rois, channels, pooled_h, pooled_w}, input.options().memory_format(format));
  at::Tensor argmax = at::empty(output.sizes(), output.options().dtype(at::kInt).memory_format(format));
  if (num_rois == 0 || channels == 0) return {output, argmax};
  const int64_t work = std::max<int64_t>(num_rois / input.size(0), 1) * prep.split.block[0] * pooled_h * pooled_w * 4;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const std::vector<roi::PoolRange> ranges =
        pool_ranges<T>(prep.rois.data_ptr<T>(), num_rois, spatial_scale, pooled_h, pooled_w, height, width);
    const scalar_t* in = input.data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    int* arg = argmax.data_ptr<int>();
    const int64_t sN = input.stride(0), sC = input.stride(1), sH = input.stride(2), sW = input.stride(3);
    const int64_t oK = output.stride(0), oC = output.stride(1), oH = output.stride(2), oW = output.stride(3);
    parallel_items<PoolScratch<T>>(prep.split.items(), work, [&](int64_t item, PoolScratch<T>& s) {
      const ChannelSplit::Item it = prep.split.decode(item);
      const int64_t c0 = it.c0, c1 = it.c1;
      const scalar_t* image = in + it.n * sN;
      for (const int64_t k : prep.bucket[it.n]) {
        const roi::PoolRange* rows = ranges.data() + k * (pooled_h + pooled_w);
        const roi::PoolRange* cols = rows + pooled_h;
        if (cl) {
          pool_block_channels_last<scalar_t, T>(image, sH, sW, width, rows, cols, pooled_h, pooled_w, c0, c1,
                                                out + k * oK, arg + k * oK, oH, oW, s);
        } else {
          for (int64_t c = c0; c < c1; ++c) {
            pool_plane<scalar_t, T>(image + c * sC, sH, width, rows, cols, pooled_h, pooled_w,
                                    out + k * oK + c * oC, arg + k * oK + c * oC, oH, oW, s);
          }
        }
      }
    });
  });
  return {output, argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad_, const at::Tensor& input_,
                                 const at::Tensor& rois_, const at::Tensor& argmax_,
                                 double spatial_scale, int64_t pooled_h, int64_t pooled_w) {
  checks::check_roi_pool_args(input_, rois_, spatial_scale, pooled_h, pooled_w);
  checks::check_grad(grad_, rois_.size(0), input_, pooled_h, pooled_w);
  checks::check_argmax(argmax_, grad_);
  const PoolPrepared prep = prepare(input_, rois_, spatial_scale);
  const bool cl = prep.channels_last;
  const auto format = checks::memory_format_of(input_);
  const int64_t channels = input_.size(1), height = input_.size(2), width = input_.size(3);
  at::Tensor grad_input = at::empty(input_.sizes(), input_.options(), format);
  if (channels == 0) return grad_input;
  const at::Tensor grad = grad_.contiguous(format);
  const at::Tensor argmax = argmax_.contiguous(format);
  const int64_t num_rois = prep.rois.size(0);
  const int64_t plane = height * width;
  const int64_t work = std::max<int64_t>(num_rois / input_.size(0), 1) * prep.split.block[0] * pooled_h * pooled_w;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input_.scalar_type(), "roi_pool_backward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    constexpr bool direct = std::is_same<T, scalar_t>::value;
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const int* arg = argmax.data_ptr<int>();
    scalar_t* gi = grad_input.data_ptr<scalar_t>();
    const int64_t gN = grad_input.stride(0), gC = grad_input.stride(1), gW = grad_input.stride(3);
    const int64_t oK = grad.stride(0), oC = grad.stride(1), oH = grad.stride(2), oW = grad.stride(3);
    parallel_items<std::vector<T>>(prep.split.items(), work, [&](int64_t item, std::vector<T>& scratch) {
      const ChannelSplit::Item it = prep.split.decode(item);
      const int64_t nc = it.c1 - it.c0;
      scalar_t* out_slice = gi + it.n * gN + it.c0 * gC;
      // The item's gradient slice: the output itself, or a compact float buffer for half types.
      T* slice;
      int64_t sC, sW;
      if constexpr (direct) {
        slice = reinterpret_cast<T*>(out_slice);
        sC = gC;
        sW = gW;
      } else {
        scratch.resize(nc * plane);
        slice = scratch.data();
        sC = cl ? 1 : plane;
        sW = cl ? nc : 1;
      }
      if (!cl || sW == nc) {
        std::fill(slice, slice + nc * plane, T(0));
      } else {
        for (int64_t i = 0; i < plane; ++i) std::fill(slice + i * sW, slice + i * sW + nc, T(0));
      }
      auto scatter = [&](int64_t k, int64_t c, int64_t ph, int64_t pw) {
        const int64_t o = k * oK + c * oC + ph * oH + pw * oW;
        const int a = arg[o];
        if (a == -1) return;  // empty bin
        TORCH_CHECK_VALUE(a >= 0 && a < plane, "argmax[", k, ", ", c, ", ", ph, ", ", pw,
                          "] must be -1 or a cell index in [0, H * W = ", plane, "), got ", a);
        // a = h * W + w: cells are sW apart in both layouts (1 in NCHW, C in channels_last).
        slice[(c - it.c0) * sC + a * sW] += static_cast<T>(g[o]);
      };
      // Per RoI in order; the loops follow the memory order of grad and argmax.
      for (const int64_t k : prep.bucket[it.n]) {
        if (cl) {
          for (int64_t ph = 0; ph < pooled_h; ++ph)
            for (int64_t pw = 0; pw < pooled_w; ++pw)
              for (int64_t c = it.c0; c < it.c1; ++c) scatter(k, c, ph, pw);
        } else {
          for (int64_t c = it.c0; c < it.c1; ++c)
            for (int64_t ph = 0; ph < pooled_h; ++ph)
              for (int64_t pw = 0; pw < pooled_w; ++pw) scatter(k, c, ph, pw);
        }
      }
      if constexpr (!direct) {
        for (int64_t c = 0; c < nc; ++c) {
          for (int64_t i = 0; i < plane; ++i) out_slice[c * gC + i * gW] = static_cast<scalar_t>(slice[c * sC + i * sW]);
        }
      }
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
