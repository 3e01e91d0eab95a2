// Adam. Checked three ways: against torch.optim.Adam itself (fixture
// tests/fixtures/safetensors/adam_reference.safetensors from tools/make_safetensors_fixture.py),
// against the update written out in double precision here, and for bitwise continuation after a
// state export/import through a safetensors checkpoint.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "engine/optim.h"
#include "engine/safetensors.h"

using namespace cpets;

namespace {

Tensor random_tensor(const Shape& shape, uint32_t seed, float scale = 1.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, scale);
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = dist(gen);
  return t;
}

Tensor leaf(const Tensor& values) {
  Tensor t = values.clone();
  t.set_requires_grad(true);
  return t;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), size_t(a.numel()) * 4) == 0;
}

// The textbook update in double: what the float kernel approximates.
struct ReferenceAdam {
  std::vector<double> p, m, v;
  int t = 0;
  void step(const std::vector<float>& g, const AdamOptions& o) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      const double gi = g[i] + o.weight_decay * p[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * gi;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * gi * gi;
      const double m_hat = m[i] / (1 - std::pow(o.beta1, t)), v_hat = v[i] / (1 - std::pow(o.beta2, t));
      p[i] -= o.lr * m_hat / (std::sqrt(v_hat) + o.eps);
    }
  }
};

std::map<std::string, Tensor> as_map(const NamedTensors& named) { return {named.begin(), named.end()}; }

}  // namespace

// Bit for bit: the kernel reproduces the roundings of PyTorch's CPU Adam (see kernels/cpu/adam.cpp).
TEST_CASE("matches torch.optim.Adam bit for bit: two groups, different lr/betas/eps, weight decay, 5 steps") {
  auto ref = as_map(load_safetensors(std::string(CPETS_FIXTURES) + "/safetensors/adam_reference.safetensors").tensors);
  Tensor a = leaf(ref.at("a.initial")), b = leaf(ref.at("b.initial"));
  Adam opt({{{{"a", a}}, {.lr = 1e-2}},
            {{{"b", b}}, {.lr = 3e-3, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.1}}});
  for (int k = 0; k < 5; ++k) {
    a.set_grad(ref.at("a.grad." + std::to_string(k)).clone());
    b.set_grad(ref.at("b.grad." + std::to_string(k)).clone());
    opt.step();
  }
  auto state = as_map(opt.state_dict());
  auto close = [&](const Tensor& got, const std::string& key) {
    const Tensor& want = ref.at(key);
    REQUIRE(got.shape() == want.shape());
    for (int64_t i = 0; i < got.numel(); ++i) {
      CAPTURE(key);
      CAPTURE(i);
      CHECK(got.data()[i] == want.data()[i]);
    }
  };
  close(a, "a.final");
  close(b, "b.final");
  close(state.at("a.exp_avg"), "a.exp_avg");
  close(state.at("a.exp_avg_sq"), "a.exp_avg_sq");
  close(state.at("b.exp_avg"), "b.exp_avg");
  close(state.at("b.exp_avg_sq"), "b.exp_avg_sq");
  CHECK(state.at("a.step").item() == 5.f);
  CHECK(opt.step_count("b") == 5);
}

TEST_CASE("a few steps agree with the update computed in double; each group uses its own lr") {
  const AdamOptions slow{.lr = 1e-3}, fast{.lr = 5e-2, .weight_decay = 0.01};
  Tensor p = leaf(random_tensor({37}, 1)), q = leaf(random_tensor({5, 3}, 2));
  Adam opt({{{{"p", p}}, slow}, {{{"q", q}}, fast}});
  ReferenceAdam rp, rq;
  rp.p.assign(p.data(), p.data() + p.numel());
  rq.p.assign(q.data(), q.data() + q.numel());
  for (int k = 0; k < 4; ++k) {
    Tensor gp = random_tensor(p.shape(), 100 + k, 0.1f), gq = random_tensor(q.shape(), 200 + k, 3.f);
    p.set_grad(gp);
    q.set_grad(gq);
    opt.step();
    rp.step(gp.to_vector(), slow);
    rq.step(gq.to_vector(), fast);
  }
  for (int64_t i = 0; i < p.numel(); ++i) CHECK(p.data()[i] == doctest::Approx(rp.p[i]).epsilon(1e-6));
  for (int64_t i = 0; i < q.numel(); ++i) CHECK(q.data()[i] == doctest::Approx(rq.p[i]).epsilon(1e-6));
}

