// Deterministic sums on raw float buffers.
//
// Every sum is split into fixed chunks whose boundaries depend only on the shape, never on the
// thread count. Within a chunk values are added in 16 float lanes over blocks of at most 256
// elements, blocks are accumulated in double, and chunk partials are combined in index order —
// so results are bitwise identical for any number of threads, and accurate for tens of millions
// of elements.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace cpets::kernels::cpu {

constexpr int64_t kReduceChunk = 16384;  // elements per parallel work item of a reduction

// Σ term(i) for i in [0, n), as described above (one chunk; no threading). More lanes give more
// independent add chains. Always inlined: this header has the baseline target, and GCC will not
// inline a multi-level kernel file's (kernels/cpu/simd.h) lambda into a baseline-target function,
// so an out-of-line lane_sum called `term` once per element (softmax ran at 0.2–2 GB/s); inlined
// into the level's caller first, the lambda inlines too.
template <int kLanes = 16, class F>
[[gnu::always_inline]] inline double lane_sum(int64_t n, F&& term) {
  constexpr int64_t kBlock = 256;
  using V = std::decay_t<decltype(term(int64_t{0}))>;  // float lanes for float terms, double for double
  double d[kLanes] = {};
  const int64_t nv = n - n % kLanes;
  int64_t i = 0;
  while (i < nv) {
    const int64_t end = std::min(nv, i + kBlock);
    V f[kLanes] = {};
    for (; i < end; i += kLanes) {
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) f[l] += term(i + l);
    }
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) d[l] += f[l];
  }
  double s = 0;
  for (; i < n; ++i) s += term(i);
  for (int l = 0; l < kLanes; ++l) s += d[l];
  return s;
}

// Σ term(i) for i in [0, n) over fixed chunks of kReduceChunk in parallel, combined in order.
template <class F>
inline double chunked_sum(int64_t n, F&& term) {
  if (n <= 0) return 0.0;
  const int64_t chunks = (n + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> partial(chunks);
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t b = c * kReduceChunk, len = std::min(kReduceChunk, n - b);
      partial[c] = lane_sum(len, [&](int64_t i) { return term(b + i); });
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

// out = scale · Σ x over the dimensions flagged in `reduce` (one flag per dimension of `shape`).
// `out` holds the kept dimensions in their order (numel = product of the kept sizes; 1 if none).
// Sums are accumulated in double and scaled before rounding to float.
void sum_axes(const float* x, const std::vector<int64_t>& shape, const std::vector<bool>& reduce, float* out,
              double scale = 1.0);

}  // namespace cpets::kernels::cpu
