// Winograd convolution (kernels/cpu/conv3d_winograd), both tilings (F(2³, 3³), and F(4, 3) along
// D and H): forward, input gradient and weight gradient against float64 naive loops written
// here, its error against the direct float32 kernel's on the same data, odd sizes (border tiles
// cropped), batch 1 and 2, Cin ≠ Cout, several tile blocks along W, bitwise determinism for 1 vs
// 2 threads, and clear errors for other shapes.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/conv3d.h"
#include "kernels/cpu/conv3d_winograd.h"

namespace kc = cpets::kernels::cpu;

namespace {

struct Case {
  int64_t B, cin, cout, D, H, W;
};

kc::Conv3dShape shape_of(const Case& c) {
  return kc::Conv3dShape::of(c.B, c.cin, c.cout, {c.D, c.H, c.W}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1});
}

std::vector<float> random_floats(int64_t n, uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(gen);
  return v;
}

// y[b,co,o] = bias[co] + Σ_{ci,k} w[co,ci,k] · x[b,ci,o+k−1] in double (stride 1, padding 1).
// With `transposed`, the input gradient instead: dx[b,ci,i] = Σ_{co,k} w[co,ci,k] · dy[b,co,i+1−k].
std::vector<double> naive(const Case& c, const std::vector<float>& x, const std::vector<float>& w, const float* bias,
                          bool transposed) {
  const int64_t ci_n = transposed ? c.cout : c.cin, co_n = transposed ? c.cin : c.cout;
  const int64_t vox = c.D * c.H * c.W;
  std::vector<double> y(size_t(c.B * co_n * vox));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t o = 0; o < co_n; ++o)
      for (int64_t d = 0; d < c.D; ++d)
        for (int64_t h = 0; h < c.H; ++h)
          for (int64_t ww = 0; ww < c.W; ++ww) {
            double s = bias ? double(bias[o]) : 0.0;
            for (int64_t i = 0; i < ci_n; ++i)
              for (int64_t kd = 0; kd < 3; ++kd)
                for (int64_t kh = 0; kh < 3; ++kh)
                  for (int64_t kw = 0; kw < 3; ++kw) {
                    const int64_t sd = transposed ? d + 1 - kd : d + kd - 1, sh = transposed ? h + 1 - kh : h + kh - 1,
                                  sw = transposed ? ww + 1 - kw : ww + kw - 1;
                    if (sd < 0 || sd >= c.D || sh < 0 || sh >= c.H || sw < 0 || sw >= c.W) continue;
                    const int64_t wi = transposed ? ((i * c.cin + o) * 3 + kd) * 9 + kh * 3 + kw
                                                  : ((o * c.cin + i) * 3 + kd) * 9 + kh * 3 + kw;
                    s += double(w[size_t(wi)]) * double(x[size_t(((b * ci_n + i) * c.D + sd) * c.H * c.W + sh * c.W + sw)]);
                  }
            y[size_t(((b * co_n + o) * c.D + d) * c.H * c.W + h * c.W + ww)] = s;
          }
  return y;
}

// dw[co,ci,k] = Σ_{b,o} x[b,ci,o+k−1] · dy[b,co,o] in double (stride 1, padding 1).
std::vector<double> naive_weight_gradient(const Case& c, const std::vector<float>& x, const std::vector<float>& dy) {
  std::vector<double> dw(size_t(c.cout * c.cin * 27));
  for (int64_t co = 0; co < c.cout; ++co)
    for (int64_t ci = 0; ci < c.cin; ++ci)
      for (int64_t k = 0; k < 27; ++k) {
        const int64_t kd = k / 9, kh = (k / 3) % 3, kw = k % 3;
        double s = 0;
        for (int64_t b = 0; b < c.B; ++b)
          for (int64_t d = 0; d < c.D; ++d)
            for (int64_t h = 0; h < c.H; ++h)
              for (int64_t w = 0; w < c.W; ++w) {
                const int64_t sd = d + kd - 1, sh = h + kh - 1, sw = w + kw - 1;
                if (sd < 0 || sd >= c.D || sh < 0 || sh >= c.H || sw < 0 || sw >= c.W) continue;
                s += double(x[size_t(((b * c.cin + ci) * c.D + sd) * c.H * c.W + sh * c.W + sw)]) *
                     double(dy[size_t(((b * c.cout + co) * c.D + d) * c.H * c.W + h * c.W + w)]);
              }
        dw[size_t((co * c.cin + ci) * 27 + k)] = s;
      }
  return dw;
}

// max |y − ref| / max |ref|
double relative_error(const std::vector<float>& y, const std::vector<double>& ref) {
  double err = 0, peak = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err = std::max(err, std::abs(double(y[i]) - ref[i]));
    peak = std::max(peak, std::abs(ref[i]));
  }
  return err / peak;
}

