// Which kernels serve torch.ops.maskrcnn.* on CPU tensors: the CPU kernels of ops/cpu (the
// default), or, with the environment variable MASKRCNN_CUDA_EMULATION=1, the CUDA kernels of
// ops/cuda compiled for device emulation (ops/cuda/emulation, docs/ops.md "CUDA device
// emulation"). Read once, when each library registers its kernels; maskrcnn/ops/_loader.py reads
// the same variable with the same rule.
#pragma once

#include <cstdlib>
#include <cstring>

namespace maskrcnn {

inline bool cuda_emulation_requested() {
  const char* value = std::getenv("MASKRCNN_CUDA_EMULATION");
  return value != nullptr && std::strcmp(value, "1") == 0;
}

}  // namespace maskrcnn
