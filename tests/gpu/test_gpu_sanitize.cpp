// The small binary that tools/gpu_run.sh runs under compute-sanitizer (memcheck, racecheck,
// synccheck, initcheck): every pass of conv3d and of our SGEMM in every precision with tail tiles
// and split K, attention with a split dK/dV pass, the norms and the reductions — all on small
// shapes, so that the sanitizers' 10–100× slowdown stays within seconds.
//
// It is a test too. Small integers (|v| ≤ 3) are exact in BF16 and TF32, and every sum of their
// products here stays below 2²⁴, so each product and each sum is exact in any order: the
// tensor-core paths must then equal the CPU backend bit for bit. That pins the mma fragment maps
// and the thread → tile maps exactly — a swapped row, column or k in any (lane, slot) changes an
// integer — which the host emulation (tests/test_cuda_host_math.cpp) cannot do, because it uses
// the kernels' own slot tables.
#include "gpu_check.h"

#include <cmath>
#include <random>

#include "engine/backend.h"
#include "engine/ops.h"

using namespace cpets;
using namespace cpets::gpu_testing;
using cpets::testing::random_tensor;

namespace {

Tensor small_integers(const Shape& shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> pick(-3, 3);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = static_cast<float>(pick(gen));
  return Tensor::from_vector(shape, v);
}

const char* const kPrecisions[] = {"fp32", "tf32", "bf16"};

// The exact result of integer data: the CPU's, rounded to integers. (The CPU's 3×3×3 convolution
// may take the Winograd path, whose transforms round: within 1e-3 of the integer, checked here.)
Tensor exact(const Tensor& cpu, const std::string& what) {
  if (!cpu.defined()) return cpu;
  std::vector<float> v = cpu.to_vector();
  for (float& x : v) {
    const float r = std::nearbyint(x);
    REQUIRE_MESSAGE(std::fabs(x - r) < 1e-3f, what << ": the CPU result " << x << " is not near an integer");
    x = r;
  }
  return Tensor::from_vector(cpu.shape(), v);
}

// Equal as numbers, element by element (+0 and −0 alike: a sum's zero may carry either sign).
void expect_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  REQUIRE(got.defined() == want.defined());
  if (!got.defined()) return;
  const std::vector<float> g = got.to_vector(), w = want.to_vector();
  REQUIRE(g.size() == w.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < g.size(); ++i)
    if (!(g[i] == w[i]) && bad++ == 0) first = i;
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << g.size() << " elements differ, first at " << first << ": "
                                << (bad ? g[first] : 0.f) << " on the GPU, exactly " << (bad ? w[first] : 0.f));
}

// f on the GPU in every precision (ours): outputs and input gradients equal the exact integers.
void check_exact(const std::string& what, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                 const std::vector<Tensor>& inputs) {
  Tensor probe;
  {
    NoGradGuard ng;
    probe = f(inputs);
  }
  const Tensor w = small_integers(probe.shape(), 99);
  const std::vector<bool> all(inputs.size(), true);
  const Run cpu = run_on(Device::cpu(), f, inputs, all, w);
  const Tensor out = exact(cpu.out, what + " forward");
  std::vector<Tensor> grads;
  for (size_t i = 0; i < inputs.size(); ++i) grads.push_back(exact(cpu.grads[i], what + " gradient " + std::to_string(i)));
  for (const char* p : kPrecisions) {
    set_backend("precision", p);
    const Run gpu = run_on(Device::cuda(), f, inputs, all, w);
    expect_equal(gpu.out, out, what + " " + p + " forward");
    for (size_t i = 0; i < inputs.size(); ++i)
      expect_equal(gpu.grads[i], grads[i], what + " " + p + " gradient of input " + std::to_string(i));
  }
  set_backend("precision", "fp32");
}

}  // namespace

