// CUDA RoI Pool (Fast R-CNN): forward with argmax, atomic and deterministic backward, and the
// registration of roi_pool / _roi_pool_backward for the CUDA dispatch key.
//
//   pool_forward   one thread per output element; NCHW maps pw fastest, channels_last maps the
//                  channel fastest so that a warp reads 32 contiguous channels of each cell and
//                  writes 32 contiguous outputs (output and argmax follow the input's layout).
//                  argmax (K, C, oh, ow) int32 is the index h * W + w of the first maximal cell
//                  of the bin in its plane (row-major order), -1 for an empty bin (output 0).
//   pool_backward_atomic  one thread per grad element, atomicAdd of grad at its argmax (float32
//                  buffer for half types).
//   pool_gather    deterministic: the tile gather of roi_gather.cuh; a thread owns a cell and 8
//                  channels and adds, in RoI then bin order, the grads of the bins whose argmax
//                  is its cell.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <tuple>
#include <type_traits>

#include "cuda/roi_cuda_host.cuh"
#include "cuda/roi_gather.cuh"

namespace maskrcnn {
namespace cuda {
namespace {

template <bool kChannelsLast, typename scalar_t, typename acc_t, typename index_t>
__global__ void pool_forward(const scalar_t* input, int64_t N, int64_t C, int64_t H, int64_t W, const acc_t* rois,
                             acc_t scale, index_t total, int pooled_h, int pooled_w, scalar_t* out, int* argmax) {
  const index_t Ci = static_cast<index_t>(C);  // 32-bit div/mod when index_t is int32
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const OutputIndex<index_t> pos = decode_output_index<kChannelsLast>(i, Ci, pooled_h, pooled_w);
    const index_t c = pos.c, k = pos.k;
    const int ph = pos.ph, pw = pos.pw;
    const index_t o = i;  // output and argmax are in the input's layout: i is the offset
    const RoiRef<acc_t> r = load_roi(rois, static_cast<const int64_t*>(nullptr), k, N, 1);
    acc_t best = 0;
    int best_i = -1;
    if (r.ok) {
      const roi::PoolGeometry g = roi::pool_geometry<acc_t>(r.x1, r.y1, r.x2, r.y2, scale);
      const roi::PoolRange rh = roi::pool_bin_range<acc_t>(g.start_h, g.roi_h, ph, pooled_h, H);
      const roi::PoolRange rw = roi::pool_bin_range<acc_t>(g.start_w, g.roi_w, pw, pooled_w, W);
      const PlaneView<index_t> p = plane_view<kChannelsLast, index_t>(r.n, c, C, H, W);
      const scalar_t* base = input + p.offset;
      for (int64_t h = rh.begin; h < rh.end; ++h) {
        for (int64_t w = rw.begin; w < rw.end; ++w) {
          const acc_t v = load<acc_t>(base + static_cast<index_t>(h) * p.row + static_cast<index_t>(w) * p.col);
          if (best_i < 0 || v > best) {
            best = v;
            best_i = static_cast<int>(h * W + w);
          }
        }
      }
    }
    out[o] = best_i < 0 ? scalar_t(0) : static_cast<scalar_t>(best);
    argmax[o] = best_i;
  }
}

// grad and argmax are read through their strides; channels_last maps the channel fastest.
template <bool kChannelsLast, typename scalar_t, typename acc_t, typename index_t>
__global__ void pool_backward_atomic(const scalar_t* grad, index_t gs_k, index_t gs_c, index_t gs_h, index_t gs_w,
                                     const int* argmax, index_t as_k, index_t as_c, index_t as_h, index_t as_w,
                                     const acc_t* rois, int64_t N, int64_t C, int64_t H, int64_t W, index_t total,
                                     int pooled_h, int pooled_w, acc_t* grad_input) {
  const index_t Ci = static_cast<index_t>(C);  // 32-bit div/mod when index_t is int32
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const OutputIndex<index_t> pos = decode_output_index<kChannelsLast>(i, Ci, pooled_h, pooled_w);
    const index_t c = pos.c, k = pos.k;
    const int ph = pos.ph, pw = pos.pw;
    const int a = argmax[k * as_k + c * as_c + ph * as_h + pw * as_w];
    if (a < 0 || a >= H * W) continue;  // empty bin (or a corrupt argmax: never write outside)
    const RoiRef<acc_t> r = load_roi(rois, static_cast<const int64_t*>(nullptr), k, N, 1);
    if (!r.ok) continue;
    const PlaneView<index_t> p = plane_view<kChannelsLast, index_t>(r.n, c, C, H, W);
    const index_t cell = static_cast<index_t>(a / W) * p.row + static_cast<index_t>(a % W) * p.col;
    atomicAdd(grad_input + p.offset + cell, static_cast<acc_t>(grad[k * gs_k + c * gs_c + ph * gs_h + pw * gs_w]));
  }
}

template <typename acc_t>
__global__ void pool_footprints(const acc_t* rois, int64_t K, int64_t N, int64_t H, int64_t W, acc_t scale,
                                int* footprints) {
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < K;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int* f = footprints + k * kFootprintInts;
    f[0] = -1;
    const RoiRef<acc_t> r = load_roi(rois, static_cast<const int64_t*>(nullptr), k, N, 1);
    if (!r.ok) continue;
    const roi::PoolGeometry g = roi::pool_geometry<acc_t>(r.x1, r.y1, r.x2, r.y2, scale);
    // Every bin lies in [start, start + size) up to float rounding of ceil((b + 1) * size / n):
    // widened by one cell each side, then clipped to the map. (Coordinates are bounded by 2^40
    // by the value check, so these sums do not overflow.)
    const int64_t y0 = g.start_h - 1 > 0 ? g.start_h - 1 : 0;
    const int64_t x0 = g.start_w - 1 > 0 ? g.start_w - 1 : 0;
    const int64_t y1 = g.start_h + g.roi_h < H - 1 ? g.start_h + g.roi_h : H - 1;
    const int64_t x1 = g.start_w + g.roi_w < W - 1 ? g.start_w + g.roi_w : W - 1;
    if (y0 > y1 || x0 > x1) continue;
    f[1] = static_cast<int>(y0);
    f[2] = static_cast<int>(y1);
    f[3] = static_cast<int>(x0);
    f[4] = static_cast<int>(x1);
    f[0] = static_cast<int>(r.n);
  }
}