// The direct kernel, whatever the routing in conv3d_forward / conv3d_backward_data.
struct DirectOnly {
  DirectOnly() { kc::conv3d_set_winograd_enabled(false); }
  ~DirectOnly() { kc::conv3d_set_winograd_enabled(true); }
};

template <class F>
void with_threads(int n, F&& f) {
  const int prev = omp_get_max_threads();
  omp_set_num_threads(n);
  f();
  omp_set_num_threads(prev);
}

std::vector<Case> cases() {
  return {
      {1, 8, 16, 5, 7, 9},     // odd sizes on every axis
      {2, 16, 32, 6, 4, 10},   // batch 2, Cin < Cout, even sizes
      {2, 32, 16, 3, 5, 25},   // Cin > Cout, 13 tiles along W: two blocks (7 + 6)
      {1, 16, 16, 4, 3, 50},   // 25 tiles: three blocks
      {1, 3, 5, 3, 3, 3},      // channels not multiples of 16 (padded output vectors)
      {2, 5, 48, 2, 3, 4},     // 3 output-channel vectors (odd count)
      {1, 4, 4, 1, 1, 1},      // a single voxel: every neighbour is padding
      {1, 32, 32, 7, 9, 24},   // the model's channel count, full 12-tile block
      {1, 64, 64, 3, 4, 5},    // the full preset's 64 channels (2 × 2 output vectors)
      {3, 16, 16, 1, 2, 2},    // batch 3, a single tile, H and D below a tile
      // D and H ≥ 16: tiles of 4 × 4 × 2 outputs (F(4, 3) along D and H).
      {1, 16, 16, 16, 16, 10},  // whole tiles
      {2, 16, 32, 17, 19, 6},   // partial tiles on every axis
      {1, 32, 16, 16, 18, 25},  // two tile blocks along W
      {1, 3, 5, 17, 16, 7},     // channels not multiples of 16
      {1, 64, 64, 16, 17, 4},   // 2 × 2 output vectors
      {1, 16, 16, 32, 32, 24},  // weight gradient: 768 tiles, several chunks and flushes to double
  };
}

// Error bounds, relative to the output's peak. Measured: Winograd 3e-8 .. 4e-7, the direct
// float32 kernel 2e-8 .. 2e-6 (its sums run over 27·Cin taps, the Winograd products over Cin
// only, so the transforms' extra roundings are more than made up). Bound: 2e-6 absolute, and
// at most 4× the direct kernel's error plus 5e-7 (the floor for the tiny one-voxel case,
// where the direct sum of 4·27 terms is almost exact). A wrong index gives errors ~1e-1.
//
// With tiles of 4 × 4 × 2 (F(4, 3) along D and H, D and H ≥ 16) the transforms' constants (up
// to 8 in Aᵀ, 5 in Bᵀ, 1/24 in G) amplify the roundings: measured 2e-6 .. 7e-6 for all three
// passes. The weight gradient's products are summed over hundreds of tiles in the transformed
// domain, where values are ~100× the result (they cancel in Gᵀ), partly in float. Bound: 2e-5
// of the peak. It is not compared with the direct kernel here: the direct weight gradient sums
// in lanes and double and is unusually exact (~1e-7). A wrong index still gives errors ~1e-1.
constexpr double kMaxRelError = 2e-6, kMaxRelErrorF43 = 2e-5;
bool comparable_to_direct(double e_wino, double e_direct) { return e_wino <= 4 * e_direct + 5e-7; }
bool f43_tiles(const kc::Conv3dShape& s) { return kc::conv3d_winograd_tile_rows(s.in) == 4; }
double max_rel_error(const kc::Conv3dShape& s) { return f43_tiles(s) ? kMaxRelErrorF43 : kMaxRelError; }
bool within_bound(const kc::Conv3dShape& s, double e_wino, double e_direct) {
  if (f43_tiles(s)) return e_wino < kMaxRelErrorF43;
  return e_wino < kMaxRelError && comparable_to_direct(e_wino, e_direct);
}

}  // namespace

