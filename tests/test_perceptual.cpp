// V, the LPIPS-squeeze perceptual network, and the 2.5-D perceptual loss:
// - the network against a PyTorch float64 golden (tools/make_lpips_fixture.py; its weights are a
//   formula repeated here), forward per tap and input gradients;
// - lpips_layer_distance and gather_slices against naive loops and by finite differences;
// - the slice order (Fisher–Yates on Philox uniforms) and the 2.5-D loss against a direct
//   computation; zero for identical volumes; directional derivative; 1 vs 2 threads;
// - load_lpips_squeeze: round trip, PyTorch 4-D layouts, and the error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <unistd.h>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "gradcheck.h"
#include "models/perceptual.h"

using namespace cpets;
using cpets::models::LpipsSqueeze;
using cpets::testing::gradcheck;
using cpets::testing::random_tensor;
using cpets::testing::with_threads;

namespace {

const std::string kGolden = std::string(CPETS_FIXTURES) + "/lpips/lpips_squeeze_golden.safetensors";

// The weight formula of tools/make_lpips_fixture.py (see its docstring).
uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

double formula_uniform(uint64_t seed, int64_t i) {
  uint64_t z = seed + uint64_t(i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return double(z >> 40) * std::ldexp(1.0, -24);
}

void fill_formula_weights(LpipsSqueeze& net) {
  for (auto& [name, t] : net.state_dict()) {
    const uint64_t seed = fnv1a64(name);
    const bool lin = name.rfind("lin", 0) == 0, bias = name.size() > 5 && name.substr(name.size() - 5) == ".bias";
    const double bound = bias || lin ? 0.0 : std::sqrt(6.0 / double(t.numel() / t.size(0)));
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double u = formula_uniform(seed, i);
      t.data()[i] = float(lin ? u * 0.1 : bias ? (2 * u - 1) * 0.05 : (2 * u - 1) * bound);
    }
  }
}

std::shared_ptr<LpipsSqueeze> formula_net() {
  auto net = std::make_shared<LpipsSqueeze>();
  fill_formula_weights(*net);
  return net;
}

Tensor named(const SafetensorsFile& f, const std::string& name) {
  for (auto& [n, t] : f.tensors)
    if (n == name) return t;
  FAIL("fixture lacks " << name);
  return {};
}

// (N, 1, H, W) fixture slices → (N, 1, 1, H, W).
Tensor as_slices(const Tensor& t) { return t.view({t.size(0), 1, 1, t.size(2), t.size(3)}); }

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : t.to_vector()) m = std::max(m, double(std::abs(v)));
  return m;
}

// |got − want| ≤ tol·max|want| elementwise: gradients mix large and near-zero entries.
void check_close_scaled(const Tensor& got, const Tensor& want, double tol) {
  REQUIRE(got.numel() == want.numel());
  const double scale = max_abs(want);
  double worst = 0;
  for (int64_t i = 0; i < got.numel(); ++i) worst = std::max(worst, std::abs(double(got.data()[i]) - want.data()[i]));
  CAPTURE(scale);
  CHECK(worst <= tol * scale);
}

// Single-channel volume (B, 1, D, H, W) slice s across `axis` (2, 3, 4), written out by index.
std::vector<float> naive_slice(const Tensor& v, int64_t axis, int64_t s) {
  const int64_t B = v.size(0), D = v.size(2), H = v.size(3), W = v.size(4), n = v.size(axis);
  const int64_t b = s / n, i = s % n;
  (void)B;
  std::vector<float> out;
  auto at = [&](int64_t d, int64_t h, int64_t w) { return v.data()[((b * D + d) * H + h) * W + w]; };
  if (axis == 2)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) out.push_back(at(i, h, w));
  if (axis == 3)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t w = 0; w < W; ++w) out.push_back(at(d, i, w));
  if (axis == 4)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t h = 0; h < H; ++h) out.push_back(at(d, h, i));
  return out;
}

}  // namespace

