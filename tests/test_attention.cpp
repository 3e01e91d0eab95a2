// Fused attention against a naive softmax(Q·Kᵀ/√d)·V (and its analytic backward) written here in
// double, finite-difference gradchecks, thread-count independence and O(N·C) memory.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/allocator.h"
#include "engine/ops_attention.h"
#include "gradcheck.h"
#include "kernels/cpu/attention.h"

using namespace cpets;
using cpets::testing::with_threads;
using cpets::testing::gradcheck;
using cpets::testing::random_tensor;

namespace {

struct Naive {
  std::vector<double> out, dq, dk, dv;
};

// Plain multi-head attention in double; with `gout`, also its gradients (via the full P matrix).
Naive naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads, const Tensor& gout = Tensor()) {
  const int64_t B = q.size(0), Nq = q.size(1), Nk = k.size(1), C = q.size(2), d = C / heads;
  const double scale = 1.0 / std::sqrt(double(d));
  Naive r;
  r.out.assign(B * Nq * C, 0.0);
  if (gout.defined()) {
    r.dq.assign(B * Nq * C, 0.0);
    r.dk.assign(B * Nk * C, 0.0);
    r.dv.assign(B * Nk * C, 0.0);
  }
  auto Q = [&](int64_t b, int64_t i, int64_t c) { return double(q.data()[(b * Nq + i) * C + c]); };
  auto K = [&](int64_t b, int64_t j, int64_t c) { return double(k.data()[(b * Nk + j) * C + c]); };
  auto V = [&](int64_t b, int64_t j, int64_t c) { return double(v.data()[(b * Nk + j) * C + c]); };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < Nq; ++i) {
        std::vector<double> p(Nk);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j < Nk; ++j) {
          double s = 0;
          for (int64_t c = h * d; c < (h + 1) * d; ++c) s += Q(b, i, c) * K(b, j, c);
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        for (double& x : p) sum += (x = std::exp(x - mx));
        for (double& x : p) x /= sum;
        double* o = &r.out[(b * Nq + i) * C];
        for (int64_t j = 0; j < Nk; ++j)
          for (int64_t c = h * d; c < (h + 1) * d; ++c) o[c] += p[j] * V(b, j, c);
        if (!gout.defined()) continue;
        const float* g = gout.data() + (b * Nq + i) * C;
        std::vector<double> dp(Nk, 0.0);
        double D = 0;
        for (int64_t j = 0; j < Nk; ++j) {
          for (int64_t c = h * d; c < (h + 1) * d; ++c) {
            dp[j] += g[c] * V(b, j, c);
            r.dv[(b * Nk + j) * C + c] += p[j] * g[c];
          }
          D += p[j] * dp[j];
        }
        for (int64_t j = 0; j < Nk; ++j) {
          const double ds = p[j] * (dp[j] - D) * scale;
          for (int64_t c = h * d; c < (h + 1) * d; ++c) {
            r.dq[(b * Nq + i) * C + c] += ds * K(b, j, c);
            r.dk[(b * Nk + j) * C + c] += ds * Q(b, i, c);
          }
        }
      }
  return r;
}

void check_close(const Tensor& got, const std::vector<double>& want, double atol, const std::string& what) {
  REQUIRE(size_t(got.numel()) == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::abs(got.data()[i] - want[i]);
    if (err > atol * (1 + std::abs(want[i]))) {
      FAIL_CHECK(what << " element " << i << ": got " << got.data()[i] << ", want " << want[i]);
      return;
    }
  }
}

struct Case {
  int64_t B, Nq, Nk, C, heads;
};

// Forward and backward of the fused op against the naive double version.
void check_against_naive(const Case& c, uint32_t seed, float range = 1.f) {
  CAPTURE(c.B); CAPTURE(c.Nq); CAPTURE(c.Nk); CAPTURE(c.C); CAPTURE(c.heads);
  Tensor q = random_tensor({c.B, c.Nq, c.C}, seed, -range, range).set_requires_grad(true);
  Tensor k = random_tensor({c.B, c.Nk, c.C}, seed + 1, -range, range).set_requires_grad(true);
  Tensor v = random_tensor({c.B, c.Nk, c.C}, seed + 2).set_requires_grad(true);
  Tensor g = random_tensor({c.B, c.Nq, c.C}, seed + 3);
  Tensor out = attention(q, k, v, c.heads);
  out.backward(g);
  Naive want = naive_attention(q, k, v, c.heads, g);
  check_close(out, want.out, 2e-5, "out");
  check_close(q.grad(), want.dq, 5e-5, "dq");
  check_close(k.grad(), want.dk, 5e-5, "dk");
  check_close(v.grad(), want.dv, 5e-5, "dv");
}


