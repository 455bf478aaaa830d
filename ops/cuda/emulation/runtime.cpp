// The scheduler of the CUDA device emulation (the model is described in cuda_emulation.h).
//
// Each OS thread that runs blocks owns a Block: the fibers of one CUDA block at a time (ucontext
// contexts on stacks that are kept and reused), the barrier and warp-vote state, and the
// scheduler context the fibers switch back to when they wait or finish. A pass of the scheduler
// resumes every ready fiber once; a fiber runs until it waits at a barrier, yields at a schedule
// point or exits. A pass that finds nothing ready while threads remain is a deadlock.
//
// Sanitizers: under AddressSanitizer every switch is announced (__sanitizer_*_switch_fiber), so
// that ASan knows which stack is live. Under ThreadSanitizer each CUDA thread is a TSan fiber and
// switching does not synchronise: the only happens-before edges between the threads of a block
// are those of CUDA's memory model that the kernels rely on, the barriers (a release before
// waiting, an acquire after) and the atomics. So a missing __syncthreads() between a write and a
// read of shared memory by different threads is reported as a data race, whatever order the
// fibers happened to run in.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "cuda/emulation/cuda_emulation.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define EMU_TSAN 1
// The scheduler's own bookkeeping is shared by the fibers of a block, which switch without
// synchronising (see above): its accesses are not instrumented, so that TSan reports only the
// kernels' accesses, ordered by the barriers' release / acquire and by the atomics.
#define EMU_RUNTIME __attribute__((no_sanitize_thread))
#else
#define EMU_RUNTIME
#endif

