// Scalar maths shared by the CUDA kernels and the host: every function here is
// `__host__ __device__` under nvcc and plain inline C++ otherwise, so a CPU test
// (tests/test_cuda_math.cpp) checks exactly the code the kernels run — the Philox stream against
// engine/rng, the activations against their definitions, the broadcast index maths against
// naive loops — on machines without a GPU.
#pragma once
#include <math.h>
#include <stdint.h>

#include "kernels/cuda/hd.h"

namespace cpets::kernels::cuda {

// ---- Philox-4x32-10 (engine/rng.h documents the stream layout) --------------------------------

struct Philox4 {
  uint32_t v[4];
};

CPETS_HD Philox4 philox_round(Philox4 c, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = uint64_t(0xD2511F53u) * c.v[0];
  const uint64_t p1 = uint64_t(0xCD9E8D57u) * c.v[2];
  return {{uint32_t(p1 >> 32) ^ c.v[1] ^ k0, uint32_t(p1), uint32_t(p0 >> 32) ^ c.v[3] ^ k1, uint32_t(p0)}};
}

CPETS_HD Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  c = philox_round(c, k0, k1);
  for (int r = 1; r < 10; ++r) {
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
    c = philox_round(c, k0, k1);
  }
  return c;
}

// The four words at stream positions 4·block … 4·block + 3 of generator `seed`.
CPETS_HD Philox4 philox_block(uint64_t seed, uint64_t block) {
  return philox4x32_10({{uint32_t(block), uint32_t(block >> 32), 0u, 0u}}, uint32_t(seed), uint32_t(seed >> 32));
}

// 24 high bits → a float in [0, 1); exact.
CPETS_HD float word_to_unit_float(uint32_t w) { return float(w >> 8) * (1.0f / 16777216.0f); }

CPETS_HD float uniform_in(uint32_t w, float lo, float hi) {
  float v = lo + (hi - lo) * word_to_unit_float(w);
  if (v >= hi && hi > lo) v = nextafterf(hi, lo);  // rounding must not reach the open end
  return v;
}

// Box–Muller on one pair of words, in double as the CPU generator does.
CPETS_HD void box_muller(uint32_t a, uint32_t b, double& z0, double& z1) {
  const double u1 = (double(a) + 0.5) / 4294967296.0;
  const double theta = 6.283185307179586476925286766559 * (double(b) / 4294967296.0);
  const double r = sqrt(-2.0 * log(u1));
  z0 = r * cos(theta);
  z1 = r * sin(theta);
}

// ---- activations --------------------------------------------------------------------------------

CPETS_HD float sigmoidf_(float z) { return 1.f / (1.f + expf(-z)); }
CPETS_HD float silu(float z) { return z * sigmoidf_(z); }
// d SiLU / dz = σ(z)·(1 + z·(1 − σ(z))).
CPETS_HD float silu_grad(float z) {
  const float s = sigmoidf_(z);
  return s * (1.f + z * (1.f - s));
}
// Φ(x) from erfc, so the left tail keeps its relative accuracy (1 − ½erfc would cancel).
CPETS_HD float normal_cdf(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
CPETS_HD float gelu(float x) { return x * normal_cdf(x); }
// d GELU / dx = Φ(x) + x·φ(x).
CPETS_HD float gelu_grad(float x) { return normal_cdf(x) + x * 0.39894228040143268f * expf(-0.5f * x * x); }
CPETS_HD float leaky_relu(float x, float slope) { return x > 0.f ? x : x * slope; }

// ---- broadcast index maths ------------------------------------------------------------------

constexpr int kMaxRank = 8;

// An output of up to kMaxRank (merged) dimensions and, per operand, the stride of each
// dimension in that operand (0 where it broadcasts). Built on the host (elementwise.cu).
struct BroadcastIndex {
  int rank = 0;
  int64_t size[kMaxRank] = {};
  int64_t stride[2][kMaxRank] = {};
};

// Offsets into operands 0 and 1 of output element i (row-major over `size`). `I` is the index
// type: kernels use 32-bit indices when everything fits (a 64-bit division costs several times a
// 32-bit one, and these run once per element of a memory-bound op).
template <class I>
CPETS_HD void broadcast_offsets(const BroadcastIndex& ix, I i, I& off0, I& off1) {
  off0 = 0;
  off1 = 0;
  for (int d = ix.rank - 1; d >= 0; --d) {
    const I size = I(ix.size[d]);
    const I q = i / size, c = i - q * size;
    off0 += c * I(ix.stride[0][d]);
    off1 += c * I(ix.stride[1][d]);
    i = q;
  }
}

}  // namespace cpets::kernels::cuda
