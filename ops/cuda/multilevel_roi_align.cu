// Fused multi-level RoI Align on CUDA: multilevel_roi_align / _multilevel_roi_align_backward.
//
// One launch pools every RoI from its own FPN level: the kernels of roi_align.cu read the base
// pointer, size and scale of levels[k] from a LevelTable passed by value (up to kMaxLevels
// levels), so there is no per-level loop, no nonzero() and no gather/scatter of RoIs by level,
// hence no host synchronisation from the pooling itself. The backward writes the gradient of every
// level in one launch as well (atomic or deterministic gather, see roi_align_deterministic.cu).
//
// Validation trade-off: shapes, dtypes and devices are checked on the host for free. The values
// (finite boxes, integer batch index in [0, N), level in [0, L), representable sizes) need the
// data: the forward reads one fused flag tensor back (a single synchronisation; the pooling
// itself adds none) so that bad input raises the same clear error as on CPU, except while a CUDA
// graph is being captured (torch.compile mode="reduce-overhead", manual graphs), where a
// synchronisation is illegal; there, and in the backward, the kernels skip bad RoIs (zero
// output, no gradient) and never read out of bounds.
#include <torch/library.h>

#include <string>
#include <vector>

#include "cuda/roi_align_cuda.h"
#include "cuda/roi_cuda_host.cuh"

namespace maskrcnn {
namespace cuda {
namespace {

at::Tensor multilevel_roi_align_cuda(at::TensorList features, const at::Tensor& rois, const at::Tensor& levels,
                                     c10::ArrayRef<double> spatial_scales, int64_t pooled_h, int64_t pooled_w,
                                     int64_t sampling_ratio, bool aligned, c10::string_view mode) {
  checks::check_multilevel_args(features, rois, levels, spatial_scales, pooled_h, pooled_w, sampling_ratio);
  const std::vector<double> scales(spatial_scales.begin(), spatial_scales.end());
  const std::vector<at::Tensor> feats = prepare_features(features);
  const bool is_max = checks::parse_mode(mode);
  const DeviceGuard guard(feats[0].device());
  check_roi_values(rois, feats[0].size(0), scales, levels, sampling_ratio <= 0, pooled_h, pooled_w, aligned);
  return roi_align_levels_forward(feats, scales, rois, levels.contiguous(), pooled_h, pooled_w, sampling_ratio, aligned,
                                  is_max);
}

std::vector<at::Tensor> multilevel_roi_align_backward_cuda(const at::Tensor& grad, at::TensorList features,
                                                           const at::Tensor& rois, const at::Tensor& levels,
                                                           c10::ArrayRef<double> spatial_scales, int64_t pooled_h,
                                                           int64_t pooled_w, int64_t sampling_ratio, bool aligned,
                                                           c10::string_view mode) {
  checks::check_multilevel_args(features, rois, levels, spatial_scales, pooled_h, pooled_w, sampling_ratio);
  const std::vector<double> scales(spatial_scales.begin(), spatial_scales.end());
  const std::vector<at::Tensor> feats = prepare_features(features);
  const bool is_max = checks::parse_mode(mode);
  std::vector<at::Tensor> grads = roi_align_levels_backward(grad, feats, scales, rois, levels.contiguous(), pooled_h,
                                                            pooled_w, sampling_ratio, aligned, is_max);
  // A level given in another layout than level 0 was copied; return its gradient in its layout.
  for (size_t l = 0; l < grads.size(); ++l) {
    if (layout_of(features[l]) != layout_of(grads[l])) {
      grads[l] = grads[l].contiguous(layout_of(features[l]));
    }
  }
  return grads;
}

}  // namespace

MASKRCNN_CUDA_LIBRARY_IMPL(m) {
  m.impl("multilevel_roi_align", TORCH_FN(multilevel_roi_align_cuda));
  m.impl("_multilevel_roi_align_backward", TORCH_FN(multilevel_roi_align_backward_cuda));
}

}  // namespace cuda
}  // namespace maskrcnn
