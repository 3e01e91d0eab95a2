// layers/: every layer's forward against naive double-precision loops written here (not the
// engine's ops), the zero-initialisation properties (a fresh ResnetBlock is an identity or 1³
// projection, resampled; a fresh SpatialTransformer is the identity), PyTorch's parameter names
// and default-init ranges, BatchNorm's running statistics, and finite-difference checks of the
// input and parameter gradients of ResnetBlock (plain, down, up, channel change), AEResBlock and
// SpatialTransformer (with and without context) on tiny odd shapes.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/init.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "gradcheck.h"
#include "layers/conv.h"
#include "layers/linear.h"
#include "layers/norm.h"
#include "layers/resnet.h"
#include "layers/transformer.h"

using namespace cpets;
using namespace cpets::layers;
using cpets::testing::random_tensor;

namespace {

// ---- naive reference implementations, double precision, flat (B, C, D, H, W) arrays ---------

struct Vol {
  int64_t B, C, D, H, W;
  std::vector<double> v;
  Vol(int64_t b, int64_t c, int64_t d, int64_t h, int64_t w) : B(b), C(c), D(d), H(h), W(w), v(b * c * d * h * w, 0.0) {}
  explicit Vol(const Tensor& t) : Vol(t.size(0), t.size(1), t.size(2), t.size(3), t.size(4)) {
    for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.data()[i];
  }
  double& at(int64_t b, int64_t c, int64_t d, int64_t h, int64_t w) { return v[(((b * C + c) * D + d) * H + h) * W + w]; }
  double at(int64_t b, int64_t c, int64_t d, int64_t h, int64_t w) const {
    return v[(((b * C + c) * D + d) * H + h) * W + w];
  }
  int64_t spatial() const { return D * H * W; }
};

std::vector<double> values(const Tensor& t) {
  std::vector<double> out(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = t.data()[i];
  return out;
}

Vol naive_conv(const Vol& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t pad) {
  const int64_t Co = weight.size(0), K = weight.size(2);
  const auto w = values(weight);
  auto out_size = [&](int64_t n) { return (n + 2 * pad - K) / stride + 1; };
  Vol y(x.B, Co, out_size(x.D), out_size(x.H), out_size(x.W));
  for (int64_t b = 0; b < x.B; ++b)
    for (int64_t co = 0; co < Co; ++co)
      for (int64_t od = 0; od < y.D; ++od)
        for (int64_t oh = 0; oh < y.H; ++oh)
          for (int64_t ow = 0; ow < y.W; ++ow) {
            double s = bias.defined() ? bias.data()[co] : 0.0;
            for (int64_t ci = 0; ci < x.C; ++ci)
              for (int64_t kd = 0; kd < K; ++kd)
                for (int64_t kh = 0; kh < K; ++kh)
                  for (int64_t kw = 0; kw < K; ++kw) {
                    const int64_t d = od * stride - pad + kd, h = oh * stride - pad + kh, ww = ow * stride - pad + kw;
                    if (d < 0 || h < 0 || ww < 0 || d >= x.D || h >= x.H || ww >= x.W) continue;
                    s += w[(((co * x.C + ci) * K + kd) * K + kh) * K + kw] * x.at(b, ci, d, h, ww);
                  }
            y.at(b, co, od, oh, ow) = s;
          }
  return y;
}

Vol naive_conv(const Vol& x, const Conv3d& conv, int64_t stride = 1) {
  return naive_conv(x, conv.weight, conv.bias, stride, conv.weight.size(2) / 2 - (conv.weight.size(2) % 2 == 0 ? 1 : 0));
}

Vol naive_group_norm(const Vol& x, const GroupNorm& gn, double eps) {
  const int64_t G = gn.groups(), Cg = x.C / G, S = x.spatial();
  Vol y = x;
  for (int64_t b = 0; b < x.B; ++b)
    for (int64_t g = 0; g < G; ++g) {
      double mean = 0, var = 0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c)
        for (int64_t s = 0; s < S; ++s) mean += x.v[(b * x.C + c) * S + s];
      mean /= double(Cg * S);
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c)
        for (int64_t s = 0; s < S; ++s) var += std::pow(x.v[(b * x.C + c) * S + s] - mean, 2);
      const double rstd = 1.0 / std::sqrt(var / double(Cg * S) + eps);
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c)
        for (int64_t s = 0; s < S; ++s) {
          const int64_t i = (b * x.C + c) * S + s;
          y.v[i] = (x.v[i] - mean) * rstd * gn.weight.data()[c] + gn.bias.data()[c];
        }
    }
  return y;
}

