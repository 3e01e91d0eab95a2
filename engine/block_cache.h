// The free-list cache behind both caching allocators (host: allocator.cpp, CUDA: device.cpp):
// freed blocks are kept per size class and handed out again, and the statistics are kept in one
// place. The allocators differ only in how they get memory from the system and in alignment.
#pragma once
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

#include "engine/allocator.h"

namespace cpets {

// Multiples of `align` below 1 MiB, then 1/8-power-of-two steps above, so a reused block wastes
// at most ~12 % and activations of one shape always hit the same class.
size_t block_size_class(size_t bytes, size_t align);

class BlockCache {
 public:
  // A cached block of exactly this class, or null (the caller then asks the system and reports
  // it with added_from_system).
  void* take(size_t cls);
  void added_from_system(size_t cls);
  void give_back(void* block, size_t cls);
  // Frees every cached block with `system_free` (called under the cache's lock).
  void release(const std::function<void(void*)>& system_free);
  MemoryStats stats();
  void reset_peak();

 private:
  void note_in_use(size_t cls);
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_lists_;  // size class -> blocks
  MemoryStats stats_;
};

}  // namespace cpets