std::vector<float> forward_backward_values(const Case& c, uint32_t seed) {
  Tensor q = random_tensor({c.B, c.Nq, c.C}, seed).set_requires_grad(true);
  Tensor k = random_tensor({c.B, c.Nk, c.C}, seed + 1).set_requires_grad(true);
  Tensor v = random_tensor({c.B, c.Nk, c.C}, seed + 2).set_requires_grad(true);
  Tensor out = attention(q, k, v, c.heads);
  out.backward(random_tensor(out.shape(), seed + 3));
  std::vector<float> all = out.to_vector();
  for (const Tensor& t : {q.grad(), k.grad(), v.grad()}) {
    std::vector<float> x = t.to_vector();
    all.insert(all.end(), x.begin(), x.end());
  }
  return all;
}

}  // namespace

TEST_CASE("attention forward and backward: self-attention against naive, odd and block-boundary sizes") {
  check_against_naive({2, 37, 37, 8, 2}, 1);
  check_against_naive({1, 5, 5, 6, 3}, 2);
  check_against_naive({1, 64, 64, 32, 4}, 3);   // exactly one query block, half a key tile
  check_against_naive({1, 129, 129, 16, 2}, 4); // one past the key tile and two query blocks
  check_against_naive({2, 257, 257, 64, 2}, 5); // d = 32, several tiles, partial last ones
  check_against_naive({1, 216, 216, 128, 4}, 6); // demo-preset token count, full-preset width
  check_against_naive({1, 45, 77, 40, 2}, 13);   // d = 20: a full and a partial channel vector
  check_against_naive({1, 100, 150, 128, 2}, 14); // d = 64 and d = 96 take the Eigen tile path
  check_against_naive({2, 70, 33, 96, 1}, 15);
}

TEST_CASE("attention forward and backward: cross-attention, Nq ≠ Nk, few context tokens") {
  check_against_naive({2, 37, 5, 12, 3}, 7);
  check_against_naive({1, 300, 8, 32, 4}, 8);   // context of 8 tokens, query range split in dK/dV
  check_against_naive({2, 1000, 4, 64, 8}, 9);  // d = 8, many query tiles, 4 keys
  check_against_naive({1, 5, 300, 16, 1}, 10);  // few queries, many keys
  check_against_naive({1, 3, 1, 4, 2}, 11);     // a single key: output equals v
}

TEST_CASE("attention: thin heads (d ≤ 8, queries or keys in the vector lanes) against naive") {
  check_against_naive({1, 300, 259, 64, 8}, 60);  // d = 8: key chunks of 128 + 3, query/key lane tails
  check_against_naive({2, 45, 131, 21, 3}, 61);   // d = 7, odd everything
  check_against_naive({1, 17, 129, 40, 8}, 62);   // d = 5, one query group, one past a key chunk
  check_against_naive({2, 129, 33, 32, 4}, 63);   // demo G_P layout (4 heads of 8), Nq one past a block
  check_against_naive({1, 16, 16, 1, 1}, 64);     // d = 1: exactly one lane group
  check_against_naive({1, 70, 400, 32, 4}, 65, 6.f);  // large scores: the running max moves across chunks
}

TEST_CASE("attention: heads of 9–16 channels (phased lane kernels) against naive") {
  check_against_naive({2, 216, 216, 32, 2}, 70);   // demo encoder: 2 heads of 16
  check_against_naive({1, 131, 300, 48, 3}, 71);   // d = 16, key chunks of 128 + 44, query lane tail
  check_against_naive({1, 300, 131, 16, 1}, 72);   // d = 16, query chunks of 128 in dK/dV, key lane tail
  check_against_naive({2, 37, 53, 33, 3}, 73);     // d = 11
  check_against_naive({1, 19, 140, 9, 1}, 74);     // d = 9
  check_against_naive({1, 150, 260, 30, 2}, 75, 6.f);  // d = 15, large scores across key chunks
  check_against_naive({2, 216, 4, 32, 2}, 76);     // cross-attention to 4 tokens
}

TEST_CASE("attention: large scores stay finite and accurate (online softmax rescaling)") {
  check_against_naive({1, 150, 200, 16, 2}, 12, 6.f);  // |scores| up to ~100
}

