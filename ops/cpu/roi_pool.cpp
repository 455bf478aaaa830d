// RoI Pool (Fast R-CNN) on the CPU: torch.ops.maskrcnn.roi_pool and _roi_pool_backward (the
// public pair, torchvision's argmax), and _roi_pool_compact and its backward (what
// maskrcnn.ops.roi_pool calls on the CPU: one- or two-byte codes instead of the argmax, or none).
//
// Forward items are (image, channel block) and visit the image's RoIs; the winning cell of every
// bin is stored so that the backward is a plain scatter. The public op stores it as the argmax
// (int32 h * W + w of the cell in its plane, -1 for an empty bin). The compact op stores the
// cell's row and column inside its bin as a one- or two-byte code (Codes<code_t>): a quarter or
// half of the argmax's bytes, whose page faults on first touch cost more than the pooling on the
// mask and C4 heads (docs/ops.md). A RoI whose bins are too large for the codes (only RoIs far
// larger than the map can have them) is pooled again by the backward, with the forward's kernel.
//
// Backward items are the same: each owns its gradient planes and visits the image's RoIs in order
// (no atomics, deterministic). Two forward kernels (ops/cpu/roi_pool_kernel.h), chosen per RoI by
// its bin size (both give the same result, see docs/ops.md):
//   large bins: one NCHW plane at a time, separably (column maxima over a bin's rows, then the
//     maximum of each column bin over those);
//   small bins (and channels_last inputs): the innermost loop runs over contiguous channels; an
//     NCHW block is first staged channels-last in the accumulation type, once per item.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "backend.h"
#include "cpu/parallel.h"
#include "cpu/prepare.h"
#include "cpu/roi_pool_kernel.h"
#include "roi_checks.h"
#include "roi_common.h"

namespace maskrcnn {
namespace cpu {
namespace {

[[noreturn]] C10_NOINLINE void bad_argmax(int64_t k, int a, int64_t plane) {
  TORCH_CHECK_VALUE(false, "argmax of RoI ", k, " must be -1 or a cell index in [0, H * W = ", plane, "), got ", a);
  std::abort();  // not reached
}

[[noreturn]] C10_NOINLINE void bad_code(int64_t k, int64_t code, int64_t bin_h, int64_t bin_w) {
  TORCH_CHECK_VALUE(false, "code ", code, " of RoI ", k, " names no cell of its ", bin_h, " x ", bin_w,
                    " bin; pass the codes that _roi_pool_compact returned for these inputs and rois");
  std::abort();  // not reached
}

// Adds the bins' gradients g[i] into the cells arg[i] (h * W + w, -1 for an empty bin) of one
// NCHW gradient plane, in the order of the bins. (Summing runs of equal cells in a register was
// slower: the branch on a new cell mispredicts.)
template <typename scalar_t, typename T>
void scatter_plane(const scalar_t* __restrict g, const int* __restrict arg, int64_t bins, int64_t plane, int64_t k,
                   T* __restrict plane_grad) {
  for (int64_t i = 0; i < bins; ++i) {
    const int a = arg[i];
    if (static_cast<uint32_t>(a) >= static_cast<uint32_t>(plane)) {
      if (a == -1) continue;  // empty bin
      bad_argmax(k, a, plane);
    }
    plane_grad[a] += static_cast<T>(g[i]);
  }
}

// Every RoI's bins for the backward of the codes, made once per call: bin i of RoI k (at
// k * bins + i) starts at cell first (h * W + w) and is height x width cells, 0 for an empty bin
// (clamped to the range of the code type: a RoI with a larger bin has no codes). Separate arrays,
// so that checking a channel's codes vectorizes.
template <typename code_t>
struct CodedBins {
  using U = std::make_unsigned_t<code_t>;
  static constexpr int shift = Codes<code_t>::shift;
  static constexpr uint32_t mask = (1u << shift) - 1;
  std::vector<int32_t> first;
  std::vector<U> height, width;

