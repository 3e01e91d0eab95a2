#include "engine/block_cache.h"

namespace cpets {

size_t block_size_class(size_t bytes, size_t align) {
  if (bytes == 0) bytes = 1;
  if (bytes < (1u << 20)) return (bytes + align - 1) / align * align;
  size_t p = 1;
  while (p * 2 <= bytes) p *= 2;
  const size_t step = p / 8;
  return (bytes + step - 1) / step * step;
}

void BlockCache::note_in_use(size_t cls) {
  stats_.current_bytes += cls;
  if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
}

void BlockCache::collect_ready() {
  size_t kept = 0;
  for (Pending& p : pending_) {
    if (p.ready()) free_lists_[p.cls].push_back(p.block);
    else pending_[kept++] = std::move(p);
  }
  pending_.resize(kept);
}

void* BlockCache::take(size_t cls) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!pending_.empty()) collect_ready();
  auto it = free_lists_.find(cls);
  if (it == free_lists_.end() || it->second.empty()) return nullptr;
  void* p = it->second.back();
  it->second.pop_back();
  stats_.cached_bytes -= cls;
  note_in_use(cls);
  return p;
}

void BlockCache::added_from_system(size_t cls) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.system_allocs++;
  note_in_use(cls);
}

void BlockCache::give_back(void* block, size_t cls) {
  std::lock_guard<std::mutex> lock(mu_);
  free_lists_[cls].push_back(block);
  stats_.current_bytes -= cls;
  stats_.cached_bytes += cls;
}

void BlockCache::give_back_when(void* block, size_t cls, std::function<bool()> ready) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.push_back({block, cls, std::move(ready)});
  stats_.current_bytes -= cls;
  stats_.cached_bytes += cls;
}

void BlockCache::release(const std::function<void(void*)>& system_free) {
  std::lock_guard<std::mutex> lock(mu_);
  collect_ready();  // blocks still being read stay cached: freeing them would pull memory from under a copy
  for (auto& [cls, blocks] : free_lists_) {
    for (void* p : blocks) system_free(p);
    stats_.cached_bytes -= cls * blocks.size();
    blocks.clear();
  }
}

MemoryStats BlockCache::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BlockCache::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes = stats_.current_bytes;
}

}  // namespace cpets
