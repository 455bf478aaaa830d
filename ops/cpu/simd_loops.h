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

// Column maxima: for i in [0, n), if row[i] > best[i] then best[i] = row[i], where[i] = index.
void keep_first_max_f32(const float* row, float* best, int* where, int64_t n, int index);

}  // namespace cpu
}  // namespace maskrcnn