  CodedBins(const PoolBins& bins, int64_t num_rois, int64_t map_width) {
    const int64_t n = static_cast<int64_t>(bins.pooled_h) * bins.pooled_w;
    first.resize(num_rois * n);
    height.resize(num_rois * n);
    width.resize(num_rois * n);
    const auto extent = [](const roi::PoolRange& r) {
      return static_cast<U>(std::clamp<int64_t>(r.end - r.begin, 0, std::numeric_limits<U>::max()));
    };
    for (int64_t k = 0; k < num_rois; ++k) {
      const roi::PoolRange* rows = bins.rows(k);
      const roi::PoolRange* cols = bins.cols(k);
      for (int ph = 0; ph < bins.pooled_h; ++ph) {
        for (int pw = 0; pw < bins.pooled_w; ++pw) {
          const int64_t i = k * n + ph * bins.pooled_w + pw;
          first[i] = static_cast<int32_t>(rows[ph].begin * map_width + cols[pw].begin);
          height[i] = extent(rows[ph]);
          width[i] = extent(cols[pw]);
        }
      }
    }
  }

  // The cell (h * W + w) that `code` of bin i names, or -1 for an empty bin; any other code is
  // an error. (As unsigned, the int16 empty code -1 is all ones, like uint8's 255.)
  int64_t cell(int64_t i, code_t code, int64_t map_width, int64_t k) const {
    const U v = static_cast<U>(code);
    const uint32_t dh = v >> shift, dw = v & mask;
    if ((dh >= height[i]) | (dw >= width[i])) {
      if (code == static_cast<code_t>(-1) && (height[i] == 0 || width[i] == 0)) return -1;
      bad_code(k, static_cast<int64_t>(code), height[i], width[i]);
    }
    return first[i] + static_cast<int64_t>(dh) * map_width + dw;
  }

  // Adds the gradients g[i] of one NCHW channel's bins (bins [i0, i0 + n) of the table) into the
  // cells their codes name, in the order of the bins. The codes are checked first, in a loop that
  // vectorizes; a channel with an empty bin or a bad code takes the per-bin check.
  template <typename scalar_t, typename T>
  void scatter_plane(const scalar_t* __restrict g, const code_t* __restrict codes, int64_t i0, int64_t n,
                     int64_t map_width, int64_t k, T* __restrict plane_grad, std::vector<int32_t>& decoded) const {
    decoded.resize(n);
    const U* __restrict h = height.data() + i0;
    const U* __restrict w = width.data() + i0;
    const int32_t* __restrict f = first.data() + i0;
    uint32_t outside = 0;
    for (int64_t i = 0; i < n; ++i) {
      const U v = static_cast<U>(codes[i]);
      outside |= static_cast<uint32_t>((static_cast<U>(v >> shift) >= h[i]) | (static_cast<U>(v & mask) >= w[i]));
    }
    if (outside) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t c = cell(i0 + i, codes[i], map_width, k);
        if (c >= 0) plane_grad[c] += static_cast<T>(g[i]);
      }
      return;
    }
    // The cells first, in a loop that vectorizes (int32: the argmax's range), then the scatter.
    int32_t* __restrict cells = decoded.data();
    const int32_t row = static_cast<int32_t>(map_width);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t v = static_cast<U>(codes[i]);
      cells[i] = f[i] + (v >> shift) * row + (v & static_cast<int32_t>(mask));
    }
    for (int64_t i = 0; i < n; ++i) plane_grad[cells[i]] += static_cast<T>(g[i]);
  }
};

PoolBins bins_of(const Prepared& prep, double spatial_scale, int pooled_h, int pooled_w) {
  const at::Tensor& input = prep.maps[0];
  const double small =
      small_bin_cells(input.size(1), input.size(2) * input.size(3) * static_cast<int64_t>(input.element_size()));
  if (input.scalar_type() == at::kDouble) {
    return pool_bins<double>(prep.rois.data_ptr<double>(), prep.rois.size(0), spatial_scale, pooled_h, pooled_w,
                             input.size(2), input.size(3), small);
  }
  return pool_bins<float>(prep.rois.data_ptr<float>(), prep.rois.size(0), spatial_scale, pooled_h, pooled_w,
                          input.size(2), input.size(3), small);
}

Prepared prepare_pool(const at::Tensor& input, const at::Tensor& rois, double spatial_scale) {
  return prepare({input}, rois, at::Tensor(), [&](const Prepared& p) {
    checks::check_roi_values(p.rois, input.size(0), at::scalar_tensor(spatial_scale, at::kDouble));
  });
}

