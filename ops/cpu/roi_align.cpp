// RoI Align and multi-level RoI Align on the CPU: torch.ops.maskrcnn.roi_align,
// _roi_align_backward, multilevel_roi_align and _multilevel_roi_align_backward.
//
// roi_align is multi-level RoI Align with one level, so both share one driver. Parallelism:
//   forward:  items are (RoI, channel block); each writes its own output block.
//   backward: items are (level, image, channel block); each owns the gradient planes of its
//             image and channels and visits that image's RoIs in their order, so there are no
//             atomics and the result is deterministic (it does not depend on the thread count).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "backend.h"
#include "cpu/parallel.h"
#include "cpu/prepare.h"
#include "cpu/roi_align_kernel.h"
#include "cpu/roi_align_separable.h"
#include "roi_checks.h"

namespace maskrcnn {
namespace cpu {
namespace {

struct AlignParams {
  int pooled_h, pooled_w, sampling_ratio;
  bool aligned, max_mode;
};

template <typename scalar_t, typename Map>
FeatureMap<Map> feature_map(const at::Tensor& t) {
  return {static_cast<Map*>(t.data_ptr<scalar_t>()),
          t.size(2),
          t.size(3),
          t.stride(0),
          t.stride(1),
          t.stride(2),
          t.stride(3)};
}

Prepared prepare_align(at::TensorList features, const at::Tensor& rois, const at::Tensor& levels,
                       at::ArrayRef<double> scales, const AlignParams& p) {
  return prepare(features, rois, levels, [&](const Prepared& prep) {
    checks::check_level_values(prep.levels, static_cast<int64_t>(features.size()));
    const at::Tensor scale_per_roi =
        at::tensor(std::vector<double>(scales.begin(), scales.end()), at::kDouble).index_select(0, prep.levels);
    checks::check_roi_values(prep.rois, features[0].size(0), scale_per_roi, p.sampling_ratio <= 0, p.pooled_h,
                             p.pooled_w, p.aligned);
  });
}

// The axis plans of every RoI, built once (in parallel) and shared read-only by all items.
template <typename T>
std::vector<RoiPlan<T>> build_plans(const Prepared& prep, at::ArrayRef<double> scales, const AlignParams& p) {
  const int64_t num_rois = prep.rois.size(0);
  std::vector<RoiPlan<T>> plans(num_rois);
  const T* roi_data = prep.rois.data_ptr<T>();
  const int64_t* level_data = prep.levels.data_ptr<int64_t>();
  parallel_items<int>(num_rois, 4 * (p.pooled_h + p.pooled_w), [&](int64_t k, int&) {
    const T* box = roi_data + k * 5;
    const int64_t level = level_data[k];
    const at::Tensor& map = prep.maps[level];
    const auto g = roi::align_geometry<T>(box[1], box[2], box[3], box[4], static_cast<T>(scales[level]), p.pooled_h,
                                          p.pooled_w, p.sampling_ratio, p.aligned);
    RoiPlan<T>& plan = plans[k];
    build_axis_plan<T>(g.start_h, g.bin_h, p.pooled_h, g.grid_h, map.size(2), !p.max_mode, plan.y);
    build_axis_plan<T>(g.start_w, g.bin_w, p.pooled_w, g.grid_w, map.size(3), !p.max_mode, plan.x);
    plan.count = g.count;
    plan.separable = !p.max_mode && use_separable(plan.x);
  });
  return plans;
}

// Estimated inner-loop operations of one item (decides whether threads are worth waking).
int64_t item_work(const Prepared& prep, const AlignParams& p) {
  const int64_t units = std::max<int64_t>(static_cast<int64_t>(prep.bucket.size()), 1);
  return std::max<int64_t>(prep.rois.size(0) / units, 1) * prep.split.block[0] * p.pooled_h * p.pooled_w * 8;
}

at::Tensor forward(at::TensorList features, const at::Tensor& rois, const at::Tensor& levels,
                   at::ArrayRef<double> scales, const AlignParams& p) {
  const Prepared prep = prepare_align(features, rois, levels, scales, p);
  const int64_t num_rois = rois.size(0);
  const int64_t channels = features[0].size(1);
  at::Tensor output =
      at::empty({num_rois, channels, p.pooled_h, p.pooled_w}, features[0].options().memory_format(prep.out_format));
  if (num_rois == 0 || channels == 0) return output;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features[0].scalar_type(), "roi_align_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const std::vector<RoiPlan<T>> plans = build_plans<T>(prep, scales, p);
    scalar_t* out_data = output.data_ptr<scalar_t>();
    const int64_t sK = output.stride(0), sC = output.stride(1), sH = output.stride(2), sW = output.stride(3);
    parallel_items<AlignScratch<T>>(prep.split.items(), item_work(prep, p), [&](int64_t item, AlignScratch<T>& s) {
      const ChannelSplit::Item it = prep.split.decode(item);
      const auto f = feature_map<scalar_t, const scalar_t>(prep.maps[it.level]);
      for (const int64_t k : prep.bucket[it.level * prep.split.batch + it.n]) {
        const RoiBlock<scalar_t> out{out_data + k * sK, sC, sH, sW};
        if (plans[k].separable) {
          if (prep.channels_last[it.level]) {
            align_forward_separable<scalar_t, T, true>(f, it.n, plans[k], p.pooled_h, p.pooled_w, it.c0, it.c1, out, s);
          } else {
            align_forward_separable<scalar_t, T, false>(f, it.n, plans[k], p.pooled_h, p.pooled_w, it.c0, it.c1, out,
                                                        s);
          }
        } else if (prep.channels_last[it.level]) {
          align_forward_block<scalar_t, T, true>(f, it.n, plans[k], p.pooled_h, p.pooled_w, p.max_mode, it.c0, it.c1,
                                                 out, s);
        } else {
          align_forward_block<scalar_t, T, false>(f, it.n, plans[k], p.pooled_h, p.pooled_w, p.max_mode, it.c0, it.c1,
                                                  out, s);
        }
      }
    });
  });
  return output;
}

std::vector<at::Tensor> backward(const at::Tensor& grad, at::TensorList features, const at::Tensor& rois,
                                 const at::Tensor& levels, at::ArrayRef<double> scales, const AlignParams& p) {
  const Prepared prep = prepare_align(features, rois, levels, scales, p);
  checks::check_grad(grad, rois.size(0), features[0], p.pooled_h, p.pooled_w);
  std::vector<at::Tensor> grads;
  for (size_t l = 0; l < prep.maps.size(); ++l) {
    const auto format = prep.channels_last[l] ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    grads.push_back(at::empty(prep.maps[l].sizes(), prep.maps[l].options(), format));
  }
  if (features[0].size(1) == 0) return grads;  // nothing to fill
  const at::Tensor go = grad.contiguous(prep.out_format);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features[0].scalar_type(), "roi_align_backward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const std::vector<RoiPlan<T>> plans = build_plans<T>(prep, scales, p);
    const scalar_t* go_data = go.data_ptr<scalar_t>();
    parallel_items<AlignScratch<T>>(prep.split.items(), item_work(prep, p), [&](int64_t item, AlignScratch<T>& s) {
      const ChannelSplit::Item it = prep.split.decode(item);
      const bool cl = prep.channels_last[it.level];
      const auto f = feature_map<scalar_t, const scalar_t>(prep.maps[it.level]);
      const auto out = feature_map<scalar_t, scalar_t>(grads[it.level]);
      const GradSlice<scalar_t, T> slice(out.data + it.n * out.sN + it.c0 * out.sC, out.sC, out.sH, out.sW,
                                         it.c1 - it.c0, out.height, out.width, cl, s.slice);
      const FeatureMap<T> g{slice.data, out.height, out.width, 0, slice.sC, slice.sH, slice.sW};
      for (const int64_t k : prep.bucket[it.level * prep.split.batch + it.n]) {
        const RoiBlock<const scalar_t> gk{go_data + k * go.stride(0), go.stride(1), go.stride(2), go.stride(3)};
        if (plans[k].separable) {
          if (cl) {
            align_backward_separable<scalar_t, T, true>(g, plans[k], p.pooled_h, p.pooled_w, it.c0, it.c1, gk, s);
          } else {
            align_backward_separable<scalar_t, T, false>(g, plans[k], p.pooled_h, p.pooled_w, it.c0, it.c1, gk, s);
          }
        } else if (cl) {
          align_backward_block<scalar_t, T, true>(f, g, it.n, plans[k], p.pooled_h, p.pooled_w, p.max_mode, it.c0,
                                                  it.c1, gk, s);
        } else {
          align_backward_block<scalar_t, T, false>(f, g, it.n, plans[k], p.pooled_h, p.pooled_w, p.max_mode, it.c0,
                                                   it.c1, gk, s);
        }
      }
      slice.finish();
    });
  });
  return grads;
}