TEST_CASE("winograd forward matches float64 naive convolution; error of the order of the direct kernel's") {
  uint32_t seed = 100;
  for (const Case& c : cases()) {
    INFO("B " << c.B << " cin " << c.cin << " cout " << c.cout << " size " << c.D << "x" << c.H << "x" << c.W);
    const kc::Conv3dShape s = shape_of(c);
    const auto x = random_floats(c.B * c.cin * c.D * c.H * c.W, seed++, 1.f);
    const auto w = random_floats(c.cout * c.cin * 27, seed++, 0.3f);
    const auto bias = random_floats(c.cout, seed++, 0.5f);
    const std::vector<double> ref = naive(c, x, w, bias.data(), false);
    std::vector<float> y_wino(ref.size(), -7.f), y_direct(ref.size());
    kc::conv3d_winograd_forward(s, x.data(), w.data(), bias.data(), y_wino.data());
    {
      DirectOnly direct;
      kc::conv3d_forward(s, x.data(), w.data(), bias.data(), y_direct.data());
    }
    const double e_wino = relative_error(y_wino, ref), e_direct = relative_error(y_direct, ref);
    MESSAGE("forward rel. error: winograd " << e_wino << ", direct " << e_direct);
    CHECK(within_bound(s, e_wino, e_direct));
  }
}

TEST_CASE("winograd forward without bias") {
  const Case c{2, 16, 16, 5, 6, 11};
  const auto x = random_floats(c.B * c.cin * c.D * c.H * c.W, 7, 1.f);
  const auto w = random_floats(c.cout * c.cin * 27, 8, 0.3f);
  const std::vector<double> ref = naive(c, x, w, nullptr, false);
  std::vector<float> y(ref.size(), 3.f);
  kc::conv3d_winograd_forward(shape_of(c), x.data(), w.data(), nullptr, y.data());
  CHECK(relative_error(y, ref) < max_rel_error(shape_of(c)));
}

TEST_CASE("winograd input gradient matches float64 naive transposed convolution") {
  uint32_t seed = 500;
  for (const Case& c : cases()) {
    INFO("B " << c.B << " cin " << c.cin << " cout " << c.cout << " size " << c.D << "x" << c.H << "x" << c.W);
    const kc::Conv3dShape s = shape_of(c);
    const auto dy = random_floats(c.B * c.cout * c.D * c.H * c.W, seed++, 1.f);
    const auto w = random_floats(c.cout * c.cin * 27, seed++, 0.3f);
    const std::vector<double> ref = naive(c, dy, w, nullptr, true);
    std::vector<float> dx_wino(ref.size(), -7.f), dx_direct(ref.size());
    kc::conv3d_winograd_backward_data(s, dy.data(), w.data(), dx_wino.data());
    {
      DirectOnly direct;
      kc::conv3d_backward_data(s, dy.data(), w.data(), dx_direct.data());
    }
    const double e_wino = relative_error(dx_wino, ref), e_direct = relative_error(dx_direct, ref);
    MESSAGE("input-gradient rel. error: winograd " << e_wino << ", direct " << e_direct);
    CHECK(within_bound(s, e_wino, e_direct));
  }
}

TEST_CASE("winograd weight gradient matches float64 naive correlation of x and dy") {
  uint32_t seed = 900;
  for (const Case& c : cases()) {
    INFO("B " << c.B << " cin " << c.cin << " cout " << c.cout << " size " << c.D << "x" << c.H << "x" << c.W);
    const kc::Conv3dShape s = shape_of(c);
    const auto x = random_floats(c.B * c.cin * c.D * c.H * c.W, seed++, 1.f);
    const auto dy = random_floats(c.B * c.cout * c.D * c.H * c.W, seed++, 1.f);
    const std::vector<double> ref = naive_weight_gradient(c, x, dy);
    std::vector<float> dw_wino(ref.size(), -7.f), dw_direct(ref.size());
    kc::conv3d_winograd_backward_weight(s, x.data(), dy.data(), dw_wino.data());
    {
      DirectOnly direct;
      kc::conv3d_backward_weight(s, x.data(), dy.data(), dw_direct.data(), nullptr);
    }
    const double e_wino = relative_error(dw_wino, ref), e_direct = relative_error(dw_direct, ref);
    MESSAGE("weight-gradient rel. error: winograd " << e_wino << ", direct " << e_direct);
    CHECK(within_bound(s, e_wino, e_direct));
  }
}

