// The downstream diagnosis classifier (models/classifier): parameter counts against the
// reference class (reference-implementation.md §1.9, instantiated in PyTorch with the head fixed
// to the true flatten size and without its unused timestep MLP), shapes, finite-difference
// gradients through the image and the tabular token, AttentionBlock's arithmetic and dropout.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "gradcheck.h"
#include "layers/transformer.h"
#include "models/classifier.h"

using namespace cpets;
using namespace cpets::models;
using cpets::testing::random_tensor;

TEST_CASE("classifier: the full preset has the reference's parameters, head fixed (4,608 inputs), no timestep MLP") {
  // (in_channels, tabular width) → the reference's count − 5,248 + 262,144 (PyTorch, see header).
  const struct {
    int64_t in, context, expected;
  } cases[] = {{1, 0, 8532898}, {1, 5, 9594274}, {2, 5, 9594706}, {1, 6, 9595298}, {2, 0, 8533330}};
  for (const auto& c : cases) {
    CAPTURE(c.in);
    CAPTURE(c.context);
    Generator init(1);
    const DiagnosisClassifier m(classifier_preset("full", c.in, c.context), init);
    CHECK(m.num_parameters() == c.expected);
  }
  CHECK(classifier_preset("full", 1, 0).flatten_size() == 4608);
  CHECK(classifier_preset("demo", 1, 0).flatten_size() == 32 * 3 * 4 * 3);
}

