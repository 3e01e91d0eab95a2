#include "engine/allocator.h"

#include <cstdlib>
#include <new>

#include "engine/block_cache.h"

namespace cpets {
namespace {

BlockCache& cache() {
  static BlockCache* c = new BlockCache();  // leaked on purpose: outlives static tensors at exit
  return *c;
}

size_t size_class(size_t bytes) { return block_size_class(bytes, 64); }

}  // namespace

void* host_alloc(size_t bytes) {
  const size_t cls = size_class(bytes);
  if (void* p = cache().take(cls)) return p;
  void* p = std::aligned_alloc(64, cls);
  if (!p) {
    host_release_cache();
    p = std::aligned_alloc(64, cls);
    if (!p) throw std::bad_alloc();
  }
  cache().added_from_system(cls);
  return p;
}

void host_free(void* ptr, size_t bytes) {
  if (ptr) cache().give_back(ptr, size_class(bytes));
}

MemoryStats host_memory_stats() { return cache().stats(); }
void host_reset_peak() { cache().reset_peak(); }
void host_release_cache() { cache().release([](void* p) { std::free(p); }); }

}  // namespace cpets