// Candidate bins [*b0, *b1] along one axis that may contain `cell` (a superset; checked exactly).
template <typename acc_t>
__device__ __forceinline__ void candidate_bins(int64_t cell, int64_t start, int64_t size, int pooled, int* b0,
                                               int* b1) {
  const acc_t bin = static_cast<acc_t>(size) / static_cast<acc_t>(pooled);
  const acc_t rel = static_cast<acc_t>(cell - start);
  const acc_t lo = (rel - acc_t(1)) / bin - acc_t(2);
  const acc_t hi = (rel + acc_t(1)) / bin + acc_t(1);
  *b0 = lo <= acc_t(0) ? 0 : (lo >= acc_t(pooled) ? pooled : static_cast<int>(lo));
  *b1 = hi >= acc_t(pooled - 1) ? pooled - 1 : (hi < acc_t(0) ? -1 : static_cast<int>(hi));
}

// How RoI Pool's gradient reaches a cell (the Rule of gather_tile): the bins of each listed RoI
// that contain the cell (candidate_bins, checked exactly with the forward's bin ranges), in bin
// order, each adding its gradient where its argmax is the cell.
template <typename scalar_t, typename acc_t>
struct PoolGatherRule {
  const acc_t* rois;
  const scalar_t* grad;  // (K, C, oh, ow) NCHW
  const int* argmax;     // (K, C, oh, ow) NCHW
  acc_t* grad_input;
  int64_t C, H, W;
  acc_t scale;
  int pooled_h, pooled_w;
  int64_t (*geometry)[kListCap];  // shared memory: start_h, start_w, roi_h, roi_w of each listed RoI

  __device__ __forceinline__ int64_t height(int) const { return H; }
  __device__ __forceinline__ int64_t width(int) const { return W; }
  __device__ __forceinline__ acc_t* output(int) const { return grad_input; }

  __device__ __forceinline__ void load(int slot, int64_t k, int) const {
    const acc_t* p = rois + k * 5;
    const roi::PoolGeometry g = roi::pool_geometry<acc_t>(p[1], p[2], p[3], p[4], scale);
    geometry[0][slot] = g.start_h;
    geometry[1][slot] = g.start_w;
    geometry[2][slot] = g.roi_h;
    geometry[3][slot] = g.roi_w;
  }