TEST_CASE("integer data: conv3d (1×1×1 and 3×3×3, stride 2) in fp32, tf32 and bf16 equals the CPU bit for bit") {
  set_backend("conv", "cuda");
  // 13 → 70 channels: the implicit-GEMM (not the narrow) kernels in every pass; 70 = a full and a
  // tail N tile; 2×5×6×7 voxels = two M tiles with a tail; K = 13 and 13·27 = 351, tails of 16.
  Tensor x = small_integers({2, 13, 5, 6, 7}, 1);
  Tensor w1 = small_integers({70, 13, 1, 1, 1}, 2), w3 = small_integers({70, 13, 3, 3, 3}, 3);
  Tensor b = small_integers({70}, 4);
  check_exact("conv3d 1×1×1", [](const std::vector<Tensor>& v) { return conv3d(v[0], v[1], v[2], {1, 1, 1}, {0, 0, 0}); },
              {x, w1, b});
  check_exact("conv3d 3×3×3 pad 1", [](const std::vector<Tensor>& v) { return conv3d(v[0], v[1], v[2], {1, 1, 1}, {1, 1, 1}); },
              {x, w3, b});
  check_exact("conv3d 3×3×3 stride 2", [](const std::vector<Tensor>& v) { return conv3d(v[0], v[1], v[2], {2, 2, 2}, {1, 1, 1}); },
              {x, w3, b});
}

TEST_CASE("integer data: matmul (ours and cuBLAS) in fp32, tf32 and bf16 equals the CPU bit for bit") {
  for (const char* backend : {"cuda", "cublas"}) {
    set_backend("gemm", backend);
    check_exact(std::string("matmul tails [") + backend + "]",
                [](const std::vector<Tensor>& v) { return matmul(v[0], v[1]); },
                {small_integers({2, 70, 45}, 5), small_integers({2, 45, 67}, 6)});
    // K = 3000 over a single 33×20 tile: split K, partial sums added in chunk order.
    check_exact(std::string("matmul split K [") + backend + "]",
                [](const std::vector<Tensor>& v) { return matmul(v[0], v[1]); },
                {small_integers({33, 3000}, 7), small_integers({3000, 20}, 8)});
  }
  set_backend("gemm", "cuda");
}

TEST_CASE("attention with a split dK/dV pass, group norm and reductions on the GPU match the CPU") {
  // Cross-attention to 6 tokens: too few key tiles, so the dK/dV pass is split over query chunks.
  Tensor q = random_tensor({2, 300, 32}, 11), k = random_tensor({2, 6, 32}, 12), v = random_tensor({2, 6, 32}, 13);
  check_against_cpu("cross-attention 300 → 6 tokens, 4 heads",
                    [](const std::vector<Tensor>& t) { return attention(t[0], t[1], t[2], 4); }, {q, k, v},
                    Tol{1e-5, 1e-5}, Tol{1e-4, 1e-4});
  Tensor qs = random_tensor({1, 130, 16}, 14), ks = random_tensor({1, 130, 16}, 15), vs = random_tensor({1, 130, 16}, 16);
  check_against_cpu("self-attention 130 tokens (tail tiles), 2 heads",
                    [](const std::vector<Tensor>& t) { return attention(t[0], t[1], t[2], 2); }, {qs, ks, vs},
                    Tol{1e-5, 1e-5}, Tol{1e-4, 1e-4});
  Tensor x = random_tensor({2, 32, 5, 6, 7}, 17), gamma = random_tensor({32}, 18), beta = random_tensor({32}, 19);
  check_against_cpu("group_norm 8 groups",
                    [](const std::vector<Tensor>& t) { return group_norm(t[0], 8, t[1], t[2], 1e-5f); }, {x, gamma, beta},
                    norm_tol(), {64 * kU, 64 * kU * std::sqrt(840.0) * 2});
  check_against_cpu("group_norm_silu 8 groups",
                    [](const std::vector<Tensor>& t) { return group_norm_silu(t[0], 8, t[1], t[2], 1e-5f); },
                    {x, gamma, beta}, norm_tol(), {64 * kU, 64 * kU * std::sqrt(840.0) * 2});
  check_against_cpu("sum over (0, 2, 3, 4)", [](const std::vector<Tensor>& t) { return sum(t[0], {0, 2, 3, 4}); }, {x},
                    sum_tol(420, 0.5), ulp_tol());
  check_against_cpu("mean of everything", [](const std::vector<Tensor>& t) { return mean(t[0]); }, {x},
                    sum_tol(13440, 0.5), ulp_tol());
}
