// Device emulation of the CUDA execution model, for running the kernels of ops/cuda/*.cu on a
// machine without a GPU, compiled from the same sources as host C++ (as nvcc's former
// -deviceemu did). Included through ops/cuda/device_api.cuh when MASKRCNN_CUDA_EMULATION is
// defined; docs/ops.md, "CUDA device emulation", says what it models and what it cannot show.
//
// The model (runtime.cpp):
//   * A launch checks its configuration as a GPU does (a grid of 0 blocks, more than 1024 threads
//     per block, a grid beyond 2^31 - 1 x 65535 x 65535 is "invalid configuration argument",
//     reported by the launch check after it) and then runs every block of the grid.
//   * The threads of a block are fibers (their own stacks) scheduled on one OS thread: they run
//     concurrently in the sense of CUDA, interleaving only at __syncthreads(), warp votes and
//     atomics. Blocks run one after another (one fixed interleaving, so results repeat), or on N
//     OS threads at once with MASKRCNN_CUDA_EMULATION_THREADS=N, where the atomics really race.
//   * __shared__ memory is per block: a thread_local static, and a block's fibers share their
//     OS thread.
//   * __syncthreads() is a barrier of the whole block (exited threads count as arrived);
//     __ballot_sync() is a barrier of the lanes of the warp named in its mask that publishes the
//     OR of their predicates; a barrier some threads can never reach is reported as a deadlock.
//   * gridDim / blockDim / blockIdx / threadIdx are the launch's, with CUDA's unsigned types, so
//     grid-stride loops and integer promotions behave as on a GPU.
//   * atomicAdd is a real atomic read-modify-write.
//   * A perturbed schedule (set_schedule(seed), seed != 0) visits blocks and threads in random
//     orders and lets atomics yield at random: different interleavings, the same program.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Per block: the fibers of a block run on one OS thread, and no other block runs there meanwhile.
#define __shared__ static thread_local

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef struct CUstream_st* cudaStream_t;

// The device math of the kernels, unqualified as in CUDA.
using std::ceil;
using std::fabs;
using std::floor;
using std::isfinite;
using std::round;

namespace maskrcnn {
namespace cuda_emu {

// The built-in variables of the thread (fiber) running now.
const uint3& thread_index();
const uint3& block_index();
const dim3& block_dim();
const dim3& grid_dim();

void sync_threads();
unsigned int ballot_sync(unsigned int mask, bool predicate);
// A point where a perturbed schedule may switch to another thread of the block.
void schedule_point();

// Runs `thread_main(arg)` once for every thread of the grid, as a launch with this
// configuration would; a bad configuration or a deadlock is recorded for check_last_launch().
void launch(dim3 grid, dim3 block, std::size_t shared_bytes, void (*thread_main)(void*), void* arg,
            const char* kernel_name);

// The launch check after a launch (C10_CUDA_KERNEL_LAUNCH_CHECK): throws the error of the last
// launch of this host thread, if it had one, and clears it.
void check_last_launch(const char* file, int line);

// 0: blocks in order and threads in order (the default); any other seed: a perturbed schedule.
void set_schedule(uint64_t seed);

// `kernel<<<grid, block, shared, stream>>>(args...)` as `Launcher(...)(args...)`: the arguments
// are converted to the kernel's parameter types once, as a launch does, and every thread gets
// its own copy (kernel parameters are passed by value).
template <typename... Params>
class Launcher {
 public:
  Launcher(dim3 grid, dim3 block, std::size_t shared_bytes, void (*kernel)(Params...), const char* name)
      : grid_(grid), block_(block), shared_bytes_(shared_bytes), kernel_(kernel), name_(name) {}

  template <typename... Args>
  void operator()(Args&&... args) const {
    Closure closure{kernel_, std::tuple<Params...>(std::forward<Args>(args)...)};
    launch(grid_, block_, shared_bytes_, &Closure::run, &closure, name_);
  }

 private:
  struct Closure {
    void (*kernel)(Params...);
    std::tuple<Params...> params;
    static void run(void* self) {
      const Closure& c = *static_cast<const Closure*>(self);
      std::apply(c.kernel, c.params);
    }
  };
  dim3 grid_, block_;
  std::size_t shared_bytes_;
  void (*kernel_)(Params...);
  const char* name_;
};

template <typename... Params>
Launcher<Params...> make_launcher(dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t /*stream*/,
                                  void (*kernel)(Params...), const char* name) {
  return Launcher<Params...>(grid, block, shared_bytes, kernel, name);
}

}  // namespace cuda_emu
}  // namespace maskrcnn

#define threadIdx (::maskrcnn::cuda_emu::thread_index())
#define blockIdx (::maskrcnn::cuda_emu::block_index())
#define blockDim (::maskrcnn::cuda_emu::block_dim())
#define gridDim (::maskrcnn::cuda_emu::grid_dim())

inline void __syncthreads() { ::maskrcnn::cuda_emu::sync_threads(); }

inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
  return ::maskrcnn::cuda_emu::ballot_sync(mask, predicate != 0);
}

inline int __popc(unsigned int v) { return __builtin_popcount(v); }

// A compare-and-swap loop on the value's bits (C++17: no std::atomic_ref), as CUDA's own
// atomicAdd for double was written before sm_60.
template <typename T>
inline T atomicAdd(T* address, T value) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomicAdd of 4- or 8-byte values");
  using Bits = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  ::maskrcnn::cuda_emu::schedule_point();
  Bits* bits = reinterpret_cast<Bits*>(address);
  Bits expected = __atomic_load_n(bits, __ATOMIC_RELAXED);
  while (true) {
    T old;
    std::memcpy(&old, &expected, sizeof(T));
    const T sum = old + value;
    Bits desired;
    std::memcpy(&desired, &sum, sizeof(T));
    if (__atomic_compare_exchange_n(bits, &expected, desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return old;
  }
}
