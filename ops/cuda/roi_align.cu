// CUDA RoI Align: forward and atomic backward over 1 to kMaxLevels feature levels, and the
// registration of roi_align / _roi_align_backward for the CUDA dispatch key.
//
// Kernels
//   forward         one thread per output element (k, c, ph, pw); NCHW maps pw fastest
//                   (neighbouring threads read neighbouring cells of one plane, as torchvision
//                   does), channels_last maps the channel fastest, so each bilinear load of a warp
//                   reads 32 contiguous channels and the (channels_last) output is written
//                   contiguously.
//   backward_atomic one thread per grad element; avg spreads grad / count over the samples of the
//                   bin, max gives grad to the four neighbours of the winning sample (found again
//                   from the input, with the forward's own align_bin). float atomics into a
//                   float32 buffer for half types (cast once at the end), native atomics else. For
//                   channels_last the grad is read channels-fastest, so the atomics of a warp hit
//                   32 contiguous addresses.
// Indexing is templated on index_t (int32 or int64), chosen at launch from the largest linear index.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <type_traits>

#include "cuda/roi_align_cuda.h"
#include "cuda/roi_cuda_host.cuh"

namespace maskrcnn {
namespace cuda {
namespace {

// One thread per output element; the output is in the input's layout (the layout rule of
// roi_checks.h), so i is also its memory offset. kChannelsLast maps the channel fastest: a warp
// reads 32 contiguous channels for each bilinear neighbour and writes 32 contiguous outputs.
template <bool kMax, bool kChannelsLast, typename scalar_t, typename acc_t, typename index_t>
__global__ void forward(LevelTable<scalar_t, acc_t> lv, const acc_t* rois, const int64_t* levels, index_t total,
                        int pooled_h, int pooled_w, int sampling_ratio, bool aligned, scalar_t* out) {
  const index_t channels = static_cast<index_t>(lv.channels);  // 32-bit div/mod for int32
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const OutputIndex<index_t> o = decode_output_index<kChannelsLast>(i, channels, pooled_h, pooled_w);
    const RoiRef<acc_t> r = load_roi(rois, levels, o.k, lv.batch, lv.num_levels);
    if (!r.ok) {
      out[i] = scalar_t(0);
      continue;
    }
    const int64_t H = lv.height[r.level], W = lv.width[r.level];
    const roi::AlignGeometry<acc_t> g = roi::align_geometry<acc_t>(r.x1, r.y1, r.x2, r.y2, lv.scale[r.level], pooled_h,
                                                                   pooled_w, sampling_ratio, aligned);
    const PlaneView<index_t> p = plane_view<kChannelsLast, index_t>(r.n, o.c, lv.channels, H, W);
    int winner;
    out[i] =
        static_cast<scalar_t>(align_bin<kMax>(lv.data[r.level] + p.offset, p.row, p.col, H, W, g, o.ph, o.pw, &winner));
  }
}

// grad is read through its strides (gs_*), so any layout works; kChannelsLast also selects the
// thread mapping (channels fastest) and the layout of the input and of the gradient buffers.
template <bool kMax, bool kChannelsLast, typename scalar_t, typename acc_t, typename index_t>
__global__ void backward_atomic(LevelTable<scalar_t, acc_t> lv, const acc_t* rois, const int64_t* levels,
                                const scalar_t* grad, index_t gs_k, index_t gs_c, index_t gs_h, index_t gs_w,
                                index_t total, int pooled_h, int pooled_w, int sampling_ratio, bool aligned) {
  const index_t channels = static_cast<index_t>(lv.channels);  // 32-bit div/mod for int32
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const OutputIndex<index_t> o = decode_output_index<kChannelsLast>(i, channels, pooled_h, pooled_w);
    const RoiRef<acc_t> r = load_roi(rois, levels, o.k, lv.batch, lv.num_levels);
    if (!r.ok) continue;
    const int64_t H = lv.height[r.level], W = lv.width[r.level];
    const roi::AlignGeometry<acc_t> g = roi::align_geometry<acc_t>(r.x1, r.y1, r.x2, r.y2, lv.scale[r.level], pooled_h,
                                                                   pooled_w, sampling_ratio, aligned);
    if (g.grid_h == 0 || g.grid_w == 0) continue;
    const acc_t gv = static_cast<acc_t>(grad[o.k * gs_k + o.c * gs_c + o.ph * gs_h + o.pw * gs_w]);
    if (gv == acc_t(0)) continue;  // adds nothing: skip the atomics (and the winner search)
    const PlaneView<index_t> p = plane_view<kChannelsLast, index_t>(r.n, o.c, lv.channels, H, W);
    acc_t* gbase = lv.grad[r.level] + p.offset;
    if (kMax) {
      int winner;
      align_bin<true>(lv.data[r.level] + p.offset, p.row, p.col, H, W, g, o.ph, o.pw, &winner);
      if (winner < 0) continue;
      const int iy = winner / g.grid_w, ix = winner % g.grid_w;
      scatter_sample(gbase, p.row, p.col,
                     roi::axis_interp(roi::sample_coord(g.start_h, g.bin_h, o.ph, iy, g.grid_h), H),
                     roi::axis_interp(roi::sample_coord(g.start_w, g.bin_w, o.pw, ix, g.grid_w), W), gv);
    } else {
      const acc_t share = gv / static_cast<acc_t>(g.count);
      int y0, y1, x0, x1;  // only the samples on the map add anything
      roi::valid_sample_range(g.start_h, g.bin_h, o.ph, g.grid_h, H, &y0, &y1);
      roi::valid_sample_range(g.start_w, g.bin_w, o.pw, g.grid_w, W, &x0, &x1);
      for (int iy = y0; iy < y1; ++iy) {
        const roi::AxisInterp<acc_t> ay =
            roi::axis_interp(roi::sample_coord(g.start_h, g.bin_h, o.ph, iy, g.grid_h), H);
        for (int ix = x0; ix < x1; ++ix) {
          scatter_sample(gbase, p.row, p.col, ay,
                         roi::axis_interp(roi::sample_coord(g.start_w, g.bin_w, o.pw, ix, g.grid_w), W), share);
        }
      }
    }
  }
}

// Calls f(std::true_type{}) in max mode, f(std::false_type{}) in avg mode.
template <typename F>
void with_mode(bool is_max, F&& f) {
  if (is_max) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

int64_t max_numel(const std::vector<at::Tensor>& ts) {
  int64_t m = 0;
  for (const auto& t : ts) m = std::max<int64_t>(m, t.numel());
  return m;
}

}  // namespace

at::Tensor roi_align_levels_forward(const std::vector<at::Tensor>& features, const std::vector<double>& scales,
                                    const at::Tensor& rois, const at::Tensor& levels, int64_t pooled_h,
                                    int64_t pooled_w, int64_t sampling_ratio, bool aligned, bool is_max) {
  const DeviceGuard guard(features[0].device());
  const int64_t K = rois.size(0), C = features[0].size(1);
  // Every element is written: no NaN fill under deterministic algorithms.
  at::Tensor out =
      empty_unfilled({K, C, pooled_h, pooled_w}, features[0].options().memory_format(layout_of(features[0])));
  if (out.numel() == 0) return out;
  const at::Tensor rois_acc = rois.to(acc_dtype(features[0].scalar_type())).contiguous();
  const int64_t* levels_ptr = levels.defined() ? levels.data_ptr<int64_t>() : nullptr;
  const bool cl = is_channels_last(features[0]);
  const bool use_int64 = needs_int64({out.numel(), max_numel(features)});
  cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features[0].scalar_type(), "roi_align_forward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    const auto lv = make_level_table<scalar_t, acc_t>(features, scales);
    with_index_type(use_int64, [&](auto index_tag) {
      using index_t = decltype(index_tag);
      with_mode(is_max, [&](auto mode_tag) {
        constexpr bool kMax = decltype(mode_tag)::value;
        const auto launch = [&](auto cl_tag) {
          constexpr bool kCL = decltype(cl_tag)::value;
          MASKRCNN_LAUNCH(blocks_for(out.numel()), kThreads, 0, stream, forward<kMax, kCL, scalar_t, acc_t, index_t>)(
              lv, rois_acc.data_ptr<acc_t>(), levels_ptr, out.numel(), pooled_h, pooled_w, sampling_ratio, aligned,
              out.data_ptr<scalar_t>());
        };
        cl ? launch(std::true_type{}) : launch(std::false_type{});
        MASKRCNN_LAUNCH_CHECK();
      });
    });
  });
  return out;
}

