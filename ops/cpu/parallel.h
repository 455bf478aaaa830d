// Work distribution of the CPU kernels.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

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

// Both the forward and the backward kernels split the work into items (level, image, block of
// channels) and visit the image's RoIs inside an item. A block is sized so that its slice of the
// feature map (and of the gradient) stays in the L2 cache while all RoIs of the image read it:
// proposals overlap heavily, so this reads the map from memory about once instead of once per
// RoI. The backward also owns its gradient slice, hence no atomics and a deterministic result.
constexpr int64_t kBlockBytes = 512 * 1024;

struct ChannelSplit {
  struct Item {
    int64_t level, n, c0, c1;
  };
  int64_t batch = 0, channels = 0;
  std::vector<int64_t> block;       // channels per block, per level
  std::vector<int64_t> blocks;      // blocks per image, per level
  std::vector<int64_t> first_item;  // first item of each level; back() = number of items

  int64_t items() const { return first_item.back(); }

  Item decode(int64_t item) const {
    int64_t level = 0;
    while (item >= first_item[level + 1]) ++level;
    const int64_t local = item - first_item[level];
    const int64_t c0 = (local % blocks[level]) * block[level];
    return {level, local / blocks[level], c0, std::min(c0 + block[level], channels)};
  }
};

// plane_bytes[l]: bytes of one channel plane of level l; channels_last[l]: its layout (there a
// block is at least 16 channels so that each pixel's block fills a cache line and vectorizes).
inline ChannelSplit split_channels(int64_t batch, int64_t channels, const std::vector<int64_t>& plane_bytes,
                                   const std::vector<bool>& channels_last) {
  ChannelSplit split;
  split.batch = batch;
  split.channels = channels;
  const size_t levels = plane_bytes.size();
  std::vector<int64_t> min_block(levels);
  split.block.resize(levels);
  for (size_t l = 0; l < levels; ++l) {
    min_block[l] = std::min<int64_t>(channels_last[l] ? 16 : 1, std::max<int64_t>(channels, 1));
    // channels_last: a pixel's channels are contiguous and, for wide maps, a page apart from the
    // next pixel's: small blocks would touch a page per pixel for a few bytes. Start from all
    // channels (the loop below splits them for the threads).
    const int64_t fit = channels_last[l] ? channels : kBlockBytes / std::max<int64_t>(plane_bytes[l], 1);
    split.block[l] = std::min(std::max(fit, min_block[l]), std::max<int64_t>(channels, 1));
  }
  // Enough items for every thread to stay busy: shrink the blocks while there are too few.
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  for (;;) {
    int64_t total = 0;
    for (size_t l = 0; l < levels; ++l) {
      total += batch * ((channels + split.block[l] - 1) / split.block[l]);
    }
    bool shrunk = false;
    if (total < want) {
      for (size_t l = 0; l < levels; ++l) {
        if (split.block[l] > min_block[l]) {
          split.block[l] = std::max(split.block[l] / 2, min_block[l]);
          shrunk = true;
        }
      }
    }
    if (!shrunk) break;
  }
  split.blocks.resize(levels);
  split.first_item.assign(levels + 1, 0);
  for (size_t l = 0; l < levels; ++l) {
    split.blocks[l] = std::max<int64_t>((channels + split.block[l] - 1) / split.block[l], 1);
    split.first_item[l + 1] = split.first_item[l] + batch * split.blocks[l];
  }
  return split;
}

// The RoIs of each (level, image), in their original order: bucket[level * batch + n].
inline std::vector<std::vector<int64_t>> bucket_rois(const int64_t* image, const int64_t* level, int64_t num_rois,
                                                     int64_t batch, int64_t num_levels) {
  std::vector<std::vector<int64_t>> bucket(batch * num_levels);
  for (int64_t k = 0; k < num_rois; ++k) {
    bucket[(level ? level[k] : 0) * batch + image[k]].push_back(k);
  }
  return bucket;
}

}  // namespace cpu
}  // namespace maskrcnn
