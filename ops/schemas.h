// The operator schemas of the RoI layer, shared by torch.ops.maskrcnn (ops/register.cpp) and the
// device-emulation build's torch.ops.maskrcnn_cuda_emu (ops/cuda/emulation/register.cpp), so that
// the two namespaces cannot drift apart.
//
// Conventions shared by all ops:
//   input / features: (N, C, H, W), float16 / bfloat16 / float32 / float64, NCHW or channels_last.
//   rois: (K, 5) [batch_index, x1, y1, x2, y2] in input-image coordinates, same dtype and device.
//   mode: "avg" or "max" (how RoI Align pools the sample points of a bin).
//   The backward ops return the gradient of the input (or one per feature level); the forward's
//   input is passed back in so that max mode can find the winning sample again instead of
//   storing it.
#pragma once

#include <torch/library.h>

#include "roi_checks.h"

namespace maskrcnn {

inline void define_roi_ops(torch::Library& m) {
  // Skips the CUDA ops' RoI value check (and its synchronisation) on this thread; returns the
  // previous setting. roi_checks.h, roi_values_trusted.
  m.def("_trust_roi_values(bool trusted) -> bool", &checks::trust_roi_values);
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned, str mode) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor input, Tensor rois, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned, str mode) "
      "-> Tensor");
  // Returns (output, argmax): argmax is the int32 index (h * W + w) of the winning cell in its
  // input plane, -1 for an empty bin.
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width) -> (Tensor, Tensor)");
  m.def(
      "_roi_pool_backward(Tensor grad, Tensor input, Tensor rois, Tensor argmax, "
      "float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> Tensor");
  // What maskrcnn.ops.roi_pool calls on the CPU: (output, codes), the output of roi_pool and, with
  // with_codes, codes of the winning cells: (dh << s) + dw inside the bin, all ones for an empty bin
  // and for the RoIs with bins too large for codes (the backward finds those again); uint8 (s = 4)
  // or int16 (s = 7) by the map's shape and output size. Without with_codes, an empty uint8
  // tensor. docs/ops.md, "RoI Pool's winners".
  m.def(
      "_roi_pool_compact(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, bool with_codes) -> (Tensor, Tensor)");
  m.def(
      "_roi_pool_compact_backward(Tensor grad, Tensor input, Tensor rois, Tensor codes, "
      "float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> Tensor");
  // RoI Align over several FPN levels in one call: RoI k is pooled from features[levels[k]]
  // with spatial_scales[levels[k]]. levels: (K,) int64 with values in [0, len(features)).
  m.def(
      "multilevel_roi_align(Tensor[] features, Tensor rois, Tensor levels, float[] spatial_scales, "
      "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned, str mode) "
      "-> Tensor");
  m.def(
      "_multilevel_roi_align_backward(Tensor grad, Tensor[] features, Tensor rois, Tensor levels, "
      "float[] spatial_scales, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
      "bool aligned, str mode) -> Tensor[]");
}

}  // namespace maskrcnn