TEST_CASE("first step moves every element by lr of its group against the gradient's sign") {
  Tensor p = leaf(Tensor::zeros({6})), q = leaf(Tensor::zeros({6}));
  Adam opt({{{{"p", p}}, {.lr = 0.1}}, {{{"q", q}}, {.lr = 0.004}}});
  Tensor g = Tensor::from_vector({6}, {1.f, -2.f, 0.5f, -1e-3f, 7.f, -3.f});
  p.set_grad(g);
  q.set_grad(g.clone());
  opt.step();  // m̂ = g, v̂ = g², so the step is lr·g/(|g| + eps)
  for (int i = 0; i < 6; ++i) {
    const double sign = g.data()[i] > 0 ? 1 : -1;
    CHECK(p.data()[i] == doctest::Approx(-0.1 * sign).epsilon(1e-4));
    CHECK(q.data()[i] == doctest::Approx(-0.004 * sign).epsilon(1e-4));
  }
  opt.set_lr(1, 0.5);
  CHECK(opt.options(1).lr == 0.5);
  CHECK(opt.options(0).lr == 0.1);
  CHECK_THROWS_AS(opt.set_lr(2, 0.1), std::out_of_range);
  CHECK_THROWS_AS(opt.set_lr(0, -1.0), std::invalid_argument);
}

TEST_CASE("parameters without a gradient are skipped and keep no state; zero_grad drops gradients") {
  Tensor p = leaf(random_tensor({4}, 3)), frozen = leaf(random_tensor({4}, 4));
  const Tensor frozen_before = frozen.clone();
  Adam opt(NamedTensors{{"p", p}, {"frozen", frozen}});
  p.set_grad(Tensor::ones({4}));
  opt.step();
  CHECK(bitwise_equal(frozen, frozen_before));
  CHECK(opt.step_count("p") == 1);
  CHECK(opt.step_count("frozen") == 0);
  CHECK(opt.state_dict().size() == 3);  // only p's exp_avg, exp_avg_sq, step
  opt.zero_grad();
  CHECK_FALSE(p.grad().defined());
  opt.step();  // nothing has a gradient: nothing changes
  CHECK(opt.step_count("p") == 1);
  CHECK_THROWS_WITH_AS(opt.step_count("nope"), doctest::Contains("no parameter named 'nope'"), std::invalid_argument);
}

TEST_CASE("state export/import through a checkpoint continues bit for bit") {
  auto grad_at = [](int k, const Shape& s) { return random_tensor(s, 1000 + k, 0.5f); };
  const Tensor w0 = random_tensor({3, 4, 5}, 7), b0 = random_tensor({9}, 8);
  auto make = [&](Tensor& w, Tensor& b) {
    return Adam({{{{"net.w", w}}, {.lr = 2e-2}}, {{{"net.b", b}}, {.lr = 1e-3, .weight_decay = 0.05}}});
  };
  auto run = [&](Adam& opt, Tensor& w, Tensor& b, int from, int to) {
    for (int k = from; k < to; ++k) {
      w.set_grad(grad_at(k, w.shape()));
      b.set_grad(grad_at(50 + k, b.shape()));
      opt.step();
    }
  };
  // Uninterrupted: 7 steps.
  Tensor w = leaf(w0), b = leaf(b0);
  Adam straight = make(w, b);
  run(straight, w, b, 0, 7);

  // Interrupted after 3 steps, saved to disk with the model, restored into fresh objects.
  Tensor w1 = leaf(w0), b1 = leaf(b0);
  Adam first = make(w1, b1);
  run(first, w1, b1, 0, 3);
  NamedTensors ckpt = {{"model.net.w", w1}, {"model.net.b", b1}};
  for (auto& entry : first.state_dict("optim.")) ckpt.push_back(entry);
  const std::string path = (std::filesystem::temp_directory_path() / "cpets_test_optim.safetensors").string();
  save_safetensors(path, ckpt);
  auto loaded = as_map(load_safetensors(path).tensors);
  std::filesystem::remove(path);

  Tensor w2 = leaf(loaded.at("model.net.w")), b2 = leaf(loaded.at("model.net.b"));
  Adam resumed = make(w2, b2);
  NamedTensors optim_state;
  for (auto& [k, t] : loaded)
    if (k.rfind("optim.", 0) == 0) optim_state.emplace_back(k, t);
  resumed.load_state_dict(optim_state, "optim.");
  CHECK(resumed.step_count("net.b") == 3);
  run(resumed, w2, b2, 3, 7);

  CHECK(bitwise_equal(w2, w));
  CHECK(bitwise_equal(b2, b));
  auto s1 = straight.state_dict(), s2 = resumed.state_dict();
  REQUIRE(s1.size() == s2.size());
  for (size_t i = 0; i < s1.size(); ++i) {
    CHECK(s1[i].first == s2[i].first);
    CHECK(bitwise_equal(s1[i].second, s2[i].second));
  }
}