TEST_CASE("classifier: logits per sample; inputs and tabular token checked; gradients by finite differences") {
  Generator init(2);
  DiagnosisClassifier with_tab(classifier_preset("tiny", 2, 5), init);
  // Every parameter from U(±0.3): the transformers' proj_out starts at zero (as MONAI's), which
  // would hide the tabular token at initialisation.
  uint32_t seed = 100;
  for (auto& p : with_tab.parameters()) {
    const Tensor r = random_tensor(p.shape(), seed++, -0.3f, 0.3f);
    std::copy(r.data(), r.data() + r.numel(), p.data());
  }
  with_tab.eval();
  const Tensor x = random_tensor({2, 2, 16, 16, 16}, 3, 0.f, 1.f), ctx = random_tensor({2, 1, 5}, 4, 0.f, 1.f);
  CHECK(with_tab.forward(x, ctx).shape() == Shape{2, 2});
  CHECK_THROWS_WITH_AS(with_tab.forward(x), doctest::Contains("built with tabular input but given none"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(with_tab.forward(random_tensor({2, 1, 16, 16, 16}, 5), ctx), doctest::Contains("(B, 2, 16, 16, 16)"),
                       std::invalid_argument);
  // The tabular token moves the logits (cross-attention reads it).
  const Tensor a = with_tab.forward(x, ctx), b = with_tab.forward(x, add_scalar(ctx, 0.5f));
  double moved = 0;
  for (int64_t i = 0; i < a.numel(); ++i) moved = std::max(moved, double(std::fabs(a.data()[i] - b.data()[i])));
  CHECK(moved > 1e-6);
  // Finite differences on the smallest grid the three levels allow (8³): gradcheck wants inputs of
  // a few hundred elements, and 16³ made this test minutes long at the portable level.
  ClassifierConfig small = classifier_preset("tiny", 2, 5);
  small.volume = {8, 8, 8};
  Generator init_small(6);
  DiagnosisClassifier small_tab(small, init_small);
  seed = 200;
  for (auto& p : small_tab.parameters()) {
    const Tensor r = random_tensor(p.shape(), seed++, -0.3f, 0.3f);
    std::copy(r.data(), r.data() + r.numel(), p.data());
  }
  small_tab.eval();
  cpets::testing::gradcheck(
      [&](const std::vector<Tensor>& v) { return small_tab.forward(v[0], v[1]); },
      {random_tensor({1, 2, 8, 8, 8}, 6, 0.f, 1.f), random_tensor({1, 1, 5}, 7, 0.f, 1.f)}, cpets::testing::fine_step());

  ClassifierConfig small_image = classifier_preset("tiny", 1, 0);
  small_image.volume = {8, 8, 8};
  Generator init2(3);
  DiagnosisClassifier image_only(small_image, init2);
  image_only.eval();
  cpets::testing::gradcheck([&](const std::vector<Tensor>& v) { return image_only.forward(v[0]); },
                            {random_tensor({1, 1, 8, 8, 8}, 8, 0.f, 1.f)}, cpets::testing::fine_step());
  CHECK_THROWS_WITH_AS(classifier_preset("tiny", 3, 0), doctest::Contains("in_channels"), std::invalid_argument);
  ClassifierConfig odd = classifier_preset("tiny", 1, 0);
  odd.volume = {12, 16, 16};
  CHECK_THROWS_WITH_AS(odd.validate(), doctest::Contains("divisible by 8"), std::invalid_argument);
}

TEST_CASE("AttentionBlock: x + softmax(QKᵀ/√d)V per head on the normalised tokens, proj_attn unused; FD gradients") {
  Generator init(4);
  layers::AttentionBlock block(4, 2, 2, 1e-6f, init);
  const Tensor x = random_tensor({1, 4, 2, 1, 2}, 9);
  // Reference in double from the block's own weights.
  const Tensor n = block.norm->forward(x);
  const int64_t C = 4, N = 4, heads = 2, d = 2;
  auto lin = [&](const layers::Linear& l, int64_t token, int64_t out) {
    double s = l.bias.data()[out];
    for (int64_t c = 0; c < C; ++c) s += double(l.weight.data()[out * C + c]) * n.data()[c * N + token];
    return s;
  };
  const Tensor y = block.forward(x);
  for (int64_t t = 0; t < N; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      double w[4], total = 0, mx = -1e300;
      for (int64_t u = 0; u < N; ++u) {
        double dot = 0;
        for (int64_t k = 0; k < d; ++k) dot += lin(*block.to_q, t, h * d + k) * lin(*block.to_k, u, h * d + k);
        w[u] = dot / std::sqrt(double(d));
        mx = std::max(mx, w[u]);
      }
      for (int64_t u = 0; u < N; ++u) total += (w[u] = std::exp(w[u] - mx));
      for (int64_t k = 0; k < d; ++k) {
        double v = 0;
        for (int64_t u = 0; u < N; ++u) v += w[u] / total * lin(*block.to_v, u, h * d + k);
        const int64_t c = h * d + k;
        CHECK(y.data()[c * N + t] == doctest::Approx(x.data()[c * N + t] + v).epsilon(1e-5));
      }
    }
  cpets::testing::gradcheck([&](const std::vector<Tensor>& v) { return block.forward(v[0]); }, {x});
  CHECK_THROWS_AS(layers::AttentionBlock(6, 4, 2, 1e-6f, init), std::invalid_argument);
}

TEST_CASE("classifier: dropout only in training mode with a noise generator; masks follow the seed") {
  Generator init(5);
  DiagnosisClassifier m(classifier_preset("tiny", 1, 0), init);
  const Tensor x = random_tensor({2, 1, 16, 16, 16}, 10, 0.f, 1.f);
  m.eval();
  Generator g1(9);
  const Tensor plain = m.forward(x, Tensor(), &g1);
  CHECK(g1.state().offset == Generator(9).state().offset);  // eval: no draws
  m.train();
  Generator a(9), b(9), c(10);
  const Tensor da = m.forward(x, Tensor(), &a), db = m.forward(x, Tensor(), &b), dc = m.forward(x, Tensor(), &c);
  double same = 0, differs = 0, from_plain = 0;
  for (int64_t i = 0; i < da.numel(); ++i) {
    same = std::max(same, double(std::fabs(da.data()[i] - db.data()[i])));
    differs = std::max(differs, double(std::fabs(da.data()[i] - dc.data()[i])));
    from_plain = std::max(from_plain, double(std::fabs(da.data()[i] - plain.data()[i])));
  }
  CHECK(same == 0.0);
  CHECK(differs > 0.0);
  CHECK(from_plain > 0.0);
  CHECK(m.forward(x).shape() == Shape{2, 2});  // training mode without a generator: no dropout
}