namespace maskrcnn {
namespace cuda_emu {
namespace {

#if defined(EMU_ASAN) || defined(EMU_TSAN)
constexpr size_t kStackBytes = 1 << 20;  // sanitizers' redzones and shadow frames need room
#else
constexpr size_t kStackBytes = 1 << 16;
#endif
constexpr unsigned int kWarpSize = 32;
constexpr unsigned int kMaxThreadsPerBlock = 1024;

enum class State { kReady, kAtBarrier, kAtVote, kDone };

struct Context {
  ucontext_t uc;
  void* stack = nullptr;  // lowest usable address (ASan wants the bottom and the size)
  size_t size = 0;
  void* tsan_fiber = nullptr;
};

struct Fiber {
  Context ctx;
  uint3 index;
  unsigned int warp = 0;
  unsigned int lane_bit = 0;
  State state = State::kReady;
  bool started = false;
  unsigned int vote = 0;  // the result of the warp vote it waits at
};

struct Warp {
  unsigned int lanes = 0;    // lanes that exist (the last warp of a block may be partial)
  unsigned int exited = 0;   // lanes whose thread has returned
  unsigned int arrived = 0;  // lanes waiting at the current vote
  unsigned int votes = 0;    // OR of their predicates so far
  unsigned int mask = 0;     // the participants of the current vote
  unsigned int generation = 0;
  char tsan_sync[2];  // TSan synchronisation addresses of alternating votes
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  Context scheduler;
  unsigned int size = 0;  // threads of the running block
  int current = -1;
  unsigned int live = 0;
  unsigned int at_barrier = 0;
  unsigned int barrier_generation = 0;
  char tsan_barrier[2];  // TSan synchronisation addresses of alternating barriers
  char tsan_done;        // TSan: every thread's exit happens before the end of the block
  uint3 block_index{0, 0, 0};
  dim3 block_dim, grid_dim;
  void (*thread_main)(void*) = nullptr;
  void* arg = nullptr;
  std::string error;
  bool perturbed = false;
  uint64_t rng = 0;  // perturbed schedules: next_random's state
  std::vector<unsigned int> order;
  ucontext_t prototype;
  bool has_prototype = false;
};

thread_local Block* tl_block = nullptr;
thread_local std::string tl_last_error;
std::atomic<uint64_t> g_schedule_seed{0};

// A small generator of the runtime's own (splitmix64), so that the random choices of a perturbed
// schedule stay inside uninstrumented code under TSan.
EMU_RUNTIME uint64_t next_random(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Fisher-Yates with next_random.
template <typename T>
EMU_RUNTIME void shuffle(std::vector<T>& v, uint64_t& state) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[next_random(state) % i]);
}

EMU_RUNTIME Block& this_os_thread_block() {
  thread_local Block block;
  return block;
}

EMU_RUNTIME void* allocate_stack(size_t bytes) {
  // A guard page below the stack turns an overflow into a fault instead of silent corruption.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* p = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  TORCH_CHECK(p != MAP_FAILED, "CUDA emulation: cannot allocate a fiber stack");
  TORCH_CHECK(mprotect(p, page, PROT_NONE) == 0, "CUDA emulation: cannot protect a fiber stack");
  return static_cast<char*>(p) + page;
}

// Switches from `from` (the running context) to `to`. `synchronise`: whether TSan sees an edge
// (a thread's start only: the launch happens before its threads); `exiting`: `from` is never
// resumed.
EMU_RUNTIME void switch_context(Context& from, Context& to, bool synchronise, bool exiting) {
#ifdef EMU_TSAN
  __tsan_switch_to_fiber(to.tsan_fiber, synchronise ? 0 : __tsan_switch_to_fiber_no_sync);
#else
  (void)synchronise;
#endif
#ifdef EMU_ASAN
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(exiting ? nullptr : &fake_stack, to.stack, to.size);
#else
  (void)exiting;
#endif
  swapcontext(&from.uc, &to.uc);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
}

EMU_RUNTIME void tsan_release(void* addr) {
#ifdef EMU_TSAN
  __tsan_release(addr);
#else
  (void)addr;
#endif
}

EMU_RUNTIME void tsan_acquire(void* addr) {
#ifdef EMU_TSAN
  __tsan_acquire(addr);
#else
  (void)addr;
#endif
}

EMU_RUNTIME Fiber& current_fiber(Block& b) { return b.fibers[static_cast<size_t>(b.current)]; }

// Gives the OS thread back to the scheduler until this fiber is ready again.
EMU_RUNTIME void wait_for_scheduler(Block& b) {
  Fiber& f = current_fiber(b);
  switch_context(f.ctx, b.scheduler, false, false);
}

// Ends the running fiber with an error of the kernel's use of the device API; the scheduler
// abandons the block (its other fibers are never resumed) and the launch reports the error.
[[noreturn]] EMU_RUNTIME void fail(Block& b, const std::string& message) {
  if (b.error.empty()) b.error = message;
  Fiber& f = current_fiber(b);
  f.state = State::kDone;
  tsan_release(&b.tsan_done);
  switch_context(f.ctx, b.scheduler, false, true);
  std::abort();  // never resumed
}

EMU_RUNTIME void release_barrier(Block& b) {
  for (unsigned int t = 0; t < b.size; ++t) {
    if (b.fibers[t].state == State::kAtBarrier) b.fibers[t].state = State::kReady;
  }
  b.at_barrier = 0;
  ++b.barrier_generation;
}

EMU_RUNTIME void complete_vote(Block& b, Warp& w) {
  const unsigned int result = w.votes;
  const unsigned int first = static_cast<unsigned int>(&w - b.warps.data()) * kWarpSize;
  for (unsigned int t = first; t < std::min(first + kWarpSize, b.size); ++t) {
    Fiber& f = b.fibers[t];
    if ((w.mask & f.lane_bit) && (f.state == State::kAtVote || t == static_cast<unsigned int>(b.current))) {
      f.vote = result;
      if (f.state == State::kAtVote) f.state = State::kReady;
    }
  }
  w.arrived = w.votes = w.mask = 0;
  ++w.generation;
}

EMU_RUNTIME void fiber_entry() {
  Block& b = *tl_block;
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, const_cast<const void**>(&b.scheduler.stack), &b.scheduler.size);
#endif
  b.thread_main(b.arg);
  Fiber& f = current_fiber(b);
  f.state = State::kDone;
  --b.live;
  Warp& w = b.warps[f.warp];
  w.exited |= f.lane_bit;
  // Exited threads count as arrived at a block barrier (as on the GPU).
  if (b.at_barrier > 0 && b.at_barrier == b.live) release_barrier(b);
  tsan_release(&b.tsan_done);  // not a synchronising switch: later threads must not see this one's writes
  switch_context(f.ctx, b.scheduler, false, true);
  std::abort();  // a finished fiber is never resumed
}

EMU_RUNTIME void prepare_block(Block& b, dim3 grid, dim3 block, void (*thread_main)(void*), void* arg, uint64_t seed) {
  b.grid_dim = grid;
  b.block_dim = block;
  b.size = block.x * block.y * block.z;
  b.thread_main = thread_main;
  b.arg = arg;
  b.perturbed = seed != 0;
  if (b.perturbed) b.rng = seed;
  if (!b.has_prototype) {
    // GCC 12 warns of an uninitialised temporary inside glibc's getcontext (a false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
    getcontext(&b.prototype);
#pragma GCC diagnostic pop
    b.has_prototype = true;
#ifdef EMU_TSAN
    b.scheduler.tsan_fiber = __tsan_get_current_fiber();
#endif
  }
  while (b.fibers.size() < b.size) {
    b.fibers.emplace_back();
    Context& c = b.fibers.back().ctx;
    c.stack = allocate_stack(kStackBytes);
    c.size = kStackBytes;
#ifdef EMU_TSAN
    c.tsan_fiber = __tsan_create_fiber(0);
#endif
  }
  b.warps.resize((b.size + kWarpSize - 1) / kWarpSize);
  b.order.resize(b.size);
  std::iota(b.order.begin(), b.order.end(), 0u);
}

EMU_RUNTIME void run_block(Block& b, uint3 block_index) {
  b.block_index = block_index;
  b.error.clear();
  for (unsigned int t = 0; t < b.size; ++t) {
    Fiber& f = b.fibers[t];
    f.index = uint3{t % b.block_dim.x, (t / b.block_dim.x) % b.block_dim.y, t / (b.block_dim.x * b.block_dim.y)};
    f.warp = t / kWarpSize;
    f.lane_bit = 1u << (t % kWarpSize);
    f.state = State::kReady;
    f.started = false;
    f.ctx.uc = b.prototype;
    f.ctx.uc.uc_stack.ss_sp = f.ctx.stack;
    f.ctx.uc.uc_stack.ss_size = f.ctx.size;
    f.ctx.uc.uc_link = nullptr;
    makecontext(&f.ctx.uc, fiber_entry, 0);
  }
  for (size_t w = 0; w < b.warps.size(); ++w) {
    const unsigned int lanes_here = std::min(kWarpSize, b.size - static_cast<unsigned int>(w) * kWarpSize);
    Warp& warp = b.warps[w];
    warp.lanes = lanes_here == kWarpSize ? 0xffffffffu : ((1u << lanes_here) - 1u);
    warp.exited = warp.arrived = warp.votes = warp.mask = 0;
  }
  b.live = b.size;
  b.at_barrier = 0;
  while (b.live > 0 && b.error.empty()) {
    if (b.perturbed) shuffle(b.order, b.rng);
    bool ran = false;
    for (unsigned int t : b.order) {
      Fiber& f = b.fibers[t];
      if (f.state != State::kReady) continue;
      b.current = static_cast<int>(t);
      const bool start = !f.started;
      f.started = true;
      switch_context(b.scheduler, f.ctx, start, false);
      ran = true;
      if (!b.error.empty()) break;
    }
    if (!ran && b.error.empty()) {
      unsigned int barrier = 0, vote = 0;
      for (unsigned int t = 0; t < b.size; ++t) {
        barrier += b.fibers[t].state == State::kAtBarrier;
        vote += b.fibers[t].state == State::kAtVote;
      }
      b.error = "deadlock in block (" + std::to_string(block_index.x) + ", " + std::to_string(block_index.y) + ", " +
                std::to_string(block_index.z) + "): " + std::to_string(barrier) + " threads wait at __syncthreads(), " +
                std::to_string(vote) + " at a warp vote, " + std::to_string(b.size - b.live) +
                " have exited, and none can go on";
    }
  }
  b.current = -1;
  tsan_acquire(&b.tsan_done);  // the launch's caller sees what the block wrote
}

EMU_RUNTIME std::string config_error(dim3 grid, dim3 block, size_t shared_bytes) {
  const auto text = [](dim3 d) {
    return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
  };
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0 ||
      threads > kMaxThreadsPerBlock || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x > 0x7fffffffu ||
      grid.y > 65535 || grid.z > 65535) {
    return "invalid configuration argument: grid " + text(grid) + ", block " + text(block);
  }
  if (shared_bytes > 48 * 1024) return "too many resources requested for launch: " + std::to_string(shared_bytes);
  return "";
}