TEST_CASE("state import validates names, fields and shapes and leaves the state alone on error") {
  Tensor p = leaf(random_tensor({4}, 1));
  Adam opt(NamedTensors{{"p", p}});
  p.set_grad(Tensor::ones({4}));
  opt.step();
  NamedTensors good = opt.state_dict();
  auto with = [&](size_t i, std::string key, Tensor t) {
    NamedTensors s = good;
    s[i] = {std::move(key), std::move(t)};
    return s;
  };
  CHECK_THROWS_WITH_AS(opt.load_state_dict(with(0, "q.exp_avg", Tensor::zeros({4}))), doctest::Contains("no parameter named 'q'"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(opt.load_state_dict(with(0, "p.momentum", Tensor::zeros({4}))), doctest::Contains("unknown field 'momentum'"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(opt.load_state_dict(with(1, "p.exp_avg_sq", Tensor::zeros({5}))), doctest::Contains("shape (5) but the parameter is (4)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(opt.load_state_dict(with(2, "p.step", Tensor::scalar(1.5f))), doctest::Contains("positive integer"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(opt.load_state_dict(NamedTensors(good.begin(), good.begin() + 2)), doctest::Contains("incomplete"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(opt.load_state_dict(good, "optim."), doctest::Contains("not of the form"), std::invalid_argument);
  CHECK(opt.step_count("p") == 1);  // untouched
  opt.load_state_dict({});          // an empty state resets
  CHECK(opt.step_count("p") == 0);
  CHECK(opt.state_dict().empty());
}

TEST_CASE("construction rejects bad groups with clear messages") {
  Tensor p = leaf(Tensor::zeros({2}));
  CHECK_THROWS_WITH_AS(Adam(NamedTensors{{"p", p}, {"p", leaf(Tensor::zeros({2}))}}), doctest::Contains("'p' appears twice"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(Adam({{{{"a", p}}, {}}, {{{"b", p}}, {}}}), doctest::Contains("same tensor"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Adam(NamedTensors{{"p", p}}, {.beta1 = 1.0}), doctest::Contains("invalid beta1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Adam(NamedTensors{{"p", p}}, {.lr = -1}), doctest::Contains("invalid learning rate"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Adam(NamedTensors{{"u", Tensor()}}), doctest::Contains("'u' is undefined"), std::invalid_argument);
  Tensor g = leaf(Tensor::zeros({2}));
  g.set_grad(Tensor::ones({2}));
  Adam ok(NamedTensors{{"g", g}});
  CHECK_NOTHROW(ok.step());
}

TEST_CASE("the update does not depend on the thread count") {
  const int64_t n = 100003;  // several parallel chunks
  const Tensor init = random_tensor({n}, 5);
  std::vector<Tensor> results;
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    Tensor p = leaf(init);
    Adam opt(NamedTensors{{"p", p}}, {.lr = 1e-2, .weight_decay = 1e-3});
    for (int k = 0; k < 3; ++k) {
      p.set_grad(random_tensor({n}, 10 + k));
      opt.step();
    }
    results.push_back(p);
  }
  omp_set_num_threads(saved);
  CHECK(bitwise_equal(results[0], results[1]));
}