// Pools one RoI over one item's block of nc channels (the channels [c0, c0 + nc) of one image)
// with the kernel the forward chose for it: what the forward does per RoI, and what the compact
// backward does again for the RoIs without codes.
template <typename scalar_t, typename T>
struct RoiPooler {
  const PoolBins& bins;
  bool channels_last;
  int64_t sC, sH, sW, height, width;  // of the input

  // Whether RoI k reads the block's channels-last copy (PoolScratch::staged, made by stage()).
  bool reads_staged(int64_t k) const { return !channels_last && bins.small[k]; }

  void stage(const scalar_t* block, int64_t nc, PoolScratch<T>& s) const {
    stage_channels_last<scalar_t, T>(block, sC, height * width, nc, s.staged);
  }

  // block: the input at (image, c0); out, arg: RoI k's element (c0, 0, 0), with strides oC, oH, oW.
  template <typename arg_t>
  void pool(const scalar_t* block, int64_t nc, int64_t k, scalar_t* out, arg_t* arg, int64_t oC, int64_t oH, int64_t oW,
            Labels labels, PoolScratch<T>& s) const {
    const int ph = bins.pooled_h, pw = bins.pooled_w;
    const roi::PoolRange* rows = bins.rows(k);
    const roi::PoolRange* cols = bins.cols(k);
    if (channels_last) {
      pool_channels_last<scalar_t, scalar_t, T, arg_t>(block, sH, sW, rows, cols, ph, pw, nc, out, arg, oC, oH, oW,
                                                       labels, s);
    } else if (bins.small[k]) {
      pool_channels_last<T, scalar_t, T, arg_t>(s.staged.data(), width * nc, nc, rows, cols, ph, pw, nc, out, arg, oC,
                                                oH, oW, labels, s);
    } else {
      for (int64_t c = 0; c < nc; ++c) {
        pool_plane<scalar_t, T, arg_t>(block + c * sC, sH, width, rows, cols, ph, pw, out + c * oC,
                                       arg ? arg + c * oC : nullptr, oH, oW, labels, s);
      }
    }
  }
};

template <typename scalar_t, typename T>
RoiPooler<scalar_t, T> pooler_of(const Prepared& prep, const PoolBins& bins) {
  const at::Tensor& input = prep.maps[0];
  return {bins, prep.channels_last[0], input.stride(1), input.stride(2), input.stride(3), input.size(2), input.size(3)};
}

// The forward of both ops. found: the argmax (int32, Labels{W, false}), the codes (code_t,
// Labels{1 << shift, true}) or nothing (undefined: the compact op without codes).
template <typename found_t>
void pool_forward(const Prepared& prep, const PoolBins& bins, at::Tensor& output, found_t* found) {
  const at::Tensor& input = prep.maps[0];
  const int pooled_h = bins.pooled_h, pooled_w = bins.pooled_w;
  const int64_t num_rois = prep.rois.size(0);
  const int64_t work = std::max<int64_t>(num_rois / input.size(0), 1) * prep.split.block[0] * pooled_h * pooled_w * 4;
  int64_t max_extent = std::numeric_limits<int64_t>::max();
  Labels labels{input.size(3), false};
  if constexpr (!std::is_same<found_t, int>::value) {
    max_extent = Codes<found_t>::max_extent;
    labels = Labels{int64_t(1) << Codes<found_t>::shift, true};
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const RoiPooler<scalar_t, T> pooler = pooler_of<scalar_t, T>(prep, bins);
    std::vector<char> stage(input.size(0), 0);  // the images with RoIs that read a staged copy
    for (int64_t n = 0; n < input.size(0); ++n) {
      for (const int64_t k : prep.bucket[n]) stage[n] = stage[n] || pooler.reads_staged(k);
    }
    const scalar_t* in = input.data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    const int64_t oK = output.stride(0), oC = output.stride(1), oH = output.stride(2), oW = output.stride(3);
    parallel_items<PoolScratch<T>>(prep.split.items(), work, [&](int64_t item, PoolScratch<T>& s) {
      const ChannelSplit::Item it = prep.split.decode(item);
      const int64_t c0 = it.c0, nc = it.c1 - it.c0;
      const scalar_t* block = in + it.n * input.stride(0) + c0 * input.stride(1);
      if (stage[it.n]) pooler.stage(block, nc, s);
      for (const int64_t k : prep.bucket[it.n]) {
        const int64_t o = k * oK + c0 * oC;
        if (!found || bins.extent[k] <= max_extent) {
          pooler.pool(block, nc, k, out + o, found ? found + o : nullptr, oC, oH, oW, labels, s);
          continue;
        }
        // Bins too large for the codes: the backward finds the winners again. Defined all the same.
        pooler.template pool<found_t>(block, nc, k, out + o, nullptr, oC, oH, oW, labels, s);
        for (int64_t j = 0; j < nc; ++j) {
          for (int ph = 0; ph < pooled_h; ++ph) {
            for (int pw = 0; pw < pooled_w; ++pw) found[o + j * oC + ph * oH + pw * oW] = static_cast<found_t>(-1);
          }
        }
      }
    });
  });
}

