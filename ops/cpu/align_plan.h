// Per-RoI, per-axis precomputation of RoI Align on the CPU.
//
// RoI Align is separable: sample (iy, ix) of a bin has value
//   valid_y * valid_x * sum over the four neighbours of (wy * wx) * f(y, x),
// so everything that does not depend on the channel is computed once per RoI and axis, in
// O(pooled * grid) memory, and reused across all channels:
//   * `samples`: the interpolation (neighbours and weights) of every VALID sample point of each
//     bin. The coordinates of a bin's samples are monotone in the sample index, so its valid
//     samples form one contiguous run [lo, lo + n) of the grid, found by binary search. Work is
//     then proportional to the samples that fall on the map, which keeps huge boxes with
//     adaptive sampling (a grid of thousands per axis) cheap.
//   * `taps` (average mode only): the same, merged per cell: the total weight of each cell that
//     a bin's samples touch. A 2x2-sampled bin of 2 cells touches 3 cells per axis instead of 4
//     neighbour slots, so the average reads 9 cells instead of 16.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "roi_common.h"

namespace maskrcnn {
namespace cpu {

template <typename T>
struct AxisPlan {
  int grid = 0;                             // sample points per bin along this axis
  std::vector<roi::AxisInterp<T>> samples;  // valid samples, bin after bin, in grid order
  std::vector<int> sample_begin;            // bin p: samples [sample_begin[p], sample_begin[p+1])
  std::vector<int> first_valid;             // bin p: grid index of its first valid sample
  std::vector<int64_t> tap_index;           // merged taps: cell index along the axis
  std::vector<T> tap_weight;                // merged taps: summed interpolation weight
  std::vector<int> tap_begin;               // bin p: taps [tap_begin[p], tap_begin[p+1])
  int64_t tap_lo = 0, tap_hi = 0;           // cells [tap_lo, tap_hi) span all taps of all bins

  int num_valid(int p) const { return sample_begin[p + 1] - sample_begin[p]; }
};

// First i in [lo, hi) with pred(i) true, for a predicate that is false then true; hi if none.
template <typename Pred>
int first_true_index(int lo, int hi, const Pred& pred) {
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (pred(mid)) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// Fills `plan` for one axis of one RoI: `pooled` bins of size `bin_size` starting at `start`,
// `grid` samples per bin, on an axis of `size` cells. `with_taps` builds the merged taps
// (average mode); otherwise only the samples (max mode).
template <typename T>
void build_axis_plan(T start, T bin_size, int pooled, int grid, int64_t size, bool with_taps, AxisPlan<T>& plan) {
  plan.grid = grid;
  plan.samples.clear();
  plan.sample_begin.resize(pooled + 1);
  plan.first_valid.resize(pooled);
  const T lower = T(-1);
  const T upper = static_cast<T>(size);
  for (int p = 0; p < pooled; ++p) {
    plan.sample_begin[p] = static_cast<int>(plan.samples.size());
    auto coord = [&](int i) { return roi::sample_coord(start, bin_size, p, i, grid); };
    // Valid means lower <= coord <= upper (axis_interp's rule). The coordinates rise with i for
    // a positive bin size and fall for a negative one (an inverted box with fixed sampling).
    int lo, hi;
    if (bin_size >= T(0)) {
      lo = first_true_index(0, grid, [&](int i) { return coord(i) >= lower; });
      hi = first_true_index(lo, grid, [&](int i) { return coord(i) > upper; });
    } else {
      lo = first_true_index(0, grid, [&](int i) { return coord(i) <= upper; });
      hi = first_true_index(lo, grid, [&](int i) { return coord(i) < lower; });
    }
    plan.first_valid[p] = lo;
    for (int i = lo; i < hi; ++i) plan.samples.push_back(roi::axis_interp(coord(i), size));
  }
  plan.sample_begin[pooled] = static_cast<int>(plan.samples.size());
  if (!with_taps) return;

  plan.tap_index.clear();
  plan.tap_weight.clear();
  plan.tap_begin.resize(pooled + 1);
  for (int p = 0; p < pooled; ++p) {
    const size_t first = plan.tap_index.size();
    plan.tap_begin[p] = static_cast<int>(first);
    auto add = [&](int64_t index, T weight) {
      // Samples are monotone, so a cell seen before in this bin is among the last few taps.
      const size_t stop = plan.tap_index.size() > first + 3 ? plan.tap_index.size() - 3 : first;
      for (size_t t = plan.tap_index.size(); t-- > stop;) {
        if (plan.tap_index[t] == index) {
          plan.tap_weight[t] += weight;
          return;
        }
      }
      plan.tap_index.push_back(index);
      plan.tap_weight.push_back(weight);
    };
    for (int s = plan.sample_begin[p]; s < plan.sample_begin[p + 1]; ++s) {
      const roi::AxisInterp<T>& a = plan.samples[s];
      add(a.low, a.w_low);
      add(a.high, a.w_high);
    }
  }
  plan.tap_begin[pooled] = static_cast<int>(plan.tap_index.size());
  plan.tap_lo = plan.tap_index.empty() ? 0 : *std::min_element(plan.tap_index.begin(), plan.tap_index.end());
  plan.tap_hi = plan.tap_index.empty() ? 0 : *std::max_element(plan.tap_index.begin(), plan.tap_index.end()) + 1;
}

// Row-major position (iy * grid_x + ix) of the first sample of a bin that lies off the map, or
// -1 when all its samples are on the map. The valid samples form the rectangle
// [ly, ly + ny) x [lx, lx + nx) of the grid_y x grid_x grid. Max mode needs it: an off-map sample
// has value 0 and competes for the maximum (ties go to the first sample in row-major order).
inline int64_t first_invalid_position(int ly, int ny, int grid_y, int lx, int nx, int grid_x) {
  if (ny == 0 || nx == 0 || ly > 0 || lx > 0) return 0;
  if (nx < grid_x) return nx;
  if (ny < grid_y) return static_cast<int64_t>(ny) * grid_x;
  return -1;
}

}  // namespace cpu
}  // namespace maskrcnn