std::vector<at::Tensor> roi_align_levels_backward(const at::Tensor& grad, const std::vector<at::Tensor>& features,
                                                  const std::vector<double>& scales, const at::Tensor& rois,
                                                  const at::Tensor& levels, int64_t pooled_h, int64_t pooled_w,
                                                  int64_t sampling_ratio, bool aligned, bool is_max) {
  const DeviceGuard guard(features[0].device());
  const int64_t K = rois.size(0);
  checks::check_grad(grad, K, features[0], pooled_h, pooled_w);
  const at::ScalarType dtype = features[0].scalar_type();
  const at::ScalarType acc = acc_dtype(dtype);
  const bool cl = is_channels_last(features[0]);
  const at::MemoryFormat fmt = layout_of(features[0]);
  const at::Tensor rois_acc = rois.to(acc).contiguous();
  const bool deterministic = at::globalContext().deterministicAlgorithms();

  // Gradient buffers in the accumulation dtype (the outputs themselves for float and double), in
  // the layout of the features. The gather writes every element once, so its buffers skip the NaN
  // fill that at::empty does under deterministic algorithms; the atomics need zeros. (Not
  // at::zeros(sizes, options): that overload drops the options' memory format.)
  std::vector<at::Tensor> bufs;
  for (const auto& f : features) {
    const auto opts = f.options().dtype(acc).memory_format(fmt);
    bufs.push_back(deterministic ? empty_unfilled(f.sizes(), opts) : at::empty(f.sizes(), opts).zero_());
  }
  if (grad.numel() > 0) {
    if (deterministic) {
      roi_align_backward_gather(grad.contiguous(at::MemoryFormat::ChannelsLast), features, scales, rois_acc, levels,
                                bufs, pooled_h, pooled_w, sampling_ratio, aligned, is_max);
    } else {
      const int64_t* levels_ptr = levels.defined() ? levels.data_ptr<int64_t>() : nullptr;
      // grad in the input's layout (a no-op for the forward's own output): channels_last is
      // then read channels-fastest (coalesced), and every offset is below grad.numel().
      const at::Tensor g = grad.contiguous(layout_of(features[0]));
      const bool use_int64 = needs_int64({grad.numel(), max_numel(features)});
      cudaStream_t stream = current_stream();
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_align_backward_cuda", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        auto lv = make_level_table<scalar_t, acc_t>(features, scales);
        for (size_t l = 0; l < bufs.size(); ++l) lv.grad[l] = bufs[l].data_ptr<acc_t>();
        with_index_type(use_int64, [&](auto index_tag) {
          using index_t = decltype(index_tag);
          with_mode(is_max, [&](auto mode_tag) {
            constexpr bool kMax = decltype(mode_tag)::value;
            const auto launch = [&](auto cl_tag) {
              constexpr bool kCL = decltype(cl_tag)::value;
              MASKRCNN_LAUNCH(blocks_for(g.numel()), kThreads, 0, stream,
                              backward_atomic<kMax, kCL, scalar_t, acc_t, index_t>)(
                  lv, rois_acc.data_ptr<acc_t>(), levels_ptr, g.data_ptr<scalar_t>(), g.stride(0), g.stride(1),
                  g.stride(2), g.stride(3), g.numel(), pooled_h, pooled_w, sampling_ratio, aligned);
              MASKRCNN_LAUNCH_CHECK();
            };
            if (cl) {
              launch(std::true_type{});
            } else {
              launch(std::false_type{});
            }
          });
        });
      });
    }
  } else if (deterministic) {
    for (auto& b : bufs) b.zero_();
  }
  if (acc == dtype) return bufs;
  std::vector<at::Tensor> out;
  for (const auto& b : bufs) out.push_back(b.to(dtype));  // keeps the memory format
  return out;
}