TEST_CASE("LpipsSqueeze: lpips parameter names and counts, frozen") {
  LpipsSqueeze net;
  int64_t trunk = 0, lin = 0;
  std::set<std::string> names;
  for (auto& [name, t] : net.named_parameters()) {
    names.insert(name);
    (name.rfind("net.", 0) == 0 ? trunk : lin) += t.numel();
    CHECK_FALSE(t.requires_grad());
  }
  CHECK(trunk == 722496);
  CHECK(lin == 2240);
  CHECK(names.size() == 2 + 8 * 6 + 7);
  for (const char* n : {"net.slice1.0.weight", "net.slice2.3.squeeze.weight", "net.slice2.4.expand3x3.bias",
                        "net.slice3.7.expand1x1.weight", "net.slice4.9.squeeze.bias", "net.slice7.12.expand3x3.weight",
                        "lin0.model.1.weight", "lin6.model.1.weight"})
    CHECK_MESSAGE(names.count(n), n);
  CHECK(net.state_dict()[0].second.shape() == Shape{64, 3, 1, 3, 3});
  CHECK(net.num_parameters(/*trainable_only=*/true) == 0);
}

TEST_CASE("LpipsSqueeze matches the PyTorch golden: distances, per-tap terms, input gradients") {
  SafetensorsFile fx = load_safetensors(kGolden);
  auto net = formula_net();
  Tensor a = as_slices(named(fx, "a")).clone().set_requires_grad(true);
  Tensor b = as_slices(named(fx, "b")).clone().set_requires_grad(true);

  std::vector<Tensor> taps = net->features(a.detach());
  const std::vector<Shape> tap_shapes = {{1, 64, 3, 19, 15}, {1, 128, 3, 9, 7}, {1, 256, 3, 4, 3}, {1, 384, 3, 2, 1},
                                         {1, 384, 3, 2, 1},  {1, 512, 3, 2, 1}, {1, 512, 3, 2, 1}};
  for (size_t k = 0; k < taps.size(); ++k) CHECK(taps[k].shape() == tap_shapes[k]);

  std::vector<Tensor> per_tap = net->forward_per_tap(a, b);
  Tensor want_tap = named(fx, "per_tap");  // (7, 3)
  for (int k = 0; k < 7; ++k)
    for (int n = 0; n < 3; ++n) {
      CAPTURE(k);
      CHECK(per_tap[size_t(k)].data()[n] == doctest::Approx(want_tap.data()[k * 3 + n]).epsilon(2e-4));
    }
  Tensor d = net->forward(a, b);
  REQUIRE(d.shape() == Shape{3});
  Tensor want = named(fx, "distance");
  for (int n = 0; n < 3; ++n) CHECK(d.data()[n] == doctest::Approx(want.data()[n]).epsilon(1e-4));

  sum(mul(d, Tensor::from_vector({3}, {1.f, -0.5f, 2.f}))).backward();
  check_close_scaled(a.grad(), named(fx, "grad_a"), 1e-3);
  check_close_scaled(b.grad(), named(fx, "grad_b"), 1e-3);
}

TEST_CASE("LpipsSqueeze matches the golden at the smallest slice size (17×19, 1×1 last taps)") {
  SafetensorsFile fx = load_safetensors(kGolden);
  auto net = formula_net();
  Tensor a = as_slices(named(fx, "small_a")).clone().set_requires_grad(true);
  Tensor b = as_slices(named(fx, "small_b"));
  Tensor d = net->forward(a, b);
  Tensor want = named(fx, "small_distance");
  for (int n = 0; n < 2; ++n) CHECK(d.data()[n] == doctest::Approx(want.data()[n]).epsilon(1e-4));
  sum(mul(d, Tensor::from_vector({2}, {1.f, -0.5f}))).backward();
  check_close_scaled(a.grad(), named(fx, "small_grad_a"), 1e-3);
  CHECK(net->features(a.detach())[6].shape() == Shape{1, 512, 2, 1, 1});
}