double silu(double z) { return z / (1.0 + std::exp(-z)); }
double gelu(double z) { return 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0))); }

Vol map(Vol x, double (*f)(double)) {
  for (auto& e : x.v) e = f(e);
  return x;
}

Vol plus(Vol a, const Vol& b) {
  REQUIRE(a.v.size() == b.v.size());
  for (size_t i = 0; i < a.v.size(); ++i) a.v[i] += b.v[i];
  return a;
}

Vol avg_pool2(const Vol& x) {
  Vol y(x.B, x.C, x.D / 2, x.H / 2, x.W / 2);
  for (int64_t b = 0; b < x.B; ++b)
    for (int64_t c = 0; c < x.C; ++c)
      for (int64_t d = 0; d < y.D; ++d)
        for (int64_t h = 0; h < y.H; ++h)
          for (int64_t w = 0; w < y.W; ++w) {
            double s = 0;
            for (int k = 0; k < 8; ++k) s += x.at(b, c, 2 * d + (k >> 2), 2 * h + ((k >> 1) & 1), 2 * w + (k & 1));
            y.at(b, c, d, h, w) = s / 8;
          }
  return y;
}

Vol nearest2(const Vol& x) {
  Vol y(x.B, x.C, x.D * 2, x.H * 2, x.W * 2);
  for (int64_t b = 0; b < y.B; ++b)
    for (int64_t c = 0; c < y.C; ++c)
      for (int64_t d = 0; d < y.D; ++d)
        for (int64_t h = 0; h < y.H; ++h)
          for (int64_t w = 0; w < y.W; ++w) y.at(b, c, d, h, w) = x.at(b, c, d / 2, h / 2, w / 2);
  return y;
}

// Token matrices (N, C) row-major, per sample.
using Mat = std::vector<std::vector<double>>;

Mat naive_linear(const Mat& x, const Linear& lin) {
  Mat y(x.size(), std::vector<double>(lin.out_features()));
  for (size_t n = 0; n < x.size(); ++n)
    for (int64_t o = 0; o < lin.out_features(); ++o) {
      double s = lin.bias.defined() ? lin.bias.data()[o] : 0.0;
      for (int64_t i = 0; i < lin.in_features(); ++i) s += lin.weight.data()[o * lin.in_features() + i] * x[n][i];
      y[n][o] = s;
    }
  return y;
}

Mat naive_layer_norm(const Mat& x, const LayerNorm& ln, double eps) {
  Mat y = x;
  for (size_t n = 0; n < x.size(); ++n) {
    const double C = double(x[n].size());
    double mean = 0, var = 0;
    for (double e : x[n]) mean += e;
    mean /= C;
    for (double e : x[n]) var += (e - mean) * (e - mean);
    const double rstd = 1.0 / std::sqrt(var / C + eps);
    for (size_t c = 0; c < x[n].size(); ++c) y[n][c] = (x[n][c] - mean) * rstd * ln.weight.data()[c] + ln.bias.data()[c];
  }
  return y;
}

