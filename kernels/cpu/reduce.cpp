#include "kernels/cpu/reduce.h"

namespace cpets::kernels::cpu {
namespace {

constexpr int64_t kColumnBlock = 1024;  // kept elements accumulated together in a column sum

struct Group {
  int64_t size;
  bool reduce;
};

// Drops size-1 dimensions and merges neighbours that are both reduced or both kept.
std::vector<Group> merge_groups(const std::vector<Group>& dims) {
  std::vector<Group> g;
  for (const Group& d : dims) {
    if (d.size == 1) continue;
    if (!g.empty() && g.back().reduce == d.reduce) g.back().size *= d.size;
    else g.push_back(d);
  }
  return g;
}

// out[a] = Σ_r x[a·R + r]: each row split into fixed chunks, chunk partials combined in order.
template <class T>
void sum_rows(const T* x, int64_t A, int64_t R, double* out) {
  const int64_t nc = (R + kReduceChunk - 1) / kReduceChunk;
  if (nc == 1) {
    parallel_for(A, std::max<int64_t>(1, kReduceChunk / R), [&](int64_t b, int64_t e) {
      for (int64_t a = b; a < e; ++a) {
        const T* row = x + a * R;
        out[a] = lane_sum(R, [&](int64_t i) { return row[i]; });
      }
    });
    return;
  }
  std::vector<double> partial(A * nc);
  parallel_for(A * nc, 1, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      const int64_t a = it / nc, c = it % nc;
      const int64_t r0 = c * kReduceChunk, len = std::min(kReduceChunk, R - r0);
      const T* p = x + a * R + r0;
      partial[it] = lane_sum(len, [&](int64_t i) { return p[i]; });
    }
  });
  for (int64_t a = 0; a < A; ++a) {
    double s = 0;
    for (int64_t c = 0; c < nc; ++c) s += partial[a * nc + c];
    out[a] = s;
  }
}

// out[a·K + k] = Σ_r x[(a·R + r)·K + k], K > 1. Work items are (a, block of k, chunk of r); each
// accumulates whole rows of its k block in double, vectorised across k. Chunks of r are combined
// in order.
template <class T>
void sum_columns(const T* x, int64_t A, int64_t R, int64_t K, double* out) {
  const int64_t nkb = (K + kColumnBlock - 1) / kColumnBlock;
  const int64_t kb_len = (K + nkb - 1) / nkb;
  const int64_t r_len = std::max<int64_t>(1, kReduceChunk / kb_len);
  const int64_t nrc = (R + r_len - 1) / r_len;
  const int64_t items = A * nkb * nrc;
  std::vector<double> partial(nrc > 1 ? items * kb_len : 0);
  const int64_t grain = std::max<int64_t>(1, kReduceChunk / (kb_len * std::min(R, r_len)));
  parallel_for(items, grain, [&](int64_t b, int64_t e) {
    double acc[kColumnBlock];
    for (int64_t it = b; it < e; ++it) {
      const int64_t a = it / (nkb * nrc), kb = (it / nrc) % nkb, rc = it % nrc;
      const int64_t k0 = kb * kb_len, klen = std::min(kb_len, K - k0);
      const int64_t r0 = rc * r_len, r1 = std::min(R, r0 + r_len);
      std::fill(acc, acc + klen, 0.0);
      for (int64_t r = r0; r < r1; ++r) {
        const T* row = x + (a * R + r) * K + k0;
#pragma omp simd
        for (int64_t k = 0; k < klen; ++k) acc[k] += row[k];
      }
      double* dst = nrc > 1 ? partial.data() + it * kb_len : out + a * K + k0;
      std::copy(acc, acc + klen, dst);
    }
  });
  if (nrc == 1) return;
  for (int64_t a = 0; a < A; ++a)
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const int64_t k0 = kb * kb_len, klen = std::min(kb_len, K - k0);
      double* dst = out + a * K + k0;
      std::fill(dst, dst + klen, 0.0);
      for (int64_t rc = 0; rc < nrc; ++rc) {
        const double* p = partial.data() + ((a * nkb + kb) * nrc + rc) * kb_len;
        for (int64_t k = 0; k < klen; ++k) dst[k] += p[k];
      }
    }
}

template <class T>
void sum_middle(const T* x, int64_t A, int64_t R, int64_t K, double* out) {
  if (K == 1) sum_rows(x, A, R, out);
  else sum_columns(x, A, R, K, out);
}

}  // namespace

void sum_axes(const float* x, const std::vector<int64_t>& shape, const std::vector<bool>& reduce, float* out,
              double scale) {
  std::vector<Group> dims;
  int64_t numel = 1, kept = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims.push_back({shape[i], bool(reduce[i])});
    numel *= shape[i];
    if (!reduce[i]) kept *= shape[i];
  }
  if (numel == 0) {  // empty input: every sum is 0
    std::fill(out, out + kept, 0.f);
    return;
  }
  std::vector<Group> g = merge_groups(dims);
  auto has_reduced = [&] { return std::any_of(g.begin(), g.end(), [](const Group& d) { return d.reduce; }); };
  if (!has_reduced()) {
    parallel_for(numel, kReduceChunk, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] = float(double(x[i]) * scale);
    });
    return;
  }
  // Reduce the innermost reduced group until none is left: each pass is an (A, R, K) → (A, K) sum.
  std::vector<double> cur;
  bool first = true;
  while (has_reduced()) {
    size_t j = g.size();
    while (!g[--j].reduce) {}
    int64_t A = 1, K = 1;
    for (size_t i = 0; i < j; ++i) A *= g[i].size;
    for (size_t i = j + 1; i < g.size(); ++i) K *= g[i].size;
    std::vector<double> next(A * K);
    if (first) sum_middle(x, A, g[j].size, K, next.data());
    else sum_middle(cur.data(), A, g[j].size, K, next.data());
    first = false;
    cur.swap(next);
    g.erase(g.begin() + j);
    g = merge_groups(g);
  }
  parallel_for(kept, kReduceChunk, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = float(cur[i] * scale);
  });
}

}  // namespace cpets::kernels::cpu
