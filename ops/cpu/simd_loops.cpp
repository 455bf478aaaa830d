#include "cpu/simd_loops.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define MASKRCNN_TARGET_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MASKRCNN_TARGET_CLONES
#endif

namespace maskrcnn {
namespace cpu {

MASKRCNN_TARGET_CLONES
void axpy_f32(float a, const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

MASKRCNN_TARGET_CLONES
void keep_first_max_f32(const float* __restrict row, float* __restrict best, int* __restrict where, int64_t n,
                        int index) {
  for (int64_t i = 0; i < n; ++i) keep_first_max(row[i], best[i], where[i], index);
}

}  // namespace cpu
}  // namespace maskrcnn