TEST_CASE("attention backward: gradcheck of q, k and v on small shapes") {
  auto f2 = [](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2], 2); };
  gradcheck(f2, {random_tensor({2, 5, 6}, 20), random_tensor({2, 7, 6}, 21), random_tensor({2, 7, 6}, 22)});
  gradcheck(f2, {random_tensor({1, 7, 4}, 23), random_tensor({1, 3, 4}, 24), random_tensor({1, 3, 4}, 25)});
  auto f8 = [](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2], 2); };  // d = 8
  gradcheck(f8, {random_tensor({1, 19, 16}, 29), random_tensor({1, 21, 16}, 30), random_tensor({1, 21, 16}, 31)});
  auto f13 = [](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2], 1); };  // d = 13
  gradcheck(f13, {random_tensor({1, 17, 13}, 32), random_tensor({1, 18, 13}, 33), random_tensor({1, 18, 13}, 34)});
  auto f1 = [](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2], 1); };
  gradcheck(f1, {random_tensor({1, 70, 3}, 26), random_tensor({1, 130, 3}, 27), random_tensor({1, 130, 3}, 28)});
}

TEST_CASE("attention: bitwise identical for 1 and 2 threads (self and cross)") {
  for (const Case& c : {Case{2, 300, 300, 64, 2}, Case{2, 300, 300, 128, 2}, Case{2, 20000, 6, 32, 4},
                       Case{2, 500, 333, 64, 8}, Case{1, 700, 9, 35, 5},  // thin heads, d = 8 and 7
                       Case{2, 400, 290, 64, 4}, Case{1, 600, 5, 26, 2}}) {     // phased, d = 16 and 13
    CAPTURE(c.Nk);
    std::vector<float> r1 = with_threads(1, [&] { return forward_backward_values(c, 40); });
    std::vector<float> r2 = with_threads(2, [&] { return forward_backward_values(c, 40); });
    REQUIRE(r1.size() == r2.size());
    CHECK(std::memcmp(r1.data(), r2.data(), r1.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("attention: 16,384 tokens forward and backward in O(N·C) memory, no N² buffer") {
  const int64_t N = 16384, C = 4, heads = 1;
  Tensor q = random_tensor({1, N, C}, 50).set_requires_grad(true);
  Tensor k = random_tensor({1, N, C}, 51).set_requires_grad(true);
  Tensor v = random_tensor({1, N, C}, 52).set_requires_grad(true);
  Tensor g = random_tensor({1, N, C}, 53);
  const size_t before = host_memory_stats().current_bytes;
  host_reset_peak();
  {
    Tensor out = attention(q, k, v, heads);
    out.backward(g);
    // spot-check one output row against the naive formula
    const int64_t i = 12345;
    std::vector<double> p(N);
    double mx = -1e300, sum = 0;
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += double(q.data()[i * C + c]) * k.data()[j * C + c];
      mx = std::max(mx, p[j] = s / 2.0);
    }
    for (double& x : p) sum += (x = std::exp(x - mx));
    for (int64_t c = 0; c < C; ++c) {
      double o = 0;
      for (int64_t j = 0; j < N; ++j) o += p[j] / sum * v.data()[j * C + c];
      CHECK(out.data()[i * C + c] == doctest::Approx(o).epsilon(1e-4));
    }
  }
  const size_t used = host_memory_stats().peak_bytes - before;
  const size_t row_bytes = size_t(N) * C * sizeof(float);
  MESSAGE("peak extra host memory " << used << " bytes = " << double(used) / row_bytes << " × N·C floats");
  CHECK(used <= 16 * row_bytes);                      // out, lse, 3 gradients, scratch: a few N·C
  CHECK(used < size_t(N) * N * sizeof(float) / 100);  // far from an N×N score matrix
  // Per-thread tiles depend on the head dimension only.
  namespace kc = kernels::cpu;
  CHECK(kc::attention_tile_floats({1, N, N, C, heads}) == kc::attention_tile_floats({1, 16, 16, C, heads}));
  CHECK(kc::attention_tile_floats({1, N, N, C, heads}) < 256 * 1024);  // under 1 MB per thread
}

TEST_CASE("attention: bad shapes give clear messages") {
  Tensor q = Tensor::zeros({2, 5, 8}), kv = Tensor::zeros({2, 3, 8});
  CHECK_THROWS_WITH_AS(attention(q, kv, kv, 3), doctest::Contains("heads = 3 must be ≥ 1 and divide the 8 channels"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(attention(q, Tensor::zeros({2, 3, 6}), Tensor::zeros({2, 3, 6}), 2),
                       doctest::Contains("project the context to 8 channels"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(attention(q, kv, Tensor::zeros({2, 4, 8}), 2), doctest::Contains("same shape"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(attention(Tensor::zeros({5, 8}), kv, kv, 2), doctest::Contains("(batch, tokens, channels)"),
                       std::invalid_argument);
}
