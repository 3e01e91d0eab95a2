#include "engine/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace cpets {
namespace {

struct Cache {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_lists;  // size class -> blocks
  MemoryStats stats;
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked on purpose: outlives static tensors at exit
  return *c;
}

// Size classes: multiples of 64 B below 1 MiB, then 1/8-power-of-two steps, so a reused block
// wastes at most ~12 % and activations of one shape always hit the same class.
size_t size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes < (1u << 20)) return (bytes + 63) & ~size_t(63);
  size_t p = 1;
  while (p * 2 <= bytes) p *= 2;
  size_t step = p / 8;
  return (bytes + step - 1) / step * step;
}

}  // namespace

void* host_alloc(size_t bytes) {
  size_t cls = size_class(bytes);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free_lists.find(cls);
    if (it != c.free_lists.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.stats.cached_bytes -= cls;
      c.stats.current_bytes += cls;
      if (c.stats.current_bytes > c.stats.peak_bytes) c.stats.peak_bytes = c.stats.current_bytes;
      return p;
    }
  }
  void* p = std::aligned_alloc(64, cls);
  if (!p) {
    host_release_cache();
    p = std::aligned_alloc(64, cls);
    if (!p) throw std::bad_alloc();
  }
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.system_allocs++;
  c.stats.current_bytes += cls;
  if (c.stats.current_bytes > c.stats.peak_bytes) c.stats.peak_bytes = c.stats.current_bytes;
  return p;
}

void host_free(void* ptr, size_t bytes) {
  if (!ptr) return;
  size_t cls = size_class(bytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.free_lists[cls].push_back(ptr);
  c.stats.current_bytes -= cls;
  c.stats.cached_bytes += cls;
}

MemoryStats host_memory_stats() {
  std::lock_guard<std::mutex> lock(cache().mu);
  return cache().stats;
}

void host_reset_peak() {
  std::lock_guard<std::mutex> lock(cache().mu);
  cache().stats.peak_bytes = cache().stats.current_bytes;
}

void host_release_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [cls, blocks] : c.free_lists) {
    for (void* p : blocks) std::free(p);
    blocks.clear();
  }
  c.stats.cached_bytes = 0;
}

}  // namespace cpets
