// Deterministic backward of (multi-level) RoI Align: the gather formulation of roi_gather.cuh.
//
// Three launches, no host synchronisation:
//   1. align_footprints: per RoI, the key (level * N + image) and a conservative cell box of the
//      cells its sample points can touch (key -1 for a skipped RoI).
//   2. (max mode) align_winners: per (RoI, bin, channel) the index of the winning sample, found
//      with the forward's own align_bin so that forward and backward agree; int32, one per output
//      element (not per sample).
//   3. align_gather: a block owns a tile of kTileH x kTileW cells of one (level, image) and 64
//      channels; it collects the RoIs overlapping the tile (in RoI order) and each thread sums,
//      for its cell and 8 channels, the contributions of those RoIs' sample points in the order
//      (RoI, sample row, sample column), then writes each cell exactly once.
// The gradient is read from a channels_last copy, so the 8 channels of a bin are contiguous.
#include <ATen/Dispatch.h>

#include <type_traits>

#include "cuda/roi_align_cuda.h"
#include "cuda/roi_cuda_host.cuh"
#include "cuda/roi_gather.cuh"

namespace maskrcnn {
namespace cuda {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void align_footprints(LevelTable<scalar_t, acc_t> lv, const acc_t* rois, const int64_t* levels, int64_t K,
                                 int pooled_h, int pooled_w, int sampling_ratio, bool aligned, int* footprints) {
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < K;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int* f = footprints + k * kFootprintInts;
    f[0] = -1;
    const RoiRef<acc_t> r = load_roi(rois, levels, k, lv.batch, lv.num_levels);
    if (!r.ok) continue;
    const roi::AlignGeometry<acc_t> g = roi::align_geometry<acc_t>(r.x1, r.y1, r.x2, r.y2, lv.scale[r.level], pooled_h,
                                                                   pooled_w, sampling_ratio, aligned);
    if (g.grid_h == 0 || g.grid_w == 0) continue;
    int y0, y1, x0, x1;
    const bool rows = footprint_axis(roi::sample_coord(g.start_h, g.bin_h, 0, 0, g.grid_h),
                                     roi::sample_coord(g.start_h, g.bin_h, pooled_h - 1, g.grid_h - 1, g.grid_h),
                                     lv.height[r.level], &y0, &y1);
    const bool cols = footprint_axis(roi::sample_coord(g.start_w, g.bin_w, 0, 0, g.grid_w),
                                     roi::sample_coord(g.start_w, g.bin_w, pooled_w - 1, g.grid_w - 1, g.grid_w),
                                     lv.width[r.level], &x0, &x1);
    if (!rows || !cols) continue;
    f[1] = y0;
    f[2] = y1;
    f[3] = x0;
    f[4] = x1;
    f[0] = static_cast<int>(r.level * lv.batch + r.n);
  }
}

// winners[k, ph, pw, c] (channels fastest): the winning sample of each bin in max mode.
template <bool kChannelsLast, typename scalar_t, typename acc_t, typename index_t>
__global__ void align_winners(LevelTable<scalar_t, acc_t> lv, const acc_t* rois, const int64_t* levels, index_t total,
                              int pooled_h, int pooled_w, int sampling_ratio, bool aligned, int* winners) {
  const index_t channels = static_cast<index_t>(lv.channels);
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const OutputIndex<index_t> o = decode_output_index<true>(i, channels, pooled_h, pooled_w);
    int winner = -1;
    const RoiRef<acc_t> r = load_roi(rois, levels, o.k, lv.batch, lv.num_levels);
    if (r.ok) {
      const int64_t H = lv.height[r.level], W = lv.width[r.level];
      const roi::AlignGeometry<acc_t> g = roi::align_geometry<acc_t>(r.x1, r.y1, r.x2, r.y2, lv.scale[r.level],
                                                                     pooled_h, pooled_w, sampling_ratio, aligned);
      const PlaneView<index_t> p = plane_view<kChannelsLast, index_t>(r.n, o.c, lv.channels, H, W);
      align_bin<true>(lv.data[r.level] + p.offset, p.row, p.col, H, W, g, o.ph, o.pw, &winner);
    }
    winners[i] = winner;
  }
}

