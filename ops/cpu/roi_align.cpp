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

#include <vector>

#include "cpu/parallel.h"
#include "cpu/roi_align_kernel.h"
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
  return {static_cast<Map*>(t.data_ptr<scalar_t>()) , t.size(2), t.size(3),
          t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// Builds the two axis plans of RoI `k` (box in accumulation type T) and returns the divisor.
template <typename T>
int plan_roi(const T* box, double scale, int64_t height, int64_t width, const AlignParams& p,
             AlignScratch<T>& s) {
  const auto g = roi::align_geometry<T>(box[1], box[2], box[3], box[4], static_cast<T>(scale),
                                        p.pooled_h, p.pooled_w, p.sampling_ratio, p.aligned);
  build_axis_plan<T>(g.start_h, g.bin_h, p.pooled_h, g.grid_h, height, !p.max_mode, s.y);
  build_axis_plan<T>(g.start_w, g.bin_w, p.pooled_w, g.grid_w, width, !p.max_mode, s.x);
  return g.count;
}

// Everything both directions need: maps in a supported layout, rois in the accumulation type,
// the level of every RoI, validated values.
struct Prepared {
  std::vector<at::Tensor> maps;  // each NCHW-contiguous or channels_last-contiguous
  std::vector<bool> channels_last;
  at::Tensor rois;    // (K, 5) contiguous, accumulation dtype
  at::Tensor levels;  // (K,) int64 contiguous
  at::MemoryFormat out_format;
};

Prepared prepare(at::TensorList features, const at::Tensor& rois, const at::Tensor& levels,
                 at::ArrayRef<double> scales, const AlignParams& p) {
  Prepared out;
  for (const at::Tensor& f : features) {
    const bool cl = checks::is_channels_last(f);
    out.channels_last.push_back(cl);
    out.maps.push_back(f.contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  }
  out.out_format = checks::memory_format_of(features[0]);
  const auto acc = features[0].scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  out.rois = rois.to(acc).contiguous();
  out.levels = levels.contiguous();
  checks::check_level_values(out.levels, static_cast<int64_t>(features.size()));
  const at::Tensor scale_per_roi =
      at::tensor(std::vector<double>(scales.begin(), scales.end()), at::kDouble).index_select(0, out.levels);
  checks::check_roi_values(out.rois, features[0].size(0), scale_per_roi, p.sampling_ratio <= 0,
                           p.pooled_h, p.pooled_w, p.aligned);
  return out;
}

at::Tensor forward(at::TensorList features, const at::Tensor& rois, const at::Tensor& levels,
                   at::ArrayRef<double> scales, const AlignParams& p) {
  const Prepared prep = prepare(features, rois, levels, scales, p);
  const int64_t num_rois = rois.size(0);
  const int64_t channels = features[0].size(1);
  at::Tensor output = at::empty({num_rois, channels, p.pooled_h, p.pooled_w},
                                features[0].options().memory_format(prep.out_format));
  if (num_rois == 0 || channels == 0) return output;
  const bool cl_out = prep.out_format == at::MemoryFormat::ChannelsLast;
  const int64_t nb = channel_blocks(channels, num_rois, 16);
  const int64_t block = (channels + nb - 1) / nb;
  const int64_t work = block * p.pooled_h * p.pooled_w * 8;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features[0].scalar_type(),
                                  "roi_align_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    std::vector<FeatureMap<const scalar_t>> maps;
    for (const at::Tensor& m : prep.maps) maps.push_back(feature_map<scalar_t, const scalar_t>(m));
    const T* roi_data = prep.rois.data_ptr<T>();
    const int64_t* level_data = prep.levels.data_ptr<int64_t>();
    scalar_t* out_data = output.data_ptr<scalar_t>();
    const int64_t sK = output.stride(0);
    const RoiBlock<scalar_t> layout{nullptr, output.stride(1), output.stride(2), output.stride(3)};
    (void)cl_out;
    parallel_items<AlignScratch<T>>(num_rois * nb, work, [&](int64_t item, AlignScratch<T>& s) {
      const int64_t k = item / nb;
      const int64_t c0 = (item % nb) * block;
      const int64_t c1 = std::min(c0 + block, channels);
      if (c0 >= c1) return;
      const T* box = roi_data + k * 5;
      const int64_t level = level_data[k];
      const FeatureMap<const scalar_t>& f = maps[level];
      const int count = plan_roi<T>(box, scales[level], f.height, f.width, p, s);
      const int64_t n = static_cast<int64_t>(box[0]);
      RoiBlock<scalar_t> out{out_data + k * sK, layout.sC, layout.sH, layout.sW};
      if (prep.channels_last[level]) {
        align_forward_block<scalar_t, T, true>(f, n, p.pooled_h, p.pooled_w, count, p.max_mode, c0, c1, out, s);
      } else {
        align_forward_block<scalar_t, T, false>(f, n, p.pooled_h, p.pooled_w, count, p.max_mode, c0, c1, out, s);
      }
    });
  });
  return output;
}

