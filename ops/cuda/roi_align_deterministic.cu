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

template <bool kMax, bool kChannelsLast, typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kGatherThreads)
    align_gather(LevelTable<scalar_t, acc_t> lv, TileTable tt, const acc_t* rois, const int* footprints, int64_t K,
                 const scalar_t* grad_cl, const int* winners, int pooled_h, int pooled_w, int sampling_ratio,
                 bool aligned) {
  __shared__ int list[kListCap];
  __shared__ int warp_counts[kGatherThreads / 32];
  __shared__ acc_t s_start_h[kListCap], s_start_w[kListCap], s_bin_h[kListCap], s_bin_w[kListCap];
  __shared__ acc_t s_divisor[kListCap];
  __shared__ int s_grid_h[kListCap], s_grid_w[kListCap];

  const TileRef tile = locate_tile(tt, blockIdx.x, lv.batch);
  const int64_t C = lv.channels;
  const int64_t H = lv.height[tile.level], W = lv.width[tile.level];
  const int64_t y = tile.y0 + threadIdx.x / kTileW;
  const int64_t x = tile.x0 + threadIdx.x % kTileW;
  const bool inside = y < H && x < W;
  const int ty1 = static_cast<int>(min64(tile.y0 + kTileH, H) - 1);
  const int tx1 = static_cast<int>(min64(tile.x0 + kTileW, W) - 1);
  const int64_t c_begin = static_cast<int64_t>(blockIdx.y) * kChannelGroup;
  const int64_t c_end = min64(c_begin + kChannelGroup, C);
  const acc_t scale = lv.scale[tile.level];

  bool list_is_all = false;  // the list from the previous channel pass holds every RoI
  int count = 0;
  for (int64_t c0 = c_begin; c0 < c_end; c0 += kChannelsPerThread) {
    acc_t acc[kChannelsPerThread];
#pragma unroll
    for (int j = 0; j < kChannelsPerThread; ++j) acc[j] = acc_t(0);
    int64_t from = 0;
    bool done = list_is_all;
    while (true) {
      if (!done) {
        const bool first_round = from == 0;
        count = collect_rois(footprints, K, tile.key, static_cast<int>(tile.y0), ty1, static_cast<int>(tile.x0), tx1,
                             &from, list, warp_counts);
        list_is_all = first_round && from == K;
        if (threadIdx.x < count) {
          const acc_t* p = rois + static_cast<int64_t>(list[threadIdx.x]) * 5;
          const roi::AlignGeometry<acc_t> g =
              roi::align_geometry<acc_t>(p[1], p[2], p[3], p[4], scale, pooled_h, pooled_w, sampling_ratio, aligned);
          s_start_h[threadIdx.x] = g.start_h;
          s_start_w[threadIdx.x] = g.start_w;
          s_bin_h[threadIdx.x] = g.bin_h;
          s_bin_w[threadIdx.x] = g.bin_w;
          s_grid_h[threadIdx.x] = g.grid_h;
          s_grid_w[threadIdx.x] = g.grid_w;
          s_divisor[threadIdx.x] = static_cast<acc_t>(g.count);
        }
        __syncthreads();
      }
      for (int e = 0; inside && e < count; ++e) {
        const int64_t k = list[e];
        const acc_t start_h = s_start_h[e], start_w = s_start_w[e];
        const acc_t bin_h = s_bin_h[e], bin_w = s_bin_w[e];
        const int gh = s_grid_h[e], gw = s_grid_w[e];
        const acc_t divisor = s_divisor[e];
        int64_t jy0, jy1, jx0, jx1;
        candidate_samples(y, start_h, bin_h, pooled_h, gh, &jy0, &jy1);
        candidate_samples(x, start_w, bin_w, pooled_w, gw, &jx0, &jx1);
        for (int64_t jy = jy0; jy <= jy1; ++jy) {
          const int ph = static_cast<int>(jy / gh), iy = static_cast<int>(jy % gh);
          acc_t wy;
          if (!cell_weight(roi::axis_interp(roi::sample_coord(start_h, bin_h, ph, iy, gh), H), y, &wy)) continue;
          for (int64_t jx = jx0; jx <= jx1; ++jx) {
            const int pw = static_cast<int>(jx / gw), ix = static_cast<int>(jx % gw);
            acc_t wx;
            if (!cell_weight(roi::axis_interp(roi::sample_coord(start_w, bin_w, pw, ix, gw), W), x, &wx)) continue;
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
                  acc[j] += (gv / divisor) * w;  // the order of the atomic path and the CPU
                }
              }
            }
          }
        }
      }
      if (done || from >= K) break;
      __syncthreads();  // the list is refilled
    }
    if (inside) {
      acc_t* out = lv.grad[tile.level];
#pragma unroll
      for (int j = 0; j < kChannelsPerThread; ++j) {
        const int64_t c = c0 + j;
        if (c < c_end) {
          const index_t o = kChannelsLast ? ((static_cast<index_t>(tile.n) * H + y) * W + x) * C + c
                                          : ((static_cast<index_t>(tile.n) * C + c) * H + y) * W + x;
          out[o] = acc[j];
        }
      }
    }
    __syncthreads();  // the next pass may refill the list
  }
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
