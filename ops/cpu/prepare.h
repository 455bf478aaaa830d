// What the RoI Align and RoI Pool CPU drivers share around their per-item kernels: the input
// preparation, and the gradient slice that each backward item owns.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "roi_checks.h"

namespace maskrcnn {
namespace cpu {

// Maps in a supported layout, rois in the accumulation dtype, the RoIs of each (level, image) and
// the split of the work into items.
struct Prepared {
  std::vector<at::Tensor> maps;  // each NCHW-contiguous or channels_last-contiguous
  std::vector<bool> channels_last;
  at::Tensor rois;    // (K, 5) contiguous, accumulation dtype (double for double, else float)
  at::Tensor levels;  // (K,) int64 contiguous; undefined for one level
  at::MemoryFormat out_format;
  std::vector<std::vector<int64_t>> bucket;  // bucket[level * batch + n]: RoIs in their order
  ChannelSplit split;
};

// `check(prep)` validates the values of prep.rois (and prep.levels) before the RoIs are bucketed
// by their batch index.
template <typename Check>
Prepared prepare(at::TensorList maps, const at::Tensor& rois, const at::Tensor& levels, const Check& check) {
  Prepared out;
  std::vector<int64_t> plane_bytes;
  for (const at::Tensor& f : maps) {
    const bool cl = checks::is_channels_last(f);
    out.channels_last.push_back(cl);
    out.maps.push_back(f.contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
    plane_bytes.push_back(f.size(2) * f.size(3) * static_cast<int64_t>(f.element_size()));
  }
  out.out_format = checks::memory_format_of(maps[0]);
  const auto acc = maps[0].scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  out.rois = rois.to(acc).contiguous();
  if (levels.defined()) out.levels = levels.contiguous();
  check(out);
  const int64_t batch = maps[0].size(0);
  const at::Tensor image = out.rois.select(1, 0).to(at::kLong).contiguous();
  out.bucket = bucket_rois(image.data_ptr<int64_t>(), levels.defined() ? out.levels.data_ptr<int64_t>() : nullptr,
                           rois.size(0), batch, static_cast<int64_t>(maps.size()));
  out.split = split_channels(batch, maps[0].size(1), plane_bytes, out.channels_last);
  return out;
}

// The gradient slice (image n, channels [c0, c0 + nc)) that one backward item owns, in the
// accumulation type T: element (c - c0, y, x) at data[(c - c0) * sC + y * sH + x * sW], cells
// sW apart (so the cell with plane index h * W + w is at (h * W + w) * sW). It is the output
// tensor's own memory when scalar_t is T; half types accumulate in a compact float buffer
// (NCHW or channels_last like the output) that finish() converts once, at the end of the item.
template <typename scalar_t, typename T>
struct GradSlice {
  static constexpr bool direct = std::is_same<T, scalar_t>::value;
  T* data;
  int64_t sC, sH, sW;
  scalar_t* out;  // the output slice
  int64_t oC, oH, oW, nc, height, width;

  // out: the slice's first element in the output; oC, oH, oW: the output's strides. Zeroed.
  GradSlice(scalar_t* out_, int64_t oC_, int64_t oH_, int64_t oW_, int64_t nc_, int64_t height_, int64_t width_,
            bool channels_last, std::vector<T>& buffer)
      : out(out_), oC(oC_), oH(oH_), oW(oW_), nc(nc_), height(height_), width(width_) {
    const int64_t plane = height * width;
    if constexpr (direct) {
      data = reinterpret_cast<T*>(out);
      sC = oC;
      sH = oH;
      sW = oW;
    } else {
      buffer.resize(nc * plane);
      data = buffer.data();
      sC = channels_last ? 1 : plane;
      sW = channels_last ? nc : 1;
      sH = width * sW;
    }
    if (!channels_last || sW == nc) {  // one contiguous range
      std::fill(data, data + nc * plane, T(0));
    } else {
      for (int64_t i = 0; i < plane; ++i) std::fill(data + i * sW, data + i * sW + nc, T(0));
    }
  }

  void finish() const {
    if constexpr (!direct) {
      for (int64_t c = 0; c < nc; ++c) {
        for (int64_t y = 0; y < height; ++y) {
          for (int64_t x = 0; x < width; ++x) {
            out[c * oC + y * oH + x * oW] = static_cast<scalar_t>(data[c * sC + y * sH + x * sW]);
          }
        }
      }
    }
  }
};

}  // namespace cpu
}  // namespace maskrcnn
