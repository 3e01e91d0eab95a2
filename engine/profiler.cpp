#include "engine/profiler.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>

#include "engine/device.h"

namespace cpets::profiler {
namespace {

std::atomic<bool> g_enabled{false};
std::mutex g_mutex;
std::map<std::string, Entry> g_table;
double g_mark = 0;

// Host time after the GPU's queue has drained (a no-op without a device): kernels run
// asynchronously, so an op's time on the device is only known once its work has finished.
double now() {
  cuda_synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Entry& entry(const char* name) {
  Entry& e = g_table[name];
  if (e.name.empty()) e.name = name;
  return e;
}

}  // namespace

void enable(bool on) {
  std::lock_guard lock(g_mutex);
  g_enabled.store(on, std::memory_order_relaxed);
  g_mark = now();
}

bool enabled() { return g_enabled.load(std::memory_order_relaxed); }

void reset() {
  std::lock_guard lock(g_mutex);
  g_table.clear();
  g_mark = now();
}

void mark() {
  std::lock_guard lock(g_mutex);
  g_mark = now();
}

std::vector<Entry> entries() {
  std::lock_guard lock(g_mutex);
  std::vector<Entry> out;
  for (auto& [name, e] : g_table) out.push_back(e);
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.total() > b.total(); });
  return out;
}

void forward_op_done(const char* name) {
  if (!enabled()) return;
  std::lock_guard lock(g_mutex);
  const double t = now();
  Entry& e = entry(name);
  e.forward_seconds += t - g_mark;
  e.forward_calls++;
  g_mark = t;
}

void backward_op(const char* name, double seconds) {
  if (!enabled()) return;
  std::lock_guard lock(g_mutex);
  Entry& e = entry(name);
  e.backward_seconds += seconds;
  e.backward_calls++;
}

Scope::Scope(const char* name) : name_(name), start_(enabled() ? now() : 0) {}

Scope::~Scope() {
  if (!enabled() || start_ == 0) return;
  std::lock_guard lock(g_mutex);
  const double t = now();
  Entry& e = entry(name_);
  e.other_seconds += t - start_;
  e.other_calls++;
  g_mark = t;
}

}  // namespace cpets::profiler
