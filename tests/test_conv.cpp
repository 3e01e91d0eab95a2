// conv3d, conv_transpose3d, avg_pool3d, upsample_nearest2x: forward against naive loops written here, backward by
// finite differences, AVX-512 path against the portable path, bitwise determinism 1 vs 2 threads.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "engine/ops_conv.h"
#include "gradcheck.h"
#include "kernels/cpu/conv3d.h"
#include "kernels/cpu/isa.h"

using namespace cpets;
using cpets::testing::gradcheck;
using cpets::testing::random_tensor;

namespace {

struct ConvCase {
  int64_t B, cin, cout, D, H, W;
  Int3 k, stride, pad;
  bool bias;
};

int64_t out_len(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

// y[b,co,o] = bias[co] + Σ_{ci,kd,kh,kw} w[co,ci,kd,kh,kw] · x[b,ci,o·s+k−p], in double.
std::vector<double> naive_conv(const ConvCase& c, const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t oD = out_len(c.D, c.k[0], c.stride[0], c.pad[0]), oH = out_len(c.H, c.k[1], c.stride[1], c.pad[1]),
                oW = out_len(c.W, c.k[2], c.stride[2], c.pad[2]);
  std::vector<double> y(size_t(c.B * c.cout * oD * oH * oW));
  const float* xp = x.data();
  const float* wp = w.data();
  size_t i = 0;
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t co = 0; co < c.cout; ++co)
      for (int64_t od = 0; od < oD; ++od)
        for (int64_t oh = 0; oh < oH; ++oh)
          for (int64_t ow = 0; ow < oW; ++ow, ++i) {
            double s = c.bias ? bias.data()[co] : 0.0;
            for (int64_t ci = 0; ci < c.cin; ++ci)
              for (int64_t kd = 0; kd < c.k[0]; ++kd)
                for (int64_t kh = 0; kh < c.k[1]; ++kh)
                  for (int64_t kw = 0; kw < c.k[2]; ++kw) {
                    const int64_t d = od * c.stride[0] + kd - c.pad[0], h = oh * c.stride[1] + kh - c.pad[1],
                                  ww = ow * c.stride[2] + kw - c.pad[2];
                    if (d < 0 || d >= c.D || h < 0 || h >= c.H || ww < 0 || ww >= c.W) continue;
                    s += double(wp[(((co * c.cin + ci) * c.k[0] + kd) * c.k[1] + kh) * c.k[2] + kw]) *
                         double(xp[(((b * c.cin + ci) * c.D + d) * c.H + h) * c.W + ww]);
                  }
            y[i] = s;
          }
  return y;
}

struct ConvInputs {
  Tensor x, w, b;
};
ConvInputs make_inputs(const ConvCase& c, uint32_t seed) {
  ConvInputs in;
  in.x = random_tensor({c.B, c.cin, c.D, c.H, c.W}, seed);
  in.w = random_tensor({c.cout, c.cin, c.k[0], c.k[1], c.k[2]}, seed + 1, -0.3f, 0.3f);
  if (c.bias) in.b = random_tensor({c.cout}, seed + 2);
  return in;
}

void check_forward(const ConvCase& c, uint32_t seed) {
  ConvInputs in = make_inputs(c, seed);
  Tensor y = conv3d(in.x, in.w, in.b, c.stride, c.pad);
  CHECK(y.shape() == Shape{c.B, c.cout, out_len(c.D, c.k[0], c.stride[0], c.pad[0]),
                           out_len(c.H, c.k[1], c.stride[1], c.pad[1]), out_len(c.W, c.k[2], c.stride[2], c.pad[2])});
  std::vector<double> ref = naive_conv(c, in.x, in.w, in.b);
  REQUIRE(int64_t(ref.size()) == y.numel());
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(ref[i] - y.data()[i]) / (1e-4 + 1e-4 * std::abs(ref[i])));
  CHECK_MESSAGE(worst < 1.0, "worst normalised error " << worst);
}