// How RoI Align's gradient reaches a cell (the Rule of gather_tile): the samples of each listed
// RoI that can touch the cell (candidate_samples), checked exactly with the forward's
// interpolation, in the order (sample row, sample column), each adding its bin's gradient times
// its weight on the cell (divided by the bin's sample count in avg mode; max mode only for the
// bin's winning sample).
template <bool kMax, typename scalar_t, typename acc_t>
struct AlignGatherRule {
  const LevelTable<scalar_t, acc_t>& lv;
  const acc_t* rois;
  const scalar_t* grad_cl;  // (K, oh, ow, C): the C values of a bin contiguous
  const int* winners;       // max mode: (K, oh, ow, C) winning sample of each bin
  int pooled_h, pooled_w, sampling_ratio;
  bool aligned;
  // Shared memory, one slot per listed RoI.
  acc_t *start_h, *start_w, *bin_h, *bin_w, *divisor;
  int *grid_h, *grid_w;

  __device__ __forceinline__ int64_t height(int level) const { return lv.height[level]; }
  __device__ __forceinline__ int64_t width(int level) const { return lv.width[level]; }
  __device__ __forceinline__ acc_t* output(int level) const { return lv.grad[level]; }

  __device__ __forceinline__ void load(int slot, int64_t k, int level) const {
    const acc_t* p = rois + k * 5;
    const roi::AlignGeometry<acc_t> g = roi::align_geometry<acc_t>(p[1], p[2], p[3], p[4], lv.scale[level], pooled_h,
                                                                   pooled_w, sampling_ratio, aligned);
    start_h[slot] = g.start_h;
    start_w[slot] = g.start_w;
    bin_h[slot] = g.bin_h;
    bin_w[slot] = g.bin_w;
    grid_h[slot] = g.grid_h;
    grid_w[slot] = g.grid_w;
    divisor[slot] = static_cast<acc_t>(g.count);
  }

  __device__ __forceinline__ void add(int slot, int64_t k, int level, int64_t y, int64_t x, int64_t c0, int64_t c_end,
                                      acc_t* acc) const {
    const int64_t C = lv.channels, H = lv.height[level], W = lv.width[level];
    const acc_t sh = start_h[slot], sw = start_w[slot], bh = bin_h[slot], bw = bin_w[slot], div = divisor[slot];
    const int gh = grid_h[slot], gw = grid_w[slot];
    int64_t jy0, jy1, jx0, jx1;
    candidate_samples(y, sh, bh, pooled_h, gh, &jy0, &jy1);
    candidate_samples(x, sw, bw, pooled_w, gw, &jx0, &jx1);
    for (int64_t jy = jy0; jy <= jy1; ++jy) {
      const int ph = static_cast<int>(jy / gh), iy = static_cast<int>(jy % gh);
      acc_t wy;
      if (!cell_weight(roi::axis_interp(roi::sample_coord(sh, bh, ph, iy, gh), H), y, &wy)) continue;
      for (int64_t jx = jx0; jx <= jx1; ++jx) {
        const int pw = static_cast<int>(jx / gw), ix = static_cast<int>(jx % gw);
        acc_t wx;
        if (!cell_weight(roi::axis_interp(roi::sample_coord(sw, bw, pw, ix, gw), W), x, &wx)) continue;
        const acc_t w = wy * wx;
        const int64_t bin = (k * pooled_h + ph) * pooled_w + pw;
        const scalar_t* g = grad_cl + bin * C + c0;
#pragma unroll
        for (int j = 0; j < kChannelsPerThread; ++j) {
          if (c0 + j < c_end) {
            const acc_t gv = static_cast<acc_t>(g[j]);
            if (kMax) {
              if (winners[bin * C + c0 + j] == iy * gw + ix) acc[j] += gv * w;
            } else {
              acc[j] += (gv / div) * w;  // the order of the atomic path and the CPU kernel
            }
          }
        }
      }
    }
  }
};

template <bool kMax, bool kChannelsLast, typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kGatherThreads)
    align_gather(LevelTable<scalar_t, acc_t> lv, TileTable tt, const acc_t* rois, const int* footprints, int64_t K,
                 const scalar_t* grad_cl, const int* winners, int pooled_h, int pooled_w, int sampling_ratio,
                 bool aligned) {
  __shared__ acc_t s_start_h[kListCap], s_start_w[kListCap], s_bin_h[kListCap], s_bin_w[kListCap];
  __shared__ acc_t s_divisor[kListCap];
  __shared__ int s_grid_h[kListCap], s_grid_w[kListCap];
  AlignGatherRule<kMax, scalar_t, acc_t> rule{lv,       rois,           grad_cl,   winners,   pooled_h,
                                              pooled_w, sampling_ratio, aligned,   s_start_h, s_start_w,
                                              s_bin_h,  s_bin_w,        s_divisor, s_grid_h,  s_grid_w};
  gather_tile<kChannelsLast, index_t, acc_t>(rule, tt, footprints, K, lv.batch, lv.channels);
}

}  // namespace