Mat naive_attention(const Mat& x, const Mat& ctx, const Attention& a, int64_t heads) {
  const Mat q = naive_linear(x, *a.to_q), k = naive_linear(ctx, *a.to_k), v = naive_linear(ctx, *a.to_v);
  const int64_t C = int64_t(q[0].size()), d = C / heads;
  Mat o(x.size(), std::vector<double>(C, 0.0));
  for (int64_t h = 0; h < heads; ++h)
    for (size_t i = 0; i < q.size(); ++i) {
      std::vector<double> s(k.size());
      double mx = -1e300, z = 0;
      for (size_t j = 0; j < k.size(); ++j) {
        double dot = 0;
        for (int64_t c = h * d; c < (h + 1) * d; ++c) dot += q[i][c] * k[j][c];
        s[j] = dot / std::sqrt(double(d));
        mx = std::max(mx, s[j]);
      }
      for (auto& e : s) z += (e = std::exp(e - mx));
      for (size_t j = 0; j < k.size(); ++j)
        for (int64_t c = h * d; c < (h + 1) * d; ++c) o[i][c] += s[j] / z * v[j][c];
    }
  return naive_linear(o, *a.to_out);
}

Mat add_mat(Mat a, const Mat& b) {
  for (size_t n = 0; n < a.size(); ++n)
    for (size_t c = 0; c < a[n].size(); ++c) a[n][c] += b[n][c];
  return a;
}

// The whole SpatialTransformer, sample by sample.
Vol naive_transformer(const Vol& x, const Tensor& context, const SpatialTransformer& st, int64_t heads) {
  const Vol h = naive_conv(naive_group_norm(x, *st.norm, 1e-6), *st.proj_in);
  const int64_t S = x.spatial(), C = x.C;
  Vol out = x;
  for (int64_t b = 0; b < x.B; ++b) {
    Mat t(S, std::vector<double>(C));
    for (int64_t s = 0; s < S; ++s)
      for (int64_t c = 0; c < C; ++c) t[s][c] = h.v[(b * C + c) * S + s];
    t = add_mat(t, naive_attention(naive_layer_norm(t, *st.norm1, 1e-5), naive_layer_norm(t, *st.norm1, 1e-5), *st.attn1, heads));
    Mat ctx;
    if (context.defined()) {
      ctx.assign(context.size(1), std::vector<double>(context.size(2)));
      for (int64_t k = 0; k < context.size(1); ++k)
        for (int64_t c = 0; c < context.size(2); ++c) ctx[k][c] = context.data()[(b * context.size(1) + k) * context.size(2) + c];
    } else {
      ctx = naive_layer_norm(t, *st.norm2, 1e-5);
    }
    t = add_mat(t, naive_attention(naive_layer_norm(t, *st.norm2, 1e-5), ctx, *st.attn2, heads));
    Mat f = naive_linear(naive_layer_norm(t, *st.norm3, 1e-5), *st.ff->proj);
    const size_t F = f[0].size() / 2;
    Mat g(S, std::vector<double>(F));
    for (int64_t s = 0; s < S; ++s)
      for (size_t c = 0; c < F; ++c) g[s][c] = f[s][c] * gelu(f[s][c + F]);
    t = add_mat(t, naive_linear(g, *st.ff->out));
    Vol tv(1, C, x.D, x.H, x.W);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t c = 0; c < C; ++c) tv.v[c * S + s] = t[s][c];
    const Vol p = naive_conv(tv, *st.proj_out);
    for (int64_t i = 0; i < C * S; ++i) out.v[b * C * S + i] += p.v[i];
  }
  return out;
}

void check_close(const Tensor& got, const Vol& want, double tol) {
  REQUIRE(got.numel() == int64_t(want.v.size()));
  double scale = 0, worst = 0;
  for (double e : want.v) scale = std::max(scale, std::abs(e));
  for (int64_t i = 0; i < got.numel(); ++i) worst = std::max(worst, std::abs(got.data()[i] - want.v[i]));
  CHECK_MESSAGE(worst <= tol * std::max(scale, 1.0), "max error " << worst << " (scale " << scale << ")");
}

