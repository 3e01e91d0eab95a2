// Caching host allocator. On the VMs we run on, first-touch of fresh pages costs ~0.5 GB/s while
// refilling reused memory runs at ~43 GB/s, so activations must come from recycled blocks rather
// than new allocations every step. Blocks are rounded to size classes and kept on free lists.
#pragma once
#include <cstddef>

namespace cpets {

struct MemoryStats {
  size_t current_bytes = 0;   // bytes handed out and not yet returned
  size_t peak_bytes = 0;      // high-water mark of current_bytes since the last reset
  size_t cached_bytes = 0;    // bytes held on free lists, ready for reuse
  size_t system_allocs = 0;   // calls that had to go to the operating system
};

void* host_alloc(size_t bytes);       // 64-byte aligned, never null (throws std::bad_alloc)
void host_free(void* ptr, size_t bytes);
MemoryStats host_memory_stats();
void host_reset_peak();
void host_release_cache();            // give cached blocks back to the system

}  // namespace cpets
