// Host-side helpers of the CUDA RoI ops: argument checks, RoI value validation, the level table,
// the choice of 32- or 64-bit indexing.
#pragma once

#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cuda/device_api.cuh"
#include "cuda/roi_cuda_common.cuh"
#include "roi_checks.h"

namespace maskrcnn {
namespace cuda {

// The layout rule of the CPU kernels and the fake kernels (ops/roi_checks.h): channels_last when
// the input is channels_last and not also plain contiguous, NCHW otherwise. Outputs and gradients
// are written in that layout.
inline bool is_channels_last(const at::Tensor& t) { return checks::is_channels_last(t); }
inline at::MemoryFormat layout_of(const at::Tensor& t) { return checks::memory_format_of(t); }

inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The spatial scale of each RoI, (K,) float64 on the RoIs' device, made without copying anything
// from the host (the scales are kernel arguments): a fill for one level, a select by `levels` for
// several (an out-of-range level gets 0; the level check reports it).
inline at::Tensor scale_per_roi(const at::Tensor& rois, const std::vector<double>& level_scales,
                                const at::Tensor& levels) {
  const at::TensorOptions opts = rois.options().dtype(at::kDouble);
  if (!levels.defined()) return at::full({rois.size(0)}, level_scales[0], opts);
  at::Tensor s = at::zeros({rois.size(0)}, opts);
  for (size_t l = 0; l < level_scales.size(); ++l) {
    s = at::where(levels == static_cast<int64_t>(l), at::Scalar(level_scales[l]), s);
  }
  return s;
}

// Values of the RoIs (and levels): the rules of ops/roi_checks.h, reduced on the device to one
// flag and read back in a single host synchronisation on the good path; only when something is
// wrong are the rules' messages raised. Skipped while the current stream is being captured into
// a CUDA graph (a synchronisation is illegal there) and for trusted RoIs (roi_values_trusted):
// the kernels then skip bad RoIs (zero output, no gradient) and never read out of bounds.
//   level_scales: the spatial scale of each level (one value for single-level ops, levels undefined).
inline void check_roi_values(const at::Tensor& rois, int64_t batch, const std::vector<double>& level_scales,
                             const at::Tensor& levels, bool adaptive_align, int64_t pooled_h, int64_t pooled_w,
                             bool aligned) {
  if (rois.size(0) == 0 || capturing_graph() || checks::roi_values_trusted()) return;
  const int64_t num_levels = static_cast<int64_t>(level_scales.size());
  const at::Tensor scales = scale_per_roi(rois, level_scales, levels);
  const checks::RoiValueMasks masks =
      checks::roi_value_masks(rois, batch, scales, adaptive_align, pooled_h, pooled_w, aligned);
  at::Tensor bad = checks::any_invalid(masks);
  if (levels.defined()) bad = bad | checks::level_values_invalid(levels, num_levels).any();
  if (!bad.item<bool>()) return;  // the one synchronisation
  if (levels.defined()) checks::check_level_values(levels, num_levels);
  checks::raise_invalid_rois(masks, batch, rois);
  TORCH_CHECK_VALUE(false, "rois hold invalid values");  // not reached
}

// True when some linear index of the work can reach 2^31: kernels then index in int64. The
// margin keeps a grid-stride step (at most 2^20 blocks x 256 threads = 2^28) from overflowing.
inline bool needs_int64(std::initializer_list<int64_t> sizes) {
  constexpr int64_t kLimit = (int64_t(1) << 31) - (int64_t(1) << 29);
  for (int64_t s : sizes) {
    if (s >= kLimit) return true;
  }
  return false;
}

// Runs f(int32_t{}) or f(int64_t{}) so that f can declare `using index_t = decltype(tag)`.
template <typename F>
void with_index_type(bool use_int64, F&& f) {
  if (use_int64) {
    f(int64_t{});
  } else {
    f(int32_t{});
  }
}

// The level table of `features` (all of one dtype, device, batch size, channels and layout).
template <typename scalar_t, typename acc_t>
LevelTable<scalar_t, acc_t> make_level_table(const std::vector<at::Tensor>& features,
                                             const std::vector<double>& scales) {
  TORCH_CHECK(!features.empty() && features.size() <= static_cast<size_t>(kMaxLevels), "features must hold 1 to ",
              kMaxLevels, " levels, got ", features.size());
  LevelTable<scalar_t, acc_t> t{};
  t.num_levels = static_cast<int>(features.size());
  t.batch = features[0].size(0);
  t.channels = features[0].size(1);
  for (size_t l = 0; l < features.size(); ++l) {
    t.data[l] = features[l].data_ptr<scalar_t>();
    t.grad[l] = nullptr;
    t.height[l] = features[l].size(2);
    t.width[l] = features[l].size(3);
    t.scale[l] = static_cast<acc_t>(scales[l]);
  }
  return t;
}

// The features of a multi-level call (already checked by checks::check_multilevel_args), made
// contiguous in one layout, that of level 0: a level in another layout is copied.
inline std::vector<at::Tensor> prepare_features(const at::TensorList& features) {
  TORCH_CHECK_VALUE(features.size() <= static_cast<size_t>(kMaxLevels), "features must hold at most ", kMaxLevels,
                    " levels on CUDA, got ", features.size());
  const at::MemoryFormat fmt = layout_of(features[0]);
  std::vector<at::Tensor> out;
  for (size_t l = 0; l < features.size(); ++l) {
    const std::string name = "features[" + std::to_string(l) + "]";
    check_device(features[l], name.c_str());
    out.push_back(features[l].contiguous(fmt));
  }
  return out;
}

}  // namespace cuda
}  // namespace maskrcnn