void check_equal(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  for (int64_t i = 0; i < a.numel(); ++i) REQUIRE(a.data()[i] == b.data()[i]);
}

// Every parameter random and non-trivial (also zero-initialised convs, norm scales), so the
// comparisons and gradient checks exercise every path.
void randomise(Module& m, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& [name, p] : m.named_parameters()) {
    Tensor t = p;
    const bool scale = name.size() > 6 && name.substr(name.size() - 6) == "weight" && p.dim() == 1;
    const float bound = p.dim() >= 2 ? 1.f / std::sqrt(float(fan_in(p))) : 0.3f;
    for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = (scale ? 1.f : 0.f) + bound * u(gen);
  }
}

// Finite differences on a sample of each parameter's elements: the analytic gradient of
// L = Σ w·f() against (L(p + h) − L(p − h)) / 2h accumulated in double.
void check_parameter_gradients(Module& m, const std::function<Tensor()>& f, int samples = 5, double step = 1e-2,
                               double atol = 2e-3, double rtol = 2e-2) {
  m.zero_grad();
  Tensor out = f();
  const Tensor w = random_tensor(out.shape(), 999u);
  out.backward(w);
  std::mt19937 pick(5);
  for (auto& [name, p] : m.named_parameters()) {
    INFO("parameter " << name);
    Tensor g = p.grad();
    REQUIRE_MESSAGE(g.defined(), "no gradient reached " << name);
    Tensor t = p;
    for (int k = 0; k < samples; ++k) {
      const int64_t i = std::uniform_int_distribution<int64_t>(0, t.numel() - 1)(pick);
      const float orig = t.data()[i];
      double lp, lm;
      {
        NoGradGuard ng;
        t.data()[i] = float(orig + step);
        lp = cpets::testing::weighted_sum(f(), w);
        t.data()[i] = float(orig - step);
        lm = cpets::testing::weighted_sum(f(), w);
        t.data()[i] = orig;
      }
      const double numeric = (lp - lm) / (2 * step), analytic = g.data()[i];
      CHECK_MESSAGE(std::abs(numeric - analytic) <= atol + rtol * std::abs(numeric),
                    "element " << i << ": analytic " << analytic << " vs numeric " << numeric);
    }
  }
}

std::vector<std::string> names(const Module& m) {
  std::vector<std::string> out;
  for (const auto& [k, v] : m.state_dict()) out.push_back(k);
  return out;
}

}  // namespace

// ---- basic layers -------------------------------------------------------------------------------

TEST_CASE("Conv3d: PyTorch names, default init ranges, forward against naive loops (stride 2, padding)") {
  Generator init(3);
  Conv3d conv(3, 5, 3, init, ConvOptions{2, 1, true});
  CHECK(names(conv) == std::vector<std::string>{"weight", "bias"});
  CHECK(conv.weight.shape() == Shape{5, 3, 3, 3, 3});
  const float bound = 1.f / std::sqrt(81.f);
  float wmax = 0, bmax = 0;
  for (float v : conv.weight.to_vector()) wmax = std::max(wmax, std::abs(v));
  for (float v : conv.bias.to_vector()) bmax = std::max(bmax, std::abs(v));
  CHECK(wmax <= bound);
  CHECK(wmax > 0.8f * bound);  // uniform over the whole range, not a narrower one
  CHECK(bmax <= bound);
  const Tensor x = random_tensor({2, 3, 5, 6, 7}, 1);
  check_close(conv.forward(x), naive_conv(Vol(x), conv.weight, conv.bias, 2, 1), 1e-5);

  Conv3d nobias(2, 4, 4, init, ConvOptions{1, 1, false});
  CHECK(names(nobias) == std::vector<std::string>{"weight"});
  CHECK_THROWS_AS(conv.forward(random_tensor({1, 2, 4, 4, 4}, 2)), std::invalid_argument);
}

