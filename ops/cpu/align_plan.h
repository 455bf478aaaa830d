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

// Fills `plan` for one axis of one RoI: `pooled` bins of size `bin_size` starting at `start`,
// `grid` samples per bin, on an axis of `size` cells. `with_taps` builds the merged taps
// (average mode); otherwise only the samples (max mode).
template <typename T>
void build_axis_plan(T start, T bin_size, int pooled, int grid, int64_t size, bool with_taps, AxisPlan<T>& plan) {
  plan.grid = grid;
  plan.samples.clear();
  plan.sample_begin.resize(pooled + 1);
  plan.first_valid.resize(pooled);
  for (int p = 0; p < pooled; ++p) {
    plan.sample_begin[p] = static_cast<int>(plan.samples.size());
    int lo, hi;
    roi::valid_sample_range(start, bin_size, p, grid, size, &lo, &hi);
    plan.first_valid[p] = lo;
    for (int i = lo; i < hi; ++i)
      plan.samples.push_back(roi::axis_interp(roi::sample_coord(start, bin_size, p, i, grid), size));
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

}  // namespace cpu
}  // namespace maskrcnn