std::vector<ConvCase> forward_cases() {
  return {
      {1, 3, 5, 5, 6, 7, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},       // odd sizes, odd channels
      {2, 2, 3, 5, 6, 7, {3, 3, 3}, {1, 1, 1}, {0, 0, 0}, false},      // no padding
      {1, 3, 4, 7, 6, 9, {3, 3, 3}, {1, 1, 1}, {2, 2, 2}, true},       // padding 2
      {1, 3, 5, 5, 6, 7, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, true},       // 1×1×1
      {2, 2, 7, 8, 9, 10, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, true},      // PatchGAN down-sampling
      {1, 3, 2, 7, 6, 5, {4, 4, 4}, {1, 1, 1}, {1, 1, 1}, false},      // PatchGAN stride-1 head
      {1, 2, 3, 9, 7, 11, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, true},      // stride 2, odd sizes
      {1, 2, 3, 7, 8, 9, {3, 2, 1}, {1, 2, 3}, {1, 0, 0}, true},       // anisotropic everything
      {1, 16, 16, 4, 5, 37, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},    // 16-multiple channels, W tail
      {2, 16, 32, 3, 4, 32, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, false},   // full 16-lane vectors
      {1, 3, 16, 4, 3, 32, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},     // 16 outputs, W a multiple of 16
      {1, 1, 16, 6, 5, 20, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},     // first layer 1→16
      {1, 17, 1, 4, 5, 18, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},     // head 17→1
      {1, 17, 1, 32, 6, 40, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},    // 17→1 with 18 vectors per task: 12 + 6
      {1, 5, 2, 32, 6, 40, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, false},    // 5→2: 8 + 8 + 2
      {1, 37, 18, 3, 4, 21, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},    // three input-channel blocks
      // Deep enough for the per-task ring of padded planes (runs of >= 4 output planes):
      {2, 3, 5, 24, 5, 7, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},
      {2, 2, 3, 50, 6, 5, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, true},
      {2, 2, 3, 26, 5, 6, {3, 3, 3}, {1, 1, 1}, {0, 0, 0}, false},
  };
}

template <class F>
void with_threads(int n, F&& f) {
  const int prev = omp_get_max_threads();
  omp_set_num_threads(n);
  f();
  omp_set_num_threads(prev);
}

// Forward output and the three gradients of Σ g·conv(x, w, b).
std::vector<Tensor> conv_pass(const ConvCase& c, const ConvInputs& in, const Tensor& g) {
  Tensor x = in.x.clone().set_requires_grad(true), w = in.w.clone().set_requires_grad(true);
  Tensor b = c.bias ? in.b.clone().set_requires_grad(true) : Tensor();
  Tensor y = conv3d(x, w, b, c.stride, c.pad);
  y.backward(g);
  return {y.detach(), x.grad(), w.grad(), c.bias ? b.grad() : Tensor()};
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined()) return a.defined() == b.defined();
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()) == 0;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, double(std::abs(a.data()[i] - b.data()[i])));
  return m;
}

}  // namespace

TEST_CASE("conv3d forward matches naive loops (odd sizes, strides, paddings, kernels 1/3/4)") {
  uint32_t seed = 10;
  for (const ConvCase& c : forward_cases()) {
    CAPTURE(c.cin);
    CAPTURE(c.cout);
    CAPTURE(c.W);
    CAPTURE(c.k[0]);
    CAPTURE(c.stride[0]);
    check_forward(c, seed += 7);
  }
}

// ctest runs this file once per level; here every level this CPU has also runs in one process,
// against the naive loops and against the best level (different roundings, same results to 1e-3).
TEST_CASE("conv3d at every supported instruction-set level matches naive loops and the best level") {
  namespace kc = kernels::cpu;
  for (const ConvCase& c : forward_cases()) {
    ConvInputs in = make_inputs(c, 5);
    Tensor y0 = conv3d(in.x, in.w, in.b, c.stride, c.pad);
    Tensor g = random_tensor(y0.shape(), 6);
    std::vector<Tensor> best;
    {
      kc::ScopedCpuIsa level(kc::best_cpu_isa());
      best = conv_pass(c, in, g);
    }
    for (kc::CpuIsa isa : kc::compiled_cpu_isas()) {
      std::string why;
      if (!kc::cpu_isa_supported(isa, &why)) {
        MESSAGE("SKIPPED: " << std::string(kc::cpu_isa_name(isa)) << ": " << why);  // doctest prints a char* as a pointer
        continue;
      }
      const std::string level_name = kc::cpu_isa_name(isa);
      CAPTURE(level_name);
      kc::ScopedCpuIsa level(isa);
      check_forward(c, 99);
      std::vector<Tensor> other = conv_pass(c, in, g);
      for (size_t i = 0; i < best.size(); ++i) {
        if (!best[i].defined()) continue;
        CAPTURE(i);
        CHECK(max_abs_diff(best[i], other[i]) < 1e-3);
      }
    }
  }
}

