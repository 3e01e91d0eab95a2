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
  // Like give_back, for a block something asynchronous may still read (a copy from page-locked
  // host memory to a GPU): it is handed out again only once `ready()` says that has finished.
  // take() and release() ask; until then it counts as cached.
  void give_back_when(void* block, size_t cls, std::function<bool()> ready);
  // Frees every cached block with `system_free` (called under the cache's lock).
  void release(const std::function<void(void*)>& system_free);
  MemoryStats stats();
  void reset_peak();

 private:
  struct Pending {
    void* block;
    size_t cls;
    std::function<bool()> ready;
  };
  void note_in_use(size_t cls);
  void collect_ready();  // under mu_: pending blocks that are ready go on their free lists
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_lists_;  // size class -> blocks
  std::vector<Pending> pending_;
  MemoryStats stats_;
};

}  // namespace cpets
