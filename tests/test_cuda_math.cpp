// The CUDA kernels' scalar maths (kernels/cuda/hd_math.h: `__host__ __device__` code) compiled for
// the host and checked here, so the device code path's arithmetic is tested on machines without
// a GPU: the Philox stream against engine/rng, the activations against their definitions in
// double, the broadcast index maths against naive loops.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/rng.h"
#include "kernels/cuda/hd_math.h"

using namespace cpets;
namespace kg = cpets::kernels::cuda;

TEST_CASE("device Philox block equals engine/rng's Philox-4x32-10") {
  for (uint64_t seed : {0ull, 1ull, 0x123456789abcdefull, ~0ull})
    for (uint64_t block : {0ull, 1ull, 4097ull, 0xfedcba9876543210ull}) {
      const PhiloxCounter want =
          philox4x32_10({uint32_t(block), uint32_t(block >> 32), 0u, 0u}, {uint32_t(seed), uint32_t(seed >> 32)});
      const kg::Philox4 got = kg::philox_block(seed, block);
      for (int l = 0; l < 4; ++l) CHECK(got.v[l] == want[l]);
    }
}

TEST_CASE("device uniform and normal streams equal Generator's at any offset") {
  const uint64_t seed = 20240917;
  const uint64_t offset = 13;  // not a multiple of 4: requests start mid-block
  const int64_t n = 1001;
  Generator gen(seed, offset);
  std::vector<float> uni(n), ranged(n), normal(n);
  gen.fill_uniform(uni.data(), n);
  gen.fill_uniform(ranged.data(), n, -0.25f, 0.75f);
  gen.fill_normal(normal.data(), n, 0.5f, 2.f);
  for (int64_t i = 0; i < n; ++i) {
    // Each request starts where the previous ended, as the device launcher is told.
    auto word = [&](uint64_t pos) { return kg::philox_block(seed, pos >> 2).v[pos & 3]; };
    const uint64_t p0 = offset + i, p1 = offset + n + i, p2 = offset + 2 * n + i;
    CHECK(kg::word_to_unit_float(word(p0)) == uni[i]);
    CHECK(kg::uniform_in(word(p1), -0.25f, 0.75f) == ranged[i]);
    double z0, z1;
    const uint64_t first = p2 & ~uint64_t(1);
    kg::box_muller(word(first), word(first + 1), z0, z1);
    CHECK(float(0.5 + 2.0 * ((p2 & 1) ? z1 : z0)) == normal[i]);
  }
}

TEST_CASE("uniform_in never reaches the open end") {
  // The largest word maps to 1 − 2⁻²⁴; with a range where that rounds up to hi it must step back.
  const float lo = 1.f, hi = 1.0000001f;
  CHECK(kg::uniform_in(0xffffffffu, lo, hi) < hi);
  CHECK(kg::uniform_in(0u, lo, hi) == lo);
}

TEST_CASE("activation maths match their definitions in double") {
  const double inv_sqrt2 = 0.70710678118654752440, inv_sqrt2pi = 0.39894228040143267794;
  for (double x = -12.0; x <= 12.0; x += 0.0625) {
    const float xf = float(x);
    const double xd = xf;
    const double cdf = 0.5 * std::erfc(-xd * inv_sqrt2);
    const double sig = 1.0 / (1.0 + std::exp(-xd));
    auto near = [](double got, double want, double rel) {
      return std::abs(got - want) <= rel * std::abs(want) + 1e-37;
    };
    // Φ(x) in float: x/√2 is rounded (relative error u), and erfc(z) amplifies a relative error
    // of z by 2z² = x², so the attainable relative accuracy is about (x² + a few)·u.
    const double cond = (xd * xd + 4.0) * 2.0 * 5.96e-8;
    CHECK_MESSAGE(near(kg::gelu(xf), xd * cdf, cond), "gelu at " << x);
    // Φ + xφ cancels for x < 0 (both terms ~ |x|φ): bound the error by the terms' size instead.
    const double phi_term = std::abs(xd) * inv_sqrt2pi * std::exp(-0.5 * xd * xd);
    CHECK_MESSAGE(std::abs(kg::gelu_grad(xf) - (cdf + xd * inv_sqrt2pi * std::exp(-0.5 * xd * xd))) <=
                      cond * (cdf + phi_term) + 1e-37,
                  "gelu' at " << x);
    CHECK_MESSAGE(near(kg::silu(xf), xd * sig, 1e-6), "silu at " << x);
    CHECK_MESSAGE(std::abs(kg::silu_grad(xf) - sig * (1 + xd * (1 - sig))) <= 1e-6, "silu' at " << x);
    CHECK(kg::leaky_relu(xf, 0.2f) == (xf > 0 ? xf : xf * 0.2f));
  }
  // The left tail keeps relative accuracy (Φ from erfc, not 1 − ½erfc).
  CHECK(kg::gelu(-9.f) < 0.f);
  CHECK(std::abs(kg::gelu(-9.f) / (-9.0 * 0.5 * std::erfc(9.0 * inv_sqrt2)) - 1.0) < 1e-5);
}

TEST_CASE("derivatives agree with central differences in double") {
  for (float x : {-5.f, -2.5f, -1.f, -0.3f, 0.f, 0.4f, 1.f, 2.f, 4.5f}) {
    const float h = 1e-2f;
    const double dg = (double(kg::gelu(x + h)) - kg::gelu(x - h)) / (2.0 * h);
    const double ds = (double(kg::silu(x + h)) - kg::silu(x - h)) / (2.0 * h);
    CHECK(kg::gelu_grad(x) == doctest::Approx(dg).epsilon(2e-3));
    CHECK(kg::silu_grad(x) == doctest::Approx(ds).epsilon(2e-3));
  }
}

TEST_CASE("broadcast offsets equal naive strided indexing") {
  // out (3, 4, 5): a is (3, 1, 5) (broadcast along dim 1), b is (1, 4, 1).
  kg::BroadcastIndex ix;
  ix.rank = 3;
  const int64_t size[3] = {3, 4, 5};
  const int64_t sa[3] = {5, 0, 1}, sb[3] = {0, 1, 0};
  for (int d = 0; d < 3; ++d) {
    ix.size[d] = size[d];
    ix.stride[0][d] = sa[d];
    ix.stride[1][d] = sb[d];
  }
  int64_t i = 0;
  for (int64_t p = 0; p < 3; ++p)
    for (int64_t q = 0; q < 4; ++q)
      for (int64_t r = 0; r < 5; ++r, ++i) {
        int64_t oa, ob;
        kg::broadcast_offsets(ix, i, oa, ob);
        CHECK(oa == p * 5 + r);
        CHECK(ob == q);
      }
}