// What the forward stores of each bin's winning cell.
enum class Winners { argmax, codes, none };

// The dtype of the compact op's codes for this map and output size (codes_fit_in_byte).
at::ScalarType codes_dtype(const at::Tensor& input, int64_t pooled_h, int64_t pooled_w) {
  return codes_fit_in_byte(input.size(2), input.size(3), pooled_h, pooled_w) ? at::kByte : at::kShort;
}

std::tuple<at::Tensor, at::Tensor> forward_op(const at::Tensor& input_, const at::Tensor& rois_, double spatial_scale,
                                              int64_t pooled_h, int64_t pooled_w, Winners winners) {
  checks::check_roi_pool_args(input_, rois_, spatial_scale, pooled_h, pooled_w);
  const Prepared prep = prepare_pool(input_, rois_, spatial_scale);
  const at::Tensor& input = prep.maps[0];
  const int64_t num_rois = prep.rois.size(0), channels = input.size(1);
  const auto layout = input.options().memory_format(prep.out_format);
  const std::vector<int64_t> shape{num_rois, channels, pooled_h, pooled_w};
  at::Tensor output = at::empty(shape, layout);
  at::Tensor found = winners == Winners::argmax ? at::empty(shape, layout.dtype(at::kInt))
                     : winners == Winners::codes
                         ? at::empty(shape, layout.dtype(codes_dtype(input, pooled_h, pooled_w)))
                         : at::empty({0}, input.options().dtype(at::kByte));
  if (num_rois == 0 || channels == 0) return {output, found};
  const PoolBins bins = bins_of(prep, spatial_scale, static_cast<int>(pooled_h), static_cast<int>(pooled_w));
  if (winners == Winners::argmax) {
    pool_forward<int>(prep, bins, output, found.data_ptr<int>());
  } else if (winners == Winners::none) {
    pool_forward<uint8_t>(prep, bins, output, nullptr);
  } else if (found.scalar_type() == at::kByte) {
    pool_forward<uint8_t>(prep, bins, output, found.data_ptr<uint8_t>());
  } else {
    pool_forward<int16_t>(prep, bins, output, found.data_ptr<int16_t>());
  }
  return {output, found};
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                                int64_t pooled_h, int64_t pooled_w) {
  return forward_op(input, rois, spatial_scale, pooled_h, pooled_w, Winners::argmax);
}

std::tuple<at::Tensor, at::Tensor> roi_pool_compact_cpu(const at::Tensor& input, const at::Tensor& rois,
                                                        double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                                        bool with_codes) {
  return forward_op(input, rois, spatial_scale, pooled_h, pooled_w, with_codes ? Winners::codes : Winners::none);
}

template <typename scalar_t, typename T>
struct BackwardScratch {
  std::vector<T> grad;  // the gradient slice of half types (GradSlice)
  PoolScratch<T> pool;  // for the RoIs pooled again
  std::vector<scalar_t> pooled;
  std::vector<int> argmax;
  std::vector<int32_t> decoded;  // a channel's cells, from its codes
};