std::vector<at::Tensor> backward(const at::Tensor& grad, at::TensorList features,
                                 const at::Tensor& rois, const at::Tensor& levels,
                                 at::ArrayRef<double> scales, const AlignParams& p) {
  const Prepared prep = prepare(features, rois, levels, scales, p);
  checks::check_grad(grad, rois.size(0), features[0], p.pooled_h, p.pooled_w);
  const int64_t num_levels = static_cast<int64_t>(features.size());
  const int64_t num_rois = rois.size(0);
  const int64_t batch = features[0].size(0);
  const int64_t channels = features[0].size(1);
  const auto acc_type = features[0].scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  // Gradients accumulate in the accumulation type (float for half inputs), laid out like the maps.
  std::vector<at::Tensor> grads;
  for (size_t l = 0; l < prep.maps.size(); ++l) {
    const auto format = prep.channels_last[l] ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    grads.push_back(at::empty(prep.maps[l].sizes(), prep.maps[l].options().dtype(acc_type), format).zero_());
  }
  if (num_rois > 0 && channels > 0) {
    const at::Tensor go = grad.contiguous(prep.out_format);
    // The RoIs of each (level, image), in their original order.
    std::vector<std::vector<int64_t>> bucket(num_levels * batch);
    {
      const at::Tensor index = prep.rois.select(1, 0).to(at::kLong).contiguous();
      const int64_t* idx = index.data_ptr<int64_t>();
      const int64_t* lv = prep.levels.data_ptr<int64_t>();
      for (int64_t k = 0; k < num_rois; ++k) bucket[lv[k] * batch + idx[k]].push_back(k);
    }
    const int64_t units = num_levels * batch;
    const int64_t nb = channel_blocks(channels, units, 8);
    const int64_t block = (channels + nb - 1) / nb;
    const int64_t work = block * p.pooled_h * p.pooled_w * 8 * std::max<int64_t>(num_rois / units, 1);

    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features[0].scalar_type(),
                                    "roi_align_backward_cpu", [&] {
      using T = at::opmath_type<scalar_t>;
      const T* roi_data = prep.rois.data_ptr<T>();
      const scalar_t* go_data = go.data_ptr<scalar_t>();
      parallel_items<AlignScratch<T>>(units * nb, work, [&](int64_t item, AlignScratch<T>& s) {
        const int64_t unit = item / nb;
        const int64_t level = unit / batch;
        const int64_t n = unit % batch;
        const int64_t c0 = (item % nb) * block;
        const int64_t c1 = std::min(c0 + block, channels);
        if (c0 >= c1 || bucket[unit].empty()) return;
        const auto f = feature_map<scalar_t, const scalar_t>(prep.maps[level]);
        const auto g = feature_map<T, T>(grads[level]);
        for (const int64_t k : bucket[unit]) {
          const int count = plan_roi<T>(roi_data + k * 5, scales[level], f.height, f.width, p, s);
          const RoiBlock<const scalar_t> gk{go_data + k * go.stride(0), go.stride(1), go.stride(2), go.stride(3)};
          if (prep.channels_last[level]) {
            align_backward_block<scalar_t, T, true>(f, g, n, p.pooled_h, p.pooled_w, count, p.max_mode, c0, c1, gk, s);
          } else {
            align_backward_block<scalar_t, T, false>(f, g, n, p.pooled_h, p.pooled_w, count, p.max_mode, c0, c1, gk, s);
          }
        }
      });
    });
  }
  for (int64_t l = 0; l < num_levels; ++l) {
    if (grads[l].scalar_type() != features[l].scalar_type()) grads[l] = grads[l].to(features[l].scalar_type());
  }
  return grads;
}