TEST_CASE("conv3d backward by finite differences") {
  const std::vector<ConvCase> cases = {
      {1, 2, 3, 3, 4, 5, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},
      {2, 2, 2, 5, 4, 3, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, true},   // stride 2, odd sizes
      {1, 2, 3, 6, 5, 7, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, false},  // PatchGAN down-sampling
      {1, 3, 2, 4, 5, 4, {4, 4, 4}, {1, 1, 1}, {1, 1, 1}, true},   // PatchGAN head
      {1, 3, 2, 3, 4, 5, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, true},   // 1×1×1
      {1, 2, 2, 5, 5, 6, {3, 3, 3}, {1, 1, 1}, {2, 2, 2}, false},  // padding 2
      {1, 2, 2, 5, 6, 7, {3, 2, 3}, {2, 1, 3}, {0, 1, 2}, true},   // anisotropic
      {1, 2, 3, 5, 4, 5, {1, 2, 1}, {2, 3, 2}, {0, 1, 0}, true},   // stride > kernel: inputs no tap reaches
      {1, 2, 17, 3, 4, 5, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},  // Cout ≥ 16: channel-vectorised weight gradient
      {1, 3, 1, 4, 5, 6, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},   // Cout 1: 12 (ci, tap) pairs per block
      {1, 2, 16, 5, 4, 6, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, false}, // the same, strided
      {2, 1, 2, 19, 3, 4, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},  // ring of padded planes (input gradient too)
      {2, 1, 2, 40, 3, 3, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, false}, // the same, strided (dilated dy)
      {2, 1, 16, 16, 3, 3, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true}, // ring in the weight gradient (Cout >= 16)
  };
  for (const ConvCase& c : cases) {
    CAPTURE(c.k[0]);
    CAPTURE(c.stride[0]);
    CAPTURE(c.pad[0]);
    ConvInputs in = make_inputs(c, 3);
    std::vector<Tensor> inputs = {in.x, in.w};
    if (c.bias) inputs.push_back(in.b);
    gradcheck([&](const std::vector<Tensor>& v) { return conv3d(v[0], v[1], c.bias ? v[2] : Tensor(), c.stride, c.pad); },
              inputs);
  }
}

TEST_CASE("conv3d forward and backward are bitwise identical for 1 and 2 threads") {
  const std::vector<ConvCase> cases = {
      {2, 16, 16, 6, 10, 48, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},
      {1, 3, 32, 5, 7, 21, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},
      {1, 1, 16, 8, 9, 20, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, true},
      {1, 32, 1, 6, 6, 18, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},
      {2, 16, 16, 24, 6, 32, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},  // ring of padded planes
  };
  for (const ConvCase& c : cases) {
    ConvInputs in = make_inputs(c, 21);
    Tensor g = random_tensor({c.B, c.cout, out_len(c.D, c.k[0], c.stride[0], c.pad[0]), out_len(c.H, c.k[1], c.stride[1], c.pad[1]),
                              out_len(c.W, c.k[2], c.stride[2], c.pad[2])},
                             22);
    std::vector<Tensor> one, two;
    with_threads(1, [&] { one = conv_pass(c, in, g); });
    with_threads(2, [&] { two = conv_pass(c, in, g); });
    for (size_t i = 0; i < one.size(); ++i) {
      CAPTURE(i);
      CHECK(bitwise_equal(one[i], two[i]));
    }
  }
}