TEST_CASE("Linear: forward against naive loops, init ranges, bad input") {
  Generator init(4);
  Linear lin(7, 3, init);
  CHECK(names(lin) == std::vector<std::string>{"weight", "bias"});
  for (float v : lin.weight.to_vector()) CHECK(std::abs(v) <= 1.f / std::sqrt(7.f));
  const Tensor x = random_tensor({2, 5, 7}, 3);
  Mat m(10, std::vector<double>(7));
  for (int64_t i = 0; i < 70; ++i) m[i / 7][i % 7] = x.data()[i];
  const Mat want = naive_linear(m, lin);
  const Tensor got = lin.forward(x);
  CHECK(got.shape() == Shape{2, 5, 3});
  for (int64_t i = 0; i < 30; ++i) CHECK(got.data()[i] == doctest::Approx(want[i / 3][i % 3]).epsilon(1e-5));
  CHECK_THROWS_AS(lin.forward(random_tensor({2, 6}, 1)), std::invalid_argument);
}

TEST_CASE("GroupNorm and LayerNorm: γ = 1, β = 0 at init; forward against naive loops") {
  GroupNorm gn(3, 6, 1e-6f);
  CHECK(names(gn) == std::vector<std::string>{"weight", "bias"});
  for (float v : gn.weight.to_vector()) CHECK(v == 1.f);
  for (float v : gn.bias.to_vector()) CHECK(v == 0.f);
  randomise(gn, 1);
  const Tensor x = random_tensor({2, 6, 3, 2, 5}, 4);
  const Vol want = naive_group_norm(Vol(x), gn, 1e-6);
  check_close(gn.forward(x), want, 1e-5);
  check_close(gn.forward_silu(x), map(want, silu), 1e-5);
  CHECK_THROWS_AS(GroupNorm(4, 6, 1e-6f), std::invalid_argument);

  LayerNorm ln(5, 1e-5f);
  randomise(ln, 2);
  const Tensor t = random_tensor({3, 5}, 5);
  Mat m(3, std::vector<double>(5));
  for (int64_t i = 0; i < 15; ++i) m[i / 5][i % 5] = t.data()[i];
  const Mat want_ln = naive_layer_norm(m, ln, 1e-5);
  const Tensor got = ln.forward(t);
  for (int64_t i = 0; i < 15; ++i) CHECK(got.data()[i] == doctest::Approx(want_ln[i / 5][i % 5]).epsilon(1e-5));
}

TEST_CASE("BatchNorm3d: PyTorch's parameters and buffers, batch statistics, running statistics, eval mode") {
  BatchNorm3d bn(3, 1e-5f, 0.1f);
  CHECK(names(bn) == std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"});
  CHECK(bn.num_parameters() == 6);
  randomise(bn, 3);
  const Tensor x = random_tensor({2, 3, 3, 2, 3}, 6, -1.f, 3.f);
  const Tensor y = bn.forward(x);
  const int64_t S = 18, n = 2 * S;
  for (int64_t c = 0; c < 3; ++c) {
    double mean = 0, var = 0;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t s = 0; s < S; ++s) mean += x.data()[(b * 3 + c) * S + s];
    mean /= n;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t s = 0; s < S; ++s) var += std::pow(x.data()[(b * 3 + c) * S + s] - mean, 2);
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t s = 0; s < S; ++s) {
        const int64_t i = (b * 3 + c) * S + s;
        const double want = (x.data()[i] - mean) / std::sqrt(var / n + 1e-5) * bn.weight.data()[c] + bn.bias.data()[c];
        CHECK(y.data()[i] == doctest::Approx(want).epsilon(1e-5));
      }
    // running = 0.9·initial + 0.1·batch, with the unbiased variance.
    CHECK(bn.running_mean.data()[c] == doctest::Approx(0.1 * mean).epsilon(1e-5));
    CHECK(bn.running_var.data()[c] == doctest::Approx(0.9 + 0.1 * var / (n - 1)).epsilon(1e-5));
  }
  CHECK(bn.num_batches_tracked.item() == 1.f);
  bn.eval();
  const Tensor z = bn.forward(x);
  CHECK(bn.num_batches_tracked.item() == 1.f);  // eval does not count
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / S) % 3;
    const double want = (x.data()[i] - bn.running_mean.data()[c]) / std::sqrt(bn.running_var.data()[c] + 1e-5) *
                            bn.weight.data()[c] + bn.bias.data()[c];
    CHECK(z.data()[i] == doctest::Approx(want).epsilon(1e-5));
  }
}

