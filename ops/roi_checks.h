// Input validation of the RoI ops, shared by the CPU and CUDA kernels (docs/ops.md).
//
// Bad input must raise, never crash or read out of bounds. The checks come in two kinds:
//   * static checks (shapes, dtypes, devices, parameters): cheap, no data read;
//   * value checks (batch index an integer in [0, N), finite boxes of a size the kernels can
//     represent, FPN levels in range): they read `rois` / `levels`. They use tensor ops, so they
//     run on any device (one host synchronisation on CUDA) and the Python side needs no
//     data-dependent check (torch.compile(fullgraph=True) keeps working).
// TORCH_CHECK_VALUE raises ValueError in Python, TORCH_CHECK_TYPE TypeError, TORCH_CHECK
// RuntimeError; every message names the argument and what was expected.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace maskrcnn {
namespace checks {

// Scaled box coordinates beyond this many feature cells are rejected: the RoI Pool kernels round
// them to int64 and the bin arithmetic must not overflow.
constexpr double kMaxCoordinate = 1099511627776.0;  // 2^40
// Adaptive RoI Align takes ceil(roi_size / output_size)^2 samples per bin; the count is an int.
constexpr double kMaxSamplesPerBin = 1073741824.0;  // 2^30

// The kernels write their output in the input's memory format: channels_last when the input is
// channels_last and not also plain contiguous (a 1x1 map or one channel is both), NCHW otherwise.
// The fake kernels in maskrcnn/ops/_registration.py use the same rule.
// Trusted RoIs: while set on this thread, the CUDA ops skip the value check of their RoIs and the
// host synchronisation it costs (the kernels still skip bad RoIs without reading out of bounds).
// The model's poolers set it around their calls (maskrcnn.ops.trusted_rois): their RoIs are
// clipped proposals whose batch indices they number themselves. The CPU ops always check (it
// costs no synchronisation there, and the CPU kernels rely on it).
inline bool& roi_values_trusted() {
  thread_local bool trusted = false;
  return trusted;
}

// Sets the flag and returns its previous value (torch.ops.maskrcnn._trust_roi_values).
inline bool trust_roi_values(bool trusted) {
  const bool previous = roi_values_trusted();
  roi_values_trusted() = trusted;
  return previous;
}

inline bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::MemoryFormat memory_format_of(const at::Tensor& t) {
  return is_channels_last(t) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline bool is_supported_float(at::ScalarType s) {
  return s == at::kHalf || s == at::kBFloat16 || s == at::kFloat || s == at::kDouble;
}

// A feature map: (N, C, H, W) floating point with H, W > 0.
inline void check_feature(const at::Tensor& input, const char* name) {
  TORCH_CHECK_VALUE(input.defined(), name, " is undefined");
  TORCH_CHECK_VALUE(input.dim() == 4, name, " must be a 4-D (N, C, H, W) tensor, got ", input.dim(), "-D with shape ",
                    input.sizes());
  TORCH_CHECK_TYPE(is_supported_float(input.scalar_type()), name,
                   " must be float16, bfloat16, float32 or float64, got ", input.scalar_type());
  TORCH_CHECK_VALUE(input.size(2) > 0 && input.size(3) > 0, name,
                    " must have a non-empty spatial size (H, W > 0), got shape ", input.sizes());
}

// rois: (K, 5) [batch_index, x1, y1, x2, y2]; dtype of the input, or float32 for half inputs.
inline void check_rois(const at::Tensor& rois, const at::Tensor& input) {
  TORCH_CHECK_VALUE(rois.defined(), "rois is undefined");
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5,
                    "rois must be a (K, 5) tensor [batch_index, x1, y1, x2, y2], got shape ", rois.sizes());
  const auto in = input.scalar_type();
  const bool half = in == at::kHalf || in == at::kBFloat16;
  TORCH_CHECK_TYPE(rois.scalar_type() == in || (half && rois.scalar_type() == at::kFloat),
                   "rois must have the dtype of the input (", in, half ? " or float32" : "", "), got ",
                   rois.scalar_type());
  TORCH_CHECK_VALUE(rois.device() == input.device(), "rois must be on the device of the input (", input.device(),
                    "), got ", rois.device());
}

inline void check_output_size(int64_t pooled_h, int64_t pooled_w) {
  TORCH_CHECK_VALUE(pooled_h > 0 && pooled_w > 0, "output_size must be positive, got (", pooled_h, ", ", pooled_w, ")");
  TORCH_CHECK_VALUE(pooled_h <= (1 << 20) && pooled_w <= (1 << 20), "output_size must be at most 2^20, got (", pooled_h,
                    ", ", pooled_w, ")");
}

inline void check_spatial_scale(double spatial_scale, const char* name = "spatial_scale") {
  TORCH_CHECK_VALUE(std::isfinite(spatial_scale) && spatial_scale > 0, name, " must be positive and finite, got ",
                    spatial_scale);
}

inline void check_sampling_ratio(int64_t sampling_ratio) {
  // sampling_ratio^2 samples per bin must fit an int; <= 0 means adaptive.
  TORCH_CHECK_VALUE(sampling_ratio <= 32768, "sampling_ratio must be at most 32768 (<= 0 means adaptive), got ",
                    sampling_ratio);
}

// Returns true for "max", false for "avg".
inline bool parse_mode(c10::string_view mode) {
  // Compared as std::string: c10::string_view's comparison operators differ across torch versions.
  const std::string m(mode.data(), mode.size());
  TORCH_CHECK_VALUE(m == "avg" || m == "max", "mode must be 'avg' or 'max', got '", m, "'");
  return m == "max";
}

// grad: (K, C, oh, ow) on the device and with the dtype of the input.
inline void check_grad(const at::Tensor& grad, int64_t num_rois, const at::Tensor& input, int64_t pooled_h,
                       int64_t pooled_w) {
  TORCH_CHECK_VALUE(grad.defined(), "grad is undefined");
  const std::vector<int64_t> expected{num_rois, input.size(1), pooled_h, pooled_w};
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef(expected), "grad must have shape ", at::IntArrayRef(expected),
                    " (K, C, oh, ow), got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == input.scalar_type(), "grad must have the dtype of the input (",
                   input.scalar_type(), "), got ", grad.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == input.device(), "grad must be on the device of the input (", input.device(),
                    "), got ", grad.device());
}

inline void check_roi_align_args(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                 int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio) {
  check_feature(input, "input");
  check_rois(rois, input);
  check_spatial_scale(spatial_scale);
  check_output_size(pooled_h, pooled_w);
  check_sampling_ratio(sampling_ratio);
}

inline void check_roi_pool_args(const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_h,
                                int64_t pooled_w) {
  check_feature(input, "input");
  check_rois(rois, input);
  check_spatial_scale(spatial_scale);
  check_output_size(pooled_h, pooled_w);
  // The argmax (torchvision's int32) and the CPU backward index a plane's cells with int32.
  TORCH_CHECK_VALUE(input.size(2) * input.size(3) <= std::numeric_limits<int32_t>::max(),
                    "RoI Pool indexes the cells of a plane with int32: H * W must be below 2^31, got ", input.size(2),
                    " x ", input.size(3));
}

// argmax of RoI Pool: int32 (K, C, oh, ow) like grad, on the same device.
inline void check_argmax(const at::Tensor& argmax, const at::Tensor& grad) {
  TORCH_CHECK_VALUE(argmax.defined(), "argmax is undefined");
  TORCH_CHECK_TYPE(argmax.scalar_type() == at::kInt, "argmax must be int32, got ", argmax.scalar_type());
  TORCH_CHECK_VALUE(argmax.sizes() == grad.sizes(), "argmax must have the shape of grad (", grad.sizes(), "), got ",
                    argmax.sizes());
  TORCH_CHECK_VALUE(argmax.device() == grad.device(), "argmax must be on the device of grad");
}

// codes: what _roi_pool_compact returned with with_codes=True for the same input and rois
// (uint8 or int16, by the map's shape: `dtype`).
inline void check_codes(const at::Tensor& codes, const at::Tensor& grad, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(codes.defined(), "codes is undefined");
  const auto name = [](at::ScalarType t) -> std::string {
    return t == at::kByte ? "uint8" : t == at::kShort ? "int16" : c10::toString(t);
  };
  TORCH_CHECK_TYPE(codes.scalar_type() == dtype, "codes must be ", name(dtype), " for this map and output size, got ",
                   name(codes.scalar_type()));
  TORCH_CHECK_VALUE(codes.sizes() == grad.sizes(), "codes must have the shape of grad (", grad.sizes(), "), got ",
                    codes.sizes(), codes.numel() == 0 ? " (the forward ran with with_codes=False)" : "");
  TORCH_CHECK_VALUE(codes.device() == grad.device(), "codes must be on the device of grad");
}

// features: a non-empty list of (N, C, H_l, W_l) maps with the same N, C, dtype and device;
// levels: (K,) int64; one spatial scale per level.
inline void check_multilevel_args(at::TensorList features, const at::Tensor& rois, const at::Tensor& levels,
                                  at::ArrayRef<double> spatial_scales, int64_t pooled_h, int64_t pooled_w,
                                  int64_t sampling_ratio) {
  TORCH_CHECK_VALUE(!features.empty(), "features must be a non-empty list of feature maps");
  for (size_t l = 0; l < features.size(); ++l) {
    const std::string name = "features[" + std::to_string(l) + "]";
    check_feature(features[l], name.c_str());
    if (l == 0) continue;
    TORCH_CHECK_VALUE(features[l].size(0) == features[0].size(0) && features[l].size(1) == features[0].size(1), name,
                      " must have the batch size and channels of features[0] (", features[0].size(0), ", ",
                      features[0].size(1), "), got shape ", features[l].sizes());
    TORCH_CHECK_TYPE(features[l].scalar_type() == features[0].scalar_type(), name,
                     " must have the dtype of features[0] (", features[0].scalar_type(), "), got ",
                     features[l].scalar_type());
    TORCH_CHECK_VALUE(features[l].device() == features[0].device(), name, " must be on the device of features[0]");
  }
  check_rois(rois, features[0]);
  TORCH_CHECK_VALUE(levels.defined() && levels.dim() == 1 && levels.size(0) == rois.size(0),
                    "levels must be a (K,) tensor with K = ", rois.size(0), ", got shape ",
                    levels.defined() ? levels.sizes() : at::IntArrayRef{});
  TORCH_CHECK_TYPE(levels.scalar_type() == at::kLong, "levels must be int64, got ", levels.scalar_type());
  TORCH_CHECK_VALUE(levels.device() == rois.device(), "levels must be on the device of rois");
  TORCH_CHECK_VALUE(spatial_scales.size() == features.size(), "spatial_scales must have one scale per feature level (",
                    features.size(), "), got ", spatial_scales.size());
  for (size_t l = 0; l < spatial_scales.size(); ++l) {
    const std::string name = "spatial_scales[" + std::to_string(l) + "]";
    check_spatial_scale(spatial_scales[l], name.c_str());
  }
  check_output_size(pooled_h, pooled_w);
  check_sampling_ratio(sampling_ratio);
}

// "[a, b, c, d]" for row k of a 2-D tensor (error messages only).
inline std::string row_string(const at::Tensor& t, int64_t k) {
  const at::Tensor row = t[k].to(at::kCPU, at::kDouble).contiguous();
  std::string s = "[";
  for (int64_t i = 0; i < row.numel(); ++i) {
    s += (i ? ", " : "") + std::to_string(row.data_ptr<double>()[i]);
  }
  return s + "]";
}

// Index of the first true entry of a 1-D bool tensor (only called when one exists).
inline int64_t first_true(const at::Tensor& mask) { return mask.nonzero().select(1, 0).min().item<int64_t>(); }

// Adaptive RoI Align's sample points per bin, ceil(h / oh) * ceil(w / ow), of (K, 4) scaled boxes
// (float64; an unaligned RoI is at least 1 x 1 cell, as in roi_common.h's align_geometry).
inline at::Tensor adaptive_samples_per_bin(const at::Tensor& scaled, int64_t pooled_h, int64_t pooled_w, bool aligned) {
  at::Tensor roi_w = scaled.select(1, 2) - scaled.select(1, 0);
  at::Tensor roi_h = scaled.select(1, 3) - scaled.select(1, 1);
  if (!aligned) {
    roi_w = roi_w.clamp_min(1.0);
    roi_h = roi_h.clamp_min(1.0);
  }
  return (roi_h / static_cast<double>(pooled_h)).ceil().clamp_min(0) *
         (roi_w / static_cast<double>(pooled_w)).ceil().clamp_min(0);
}

// The value rules of rois, as per-RoI masks computed on the RoIs' device without reading any
// value on the host: batch index an integer in [0, N), finite coordinates whose scaled values
// stay within +-2^40 feature cells and, with `adaptive_align`, an adaptive sample count per bin
// (ceil(h / oh) * ceil(w / ow)) that fits the kernels' int. `scales` is the spatial scale of
// each RoI ((K,), on the RoIs' device) or one value for all (a 0-d CPU tensor). The arithmetic is
// in float64: the bounds are far from where float32 rounding matters.
struct RoiValueMasks {
  at::Tensor box;        // (K, 4) float64
  at::Tensor scaled;     // (K, 4) the box times its scale
  at::Tensor bad_index;  // (K,) each mask
  at::Tensor not_finite;
  at::Tensor too_large;
  at::Tensor too_many;  // undefined without adaptive_align
  at::Tensor samples;   // adaptive sample points per bin (undefined without adaptive_align)
};

inline RoiValueMasks roi_value_masks(const at::Tensor& rois, int64_t batch_size, const at::Tensor& scales,
                                     bool adaptive_align, int64_t pooled_h, int64_t pooled_w, bool aligned) {
  RoiValueMasks m;
  const at::Tensor r = rois.to(at::kDouble);
  const at::Tensor index = r.select(1, 0);
  m.bad_index = (index != index.floor()) | (index < 0) | (index >= static_cast<double>(batch_size));
  m.box = r.narrow(1, 1, 4);
  m.not_finite = m.box.isfinite().logical_not().any(1);
  // A 0-d CPU scale multiplies as a number (a CPU tensor of another shape cannot meet CUDA ones).
  m.scaled = scales.dim() == 0 ? m.box * scales.item<double>() : m.box * scales.to(at::kDouble).reshape({-1, 1});
  // NaN compares false, so a non-finite box is reported by not_finite, which is checked first.
  m.too_large = (m.scaled.abs() > kMaxCoordinate).any(1);
  if (adaptive_align) {
    m.samples = adaptive_samples_per_bin(m.scaled, pooled_h, pooled_w, aligned);
    m.too_many = m.samples >= kMaxSamplesPerBin;
  }
  return m;
}

// One bool (0-d, on the RoIs' device): does any RoI break a rule?
inline at::Tensor any_invalid(const RoiValueMasks& m) {
  at::Tensor bad = m.bad_index | m.not_finite | m.too_large;
  if (m.too_many.defined()) bad = bad | m.too_many;
  return bad.any();
}

// Raises the message of the first rule broken (in the order of the rules, then of the RoIs).
inline void raise_invalid_rois(const RoiValueMasks& m, int64_t batch_size, const at::Tensor& rois) {
  if (m.bad_index.any().item<bool>()) {
    const int64_t k = first_true(m.bad_index);
    TORCH_CHECK_VALUE(false, "rois[", k, ", 0] (batch index) must be an integer in [0, ", batch_size, "), got ",
                      rois[k][0].item<double>());
  }
  if (m.not_finite.any().item<bool>()) {
    const int64_t k = first_true(m.not_finite);
    TORCH_CHECK_VALUE(false, "rois[", k, "] must have finite box coordinates, got ", row_string(m.box, k));
  }
  if (m.too_large.any().item<bool>()) {
    const int64_t k = first_true(m.too_large);
    TORCH_CHECK_VALUE(false, "rois[", k, "] is too large: box coordinates times spatial_scale must",
                      " stay within +-2^40 feature cells, got ", row_string(m.scaled, k));
  }
  if (m.too_many.defined() && m.too_many.any().item<bool>()) {
    const int64_t k = first_true(m.too_many);
    TORCH_CHECK_VALUE(false, "rois[", k, "] is too large for adaptive sampling (", m.samples[k].item<double>(),
                      " sample points per bin, at most 2^30); ", "pass a positive sampling_ratio");
  }
}

// Value checks of rois (the rules of roi_value_masks), raising a ValueError that names the first
// bad RoI.
inline void check_roi_values(const at::Tensor& rois, int64_t batch_size, const at::Tensor& scales,
                             bool adaptive_align = false, int64_t pooled_h = 1, int64_t pooled_w = 1,
                             bool aligned = true) {
  if (rois.size(0) == 0) return;
  const RoiValueMasks m = roi_value_masks(rois, batch_size, scales, adaptive_align, pooled_h, pooled_w, aligned);
  raise_invalid_rois(m, batch_size, rois);
}

// levels: every value in [0, num_levels).
inline at::Tensor level_values_invalid(const at::Tensor& levels, int64_t num_levels) {
  return (levels < 0) | (levels >= num_levels);
}

inline void check_level_values(const at::Tensor& levels, int64_t num_levels) {
  if (levels.numel() == 0) return;
  const at::Tensor bad = level_values_invalid(levels, num_levels);
  if (bad.any().item<bool>()) {
    const int64_t k = first_true(bad);
    TORCH_CHECK_VALUE(false, "levels[", k, "] must be in [0, ", num_levels, "), got ", levels[k].item<int64_t>());
  }
}

}  // namespace checks
}  // namespace maskrcnn