namespace {

at::Tensor roi_align_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_h,
                          int64_t pooled_w, int64_t sampling_ratio, bool aligned, c10::string_view mode) {
  checks::check_roi_align_args(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio);
  check_device(input, "input");
  const bool is_max = checks::parse_mode(mode);
  const DeviceGuard guard(input.device());
  check_roi_values(rois, input.size(0), {spatial_scale}, at::Tensor(), sampling_ratio <= 0, pooled_h, pooled_w,
                   aligned);
  return roi_align_levels_forward({input.contiguous(layout_of(input))}, {spatial_scale}, rois, at::Tensor(), pooled_h,
                                  pooled_w, sampling_ratio, aligned, is_max);
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                                   bool aligned, c10::string_view mode) {
  checks::check_roi_align_args(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio);
  check_device(input, "input");
  const bool is_max = checks::parse_mode(mode);
  const DeviceGuard guard(input.device());
  // No value check (it would cost a host synchronisation per training step): the forward
  // checked these RoIs, and the kernels skip bad ones without reading out of bounds.
  return roi_align_levels_backward(grad, {input.contiguous(layout_of(input))}, {spatial_scale}, rois, at::Tensor(),
                                   pooled_h, pooled_w, sampling_ratio, aligned, is_max)[0];
}

}  // namespace

MASKRCNN_CUDA_LIBRARY_IMPL(m) {
  m.impl("roi_align", TORCH_FN(roi_align_cuda));
  m.impl("_roi_align_backward", TORCH_FN(roi_align_backward_cuda));
}

}  // namespace cuda
}  // namespace maskrcnn
