// A size-class cache in front of c10's CPU allocator, for the small tensors of compiled
// solver loops. Built and installed by physode/ode/allocator.py, which says why.
//
// Requests of 1 byte to 256 KiB are rounded up to a power of two (at least 64 bytes) and
// served from a per-class stack of freed blocks; a class keeps at most max(16, 2 MiB /
// size) blocks, so the cache holds at most ~30 MiB. Larger and empty requests go to the
// allocator that was installed before (c10's default). Every block is 64-byte aligned,
// as c10's are, and carries its class in the 64 bytes before its data, so a block freed
// after the cache was uninstalled still returns to the right stack.

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <pthread.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <atomic>

namespace {

constexpr std::size_t kAlign = 64;
constexpr std::size_t kHeader = 64;
constexpr int kMinShift = 6;   // 64 B
constexpr int kMaxShift = 18;  // 256 KiB
constexpr int kClasses = kMaxShift - kMinShift + 1;
constexpr int kMaxDepth = 512;
constexpr std::size_t kClassBytes = std::size_t(2) << 20;

inline void relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Held for a few instructions at a time, so a spin costs less than a mutex's syscall path.
class SpinLock {
 public:
  void lock() {
    while (flag_.exchange(true, std::memory_order_acquire)) {
      while (flag_.load(std::memory_order_relaxed)) relax();
    }
  }
  void unlock() { flag_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> flag_{false};
};

struct Stacks {
  SpinLock lock;
  void* blocks[kClasses][kMaxDepth];
  int count[kClasses] = {};
  int depth[kClasses] = {};
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
};

// Never destroyed: tensors freed while the process exits still find their stack.
Stacks& stacks() {
  static Stacks* s = [] {
    auto* made = new Stacks();
    for (int k = 0; k < kClasses; ++k) {
      std::size_t size = std::size_t(1) << (k + kMinShift);
      std::size_t keep = kClassBytes / size;
      made->depth[k] = static_cast<int>(keep < 16 ? 16 : (keep > kMaxDepth ? kMaxDepth : keep));
    }
    return made;
  }();
  return *s;
}

struct Guard {
  explicit Guard(SpinLock& l) : lock(l) { lock.lock(); }
  ~Guard() { lock.unlock(); }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
  SpinLock& lock;
};

int class_of(std::size_t n) {
  int k = 0;
  while ((std::size_t(1) << (k + kMinShift)) < n) ++k;
  return k;
}

void release(void* data) {
  void* base = static_cast<char*>(data) - kHeader;
  int k = *static_cast<int*>(base);
  Stacks& s = stacks();
  {
    Guard guard(s.lock);
    if (s.count[k] < s.depth[k]) {
      s.blocks[k][s.count[k]++] = base;
      return;
    }
  }
  std::free(base);
}

struct SmallBlocks final : c10::Allocator {
  c10::Allocator* fallback = nullptr;

  c10::DataPtr allocate(std::size_t n) override {
    if (n == 0 || n > (std::size_t(1) << kMaxShift)) return fallback->allocate(n);
    int k = class_of(n);
    void* base = nullptr;
    Stacks& s = stacks();
    {
      Guard guard(s.lock);
      if (s.count[k] > 0) {
        base = s.blocks[k][--s.count[k]];
        ++s.hits;
      } else {
        ++s.misses;
      }
    }
    if (base == nullptr) {
      base = std::aligned_alloc(kAlign, kHeader + (std::size_t(1) << (k + kMinShift)));
      if (base == nullptr) return fallback->allocate(n);  // let c10 report the failure
      *static_cast<int*>(base) = k;
    }
    void* data = static_cast<char*>(base) + kHeader;
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

SmallBlocks& instance() {
  static SmallBlocks* a = new SmallBlocks();
  return *a;
}

// A fork while another thread holds the lock would leave the child's lock held forever.
void before_fork() { stacks().lock.lock(); }
void after_fork() { stacks().lock.unlock(); }

}  // namespace

extern "C" {

// Put the cache in front of the current CPU allocator; returns 1 if it was already there.
int physode_small_blocks_install() {
  SmallBlocks& a = instance();
  if (c10::GetCPUAllocator() == &a) return 1;
  if (a.fallback == nullptr) {
    stacks();
    pthread_atfork(before_fork, after_fork, after_fork);
  }
  a.fallback = c10::GetCPUAllocator();
  c10::SetCPUAllocator(&a, /*priority=*/1);
  return 0;
}

// Give the CPU back to the allocator the cache was put in front of.
void physode_small_blocks_uninstall() {
  SmallBlocks& a = instance();
  if (c10::GetCPUAllocator() == &a && a.fallback != nullptr) {
    c10::SetCPUAllocator(a.fallback, /*priority=*/1);
  }
}

// Allocations served from the stacks and allocations that had to ask the system.
void physode_small_blocks_counts(std::uint64_t* hits, std::uint64_t* misses) {
  Stacks& s = stacks();
  Guard guard(s.lock);
  *hits = s.hits;
  *misses = s.misses;
}

}  // extern "C"