  __device__ __forceinline__ void add(int slot, int64_t k, int, int64_t y, int64_t x, int64_t c0, int64_t c_end,
                                      acc_t* acc) const {
    const int64_t sh = geometry[0][slot], sw = geometry[1][slot], rh = geometry[2][slot], rw = geometry[3][slot];
    const int64_t bins = static_cast<int64_t>(pooled_h) * pooled_w;
    const int self = static_cast<int>(y * W + x);
    int ph0, ph1, pw0, pw1;
    candidate_bins<acc_t>(y, sh, rh, pooled_h, &ph0, &ph1);
    candidate_bins<acc_t>(x, sw, rw, pooled_w, &pw0, &pw1);
    for (int ph = ph0; ph <= ph1; ++ph) {
      const roi::PoolRange ry = roi::pool_bin_range<acc_t>(sh, rh, ph, pooled_h, H);
      if (y < ry.begin || y >= ry.end) continue;
      for (int pw = pw0; pw <= pw1; ++pw) {
        const roi::PoolRange rx = roi::pool_bin_range<acc_t>(sw, rw, pw, pooled_w, W);
        if (x < rx.begin || x >= rx.end) continue;
#pragma unroll
        for (int j = 0; j < kChannelsPerThread; ++j) {
          if (c0 + j < c_end) {
            const int64_t o = (k * C + c0 + j) * bins + ph * pooled_w + pw;
            if (argmax[o] == self) acc[j] += static_cast<acc_t>(grad[o]);
          }
        }
      }
    }
  }
};

template <bool kChannelsLast, typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kGatherThreads)
    pool_gather(TileTable tt, const acc_t* rois, const int* footprints, int64_t K, int64_t N, int64_t C, int64_t H,
                int64_t W, acc_t scale, const scalar_t* grad, const int* argmax, int pooled_h, int pooled_w,
                acc_t* grad_input) {
  __shared__ int64_t s_geo[4][kListCap];
  PoolGatherRule<scalar_t, acc_t> rule{rois, grad, argmax, grad_input, C, H, W, scale, pooled_h, pooled_w, s_geo};
  gather_tile<kChannelsLast, index_t, acc_t>(rule, tt, footprints, K, N, C);
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                                 int64_t pooled_h, int64_t pooled_w) {
  checks::check_roi_pool_args(input, rois, spatial_scale, pooled_h, pooled_w);
  check_device(input, "input");
  const DeviceGuard guard(input.device());
  check_roi_values(rois, input.size(0), {spatial_scale}, at::Tensor(), false, pooled_h, pooled_w, true);
  TORCH_CHECK(input.size(2) * input.size(3) < std::numeric_limits<int32_t>::max(),
              "roi_pool: the input plane is too large for an int32 argmax");
  const bool cl = is_channels_last(input);
  const at::Tensor x = input.contiguous(layout_of(input));
  const int64_t K = rois.size(0), N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const auto opts = x.options().memory_format(layout_of(input));
  // Every element is written: no NaN fill under deterministic algorithms.
  at::Tensor out = empty_unfilled({K, C, pooled_h, pooled_w}, opts);
  at::Tensor argmax = empty_unfilled({K, C, pooled_h, pooled_w}, opts.dtype(at::kInt));
  if (out.numel() == 0) return {out, argmax};
  const at::Tensor rois_acc = rois.to(acc_dtype(x.scalar_type())).contiguous();
  const bool use_int64 = needs_int64({out.numel(), x.numel()});
  cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "roi_pool_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    with_index_type(use_int64, [&](auto index_tag) {
      using index_t = decltype(index_tag);
      const auto launch = [&](auto cl_tag) {
        MASKRCNN_LAUNCH(blocks_for(out.numel()), kThreads, 0, stream,
                        pool_forward<decltype(cl_tag)::value, scalar_t, acc_t, index_t>)(
            x.data_ptr<scalar_t>(), N, C, H, W, rois_acc.data_ptr<acc_t>(), static_cast<acc_t>(spatial_scale),
            out.numel(), pooled_h, pooled_w, out.data_ptr<scalar_t>(), argmax.data_ptr<int>());
        MASKRCNN_LAUNCH_CHECK();
      };
      cl ? launch(std::true_type{}) : launch(std::false_type{});
    });
  });
  return {out, argmax};
}