TEST_CASE("BatchNorm3d state: PyTorch's int64 num_batches_tracked loads (as float), and our state round-trips") {
  // toy_module.safetensors was written by PyTorch (tools/make_safetensors_fixture.py): its
  // BatchNorm3d(3) counter is I64 = 7. PyTorch's load_state_dict copies our F32 counter back
  // into its int64 buffer (copy_ converts), so files go both ways.
  const SafetensorsFile f = load_safetensors(std::string(CPETS_FIXTURES) + "/safetensors/toy_module.safetensors");
  CHECK(f.source_dtypes.at("encoder.down.0.norm.num_batches_tracked") == "I64");
  NamedTensors state;
  const std::string prefix = "encoder.down.0.norm.";
  for (const auto& [k, v] : f.tensors)
    if (k.rfind(prefix, 0) == 0) state.emplace_back(k.substr(prefix.size()), v);
  BatchNorm3d bn(3);
  bn.load_state_dict(state);  // strict: the five names and shapes are PyTorch's
  CHECK(bn.num_batches_tracked.item() == 7.f);
  bn.forward(random_tensor({2, 3, 2, 2, 2}, 1));
  CHECK(bn.num_batches_tracked.item() == 8.f);

  const SafetensorsFile back = parse_safetensors(serialize_safetensors(bn.state_dict()));
  BatchNorm3d copy(3);
  copy.load_state_dict(back.tensors);
  for (size_t i = 0; i < back.tensors.size(); ++i) check_equal(copy.state_dict()[i].second, bn.state_dict()[i].second);
}

// ---- residual blocks ------------------------------------------------------------------------

TEST_CASE("ResnetBlock: PyTorch names; a fresh block is the identity or a 1³ projection, resampled") {
  Generator init(5);
  const Tensor x = random_tensor({2, 4, 4, 2, 6}, 7);
  ResnetBlock plain(4, 4, 2, 1e-6f, init);
  CHECK(names(plain) == std::vector<std::string>{"norm1.weight", "norm1.bias", "conv1.weight", "conv1.bias", "norm2.weight",
                                                 "norm2.bias", "conv2.weight", "conv2.bias"});
  for (float v : plain.conv2->weight.to_vector()) REQUIRE(v == 0.f);
  check_equal(plain.forward(x), x);

  ResnetBlock widen(4, 6, 2, 1e-6f, init);
  CHECK(names(widen).back() == "skip_connection.bias");
  CHECK(widen.skip_connection->weight.shape() == Shape{6, 4, 1, 1, 1});
  check_close(widen.forward(x), naive_conv(Vol(x), *widen.skip_connection), 1e-5);

  ResnetBlock down(4, 4, 2, 1e-6f, init, Resample::down);
  check_close(down.forward(x), avg_pool2(Vol(x)), 1e-6);
  ResnetBlock up(4, 4, 2, 1e-6f, init, Resample::up);
  check_close(up.forward(x), nearest2(Vol(x)), 0);
}