void roi_align_backward_gather(const at::Tensor& grad_cl, const std::vector<at::Tensor>& features,
                               const std::vector<double>& scales, const at::Tensor& rois_acc, const at::Tensor& levels,
                               const std::vector<at::Tensor>& out, int64_t pooled_h, int64_t pooled_w,
                               int64_t sampling_ratio, bool aligned, bool is_max) {
  const int64_t K = rois_acc.size(0), N = features[0].size(0), C = features[0].size(1);
  const int L = static_cast<int>(features.size());
  TORCH_CHECK(static_cast<int64_t>(L) * N < std::numeric_limits<int32_t>::max(),
              "too many images for the deterministic RoI Align backward");
  TORCH_CHECK((C + kChannelGroup - 1) / kChannelGroup <= 65535,
              "too many channels for the deterministic RoI Align backward: ", C);
  TileTable tt{};
  tt.num_levels = L;
  tt.tile_base[0] = 0;
  for (int l = 0; l < L; ++l) {
    TORCH_CHECK(features[l].size(2) < std::numeric_limits<int32_t>::max() &&
                    features[l].size(3) < std::numeric_limits<int32_t>::max(),
                "feature map too large for the deterministic RoI Align backward");
    tt.tiles_h[l] = (features[l].size(2) + kTileH - 1) / kTileH;
    tt.tiles_w[l] = (features[l].size(3) + kTileW - 1) / kTileW;
    tt.tile_base[l + 1] = tt.tile_base[l] + N * tt.tiles_h[l] * tt.tiles_w[l];
  }
  const int64_t tiles = tt.tile_base[L];
  if (tiles == 0) return;  // no cell on any level: nothing to write (and a grid of 0 blocks is invalid)
  const int64_t* levels_ptr = levels.defined() ? levels.data_ptr<int64_t>() : nullptr;
  const bool cl = is_channels_last(features[0]);
  int64_t max_numel = grad_cl.numel();
  for (const auto& f : features) max_numel = std::max<int64_t>(max_numel, f.numel());
  const bool use_int64 = needs_int64({max_numel});
  at::Tensor footprints = empty_unfilled({K, kFootprintInts}, rois_acc.options().dtype(at::kInt));
  at::Tensor winners;
  if (is_max) winners = empty_unfilled({grad_cl.numel()}, rois_acc.options().dtype(at::kInt));
  cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features[0].scalar_type(), "roi_align_backward_gather", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        auto lv = make_level_table<scalar_t, acc_t>(features, scales);
        for (int l = 0; l < L; ++l) lv.grad[l] = out[l].data_ptr<acc_t>();
        const acc_t* rois_ptr = rois_acc.data_ptr<acc_t>();
        MASKRCNN_LAUNCH(blocks_for(K), kThreads, 0, stream, align_footprints<scalar_t, acc_t>)(
            lv, rois_ptr, levels_ptr, K, pooled_h, pooled_w, sampling_ratio, aligned, footprints.data_ptr<int>());
        MASKRCNN_LAUNCH_CHECK();
        with_index_type(use_int64, [&](auto index_tag) {
          using index_t = decltype(index_tag);
          const auto launch = [&](auto max_tag, auto cl_tag) {
            constexpr bool kMax = decltype(max_tag)::value;
            constexpr bool kCL = decltype(cl_tag)::value;
            if (kMax) {
              MASKRCNN_LAUNCH(blocks_for(grad_cl.numel()), kThreads, 0, stream,
                              align_winners<kCL, scalar_t, acc_t, index_t>)(lv, rois_ptr, levels_ptr, grad_cl.numel(),
                                                                            pooled_h, pooled_w, sampling_ratio, aligned,
                                                                            winners.data_ptr<int>());
              MASKRCNN_LAUNCH_CHECK();
            }
            const dim3 grid(static_cast<unsigned int>(tiles),
                            static_cast<unsigned int>((C + kChannelGroup - 1) / kChannelGroup));
            MASKRCNN_LAUNCH(grid, kGatherThreads, 0, stream, align_gather<kMax, kCL, scalar_t, acc_t, index_t>)(
                lv, tt, rois_ptr, footprints.data_ptr<int>(), K, grad_cl.data_ptr<scalar_t>(),
                kMax ? winners.data_ptr<int>() : nullptr, pooled_h, pooled_w, sampling_ratio, aligned);
            MASKRCNN_LAUNCH_CHECK();
          };
          if (is_max) {
            cl ? launch(std::true_type{}, std::true_type{}) : launch(std::true_type{}, std::false_type{});
          } else {
            cl ? launch(std::false_type{}, std::true_type{}) : launch(std::false_type{}, std::false_type{});
          }
        });
      });
}

}  // namespace cuda
}  // namespace maskrcnn
