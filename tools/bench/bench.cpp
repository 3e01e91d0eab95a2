#include "bench/bench.h"

#include <algorithm>
#include <chrono>

namespace cpets::bench {

std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}

Registrar::Registrar(const char* suite, const char* name, CaseFn fn) {
  registry().push_back({suite, name, std::move(fn)});
}

double median_seconds(const std::function<void()>& fn, int repeats, int warmup) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < std::max(1, repeats); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace cpets::bench