TEST_CASE("ResnetBlock: forward with random weights against naive loops (plain, down, up, channel change)") {
  Generator init(6);
  for (Resample r : {Resample::none, Resample::down, Resample::up}) {
    CAPTURE(int(r));
    ResnetBlock block(4, 6, 2, 1e-6f, init, r);
    randomise(block, 11);
    const Tensor x = random_tensor({2, 4, 4, 2, 6}, 8);
    auto resample = [r](const Vol& v) { return r == Resample::down ? avg_pool2(v) : r == Resample::up ? nearest2(v) : v; };
    const Vol X(x);
    Vol h = resample(map(naive_group_norm(X, *block.norm1, 1e-6), silu));
    h = naive_conv(map(naive_group_norm(naive_conv(h, *block.conv1), *block.norm2, 1e-6), silu), *block.conv2);
    check_close(block.forward(x), plus(naive_conv(resample(X), *block.skip_connection), h), 1e-5);
  }
}

TEST_CASE("AEResBlock and Upsample: forward against naive loops; the AE block is not zero-initialised") {
  Generator init(7);
  AEResBlock ae(4, 2, 2, 1e-6f, init);
  CHECK(names(ae).back() == "nin_shortcut.bias");
  float conv2_max = 0;
  for (float v : ae.conv2->weight.to_vector()) conv2_max = std::max(conv2_max, std::abs(v));
  CHECK(conv2_max > 0.f);
  randomise(ae, 12);
  const Tensor x = random_tensor({2, 4, 3, 4, 5}, 9);
  const Vol X(x);
  const Vol h = naive_conv(map(naive_group_norm(naive_conv(map(naive_group_norm(X, *ae.norm1, 1e-6), silu), *ae.conv1), *ae.norm2, 1e-6), silu), *ae.conv2);
  check_close(ae.forward(x), plus(naive_conv(X, *ae.nin_shortcut), h), 1e-5);

  Upsample upsample(3, init);
  CHECK(names(upsample) == std::vector<std::string>{"conv.weight", "conv.bias"});
  const Tensor u = random_tensor({1, 3, 2, 3, 2}, 10);
  const Tensor y = upsample.forward(u);
  CHECK(y.shape() == Shape{1, 3, 4, 6, 4});
  check_close(y, naive_conv(nearest2(Vol(u)), *upsample.conv), 1e-5);
}

// ---- transformer ------------------------------------------------------------------------------

TEST_CASE("SpatialTransformer: names; a fresh one is the identity; random weights against naive loops") {
  Generator init(8);
  SpatialTransformer cross(8, 2, 5, 2, 1e-6f, 1e-5f, init);
  const auto n = names(cross);
  CHECK(n.front() == "norm.weight");
  CHECK(std::find(n.begin(), n.end(), "attn2.to_k.weight") != n.end());
  CHECK(std::find(n.begin(), n.end(), "attn2.to_k.bias") == n.end());  // q, k, v without bias
  CHECK(std::find(n.begin(), n.end(), "ff.proj.weight") != n.end());
  CHECK(cross.attn2->to_k->weight.shape() == Shape{8, 5});
  CHECK(cross.ff->proj->weight.shape() == Shape{64, 8});
  CHECK(cross.ff->out->weight.shape() == Shape{8, 32});
  CHECK(cross.proj_in->weight.shape() == Shape{8, 8, 1, 1, 1});
  const Tensor x = random_tensor({2, 8, 3, 2, 3}, 11);
  const Tensor ctx = random_tensor({2, 3, 5}, 12);
  check_equal(cross.forward(x, ctx), x);

  randomise(cross, 13);
  check_close(cross.forward(x, ctx), naive_transformer(Vol(x), ctx, cross, 2), 2e-5);
  SpatialTransformer self(8, 4, 0, 4, 1e-6f, 1e-5f, init);
  CHECK(self.attn2->to_k->weight.shape() == Shape{8, 8});
  randomise(self, 14);
  check_close(self.forward(x), naive_transformer(Vol(x), Tensor(), self, 4), 2e-5);

  CHECK_THROWS_AS(cross.forward(x), std::invalid_argument);                                // context missing
  CHECK_THROWS_AS(cross.forward(x, random_tensor({2, 3, 4}, 1)), std::invalid_argument);  // wrong width
  CHECK_THROWS_AS(self.forward(x, ctx), std::invalid_argument);                           // unexpected context
  CHECK_THROWS_AS(SpatialTransformer(6, 4, 0, 2, 1e-6f, 1e-5f, init), std::invalid_argument);
}

