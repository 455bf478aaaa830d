// Building blocks of the deterministic (gather) backward passes of RoI Align and RoI Pool.
//
// Why gather: the atomic backward scatters every sample's gradient into the input with float
// atomicAdd, whose summation order changes from run to run. The gather form inverts the loop:
// each thread owns one input cell for a few channels and sums, in a fixed order (RoI index, then
// sample row, then sample column), every contribution that lands on its cell, then writes the
// cell once. No atomics, no per-sample tensors, and the result is bitwise reproducible.
//
// To keep it fast, the input is cut into tiles of kTileH x kTileW cells per (level, image). A
// block owns one tile and a group of channels; it first collects, in increasing RoI index, the
// RoIs whose footprint (a conservative cell box computed once per RoI) overlaps the tile, into a
// list in shared memory, so each thread only visits RoIs near its cell. The scan is a block-wide
// order-preserving stream compaction over the K footprints (ballot + popcount).
#pragma once

#include <cstdint>

#include "cuda/roi_cuda_common.cuh"

namespace maskrcnn {
namespace cuda {

constexpr int kTileH = 8;
constexpr int kTileW = 32;                       // one warp along a row: coalesced NCHW writes
constexpr int kGatherThreads = kTileH * kTileW;  // 256
constexpr int kListCap = kGatherThreads;         // RoIs held in shared memory per round
constexpr int kFootprintInts = 5;                // key, y0, y1, x0, x1
constexpr int kChannelsPerThread = 8;            // a thread's cell is summed for 8 channels at once
constexpr int kChannelGroup = 64;                // channels per block (8 passes of 8): gridDim.y groups

// The tiles of every (level, image), numbered level by level, image by image, row by row.
struct TileTable {
  int64_t tile_base[kMaxLevels + 1];  // first tile of each level; tile_base[L] = total
  int64_t tiles_h[kMaxLevels];
  int64_t tiles_w[kMaxLevels];
  int num_levels;
};

struct TileRef {
  int level;
  int64_t n;
  int64_t y0, x0;  // first cell of the tile
  int key;         // level * N + n, as in the footprints
};

__device__ __forceinline__ TileRef locate_tile(const TileTable& tt, int64_t tile, int64_t batch) {
  TileRef t;
  int l = 0;
  while (l + 1 < tt.num_levels && tile >= tt.tile_base[l + 1]) ++l;
  const int64_t rem = tile - tt.tile_base[l];
  const int64_t per_image = tt.tiles_h[l] * tt.tiles_w[l];
  t.level = l;
  t.n = rem / per_image;
  const int64_t r = rem % per_image;
  t.y0 = (r / tt.tiles_w[l]) * kTileH;
  t.x0 = (r % tt.tiles_w[l]) * kTileW;
  t.key = static_cast<int>(l * batch + t.n);
  return t;
}

// Cell range [lo, hi] of a footprint from the extreme sample coordinates a, b along one axis
// of `size` cells, widened by two cells (one for the bilinear neighbour, one for rounding).
// Returns false when no sample can touch the map.
template <typename acc_t>
__device__ __forceinline__ bool footprint_axis(acc_t a, acc_t b, int64_t size, int* lo, int* hi) {
  const acc_t mn = (a < b ? a : b) - acc_t(2);
  const acc_t mx = (a < b ? b : a) + acc_t(2);
  if (!(mx >= acc_t(0) && mn <= static_cast<acc_t>(size - 1))) return false;  // also NaN
  *lo = mn <= acc_t(0) ? 0 : static_cast<int>(floor(mn));
  *hi = mx >= static_cast<acc_t>(size - 1) ? static_cast<int>(size - 1) : static_cast<int>(ceil(mx));
  return true;
}

// Block-wide, order-preserving collection of the RoIs k in [*from, K) whose footprint has `key`
// and overlaps rows [y0, y1] and columns [x0, x1], into list[0, kListCap). Stops before a chunk
// of kGatherThreads RoIs that would not fit; *from is then where to resume (K when done).
// Every thread of the block must call it; returns the number collected (the same everywhere).
__device__ __forceinline__ int collect_rois(const int* footprints, int64_t K, int key, int y0, int y1, int x0, int x1,
                                            int64_t* from, int* list, int* warp_counts) {
  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  constexpr int kWarps = kGatherThreads / 32;
  int count = 0;
  int64_t start = *from;
  while (start < K) {
    const int64_t k = start + tid;
    bool hit = false;
    if (k < K) {
      const int* f = footprints + k * kFootprintInts;
      hit = f[0] == key && f[1] <= y1 && f[2] >= y0 && f[3] <= x1 && f[4] >= x0;
    }
    const unsigned int mask = __ballot_sync(0xffffffffu, hit);
    if (lane == 0) warp_counts[warp] = __popc(mask);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < kWarps; ++w) {
      const int c = warp_counts[w];
      before += w < warp ? c : 0;
      total += c;
    }
    const bool fits = count + total <= kListCap;  // same value in every thread
    if (fits && hit) list[count + before + __popc(mask & ((1u << lane) - 1u))] = static_cast<int>(k);
    __syncthreads();  // warp_counts is rewritten by the next chunk
    if (!fits) break;
    count += total;
    start += kGatherThreads;
  }
  *from = start < K ? start : K;
  return count;
}

// Candidate sample indices j in [*j0, *j1] (j = bin * grid + i) along one axis whose coordinate
// can lie within one cell of `cell`: the inverse of sample_coord, widened for rounding. The caller
// checks every candidate exactly with axis_interp, so the range only has to be a superset.
template <typename acc_t>
__device__ __forceinline__ void candidate_samples(int64_t cell, acc_t start, acc_t bin, int pooled, int grid,
                                                  int64_t* j0, int64_t* j1) {
  const int64_t n = static_cast<int64_t>(pooled) * grid;  // past 2^31 for huge adaptive RoIs
  *j0 = 0;
  *j1 = n - 1;
  const acc_t step = bin / static_cast<acc_t>(grid);
  if (!(step > acc_t(0)) || !isfinite(step)) return;  // degenerate RoI: try every sample
  const acc_t eps = sizeof(acc_t) == 4 ? acc_t(1.2e-7) : acc_t(2.3e-16);
  const acc_t tol = (fabs(start) + fabs(bin) * pooled + acc_t(2)) * eps * acc_t(8);
  const acc_t c = static_cast<acc_t>(cell);
  const acc_t lo = (c - acc_t(1) - tol - start) / step - acc_t(1.5);
  const acc_t hi = (c + acc_t(1) + tol - start) / step + acc_t(0.5);
  if (lo > acc_t(0)) *j0 = lo >= static_cast<acc_t>(n) ? n : static_cast<int64_t>(floor(lo));
  if (hi < static_cast<acc_t>(n - 1)) *j1 = hi < acc_t(0) ? -1 : static_cast<int64_t>(ceil(hi));
}

// Weight of `cell` in the linear interpolation `a` (both neighbours may be the cell at the border).
template <typename acc_t>
__device__ __forceinline__ bool cell_weight(const roi::AxisInterp<acc_t>& a, int64_t cell, acc_t* w) {
  if (!a.valid) return false;
  bool touches = false;
  acc_t s = 0;
  if (a.low == cell) {
    s += a.w_low;
    touches = true;
  }
  if (a.high == cell) {
    s += a.w_high;
    touches = true;
  }
  *w = s;
  return touches;
}

// The skeleton of the gather kernels (RoI Align's and RoI Pool's), run by every thread of a
// block of kGatherThreads. Block (blockIdx.x, blockIdx.y) owns tile blockIdx.x of the TileTable
// and the channels [blockIdx.y * kChannelGroup, + kChannelGroup); thread t owns cell t of the
// tile (row-major, kTileW per row). For each pass of kChannelsPerThread channels it collects, in
// increasing RoI index and in rounds of at most kListCap, the RoIs whose footprint overlaps the
// tile; threads 0..count-1 each call `rule.load(slot, k, level)`, which puts RoI k's geometry in
// the rule's shared memory; then every thread whose cell lies on the map calls
// `rule.add(slot, k, level, y, x, c0, c_end, acc)`, which adds RoI k's contributions to its cell for
// channels [c0, min(c0 + kChannelsPerThread, c_end)) in a fixed order. Each cell is written once,
// into rule.output(level), NCHW or channels_last. The Rule also answers height(level), width(level).
template <bool kChannelsLast, typename index_t, typename acc_t, typename Rule>
__device__ __forceinline__ void gather_tile(Rule& rule, const TileTable& tt, const int* footprints, int64_t K,
                                            int64_t batch, int64_t channels) {
  __shared__ int list[kListCap];
  __shared__ int warp_counts[kGatherThreads / 32];
  const TileRef tile = locate_tile(tt, blockIdx.x, batch);
  const int64_t H = rule.height(tile.level), W = rule.width(tile.level);
  const int64_t y = tile.y0 + threadIdx.x / kTileW;
  const int64_t x = tile.x0 + threadIdx.x % kTileW;
  const bool inside = y < H && x < W;
  const int ty1 = static_cast<int>(min64(tile.y0 + kTileH, H) - 1);
  const int tx1 = static_cast<int>(min64(tile.x0 + kTileW, W) - 1);
  const int64_t c_begin = static_cast<int64_t>(blockIdx.y) * kChannelGroup;
  const int64_t c_end = min64(c_begin + kChannelGroup, channels);

  bool list_is_all = false;  // the list of the previous channel pass holds every RoI of the tile
  int count = 0;
  for (int64_t c0 = c_begin; c0 < c_end; c0 += kChannelsPerThread) {
    acc_t acc[kChannelsPerThread];
#pragma unroll
    for (int j = 0; j < kChannelsPerThread; ++j) acc[j] = acc_t(0);
    int64_t from = 0;
    const bool done = list_is_all;
    while (true) {
      if (!done) {
        const bool first_round = from == 0;
        count = collect_rois(footprints, K, tile.key, static_cast<int>(tile.y0), ty1, static_cast<int>(tile.x0), tx1,
                             &from, list, warp_counts);
        list_is_all = first_round && from == K;
        const int slot = static_cast<int>(threadIdx.x);
        if (slot < count) rule.load(slot, list[slot], tile.level);
        __syncthreads();  // the geometry of every listed RoI is in shared memory
      }
      for (int e = 0; inside && e < count; ++e) rule.add(e, list[e], tile.level, y, x, c0, c_end, acc);
      if (done || from >= K) break;
      __syncthreads();  // the list is refilled
    }
    if (inside) {
      acc_t* out = rule.output(tile.level);
      const index_t C = static_cast<index_t>(channels);
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

}  // namespace cuda
}  // namespace maskrcnn
