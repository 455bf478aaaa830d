// What the host code of the CUDA RoI ops needs from CUDA, in one place, with two implementations:
// the real one under nvcc, and the device emulation of ops/cuda/emulation when
// MASKRCNN_CUDA_EMULATION is defined (the same ops/cuda sources compiled as host C++, run on CPU
// tensors; docs/ops.md, "CUDA device emulation"). Kernels and launchers use only these names:
//   MASKRCNN_LAUNCH(grid, block, shared, stream, kernel)(args...)   a kernel launch
//   MASKRCNN_LAUNCH_CHECK()                                          the check after a launch
//   MASKRCNN_CUDA_LIBRARY_IMPL(m) { m.impl(...); }                   the ops' kernel registration
//   DeviceGuard, current_stream(), capturing_graph(), check_device(), empty_unfilled()
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#ifdef MASKRCNN_CUDA_EMULATION
#include <ATen/EmptyTensor.h>

#include <memory>

#include "backend.h"
#include "cuda/emulation/cuda_emulation.h"
#else
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/EmptyTensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace maskrcnn {
namespace cuda {

#ifdef MASKRCNN_CUDA_EMULATION

#define MASKRCNN_LAUNCH(grid, block, shared, stream, ...) \
  ::maskrcnn::cuda_emu::make_launcher(grid, block, shared, stream, &__VA_ARGS__, #__VA_ARGS__)
#define MASKRCNN_LAUNCH_CHECK() ::maskrcnn::cuda_emu::check_last_launch(__FILE__, __LINE__)

// The emulated kernels run on CPU tensors; the "device" is the host.
struct DeviceGuard {
  explicit DeviceGuard(const c10::Device& /*device*/) {}
};
inline cudaStream_t current_stream() { return nullptr; }
inline bool capturing_graph() { return false; }
inline void check_device(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cpu(), name, " must be a CPU tensor for the emulated CUDA kernels, got device ", t.device());
}
inline at::Tensor empty_unfilled(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::Tensor(at::detail::empty_cpu(sizes, options));
}

// The kernels are registered for CPU tensors under torch.ops.maskrcnn_cuda_emu (always) and
// under torch.ops.maskrcnn (when MASKRCNN_CUDA_EMULATION=1 asks for them, in place of the CPU
// kernels, which then do not register themselves: ops/backend.h).
class KernelRegistration {
 public:
  KernelRegistration(void (*impl)(torch::Library&), const char* file, uint32_t line) {
    own_.reset(new torch::Library(torch::Library::IMPL, "maskrcnn_cuda_emu", c10::DispatchKey::CPU, file, line));
    impl(*own_);
    if (cuda_emulation_requested()) {
      package_.reset(new torch::Library(torch::Library::IMPL, "maskrcnn", c10::DispatchKey::CPU, file, line));
      impl(*package_);
    }
  }

 private:
  std::unique_ptr<torch::Library> own_, package_;
};

#define MASKRCNN_CUDA_LIBRARY_IMPL_UID(m, uid)                                                         \
  static void C10_CONCATENATE(maskrcnn_cuda_impl_, uid)(torch::Library&);                              \
  static const ::maskrcnn::cuda::KernelRegistration C10_CONCATENATE(maskrcnn_cuda_registration_, uid)( \
      &C10_CONCATENATE(maskrcnn_cuda_impl_, uid), __FILE__, __LINE__);                                 \
  void C10_CONCATENATE(maskrcnn_cuda_impl_, uid)(torch::Library & m)
#define MASKRCNN_CUDA_LIBRARY_IMPL(m) MASKRCNN_CUDA_LIBRARY_IMPL_UID(m, C10_UID)

#else  // real CUDA

#define MASKRCNN_LAUNCH(grid, block, shared, stream, ...) __VA_ARGS__<<<grid, block, shared, stream>>>
#define MASKRCNN_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()
#define MASKRCNN_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(maskrcnn, CUDA, m)

using DeviceGuard = at::cuda::CUDAGuard;
inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream(); }
// A host synchronisation is illegal while the current stream is captured into a CUDA graph.
inline bool capturing_graph() {
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
}
inline void check_device(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, " must be a CUDA tensor, got device ", t.device());
}
inline at::Tensor empty_unfilled(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::Tensor(at::detail::empty_cuda(sizes, options));
}

#endif

}  // namespace cuda
}  // namespace maskrcnn