// ---- gradients --------------------------------------------------------------------------------

TEST_CASE("ResnetBlock gradients by finite differences: input and every parameter (plain, down, up, 3→4)") {
  Generator init(9);
  for (Resample r : {Resample::none, Resample::down, Resample::up}) {
    CAPTURE(int(r));
    auto block = std::make_shared<ResnetBlock>(3, 4, 1, 1e-6f, init, r);
    randomise(*block, 21);
    const Tensor x = random_tensor({1, 3, 2, 4, 2}, 15);
    cpets::testing::gradcheck([&](const std::vector<Tensor>& in) { return block->forward(in[0]); }, {x});
    check_parameter_gradients(*block, [&] { return block->forward(x); });
  }
}

TEST_CASE("AEResBlock gradients by finite differences") {
  Generator init(10);
  AEResBlock block(2, 3, 1, 1e-6f, init);
  randomise(block, 22);
  const Tensor x = random_tensor({2, 2, 3, 2, 3}, 16);
  cpets::testing::gradcheck([&](const std::vector<Tensor>& in) { return block.forward(in[0]); }, {x});
  check_parameter_gradients(block, [&] { return block.forward(x); });
}

TEST_CASE("SpatialTransformer gradients by finite differences: input, context and every parameter") {
  Generator init(11);
  SpatialTransformer cross(4, 2, 3, 2, 1e-6f, 1e-5f, init);
  randomise(cross, 23);
  const Tensor x = random_tensor({2, 4, 3, 1, 3}, 17);
  const Tensor ctx = random_tensor({2, 2, 3}, 18);
  cpets::testing::gradcheck([&](const std::vector<Tensor>& in) { return cross.forward(in[0], in[1]); }, {x, ctx});
  check_parameter_gradients(cross, [&] { return cross.forward(x, ctx); });

  SpatialTransformer self(4, 2, 0, 1, 1e-6f, 1e-5f, init);
  randomise(self, 24);
  cpets::testing::gradcheck([&](const std::vector<Tensor>& in) { return self.forward(in[0]); }, {x});
  check_parameter_gradients(self, [&] { return self.forward(x); });
}

TEST_CASE("layers: same seed, same weights; forward and backward bitwise equal for 1 and 2 threads") {
  Generator a(42), b(42);
  ResnetBlock ra(4, 8, 2, 1e-6f, a, Resample::down);
  ResnetBlock rb(4, 8, 2, 1e-6f, b, Resample::down);
  for (size_t i = 0; i < ra.parameters().size(); ++i) check_equal(ra.parameters()[i], rb.parameters()[i]);

  Generator g(1);
  SpatialTransformer st(16, 2, 8, 4, 1e-6f, 1e-5f, g);
  randomise(st, 25);
  const Tensor x = random_tensor({2, 16, 4, 6, 4}, 19), ctx = random_tensor({2, 3, 8}, 20);
  auto run = [&] {
    st.zero_grad();
    Tensor xi = x.clone();
    xi.set_requires_grad(true);
    Tensor y = st.forward(xi, ctx);
    y.backward(random_tensor(y.shape(), 3));
    return std::vector<Tensor>{y.detach(), xi.grad(), st.attn2->to_q->weight.grad().clone(), st.norm->weight.grad().clone()};
  };
  const auto one = cpets::testing::with_threads(1, run);
  const auto two = cpets::testing::with_threads(2, run);
  for (size_t i = 0; i < one.size(); ++i) check_equal(one[i], two[i]);
}