TEST_CASE("winograd: bitwise identical results for 1 and 2 threads") {
  // Large enough (> 4 MFLOP) to run in parallel; both tilings.
  for (const Case& c : {Case{2, 16, 32, 9, 10, 30}, Case{2, 16, 32, 17, 18, 30}}) {
    CAPTURE(c.D);
    const kc::Conv3dShape s = shape_of(c);
    const auto x = random_floats(c.B * c.cin * c.D * c.H * c.W, 31, 1.f);
    const auto dy = random_floats(c.B * c.cout * c.D * c.H * c.W, 32, 1.f);
    const auto w = random_floats(c.cout * c.cin * 27, 33, 0.3f);
    const auto bias = random_floats(c.cout, 34, 0.5f);
    std::vector<float> y1(size_t(c.B * c.cout * c.D * c.H * c.W)), y2(y1.size());
    std::vector<float> dx1(x.size()), dx2(x.size()), dw1(w.size()), dw2(w.size());
    with_threads(1, [&] {
      kc::conv3d_winograd_forward(s, x.data(), w.data(), bias.data(), y1.data());
      kc::conv3d_winograd_backward_data(s, dy.data(), w.data(), dx1.data());
      kc::conv3d_winograd_backward_weight(s, x.data(), dy.data(), dw1.data());
    });
    with_threads(2, [&] {
      kc::conv3d_winograd_forward(s, x.data(), w.data(), bias.data(), y2.data());
      kc::conv3d_winograd_backward_data(s, dy.data(), w.data(), dx2.data());
      kc::conv3d_winograd_backward_weight(s, x.data(), dy.data(), dw2.data());
    });
    CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(dx1.data(), dx2.data(), dx1.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(dw1.data(), dw2.data(), dw1.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("winograd rejects shapes it does not handle, naming them") {
  const Case c{1, 4, 4, 4, 4, 4};
  std::vector<float> x(64 * 4), w(4 * 4 * 64), y(64 * 4);
  kc::Conv3dShape s = shape_of(c);
  CHECK(kc::conv3d_winograd_supports(s));
  s.stride[1] = 2;
  CHECK_FALSE(kc::conv3d_winograd_supports(s));
  CHECK_THROWS_WITH_AS(kc::conv3d_winograd_forward(s, x.data(), w.data(), nullptr, y.data()),
                       doctest::Contains("stride (1, 2, 1)"), std::invalid_argument);
  s = shape_of(c);
  s.kernel[0] = 4;
  CHECK_THROWS_WITH_AS(kc::conv3d_winograd_backward_data(s, y.data(), w.data(), x.data()),
                       doctest::Contains("kernel (4, 3, 3)"), std::invalid_argument);
  s = shape_of(c);
  s.padding[2] = 0;
  CHECK_THROWS_AS(kc::conv3d_winograd_forward(s, x.data(), w.data(), nullptr, y.data()), std::invalid_argument);
}

TEST_CASE("conv3d_forward / conv3d_backward_data route the worthwhile shapes to winograd, and can be switched off") {
  const Case c{1, 16, 32, 5, 6, 9};
  const kc::Conv3dShape s = shape_of(c);
  CHECK(kc::conv3d_winograd_worthwhile(s, 16, 32));
  CHECK_FALSE(kc::conv3d_winograd_worthwhile(s, 8, 32));   // too few input channels
  CHECK_FALSE(kc::conv3d_winograd_worthwhile(s, 16, 8));   // too few output channels
  kc::Conv3dShape flat = s;
  flat.in[0] = 3;
  CHECK_FALSE(kc::conv3d_winograd_worthwhile(flat, 16, 32));  // spatial axis < 4
  kc::Conv3dShape strided = s;
  strided.stride[2] = 2;
  CHECK_FALSE(kc::conv3d_winograd_worthwhile(strided, 16, 32));

  const auto x = random_floats(c.B * c.cin * c.D * c.H * c.W, 41, 1.f);
  const auto dy = random_floats(c.B * c.cout * c.D * c.H * c.W, 42, 1.f);
  const auto w = random_floats(c.cout * c.cin * 27, 43, 0.3f);
  const size_t ny = size_t(c.B * c.cout * c.D * c.H * c.W);
  std::vector<float> y_wino(ny), y_routed(ny), y_direct(ny), dx_wino(x.size()), dx_routed(x.size()), dx_direct(x.size());
  kc::conv3d_winograd_forward(s, x.data(), w.data(), nullptr, y_wino.data());
  kc::conv3d_winograd_backward_data(s, dy.data(), w.data(), dx_wino.data());
  REQUIRE(kc::conv3d_winograd_enabled());
  kc::conv3d_forward(s, x.data(), w.data(), nullptr, y_routed.data());
  kc::conv3d_backward_data(s, dy.data(), w.data(), dx_routed.data());
  {
    DirectOnly direct;
    kc::conv3d_forward(s, x.data(), w.data(), nullptr, y_direct.data());
    kc::conv3d_backward_data(s, dy.data(), w.data(), dx_direct.data());
  }
  CHECK(std::memcmp(y_wino.data(), y_routed.data(), ny * sizeof(float)) == 0);
  CHECK(std::memcmp(dx_wino.data(), dx_routed.data(), x.size() * sizeof(float)) == 0);
  // Switched off, the direct kernel runs: other rounding, so not bitwise the same.
  CHECK(std::memcmp(y_wino.data(), y_direct.data(), ny * sizeof(float)) != 0);
  CHECK(std::memcmp(dx_wino.data(), dx_direct.data(), x.size() * sizeof(float)) != 0);
}
