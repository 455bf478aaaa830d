// torch.ops.maskrcnn_cuda_emu: the schemas of torch.ops.maskrcnn (ops/schemas.h), whose CPU
// kernels are the CUDA kernels of ops/cuda run under device emulation (registered by each
// kernel file through MASKRCNN_CUDA_LIBRARY_IMPL), so that tests can run them beside the CPU
// kernels in one process. The library is loaded by maskrcnn/ops/_loader.py with
// torch.ops.load_library; it has no Python API of its own.
#include <torch/library.h>

#include <cstdint>

#include "cuda/emulation/cuda_emulation.h"
#include "schemas.h"

namespace {

// The schedule of the emulated launches that follow (cuda_emulation.h): 0 in order, else a
// perturbed schedule from this seed.
void set_schedule(int64_t seed) { maskrcnn::cuda_emu::set_schedule(static_cast<uint64_t>(seed)); }

}  // namespace

TORCH_LIBRARY(maskrcnn_cuda_emu, m) {
  maskrcnn::define_roi_ops(m);
  m.def("_set_schedule(int seed) -> ()", &set_schedule);
}
