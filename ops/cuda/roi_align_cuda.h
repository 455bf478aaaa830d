// Host entry points of the CUDA RoI Align, shared by the single-level ops (roi_align.cu) and the
// fused multi-level ops (multilevel_roi_align.cu). Single-level RoI Align is the multi-level
// kernel with one level and no `levels` tensor.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace maskrcnn {
namespace cuda {

// features: 1 to kMaxLevels maps of one dtype and layout (see prepare_features); rois: (K, 5);
// levels: (K,) int64 or undefined (all RoIs on level 0). Returns (K, C, oh, ow), NCHW contiguous.
at::Tensor roi_align_levels_forward(const std::vector<at::Tensor>& features, const std::vector<double>& scales,
                                    const at::Tensor& rois, const at::Tensor& levels, int64_t pooled_h,
                                    int64_t pooled_w, int64_t sampling_ratio, bool aligned, bool is_max);

// Gradient of every level, in the dtype and layout of that level. Takes the deterministic
// (gather) path when at::globalContext().deterministicAlgorithms() is true, atomics otherwise.
std::vector<at::Tensor> roi_align_levels_backward(const at::Tensor& grad, const std::vector<at::Tensor>& features,
                                                  const std::vector<double>& scales, const at::Tensor& rois,
                                                  const at::Tensor& levels, int64_t pooled_h, int64_t pooled_w,
                                                  int64_t sampling_ratio, bool aligned, bool is_max);

// The deterministic backward (roi_align_deterministic.cu). grad_cl: (K, C, oh, ow) in
// channels_last memory (the C values of a bin contiguous); rois_acc: (K, 5) in the accumulation
// dtype; out: one uninitialised buffer per level in the accumulation dtype and the layout of the
// level, every element of which is written exactly once.
void roi_align_backward_gather(const at::Tensor& grad_cl, const std::vector<at::Tensor>& features,
                               const std::vector<double>& scales, const at::Tensor& rois_acc, const at::Tensor& levels,
                               const std::vector<at::Tensor>& out, int64_t pooled_h, int64_t pooled_w,
                               int64_t sampling_ratio, bool aligned, bool is_max);

}  // namespace cuda
}  // namespace maskrcnn