at::Tensor roi_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                  const at::Tensor& argmax, double spatial_scale, int64_t pooled_h, int64_t pooled_w) {
  checks::check_roi_pool_args(input, rois, spatial_scale, pooled_h, pooled_w);
  check_device(input, "input");
  checks::check_grad(grad, rois.size(0), input, pooled_h, pooled_w);
  checks::check_argmax(argmax, grad);
  // No value check (a host synchronisation per step): the kernels skip bad RoIs and argmax
  // values outside the plane without reading or writing out of bounds.
  const int64_t K = rois.size(0), N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const DeviceGuard guard(input.device());
  const at::ScalarType dtype = input.scalar_type(), acc = acc_dtype(dtype);
  const bool cl = is_channels_last(input);
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  // In the input's layout: the gather writes every element once (no NaN fill under deterministic
  // algorithms), the atomics need zeros (not at::zeros(sizes, options), which drops the layout).
  const auto opts = input.options().dtype(acc).memory_format(layout_of(input));
  at::Tensor buf = deterministic ? empty_unfilled(input.sizes(), opts) : at::empty(input.sizes(), opts).zero_();
  if (grad.numel() == 0 || input.numel() == 0) {
    if (deterministic) buf.zero_();
    return buf.to(dtype);
  }
  const at::Tensor rois_acc = rois.to(acc).contiguous();
  const bool use_int64 = needs_int64({grad.numel(), input.numel()});
  cudaStream_t stream = current_stream();
  // The atomic path reads grad and argmax in the input's layout (no copy for the forward's own
  // outputs), so every offset is below grad.numel().
  const at::Tensor gl = deterministic ? at::Tensor() : grad.contiguous(layout_of(input));
  const at::Tensor al = deterministic ? at::Tensor() : argmax.contiguous(layout_of(input));
  at::Tensor footprints, g, am;
  TileTable tt{};
  if (deterministic) {
    TORCH_CHECK(N < std::numeric_limits<int32_t>::max() && (C + kChannelGroup - 1) / kChannelGroup <= 65535,
                "input too large for the deterministic RoI Pool backward");
    footprints = empty_unfilled({K, kFootprintInts}, rois_acc.options().dtype(at::kInt));
    g = grad.contiguous();  // the gather reads grad and argmax as NCHW
    am = argmax.contiguous();
    tt.num_levels = 1;
    tt.tile_base[0] = 0;
    tt.tiles_h[0] = (H + kTileH - 1) / kTileH;
    tt.tiles_w[0] = (W + kTileW - 1) / kTileW;
    tt.tile_base[1] = N * tt.tiles_h[0] * tt.tiles_w[0];
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roi_pool_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    const acc_t* rois_ptr = rois_acc.data_ptr<acc_t>();
    with_index_type(use_int64, [&](auto index_tag) {
      using index_t = decltype(index_tag);
      const auto launch = [&](auto cl_tag) {
        constexpr bool kCL = decltype(cl_tag)::value;
        if (deterministic) {
          MASKRCNN_LAUNCH(blocks_for(K), kThreads, 0, stream, pool_footprints<acc_t>)(
              rois_ptr, K, N, H, W, static_cast<acc_t>(spatial_scale), footprints.data_ptr<int>());
          MASKRCNN_LAUNCH_CHECK();
          const dim3 grid(static_cast<unsigned int>(tt.tile_base[1]),
                          static_cast<unsigned int>((C + kChannelGroup - 1) / kChannelGroup));
          if (tt.tile_base[1] > 0) {
            MASKRCNN_LAUNCH(grid, kGatherThreads, 0, stream, pool_gather<kCL, scalar_t, acc_t, index_t>)(
                tt, rois_ptr, footprints.data_ptr<int>(), K, N, C, H, W, static_cast<acc_t>(spatial_scale),
                g.data_ptr<scalar_t>(), am.data_ptr<int>(), pooled_h, pooled_w, buf.data_ptr<acc_t>());
            MASKRCNN_LAUNCH_CHECK();
          }
        } else {
          MASKRCNN_LAUNCH(blocks_for(grad.numel()), kThreads, 0, stream,
                          pool_backward_atomic<kCL, scalar_t, acc_t, index_t>)(
              gl.data_ptr<scalar_t>(), gl.stride(0), gl.stride(1), gl.stride(2), gl.stride(3), al.data_ptr<int>(),
              al.stride(0), al.stride(1), al.stride(2), al.stride(3), rois_ptr, N, C, H, W, grad.numel(), pooled_h,
              pooled_w, buf.data_ptr<acc_t>());
          MASKRCNN_LAUNCH_CHECK();
        }
      };
      cl ? launch(std::true_type{}) : launch(std::false_type{});
    });
  });
  return acc == dtype ? buf : buf.to(dtype);
}

}  // namespace

MASKRCNN_CUDA_LIBRARY_IMPL(m) {
  m.impl("roi_pool", TORCH_FN(roi_pool_cuda));
  m.impl("_roi_pool_backward", TORCH_FN(roi_pool_backward_cuda));
}

}  // namespace cuda
}  // namespace maskrcnn