// The backward of both ops: found is the argmax (found_t int) or the codes.
template <typename found_t>
void pool_backward(const Prepared& prep, const PoolBins& bins, const at::Tensor& grad, const found_t* found,
                   at::Tensor& grad_input) {
  constexpr bool codes = !std::is_same<found_t, int>::value;
  const at::Tensor& input = prep.maps[0];
  const bool cl = prep.channels_last[0];
  const int64_t channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t plane = height * width;
  const int64_t bins_per_roi = static_cast<int64_t>(bins.pooled_h) * bins.pooled_w;
  const int64_t work = std::max<int64_t>(prep.rois.size(0) / input.size(0), 1) * prep.split.block[0] * bins_per_roi;
  int64_t max_extent = std::numeric_limits<int64_t>::max();
  if constexpr (codes) max_extent = Codes<found_t>::max_extent;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool_backward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const RoiPooler<scalar_t, T> pooler = pooler_of<scalar_t, T>(prep, bins);
    std::vector<char> stage(input.size(0), 0);  // images whose RoIs pooled again read a staged copy
    if constexpr (codes) {
      for (int64_t n = 0; n < input.size(0); ++n) {
        for (const int64_t k : prep.bucket[n]) {
          stage[n] = stage[n] || (bins.extent[k] > max_extent && pooler.reads_staged(k));
        }
      }
    }
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* in = input.data_ptr<scalar_t>();
    scalar_t* gi = grad_input.data_ptr<scalar_t>();
    const int64_t gN = grad_input.stride(0), gC = grad_input.stride(1), gH = grad_input.stride(2),
                  gW = grad_input.stride(3);
    const int64_t oK = grad.stride(0);
    const Labels cells{width, false};
    std::optional<CodedBins<std::conditional_t<codes, found_t, uint8_t>>> coded;
    if constexpr (codes) coded.emplace(bins, prep.rois.size(0), width);
    parallel_items<BackwardScratch<scalar_t, T>>(
        prep.split.items(), work, [&](int64_t item, BackwardScratch<scalar_t, T>& s) {
          const ChannelSplit::Item it = prep.split.decode(item);
          const int64_t c0 = it.c0, nc = it.c1 - it.c0;
          const GradSlice<scalar_t, T> slice(gi + it.n * gN + c0 * gC, gC, gH, gW, nc, height, width, cl, s.grad);
          const scalar_t* block = in + it.n * input.stride(0) + c0 * input.stride(1);
          if (stage[it.n]) pooler.stage(block, nc, s.pool);
          // channels_last: adds the gradient of channel c0 + j, bin i of RoI k into cell_of(i, j)
          // (h * W + w; -1 for an empty bin), bins outer (the memory order of grad).
          const auto scatter_channels_last = [&](const scalar_t* gk, const auto& cell_of) {
            for (int64_t i = 0; i < bins_per_roi; ++i) {
              const int64_t o = i * channels + c0;
              for (int64_t j = 0; j < nc; ++j) {
                const int64_t cell = cell_of(i, j);
                if (cell >= 0) slice.data[j * slice.sC + cell * slice.sW] += static_cast<T>(gk[o + j]);
              }
            }
          };
          // Per RoI in order, and each channel's bins in order (the reference's order of the
          // sums); the loops follow the memory order of grad and of what the forward stored.
          for (const int64_t k : prep.bucket[it.n]) {
            const scalar_t* gk = g + k * oK;
            if constexpr (codes) {
              if (bins.extent[k] <= max_extent) {
                const found_t* ck = found + k * oK;
                if (cl) {
                  scatter_channels_last(gk, [&](int64_t i, int64_t j) {
                    return coded->cell(k * bins_per_roi + i, ck[i * channels + c0 + j], width, k);
                  });
                } else {
                  for (int64_t j = 0; j < nc; ++j) {
                    const int64_t o = (c0 + j) * bins_per_roi;
                    coded->scatter_plane(gk + o, ck + o, k * bins_per_roi, bins_per_roi, width, k,
                                         slice.data + j * slice.sC, s.decoded);
                  }
                }
                continue;
              }
            }
            // The argmax of channel c0 + j, bin i at a[j * a_c + i * a_bin]: stored, or (codes)
            // found again for a RoI with bins too large for them.
            const int* a = nullptr;
            int64_t a_c = bins_per_roi, a_bin = 1;
            if constexpr (codes) {
              s.pooled.resize(nc * bins_per_roi);
              s.argmax.resize(nc * bins_per_roi);
              pooler.pool(block, nc, k, s.pooled.data(), s.argmax.data(), bins_per_roi, bins.pooled_w, 1, cells,
                          s.pool);
              a = s.argmax.data();
            } else {
              a = found + k * oK + c0 * (cl ? 1 : bins_per_roi);
              if (cl) a_c = 1, a_bin = channels;
            }
            if (cl) {
              scatter_channels_last(gk, [&](int64_t i, int64_t j) -> int64_t {
                const int cell = a[j * a_c + i * a_bin];
                if (static_cast<uint32_t>(cell) >= static_cast<uint32_t>(plane) && cell != -1) {
                  bad_argmax(k, cell, plane);
                }
                return cell;  // -1: an empty bin
              });
            } else {
              for (int64_t j = 0; j < nc; ++j) {
                // NCHW: the cells of a plane are adjacent (slice.sW == 1).
                scatter_plane<scalar_t, T>(gk + (c0 + j) * bins_per_roi, a + j * a_c, bins_per_roi, plane, k,
                                           slice.data + j * slice.sC);
              }
            }
          }
          slice.finish();
        });
  });
}