// OS threads that run the blocks of a launch: 1 by default, so that a launch is one fixed
// interleaving and the atomics' sums are reproducible (the package's CPU tests expect bitwise
// repeatable results under MASKRCNN_CUDA_EMULATION=1); MASKRCNN_CUDA_EMULATION_THREADS=N runs
// blocks on N threads at once, where the atomics race as on a GPU.
EMU_RUNTIME int worker_count(uint64_t blocks) {
#if defined(EMU_ASAN) || defined(EMU_TSAN)
  // One OS thread: the sanitizers check the fibers of a block, and OpenMP's runtime is not
  // instrumented (its barriers would look like races to TSan).
  (void)blocks;
  return 1;
#else
  int n = 1;
  if (const char* env = std::getenv("MASKRCNN_CUDA_EMULATION_THREADS")) n = std::max(1, std::atoi(env));
  return static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(n), blocks));
#endif
}

}  // namespace

EMU_RUNTIME const uint3& thread_index() { return current_fiber(*tl_block).index; }
EMU_RUNTIME const uint3& block_index() { return tl_block->block_index; }
EMU_RUNTIME const dim3& block_dim() { return tl_block->block_dim; }
EMU_RUNTIME const dim3& grid_dim() { return tl_block->grid_dim; }

EMU_RUNTIME void sync_threads() {
  Block& b = *tl_block;
  Fiber& f = current_fiber(b);
  void* sync = &b.tsan_barrier[b.barrier_generation & 1];
  tsan_release(sync);
  f.state = State::kAtBarrier;
  ++b.at_barrier;
  if (b.at_barrier == b.live) {
    release_barrier(b);
  } else {
    wait_for_scheduler(b);
  }
  tsan_acquire(sync);
}