AlignParams align_params(int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                         bool aligned, c10::string_view mode) {
  return {static_cast<int>(pooled_h), static_cast<int>(pooled_w), static_cast<int>(sampling_ratio),
          aligned, checks::parse_mode(mode)};
}

at::Tensor single_level(const at::Tensor& rois) {
  return at::zeros({rois.size(0)}, rois.options().dtype(at::kLong));
}

at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                         int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio, bool aligned,
                         c10::string_view mode) {
  checks::check_roi_align_args(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio);
  const AlignParams p = align_params(pooled_h, pooled_w, sampling_ratio, aligned, mode);
  const double scales[] = {spatial_scale};
  return forward({input}, rois, single_level(rois), scales, p);
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& input,
                                  const at::Tensor& rois, double spatial_scale, int64_t pooled_h,
                                  int64_t pooled_w, int64_t sampling_ratio, bool aligned,
                                  c10::string_view mode) {
  checks::check_roi_align_args(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio);
  const AlignParams p = align_params(pooled_h, pooled_w, sampling_ratio, aligned, mode);
  const double scales[] = {spatial_scale};
  return backward(grad, {input}, rois, single_level(rois), scales, p)[0];
}

at::Tensor multilevel_roi_align_cpu(at::TensorList features, const at::Tensor& rois,
                                    const at::Tensor& levels, at::ArrayRef<double> spatial_scales,
                                    int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                                    bool aligned, c10::string_view mode) {
  checks::check_multilevel_args(features, rois, levels, spatial_scales, pooled_h, pooled_w, sampling_ratio);
  const AlignParams p = align_params(pooled_h, pooled_w, sampling_ratio, aligned, mode);
  return forward(features, rois, levels, spatial_scales, p);
}

std::vector<at::Tensor> multilevel_roi_align_backward_cpu(
    const at::Tensor& grad, at::TensorList features, const at::Tensor& rois,
    const at::Tensor& levels, at::ArrayRef<double> spatial_scales, int64_t pooled_h,
    int64_t pooled_w, int64_t sampling_ratio, bool aligned, c10::string_view mode) {
  checks::check_multilevel_args(features, rois, levels, spatial_scales, pooled_h, pooled_w, sampling_ratio);
  const AlignParams p = align_params(pooled_h, pooled_w, sampling_ratio, aligned, mode);
  return backward(grad, features, rois, levels, spatial_scales, p);
}

}  // namespace
}  // namespace cpu
}  // namespace maskrcnn

TORCH_LIBRARY_IMPL(maskrcnn, CPU, m) {
  m.impl("roi_align", &maskrcnn::cpu::roi_align_cpu);
  m.impl("_roi_align_backward", &maskrcnn::cpu::roi_align_backward_cpu);
  m.impl("multilevel_roi_align", &maskrcnn::cpu::multilevel_roi_align_cpu);
  m.impl("_multilevel_roi_align_backward", &maskrcnn::cpu::multilevel_roi_align_backward_cpu);
}