at::Tensor backward_op(const at::Tensor& grad_, const at::Tensor& input_, const at::Tensor& rois_,
                       const at::Tensor& found_, double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                       Winners winners) {
  checks::check_roi_pool_args(input_, rois_, spatial_scale, pooled_h, pooled_w);
  checks::check_grad(grad_, rois_.size(0), input_, pooled_h, pooled_w);
  if (winners == Winners::argmax) {
    checks::check_argmax(found_, grad_);
  } else {
    checks::check_codes(found_, grad_, codes_dtype(input_, pooled_h, pooled_w));
  }
  const Prepared prep = prepare_pool(input_, rois_, spatial_scale);
  const auto format = prep.out_format;
  at::Tensor grad_input = at::empty(input_.sizes(), input_.options(), format);
  if (input_.size(1) == 0) return grad_input;
  const at::Tensor grad = grad_.contiguous(format);
  const at::Tensor found = found_.contiguous(format);
  // The argmax backward needs no bins; the same empty PoolBins serves its pooler (never called).
  const PoolBins bins = winners == Winners::codes
                            ? bins_of(prep, spatial_scale, static_cast<int>(pooled_h), static_cast<int>(pooled_w))
                            : PoolBins{{}, {}, {}, static_cast<int>(pooled_h), static_cast<int>(pooled_w)};
  if (winners == Winners::argmax) {
    pool_backward<int>(prep, bins, grad, found.data_ptr<int>(), grad_input);
  } else if (found.scalar_type() == at::kByte) {
    pool_backward<uint8_t>(prep, bins, grad, found.data_ptr<uint8_t>(), grad_input);
  } else {
    pool_backward<int16_t>(prep, bins, grad, found.data_ptr<int16_t>(), grad_input);
  }
  return grad_input;
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                 const at::Tensor& argmax, double spatial_scale, int64_t pooled_h, int64_t pooled_w) {
  return backward_op(grad, input, rois, argmax, spatial_scale, pooled_h, pooled_w, Winners::argmax);
}

at::Tensor roi_pool_compact_backward_cpu(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                         const at::Tensor& codes, double spatial_scale, int64_t pooled_h,
                                         int64_t pooled_w) {
  return backward_op(grad, input, rois, codes, spatial_scale, pooled_h, pooled_w, Winners::codes);
}

}  // namespace
}  // namespace cpu
}  // namespace maskrcnn

TORCH_LIBRARY_IMPL(maskrcnn, CPU, m) {
  // With MASKRCNN_CUDA_EMULATION=1 the emulated CUDA kernels serve roi_pool (ops/backend.h); the
  // compact ops are the CPU's own and have no CUDA kernels.
  if (!maskrcnn::cuda_emulation_requested()) {
    m.impl("roi_pool", &maskrcnn::cpu::roi_pool_cpu);
    m.impl("_roi_pool_backward", &maskrcnn::cpu::roi_pool_backward_cpu);
  }
  m.impl("_roi_pool_compact", &maskrcnn::cpu::roi_pool_compact_cpu);
  m.impl("_roi_pool_compact_backward", &maskrcnn::cpu::roi_pool_compact_backward_cpu);
}