AlignParams align_params(int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio, bool aligned,
                         c10::string_view mode) {
  return {static_cast<int>(pooled_h), static_cast<int>(pooled_w), static_cast<int>(sampling_ratio), aligned,
          checks::parse_mode(mode)};
}

at::Tensor single_level(const at::Tensor& rois) { return at::zeros({rois.size(0)}, rois.options().dtype(at::kLong)); }

at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_h,
                         int64_t pooled_w, int64_t sampling_ratio, bool aligned, c10::string_view mode) {
  checks::check_roi_align_args(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio);
  const AlignParams p = align_params(pooled_h, pooled_w, sampling_ratio, aligned, mode);
  const double scales[] = {spatial_scale};
  return forward({input}, rois, single_level(rois), scales, p);
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                                  bool aligned, c10::string_view mode) {
  checks::check_roi_align_args(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio);
  const AlignParams p = align_params(pooled_h, pooled_w, sampling_ratio, aligned, mode);
  const double scales[] = {spatial_scale};
  return backward(grad, {input}, rois, single_level(rois), scales, p)[0];
}

at::Tensor multilevel_roi_align_cpu(at::TensorList features, const at::Tensor& rois, const at::Tensor& levels,
                                    at::ArrayRef<double> spatial_scales, int64_t pooled_h, int64_t pooled_w,
                                    int64_t sampling_ratio, bool aligned, c10::string_view mode) {
  checks::check_multilevel_args(features, rois, levels, spatial_scales, pooled_h, pooled_w, sampling_ratio);
  const AlignParams p = align_params(pooled_h, pooled_w, sampling_ratio, aligned, mode);
  return forward(features, rois, levels, spatial_scales, p);
}