TEST_CASE("LpipsSqueeze: identical inputs give 0; bad shapes are named") {
  auto net = formula_net();
  Tensor x = random_tensor({2, 1, 1, 20, 18}, 3, 0.f, 1.f);
  for (float v : net->forward(x, x).to_vector()) CHECK(v == 0.f);
  CHECK_THROWS_WITH_AS(net->forward(x, random_tensor({2, 1, 1, 20, 19}, 4)), doctest::Contains("same shape"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(net->forward(Tensor::zeros({2, 1, 1, 16, 30}), Tensor::zeros({2, 1, 1, 16, 30})),
                       doctest::Contains("smaller than 17×17"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(net->forward(Tensor::zeros({2, 3, 1, 20, 20}), Tensor::zeros({2, 3, 1, 20, 20})),
                       doctest::Contains("(N, 1, 1, H, W); got (2, 3, 1, 20, 20)"), std::invalid_argument);
}

TEST_CASE("lpips_layer_distance: naive loops, finite differences, all-zero pixels") {
  const int64_t N = 2, C = 5, h = 3, w = 4;
  Tensor fa = random_tensor({N, C, 1, h, w}, 11), fb = random_tensor({N, C, 1, h, w}, 12);
  Tensor lw = random_tensor({1, C, 1, 1, 1}, 13, 0.f, 1.f);
  Tensor d = lpips_layer_distance(fa, fb, lw);
  REQUIRE(d.shape() == Shape{N, 1, 1, h, w});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = 0; p < h * w; ++p) {
      double na = 0, nb = 0, want = 0;
      for (int64_t c = 0; c < C; ++c) {
        na += std::pow(double(fa.data()[(n * C + c) * h * w + p]), 2);
        nb += std::pow(double(fb.data()[(n * C + c) * h * w + p]), 2);
      }
      for (int64_t c = 0; c < C; ++c) {
        const double diff = fa.data()[(n * C + c) * h * w + p] / (std::sqrt(na) + 1e-10) -
                            fb.data()[(n * C + c) * h * w + p] / (std::sqrt(nb) + 1e-10);
        want += lw.data()[c] * diff * diff;
      }
      CHECK(d.data()[n * h * w + p] == doctest::Approx(want).epsilon(1e-5));
    }
  // The normalisation curves strongly for small feature norms: a finer step.
  gradcheck([](const std::vector<Tensor>& v) { return lpips_layer_distance(v[0], v[1], v[2]); }, {fa, fb, lw},
            cpets::testing::fine_step());

  // A pixel whose features are all zero (ReLU'd away): finite gradient, the limit I/eps·g there.
  Tensor za = fa.clone();
  for (int64_t c = 0; c < C; ++c) za.data()[c * h * w] = 0.f;
  za.set_requires_grad(true);
  sum(lpips_layer_distance(za, fb, lw)).backward();
  for (float g : za.grad().to_vector()) CHECK(std::isfinite(g));
}

TEST_CASE("gather_slices: each axis against naive indexing; backward by finite differences") {
  Tensor v = random_tensor({2, 1, 3, 4, 5}, 21);
  for (int64_t axis = 2; axis <= 4; ++axis) {
    CAPTURE(axis);
    const std::vector<int64_t> index = {v.size(axis) + 1, 0, 2};  // image 1 first, out of order
    Tensor s = gather_slices(v, axis, index);
    const int64_t rows = axis == 2 ? 4 : 3, cols = axis == 4 ? 4 : 5;
    REQUIRE(s.shape() == Shape{3, 1, 1, rows, cols});
    for (size_t j = 0; j < index.size(); ++j) {
      std::vector<float> want = naive_slice(v, axis, index[j]);
      std::vector<float> got(s.data() + j * rows * cols, s.data() + (j + 1) * rows * cols);
      CHECK(got == want);
    }
    gradcheck([&](const std::vector<Tensor>& in) { return gather_slices(in[0], axis, index); }, {v});
  }
  CHECK_THROWS_WITH_AS(gather_slices(v, 2, {0, 6}), doctest::Contains("outside [0, 6)"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(gather_slices(v, 3, {1, 1}), doctest::Contains("listed twice"), std::invalid_argument);
}

TEST_CASE("random_permutation: Fisher–Yates on the generator's uniforms") {
  Generator gen(77, 5);
  Generator copy = gen;
  std::vector<int64_t> p = models::random_permutation(10, gen);
  CHECK(gen.offset() == 5 + 9);
  std::vector<float> u(9);
  copy.fill_uniform(u.data(), 9);
  std::vector<int64_t> want = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  for (int k = 0; k < 9; ++k) std::swap(want[size_t(9 - k)], want[size_t(double(u[size_t(k)]) * (10 - k))]);
  CHECK(p == want);
  CHECK(std::set<int64_t>(p.begin(), p.end()).size() == 10);
  // Every element reaches every position: over many draws each (value, position) pair occurs.
  std::vector<int> hits(100, 0);
  for (int r = 0; r < 2000; ++r) {
    std::vector<int64_t> q = models::random_permutation(10, gen);
    for (int i = 0; i < 10; ++i) ++hits[size_t(q[size_t(i)] * 10 + i)];
  }
  for (int h : hits) CHECK(h > 120);  // expected 200 each
  CHECK(models::random_permutation(1, gen) == std::vector<int64_t>{0});
}

TEST_CASE("perceptual_loss_25d equals the direct computation over the same random slices") {
  auto net = formula_net();
  Tensor pred = random_tensor({2, 1, 17, 18, 19}, 31, 0.f, 1.f);
  Tensor target = random_tensor({2, 1, 17, 18, 19}, 32, 0.f, 1.f);
  Generator gen(2024), direct_gen(2024);
  Tensor loss = models::perceptual_loss_25d(*net, pred, target, gen);
  CHECK(gen.offset() == (2 * 17 - 1) + (2 * 18 - 1) + (2 * 19 - 1));

  double direct = 0;
  for (int64_t axis = 2; axis <= 4; ++axis) {
    const int64_t n = pred.size(axis), count = 2 * n, keep = count / 2;  // ⌊0.5·B·n⌋
    std::vector<int64_t> order = models::random_permutation(count, direct_gen);
    const int64_t rows = axis == 2 ? 18 : 17, cols = axis == 4 ? 18 : 19;
    Tensor ps = Tensor::empty({keep, 1, 1, rows, cols}), ts = Tensor::empty({keep, 1, 1, rows, cols});
    for (int64_t j = 0; j < keep; ++j) {
      std::vector<float> p = naive_slice(pred, axis, order[size_t(j)]), t = naive_slice(target, axis, order[size_t(j)]);
      std::copy(p.begin(), p.end(), ps.data() + j * rows * cols);
      std::copy(t.begin(), t.end(), ts.data() + j * rows * cols);
    }
    double axis_sum = 0;
    for (float v : net->forward(ps, ts).to_vector()) axis_sum += v;
    direct += axis_sum / double(keep);
  }
  CHECK(loss.item() == doctest::Approx(direct).epsilon(1e-5));
  CHECK(loss.item() > 0.f);

  // Identical volumes: the same slices are taken from both, so every term is exactly 0.
  CHECK(models::perceptual_loss_25d(*net, pred, pred.clone(), gen).item() == 0.f);
  // A different generator state picks other slices and so another value.
  Generator other(7);
  CHECK(models::perceptual_loss_25d(*net, pred, target, other).item() != loss.item());

  CHECK_THROWS_WITH_AS(models::perceptual_loss_25d(*net, pred, Tensor::zeros({2, 1, 17, 18, 20}), gen),
                       doctest::Contains("same shape"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(models::perceptual_loss_25d(*net, pred, target, gen, 0.01f), doctest::Contains("keeps no slice"),
                       std::invalid_argument);
}

TEST_CASE("perceptual_loss_25d: gradient along a random direction matches finite differences") {
  auto net = formula_net();
  Tensor pred = random_tensor({1, 1, 17, 17, 18}, 41, 0.2f, 0.8f);
  Tensor target = random_tensor({1, 1, 17, 17, 18}, 42, 0.f, 1.f);
  Tensor dir = random_tensor(pred.shape(), 43);
  auto loss_at = [&](const Tensor& p) {
    Generator gen(99);
    return models::perceptual_loss_25d(*net, p, target, gen);
  };
  Tensor p = pred.clone().set_requires_grad(true);
  loss_at(p).backward();
  double analytic = 0;
  for (int64_t i = 0; i < p.numel(); ++i) analytic += double(p.grad().data()[i]) * dir.data()[i];
  const float h = 1e-3f;
  Tensor plus = pred.clone(), minus = pred.clone();
  for (int64_t i = 0; i < p.numel(); ++i) {
    plus.data()[i] += h * dir.data()[i];
    minus.data()[i] -= h * dir.data()[i];
  }
  NoGradGuard ng;
  const double numeric = (double(loss_at(plus).item()) - double(loss_at(minus).item())) / (2.0 * h);
  CHECK(analytic == doctest::Approx(numeric).epsilon(2e-2));
}

TEST_CASE("perceptual_loss_25d forward and backward are bitwise identical for 1 and 2 threads") {
  auto net = formula_net();
  Tensor pred = random_tensor({2, 1, 18, 20, 17}, 51, 0.f, 1.f);
  Tensor target = random_tensor({2, 1, 18, 20, 17}, 52, 0.f, 1.f);
  auto run = [&] {
    Generator gen(5);
    Tensor p = pred.clone().set_requires_grad(true);
    Tensor loss = models::perceptual_loss_25d(*net, p, target, gen);
    loss.backward();
    std::vector<float> out = p.grad().to_vector();
    out.push_back(loss.item());
    return out;
  };
  CHECK(with_threads(1, run) == with_threads(2, run));
}

TEST_CASE("load_lpips_squeeze: round trip, PyTorch 4-D layouts, clear errors") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("cpets_lpips_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto net = formula_net();
  Tensor a = random_tensor({1, 1, 1, 21, 23}, 61, 0.f, 1.f), b = random_tensor({1, 1, 1, 21, 23}, 62, 0.f, 1.f);
  const float want = net->forward(a, b).item();

  // As tools/convert_lpips.py writes it (5-D) and as a raw PyTorch dump would be (4-D, plus the
  // scaling layer's buffers, which are constants here and ignored).
  NamedTensors five = net->state_dict(), four;
  for (auto& [name, t] : five) {
    Shape s = t.shape();
    if (s.size() == 5) s.erase(s.begin() + 2);
    four.push_back({name, t.clone().view(s)});
  }
  four.push_back({"scaling_layer.shift", Tensor::zeros({1, 3, 1, 1})});
  save_safetensors((dir / "five.safetensors").string(), five);
  save_safetensors((dir / "four.safetensors").string(), four);
  for (const char* f : {"five.safetensors", "four.safetensors"}) {
    auto loaded = models::load_lpips_squeeze((dir / f).string());
    CHECK(loaded->forward(a, b).item() == want);
    CHECK(loaded->num_parameters(true) == 0);
  }

  const std::string missing_path = (dir / "nope.safetensors").string();
  CHECK_THROWS_WITH_AS(models::load_lpips_squeeze(missing_path),
                       doctest::Contains((missing_path + " does not exist; convert the weights once with tools/convert_lpips.py").c_str()),
                       std::runtime_error);
  NamedTensors partial(five.begin(), five.begin() + 10);
  save_safetensors((dir / "partial.safetensors").string(), partial);
  CHECK_THROWS_WITH_AS(models::load_lpips_squeeze((dir / "partial.safetensors").string()),
                       doctest::Contains("lacks 47 of the 57 LPIPS-squeeze tensors: net.slice2.4.expand1x1.weight, "),
                       std::runtime_error);
  NamedTensors negative = five;
  negative.back().second = negative.back().second.clone();
  negative.back().second.data()[0] = -1.f;
  save_safetensors((dir / "negative.safetensors").string(), negative);
  CHECK_THROWS_WITH_AS(models::load_lpips_squeeze((dir / "negative.safetensors").string()),
                       doctest::Contains("lin6 has negative weights"), std::runtime_error);
  fs::remove_all(dir);
}
