// Work distribution of the CPU kernels.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace maskrcnn {
namespace cpu {

// Below this many inner-loop operations a call runs on the calling thread: waking the pool costs
// more than it saves.
constexpr int64_t kMinParallelWork = 1 << 15;

// Runs fn(item, scratch) for every item in [0, num_items) on at most at::get_num_threads()
// threads. Items are handed out one at a time from a shared counter (dynamic scheduling), because
// RoIs differ a lot in cost (adaptive sampling, boxes partly off the map) and at::parallel_for
// splits its range statically. Each thread default-constructs one Scratch and reuses it for all
// its items, so the per-item buffers are allocated once per thread, not once per item.
// Every item must write only memory that no other item writes: then the result does not depend
// on the schedule (the kernels are deterministic).
template <typename Scratch, typename Fn>
void parallel_items(int64_t num_items, int64_t work_per_item, const Fn& fn) {
  if (num_items <= 0) return;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), num_items);
  if (threads <= 1 || at::in_parallel_region() || num_items * work_per_item < kMinParallelWork) {
    Scratch scratch;
    for (int64_t i = 0; i < num_items; ++i) fn(i, scratch);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    Scratch scratch;
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < num_items;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      fn(i, scratch);
    }
  });
}

// Number of channel blocks to split C channels into so that `units` independent units of work
// times the blocks give every thread several items, without blocks smaller than min_block.
inline int64_t channel_blocks(int64_t channels, int64_t units, int64_t min_block) {
  const int64_t want = 8 * static_cast<int64_t>(at::get_num_threads());
  const int64_t by_work = (want + std::max<int64_t>(units, 1) - 1) / std::max<int64_t>(units, 1);
  const int64_t by_size = std::max<int64_t>(channels / min_block, 1);
  return std::max<int64_t>(std::min(by_work, by_size), 1);
}

}  // namespace cpu
}  // namespace maskrcnn