// The deepest levels' small outputs go through im2col + GEMM (kernels/cpu/conv3d.h): the forward
// against the float64 loops, every pass against the direct kernels (finite-difference-checked
// above), and bitwise repeatable for 1 and 2 threads.
TEST_CASE("conv3d small outputs (im2col + GEMM) equal the float64 loops and the direct kernels") {
  namespace kc = kernels::cpu;
  const std::vector<ConvCase> cases = {
      {2, 32, 24, 6, 8, 6, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, true},    // Pix2Pix down-sampling, 3 wide
      {1, 40, 20, 5, 6, 9, {3, 3, 3}, {1, 1, 1}, {0, 0, 0}, false},   // 7 wide, no padding
      {1, 48, 16, 5, 6, 6, {3, 3, 2}, {2, 1, 2}, {1, 1, 0}, true},    // anisotropic
      {2, 64, 8, 3, 4, 3, {4, 4, 4}, {1, 1, 1}, {1, 1, 1}, false},    // PatchGAN stride-1 tail, 2 wide
  };
  for (const ConvCase& c : cases) {
    CAPTURE(c.cin);
    CAPTURE(c.cout);
    const kc::Conv3dShape shape = kc::Conv3dShape::of(c.B, c.cin, c.cout, {c.D, c.H, c.W}, {c.k[0], c.k[1], c.k[2]},
                                                      {c.stride[0], c.stride[1], c.stride[2]}, {c.pad[0], c.pad[1], c.pad[2]});
    REQUIRE(kc::conv3d_im2col_worthwhile(shape));
    check_forward(c, 31);
    const ConvInputs in = make_inputs(c, 32);
    const Tensor g = random_tensor(conv3d(in.x, in.w, in.b, c.stride, c.pad).shape(), 33);
    std::vector<Tensor> one, two, direct;
    with_threads(1, [&] { one = conv_pass(c, in, g); });
    with_threads(2, [&] { two = conv_pass(c, in, g); });
    kc::conv3d_set_im2col_enabled(false);
    direct = conv_pass(c, in, g);
    kc::conv3d_set_im2col_enabled(true);
    for (size_t i = 0; i < one.size(); ++i) {
      if (!one[i].defined()) continue;
      CAPTURE(i);
      CHECK(bitwise_equal(one[i], two[i]));
      double scale = 0;
      for (int64_t j = 0; j < direct[i].numel(); ++j) scale = std::max(scale, double(std::abs(direct[i].data()[j])));
      CHECK(max_abs_diff(one[i], direct[i]) <= 1e-5 * (1 + scale));  // float sums of up to 4096·2 products
    }
  }
  // Batch items are independent products: each item's output and input gradient at batch 2 equal
  // its own at batch 1, bit for bit (data-parallel ranks rely on it).
  {
    const kc::Conv3dShape two = kc::Conv3dShape::of(2, 32, 24, {6, 8, 6}, {4, 4, 4}, {2, 2, 2}, {1, 1, 1});
    kc::Conv3dShape one = two;
    one.batch = 1;
    const int64_t xn = two.in_channels * two.in_voxels(), yn = two.out_channels * two.out_voxels();
    const Tensor x = random_tensor({2 * xn}, 41), w = random_tensor({24 * 32 * 64}, 42), b = random_tensor({24}, 43),
                 dy = random_tensor({2 * yn}, 44);
    std::vector<float> y(static_cast<size_t>(2 * yn)), dx(static_cast<size_t>(2 * xn)), y1(static_cast<size_t>(yn)),
        dx1(static_cast<size_t>(xn));
    kc::conv3d_forward(two, x.data(), w.data(), b.data(), y.data());
    kc::conv3d_backward_data(two, dy.data(), w.data(), dx.data());
    for (int64_t i = 0; i < 2; ++i) {
      kc::conv3d_forward(one, x.data() + i * xn, w.data(), b.data(), y1.data());
      kc::conv3d_backward_data(one, dy.data() + i * yn, w.data(), dx1.data());
      CHECK(std::memcmp(y1.data(), y.data() + i * yn, sizeof(float) * yn) == 0);
      CHECK(std::memcmp(dx1.data(), dx.data() + i * xn, sizeof(float) * xn) == 0);
    }
  }
  const kc::Conv3dShape wide = kc::Conv3dShape::of(1, 64, 16, {8, 8, 16}, {4, 4, 4}, {1, 1, 1}, {1, 1, 1});
  CHECK_FALSE(kc::conv3d_im2col_worthwhile(wide));  // 15 wide: the direct kernels' vectors are full
  const kc::Conv3dShape narrow = kc::Conv3dShape::of(1, 2, 16, {8, 8, 6}, {3, 3, 3}, {1, 1, 1}, {0, 0, 0});
  CHECK_FALSE(kc::conv3d_im2col_worthwhile(narrow));  // a reduction of 54 is too short for the GEMM
}