std::vector<at::Tensor> multilevel_roi_align_backward_cpu(const at::Tensor& grad, at::TensorList features,
                                                          const at::Tensor& rois, const at::Tensor& levels,
                                                          at::ArrayRef<double> spatial_scales, int64_t pooled_h,
                                                          int64_t pooled_w, int64_t sampling_ratio, bool aligned,
                                                          c10::string_view mode) {
  checks::check_multilevel_args(features, rois, levels, spatial_scales, pooled_h, pooled_w, sampling_ratio);
  const AlignParams p = align_params(pooled_h, pooled_w, sampling_ratio, aligned, mode);
  return backward(grad, features, rois, levels, spatial_scales, p);
}

}  // namespace
}  // namespace cpu
}  // namespace maskrcnn

TORCH_LIBRARY_IMPL(maskrcnn, CPU, m) {
  // With MASKRCNN_CUDA_EMULATION=1 the emulated CUDA kernels serve these ops (ops/backend.h).
  if (maskrcnn::cuda_emulation_requested()) return;
  m.impl("roi_align", &maskrcnn::cpu::roi_align_cpu);
  m.impl("_roi_align_backward", &maskrcnn::cpu::roi_align_backward_cpu);
  m.impl("multilevel_roi_align", &maskrcnn::cpu::multilevel_roi_align_cpu);
  m.impl("_multilevel_roi_align_backward", &maskrcnn::cpu::multilevel_roi_align_backward_cpu);
}
