// The hottest float loops of the CPU kernels, compiled for AVX2 and for baseline x86-64 and
// chosen when the library loads (GCC/Clang target_clones; other targets get one plain build).
// They do exactly the same IEEE operations in both builds (no FMA contraction), so results do
// not depend on the machine.
#pragma once

#include <cstdint>

namespace maskrcnn {
namespace cpu {

// y[i] += a * x[i] for i in [0, n).
void axpy_f32(float a, const float* x, float* y, int64_t n);

// Keeps the first maximum: takes `v` (and its `index`) only when it is strictly greater. Written
// with a select and an integer mask so that GCC vectorizes loops over it (a plain `if` or a
// ternary on the index does not vectorize); NaN never wins, as with `v > best`.
template <typename T>
inline void keep_first_max(T v, T& best, int& where, int index) {
  const int mask = -static_cast<int>(v > best);
  best = v > best ? v : best;
  where = (where & ~mask) | (index & mask);
}

// Column maxima: keep_first_max(row[i], best[i], where[i], index) for i in [0, n).
void keep_first_max_f32(const float* row, float* best, int* where, int64_t n, int index);

}  // namespace cpu
}  // namespace maskrcnn
