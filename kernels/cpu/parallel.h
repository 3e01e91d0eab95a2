// Deterministic parallel loops for the CPU kernels. Work is split into fixed chunks that do not
// depend on the thread count, and anything reduced across chunks is combined in chunk order, so
// results are bitwise identical for 1, 2 or N threads.
#pragma once
#include <cstdint>
#include <vector>

namespace cpets::kernels::cpu {

int num_threads();

// Calls body(begin, end) on [0, n) in chunks of `grain` items, the chunks spread over threads.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& body) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t chunks = (n + grain - 1) / grain;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = c * grain;
    const int64_t e = b + grain < n ? b + grain : n;
    body(b, e);
  }
}

// Like parallel_for, but chunks are handed out dynamically. Use it only where each chunk writes
// its own outputs, so which thread runs a chunk cannot change any result; then a thread slowed
// by other processes on its core (common on shared machines) no longer holds up the whole loop.
template <class F>
void parallel_for_balanced(int64_t n, int64_t grain, F&& body) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t chunks = (n + grain - 1) / grain;
#pragma omp parallel for schedule(dynamic, 1) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = c * grain;
    body(b, b + grain < n ? b + grain : n);
  }
}

// Sum of f(i) for i in [0, n), accumulated in double per fixed chunk and combined in chunk order.
template <class F>
double deterministic_sum(int64_t n, F&& f, int64_t grain = 4096) {
  if (n <= 0) return 0.0;
  const int64_t chunks = (n + grain - 1) / grain;
  std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = c * grain;
    const int64_t e = b + grain < n ? b + grain : n;
    double s = 0;
    for (int64_t i = b; i < e; ++i) s += f(i);
    partial[c] = s;
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace cpets::kernels::cpu
