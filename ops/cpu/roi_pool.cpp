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

#include <vector>

#include "cpu/parallel.h"
#include "roi_checks.h"
#include "roi_common.h"

namespace maskrcnn {
namespace cpu {
namespace {

struct PoolScratch {
  std::vector<roi::PoolRange> rows, cols;
};

template <typename T>
void plan_pool(const T* box, double scale, int pooled_h, int pooled_w, int64_t height,
               int64_t width, PoolScratch& s) {
  const roi::PoolGeometry g = roi::pool_geometry<T>(box[1], box[2], box[3], box[4], static_cast<T>(scale));
  s.rows.resize(pooled_h);
  s.cols.resize(pooled_w);
  for (int b = 0; b < pooled_h; ++b) s.rows[b] = roi::pool_bin_range<T>(g.start_h, g.roi_h, b, pooled_h, height);
  for (int b = 0; b < pooled_w; ++b) s.cols[b] = roi::pool_bin_range<T>(g.start_w, g.roi_w, b, pooled_w, width);
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cpu(const at::Tensor& input_, const at::Tensor& rois_,
                                                double spatial_scale, int64_t pooled_h_,
                                                int64_t pooled_w_) {
  checks::check_roi_pool_args(input_, rois_, spatial_scale, pooled_h_, pooled_w_);
  const at::MemoryFormat format = checks::memory_format_of(input_);
  const bool cl = format == at::MemoryFormat::ChannelsLast;
  const at::Tensor input = input_.contiguous(format);
  const auto acc = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor rois = rois_.to(acc).contiguous();
  checks::check_roi_values(rois, input.size(0), at::scalar_tensor(spatial_scale, at::kDouble));

  const int pooled_h = static_cast<int>(pooled_h_), pooled_w = static_cast<int>(pooled_w_);
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  at::Tensor output = at::empty({num_rois, channels, pooled_h, pooled_w}, input.options().memory_format(format));
  at::Tensor argmax = at::empty(output.sizes(), output.options().dtype(at::kInt).memory_format(format));
  if (num_rois == 0 || channels == 0) return {output, argmax};
  const int64_t nb = channel_blocks(channels, num_rois, 16);
  const int64_t block = (channels + nb - 1) / nb;
  const int64_t work = block * pooled_h * pooled_w * 4;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* in = input.data_ptr<scalar_t>();
    const T* roi_data = rois.data_ptr<T>();
    scalar_t* out = output.data_ptr<scalar_t>();
    int* arg = argmax.data_ptr<int>();
    const int64_t sN = input.stride(0), sC = input.stride(1), sH = input.stride(2), sW = input.stride(3);
    const int64_t oK = output.stride(0), oC = output.stride(1), oH = output.stride(2), oW = output.stride(3);
    parallel_items<PoolScratch>(num_rois * nb, work, [&](int64_t item, PoolScratch& s) {
      const int64_t k = item / nb;
      const int64_t c0 = (item % nb) * block;
      const int64_t c1 = std::min(c0 + block, channels);
      if (c0 >= c1) return;
      const T* box = roi_data + k * 5;
      plan_pool<T>(box, spatial_scale, pooled_h, pooled_w, height, width, s);
      const scalar_t* image = in + static_cast<int64_t>(box[0]) * sN;
      for (int ph = 0; ph < pooled_h; ++ph) {
        const roi::PoolRange r = s.rows[ph];
        for (int pw = 0; pw < pooled_w; ++pw) {
          const roi::PoolRange q = s.cols[pw];
          const int64_t o = k * oK + ph * oH + pw * oW;
          const bool empty = r.end <= r.begin || q.end <= q.begin;
          if (cl) {
            scalar_t* ov = out + o;  // channels contiguous (oC == 1)
            int* oa = arg + o;
            if (empty) {
              for (int64_t c = c0; c < c1; ++c) { ov[c] = scalar_t(0); oa[c] = -1; }
              continue;
            }
            const scalar_t* first = image + r.begin * sH + q.begin * sW;
            const int first_index = static_cast<int>(r.begin * width + q.begin);
            for (int64_t c = c0; c < c1; ++c) { ov[c] = first[c]; oa[c] = first_index; }
            for (int64_t h = r.begin; h < r.end; ++h) {
              for (int64_t w = q.begin; w < q.end; ++w) {
                const scalar_t* p = image + h * sH + w * sW;
                const int index = static_cast<int>(h * width + w);
                for (int64_t c = c0; c < c1; ++c) {
                  const bool take = static_cast<T>(p[c]) > static_cast<T>(ov[c]);
                  ov[c] = take ? p[c] : ov[c];
                  oa[c] = take ? index : oa[c];
                }
              }
            }
            continue;
          }
          for (int64_t c = c0; c < c1; ++c) {
            if (empty) {
              out[o + c * oC] = scalar_t(0);
              arg[o + c * oC] = -1;
              continue;
            }
            const scalar_t* plane = image + c * sC;
            T best = static_cast<T>(plane[r.begin * sH + q.begin]);
            int64_t best_index = r.begin * width + q.begin;
            for (int64_t h = r.begin; h < r.end; ++h) {
              for (int64_t w = q.begin; w < q.end; ++w) {
                const T v = static_cast<T>(plane[h * sH + w]);
                if (v > best) {
                  best = v;
                  best_index = h * width + w;
                }
              }
            }
            out[o + c * oC] = static_cast<scalar_t>(best);
            arg[o + c * oC] = static_cast<int>(best_index);
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
  const at::MemoryFormat format = checks::memory_format_of(input_);
  const auto acc = input_.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor rois = rois_.to(acc).contiguous();
  const int64_t batch = input_.size(0), channels = input_.size(1);
  const int64_t height = input_.size(2), width = input_.size(3);
  checks::check_roi_values(rois, batch, at::scalar_tensor(spatial_scale, at::kDouble));
  at::Tensor grad_input = at::empty(input_.sizes(), input_.options().dtype(acc), format).zero_();
  const int64_t num_rois = rois.size(0);
  if (num_rois > 0 && channels > 0) {
    const at::Tensor grad = grad_.contiguous(format);
    const at::Tensor argmax = argmax_.contiguous(format);
    std::vector<std::vector<int64_t>> bucket(batch);
    {
      const at::Tensor index = rois.select(1, 0).to(at::kLong).contiguous();
      const int64_t* idx = index.data_ptr<int64_t>();
      for (int64_t k = 0; k < num_rois; ++k) bucket[idx[k]].push_back(k);
    }
    const int64_t nb = channel_blocks(channels, batch, 8);
    const int64_t block = (channels + nb - 1) / nb;
    const int64_t plane = height * width;
    const int64_t work = block * pooled_h * pooled_w * std::max<int64_t>(num_rois / batch, 1);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input_.scalar_type(), "roi_pool_backward_cpu", [&] {
      using T = at::opmath_type<scalar_t>;
      const scalar_t* g = grad.data_ptr<scalar_t>();
      const int* arg = argmax.data_ptr<int>();
      T* gi = grad_input.data_ptr<T>();
      const int64_t gN = grad_input.stride(0), gC = grad_input.stride(1), gW = grad_input.stride(3);
      const int64_t oK = grad.stride(0), oC = grad.stride(1), oH = grad.stride(2), oW = grad.stride(3);
      parallel_items<int>(batch * nb, work, [&](int64_t item, int&) {
        const int64_t n = item / nb;
        const int64_t c0 = (item % nb) * block;
        const int64_t c1 = std::min(c0 + block, channels);
        if (c0 >= c1) return;
        T* image = gi + n * gN;
        for (const int64_t k : bucket[n]) {
          for (int64_t c = c0; c < c1; ++c) {
            for (int64_t ph = 0; ph < pooled_h; ++ph) {
              for (int64_t pw = 0; pw < pooled_w; ++pw) {
                const int64_t o = k * oK + c * oC + ph * oH + pw * oW;
                const int a = arg[o];
                if (a == -1) continue;  // empty bin
                TORCH_CHECK_VALUE(a >= 0 && a < plane, "argmax[", k, ", ", c, ", ", ph, ", ", pw,
                                  "] must be -1 or a cell index in [0, H * W = ", plane, "), got ", a);
                // a = h * W + w: cells are gW apart in both layouts (1 in NCHW, C in channels_last).
                image[c * gC + a * gW] += static_cast<T>(g[o]);
              }
            }
          }
        }
      });
    });
  }
  return grad_input.scalar_type() == input_.scalar_type() ? grad_input : grad_input.to(input_.scalar_type());
}

}  // namespace
}  // namespace cpu
}  // namespace maskrcnn

TORCH_LIBRARY_IMPL(maskrcnn, CPU, m) {
  m.impl("roi_pool", &maskrcnn::cpu::roi_pool_cpu);
  m.impl("_roi_pool_backward", &maskrcnn::cpu::roi_pool_backward_cpu);
}