EMU_RUNTIME unsigned int ballot_sync(unsigned int mask, bool predicate) {
  Block& b = *tl_block;
  Fiber& f = current_fiber(b);
  Warp& w = b.warps[f.warp];
  const unsigned int participants = mask & w.lanes;
  if (!(participants & f.lane_bit)) fail(b, "__ballot_sync called by a lane that its mask does not name");
  if (participants & w.exited) fail(b, "__ballot_sync names a lane that has exited");
  if (w.arrived != 0 && w.mask != participants)
    fail(b, "the lanes of a warp called __ballot_sync with different masks");
  void* sync = &w.tsan_sync[w.generation & 1];
  tsan_release(sync);
  w.mask = participants;
  w.arrived |= f.lane_bit;
  if (predicate) w.votes |= f.lane_bit;
  if (w.arrived == participants) {
    complete_vote(b, w);
  } else {
    f.state = State::kAtVote;
    wait_for_scheduler(b);
  }
  tsan_acquire(sync);
  return f.vote;
}

EMU_RUNTIME void schedule_point() {
  Block* b = tl_block;
  if (b == nullptr || !b->perturbed || b->current < 0) return;
  if (next_random(b->rng) % 4 != 0) return;
  wait_for_scheduler(*b);  // stays ready: resumed in the next pass, after others have run
}

EMU_RUNTIME void launch(dim3 grid, dim3 block, std::size_t shared_bytes, void (*thread_main)(void*), void* arg,
                        const char* kernel_name) {
  const std::string bad = config_error(grid, block, shared_bytes);
  if (!bad.empty()) {
    tl_last_error = bad + " (kernel " + kernel_name + ")";
    return;
  }
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  const uint64_t seed = g_schedule_seed.load();
  std::vector<uint64_t> order;
  if (seed != 0) {
    order.resize(blocks);
    std::iota(order.begin(), order.end(), uint64_t(0));
    uint64_t state = seed;
    shuffle(order, state);
  }
  std::atomic<uint64_t> next{0};
  std::mutex error_mutex;
  std::string error;
  std::atomic<uint64_t> worker_seed{seed};
  const auto work = [&] {
    Block& b = this_os_thread_block();
    Block* const outer = tl_block;
    tl_block = &b;
    prepare_block(b, grid, block, thread_main, arg, seed == 0 ? 0 : worker_seed.fetch_add(0x9e3779b97f4a7c15ull));
    for (uint64_t i = next++; i < blocks; i = next++) {
      const uint64_t id = seed == 0 ? i : order[i];
      run_block(b, uint3{static_cast<unsigned int>(id % grid.x), static_cast<unsigned int>((id / grid.x) % grid.y),
                         static_cast<unsigned int>(id / (uint64_t(grid.x) * grid.y))});
      if (!b.error.empty()) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (error.empty()) error = b.error;
        next = blocks;
        break;
      }
    }
    tl_block = outer;
  };
  const int workers = worker_count(blocks);
  if (workers <= 1) {
    work();
  } else {
    at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
      for (int64_t w = begin; w < end; ++w) work();
    });
  }
  if (!error.empty()) tl_last_error = error + " (kernel " + kernel_name + ")";
}

EMU_RUNTIME void check_last_launch(const char* file, int line) {
  if (tl_last_error.empty()) return;
  const std::string message = std::move(tl_last_error);
  tl_last_error.clear();
  TORCH_CHECK(false, "CUDA error: ", message, " (device emulation, launch checked at ", file, ":", line, ")");
}

EMU_RUNTIME void set_schedule(uint64_t seed) { g_schedule_seed = seed; }

}  // namespace cuda_emu
}  // namespace maskrcnn