TEST_CASE("conv3d rejects bad shapes with a clear message") {
  Tensor x = Tensor::zeros({1, 3, 4, 4, 4});
  CHECK_THROWS_WITH_AS(conv3d(x, Tensor::zeros({2, 4, 3, 3, 3}), Tensor(), 1, 1), doctest::Contains("input channels"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv3d(Tensor::zeros({3, 4, 4, 4}), Tensor::zeros({2, 3, 3, 3, 3}), Tensor(), 1, 1),
                       doctest::Contains("5-D"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv3d(x, Tensor::zeros({2, 3, 3, 3, 3}), Tensor::zeros({3}), 1, 1), doctest::Contains("bias"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv3d(x, Tensor::zeros({2, 3, 7, 7, 7}), Tensor(), 1, 1), doctest::Contains("larger than"),
                       std::invalid_argument);
}

// ---- conv_transpose3d ---------------------------------------------------------------------

namespace {

// y[b,co,i·s+k−p] += w[ci,co,k] · x[b,ci,i] (+ bias[co]), in double: the definition, by scatter.
std::vector<double> naive_conv_transpose(const ConvCase& c, const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t oD = (c.D - 1) * c.stride[0] - 2 * c.pad[0] + c.k[0], oH = (c.H - 1) * c.stride[1] - 2 * c.pad[1] + c.k[1],
                oW = (c.W - 1) * c.stride[2] - 2 * c.pad[2] + c.k[2];
  std::vector<double> y(size_t(c.B * c.cout * oD * oH * oW), 0.0);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t co = 0; co < c.cout; ++co) {
      double* yb = &y[size_t((b * c.cout + co) * oD * oH * oW)];
      if (c.bias)
        for (int64_t i = 0; i < oD * oH * oW; ++i) yb[i] = bias.data()[co];
      for (int64_t ci = 0; ci < c.cin; ++ci)
        for (int64_t d = 0; d < c.D; ++d)
          for (int64_t h = 0; h < c.H; ++h)
            for (int64_t ww = 0; ww < c.W; ++ww)
              for (int64_t kd = 0; kd < c.k[0]; ++kd)
                for (int64_t kh = 0; kh < c.k[1]; ++kh)
                  for (int64_t kw = 0; kw < c.k[2]; ++kw) {
                    const int64_t od = d * c.stride[0] + kd - c.pad[0], oh = h * c.stride[1] + kh - c.pad[1],
                                  ow = ww * c.stride[2] + kw - c.pad[2];
                    if (od < 0 || od >= oD || oh < 0 || oh >= oH || ow < 0 || ow >= oW) continue;
                    yb[(od * oH + oh) * oW + ow] += double(w.data()[(((ci * c.cout + co) * c.k[0] + kd) * c.k[1] + kh) * c.k[2] + kw]) *
                                                     double(x.data()[(((b * c.cin + ci) * c.D + d) * c.H + h) * c.W + ww]);
                  }
    }
  return y;
}

ConvInputs make_transpose_inputs(const ConvCase& c, uint32_t seed) {
  ConvInputs in;
  in.x = random_tensor({c.B, c.cin, c.D, c.H, c.W}, seed);
  in.w = random_tensor({c.cin, c.cout, c.k[0], c.k[1], c.k[2]}, seed + 1, -0.3f, 0.3f);  // (Cin, Cout, k…)
  if (c.bias) in.b = random_tensor({c.cout}, seed + 2);
  return in;
}

std::vector<ConvCase> transpose_cases() {
  return {
      {2, 3, 2, 3, 4, 5, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, true},    // BMGAN's up-sampling: exactly ×2
      {1, 2, 3, 4, 3, 5, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, false},   // stride 1: a same-size convolution
      {1, 2, 2, 3, 5, 4, {3, 2, 3}, {2, 3, 1}, {0, 1, 2}, true},    // anisotropic, stride > kernel on H
      {1, 17, 18, 3, 3, 17, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, true}, // ≥ 16 channels: the vectorised paths
      {1, 16, 16, 4, 5, 18, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true}, // Winograd shapes (through conv3d's input gradient)
  };
}

}  // namespace

TEST_CASE("conv_transpose3d forward matches the scatter definition; backward by finite differences") {
  for (const ConvCase& c : transpose_cases()) {
    CAPTURE(c.k[0]);
    CAPTURE(c.stride[0]);
    CAPTURE(c.cin);
    const ConvInputs in = make_transpose_inputs(c, 50);
    const Tensor y = conv_transpose3d(in.x, in.w, in.b, c.stride, c.pad);
    CHECK(y.shape() == Shape{c.B, c.cout, (c.D - 1) * c.stride[0] - 2 * c.pad[0] + c.k[0],
                             (c.H - 1) * c.stride[1] - 2 * c.pad[1] + c.k[1], (c.W - 1) * c.stride[2] - 2 * c.pad[2] + c.k[2]});
    const std::vector<double> ref = naive_conv_transpose(c, in.x, in.w, in.b);
    REQUIRE(int64_t(ref.size()) == y.numel());
    double worst = 0;
    for (size_t i = 0; i < ref.size(); ++i)
      worst = std::max(worst, std::abs(ref[i] - y.data()[i]) / (1e-4 + 1e-4 * std::abs(ref[i])));
    CHECK_MESSAGE(worst < 1.0, "worst normalised error " << worst);
    if (c.cin > 8) continue;  // finite differences on the small cases
    const std::vector<Tensor> inputs = c.bias ? std::vector<Tensor>{in.x, in.w, in.b} : std::vector<Tensor>{in.x, in.w};
    gradcheck([&](const std::vector<Tensor>& v) { return conv_transpose3d(v[0], v[1], c.bias ? v[2] : Tensor(), c.stride, c.pad); },
              inputs);
  }
  // Transposition: <conv(a), b> = <a, conv_transpose(b)> with the same weight.
  const Tensor a = random_tensor({1, 3, 8, 6, 10}, 60), w = random_tensor({2, 3, 4, 4, 4}, 61);
  const Tensor down = conv3d(a, w, Tensor(), 2, 1);
  const Tensor b = random_tensor(down.shape(), 62);
  const Tensor up = conv_transpose3d(b, w, Tensor(), 2, 1);
  REQUIRE(up.shape() == a.shape());
  double lhs = 0, rhs = 0;
  for (int64_t i = 0; i < down.numel(); ++i) lhs += double(down.data()[i]) * b.data()[i];
  for (int64_t i = 0; i < a.numel(); ++i) rhs += double(a.data()[i]) * up.data()[i];
  CHECK(lhs == doctest::Approx(rhs).epsilon(1e-5));
}

TEST_CASE("conv_transpose3d rejects bad shapes naming the op and the fix") {
  const Tensor x = Tensor::zeros({1, 3, 4, 4, 4});
  CHECK_THROWS_WITH_AS(conv_transpose3d(x, Tensor::zeros({2, 3, 4, 4, 4}), Tensor(), 2, 1),
                       doctest::Contains("conv_transpose3d: weight (Cin, Cout, k, k, k) expects 2 input channels"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv_transpose3d(x, Tensor::zeros({3, 2, 4, 4, 4}), Tensor::zeros({3}), 2, 1),
                       doctest::Contains("bias"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv_transpose3d(x, Tensor::zeros({3, 2, 2, 2, 2}), Tensor(), 1, 2), doctest::Contains("padding"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv_transpose3d(Tensor::zeros({3, 4, 4, 4}), Tensor::zeros({3, 2, 4, 4, 4}), Tensor(), 2, 1),
                       doctest::Contains("5-D"), std::invalid_argument);
}

// ---- pooling and upsampling ----------------------------------------------------------------

TEST_CASE("avg_pool3d forward matches naive loops; backward by finite differences") {
  struct PoolCase { int64_t D, H, W, k, s; };
  for (PoolCase pc : {PoolCase{4, 6, 8, 2, 2}, PoolCase{5, 7, 9, 2, 2}, PoolCase{5, 6, 7, 3, 2}, PoolCase{6, 5, 7, 3, 1}}) {
    CAPTURE(pc.k);
    CAPTURE(pc.s);
    Tensor x = random_tensor({2, 3, pc.D, pc.H, pc.W}, 31);
    Tensor y = avg_pool3d(x, pc.k, pc.s);
    const int64_t oD = (pc.D - pc.k) / pc.s + 1, oH = (pc.H - pc.k) / pc.s + 1, oW = (pc.W - pc.k) / pc.s + 1;
    REQUIRE(y.shape() == Shape{2, 3, oD, oH, oW});
    int64_t i = 0;
    double worst = 0;
    for (int64_t p = 0; p < 6; ++p)
      for (int64_t od = 0; od < oD; ++od)
        for (int64_t oh = 0; oh < oH; ++oh)
          for (int64_t ow = 0; ow < oW; ++ow, ++i) {
            double s = 0;
            for (int64_t a = 0; a < pc.k; ++a)
              for (int64_t b = 0; b < pc.k; ++b)
                for (int64_t c = 0; c < pc.k; ++c)
                  s += x.data()[((p * pc.D + od * pc.s + a) * pc.H + oh * pc.s + b) * pc.W + ow * pc.s + c];
            worst = std::max(worst, std::abs(s / double(pc.k * pc.k * pc.k) - y.data()[i]));
          }
    CHECK(worst < 1e-6);
    Tensor small = random_tensor({1, 2, pc.D, pc.H, pc.W}, 32);
    gradcheck([&](const std::vector<Tensor>& v) { return avg_pool3d(v[0], pc.k, pc.s); }, {small});
  }
}

TEST_CASE("upsample_nearest2x forward copies every voxel into its 2x2x2 block; backward by finite differences") {
  Tensor x = random_tensor({2, 3, 3, 4, 5}, 41);
  Tensor y = upsample_nearest2x(x);
  REQUIRE(y.shape() == Shape{2, 3, 6, 8, 10});
  bool ok = true;
  for (int64_t p = 0; p < 6; ++p)
    for (int64_t d = 0; d < 6; ++d)
      for (int64_t h = 0; h < 8; ++h)
        for (int64_t w = 0; w < 10; ++w)
          ok &= y.data()[((p * 6 + d) * 8 + h) * 10 + w] == x.data()[((p * 3 + d / 2) * 4 + h / 2) * 5 + w / 2];
  CHECK(ok);
  gradcheck([](const std::vector<Tensor>& v) { return upsample_nearest2x(v[0]); }, {random_tensor({1, 2, 3, 2, 5}, 42)});
}

TEST_CASE("pool and upsample are bitwise identical for 1 and 2 threads") {
  Tensor x = random_tensor({2, 4, 10, 12, 14}, 51);
  auto run = [&](auto op) {
    Tensor xi = x.clone().set_requires_grad(true);
    Tensor y = op(xi);
    Tensor g = random_tensor(y.shape(), 52);
    y.backward(g);
    return std::vector<Tensor>{y.detach(), xi.grad()};
  };
  auto pool = [](const Tensor& t) { return avg_pool3d(t, 2, 2); };
  auto pool3 = [](const Tensor& t) { return avg_pool3d(t, 3, 2); };
  auto up = [](const Tensor& t) { return upsample_nearest2x(t); };
  std::vector<Tensor> a1, a2, b1, b2, c1, c2;
  with_threads(1, [&] { a1 = run(pool); b1 = run(pool3); c1 = run(up); });
  with_threads(2, [&] { a2 = run(pool); b2 = run(pool3); c2 = run(up); });
  for (int i = 0; i < 2; ++i) {
    CHECK(bitwise_equal(a1[i], a2[i]));
    CHECK(bitwise_equal(b1[i], b2[i]));
    CHECK(bitwise_equal(c1[i], c2[i]));
  }
}

namespace {

// One convolution's forward, input gradient and weight + bias gradients through the kernel API
// (no Tensor: the engine's allocator is not what is tested here).
struct KernelRun {
  kernels::cpu::Conv3dShape s;
  std::vector<float> x, w, b, g;
  std::vector<float> y, dx, dw, db;
};

KernelRun kernel_case(int64_t B, int64_t cin, int64_t cout, int64_t D, int64_t H, int64_t W, int64_t k, int64_t stride,
                      uint32_t seed) {
  KernelRun r;
  r.s = kernels::cpu::Conv3dShape::of(B, cin, cout, {D, H, W}, {k, k, k}, {stride, stride, stride}, {1, 1, 1});
  auto fill = [&](std::vector<float>& v, int64_t n, uint32_t sd) {
    Tensor t = random_tensor({n}, sd);
    v.assign(t.data(), t.data() + n);
  };
  fill(r.x, B * cin * r.s.in_voxels(), seed);
  fill(r.w, cout * cin * r.s.taps(), seed + 1);
  fill(r.b, cout, seed + 2);
  fill(r.g, B * cout * r.s.out_voxels(), seed + 3);
  return r;
}

void run_kernels(KernelRun& r) {
  namespace kc = kernels::cpu;
  r.y.assign(r.g.size(), 0.f);
  r.dx.assign(r.x.size(), 0.f);
  r.dw.assign(r.w.size(), 0.f);
  r.db.assign(r.b.size(), 0.f);
  kc::conv3d_forward(r.s, r.x.data(), r.w.data(), r.b.data(), r.y.data());
  kc::conv3d_backward_data(r.s, r.g.data(), r.w.data(), r.dx.data());
  kc::conv3d_backward_weight(r.s, r.x.data(), r.g.data(), r.dw.data(), r.db.data());
}

bool same_results(const KernelRun& a, const KernelRun& b) { return a.y == b.y && a.dx == b.dx && a.dw == b.dw && a.db == b.db; }

}  // namespace

TEST_CASE("conv3d from two threads at once gives the serial results; released scratch is rebuilt") {
  // Different shapes (so different scratch sizes and paths: ring vs whole padded copy, channel-
  // vs W-vectorised weight gradient, strided phases), each large enough to run in parallel inside.
  std::vector<KernelRun> serial = {
      kernel_case(2, 16, 16, 10, 12, 40, 3, 1, 31),
      kernel_case(1, 8, 1, 12, 10, 33, 3, 1, 41),
      kernel_case(1, 16, 32, 14, 12, 36, 4, 2, 51),
      kernel_case(1, 12, 20, 9, 20, 29, 3, 1, 61),
  };
  for (KernelRun& r : serial) run_kernels(r);
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    std::vector<KernelRun> copies[2] = {serial, serial};
    bool ok[2] = {true, true};
    auto worker = [&](int id) {
      // The two threads take the cases in opposite orders, several times over.
      for (int rep = 0; rep < 3; ++rep)
        for (size_t i = 0; i < copies[id].size(); ++i) {
          KernelRun& r = copies[id][id == 0 ? i : copies[id].size() - 1 - i];
          run_kernels(r);
          const KernelRun& want = serial[id == 0 ? i : serial.size() - 1 - i];
          ok[id] = ok[id] && same_results(r, want);
        }
    };
    std::thread t0(worker, 0), t1(worker, 1);
    if (round == 1) kernels::cpu::conv3d_release_scratch();  // while both are running
    t0.join();
    t1.join();
    CHECK(ok[0]);
    CHECK(ok[1]);
    kernels::cpu::conv3d_release_scratch();
  }
  // After a release the next call allocates afresh and still gives the same results.
  for (const KernelRun& want : serial) {
    KernelRun r = want;
    run_kernels(r);
    CHECK(same_results(r, want));
  }
}
