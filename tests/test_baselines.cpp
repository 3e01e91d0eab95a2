// The paper's baselines (models/baselines/): parameter counts against reference-implementation.md
// §7, the synthetic PET of each kind against tools/torch_model.py's build of it, output shapes, what reads the tabular condition, finite-difference gradients through the
// condition, and the per-kind configuration. Training, resume and checkpoints of every kind are
// in test_train.cpp (they share its cohort).
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "gradcheck.h"
#include "models/baselines/bmgan.h"
#include "models/baselines/bpgan.h"
#include "models/baselines/cyclegan.h"
#include "models/baselines/pix2pix.h"
#include "models/baselines/unet.h"
#include "models/synthesis_model.h"
#include "train/config.h"

using namespace cpets;
using namespace cpets::models;

namespace {

int64_t count(const NamedTensors& params) {
  int64_t n = 0;
  for (const auto& [name, p] : params) n += p.numel();
  return n;
}

// Every parameter drawn from U(±0.3): at initialisation the U-Net's zero-initialised output
// convolution and transformer projections would hide what the output depends on.
void randomise(SynthesisModel& m, uint32_t seed) {
  for (auto& p : m.parameters()) {
    const Tensor r = cpets::testing::random_tensor(p.shape(), seed++, -0.3f, 0.3f);
    std::copy(r.data(), r.data() + r.numel(), p.data());
  }
}

Inputs tiny_inputs(int64_t batch, uint32_t seed) {
  return {cpets::testing::random_tensor({batch, 1, 16, 16, 16}, seed, 0.f, 1.f),
          cpets::testing::random_tensor({batch, 1}, seed + 1, 0.f, 1.f),
          cpets::testing::random_tensor({batch, 4}, seed + 2, 0.f, 1.f)};
}

double max_difference(const Tensor& a, const Tensor& b) {
  double d = 0;
  for (int64_t i = 0; i < a.numel(); ++i) d = std::max(d, double(std::fabs(a.data()[i] - b.data()[i])));
  return d;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

double term(const LossTerms& l, const std::string& name) {
  for (const auto& [k, v] : l.terms)
    if (k == name) return v;
  FAIL("no loss term " << name);
  return 0.0;
}

}  // namespace

TEST_CASE("U-Net baselines: the full preset has the reference AttenUNet's and PatchDiscriminator's parameter counts") {
  for (const std::string kind : {"unet", "unet-cond"}) {
    CAPTURE(kind);
    Generator init(0);
    const auto model = make_model(model_preset("full", "AV45", kind), init);
    CHECK(count(model->generator_parameters()) == 12562945);  // context of 5: ABETA + 4 covariates
    CHECK(count(model->discriminator_parameters()) == 11048769);
    Generator init2(0);
    const auto tau = make_model(model_preset("full", "AV1451", kind), init2);
    CHECK(count(tau->generator_parameters()) == 12564481);  // context of 6: TAU, PTAU + 4
  }
  // D's logit grid on the reference volume: 1 × 10 × 14 × 10.
  CHECK(PatchDiscriminator::patch_size(96, 3) == 10);
  CHECK(PatchDiscriminator::patch_size(128, 3) == 14);
  CHECK(PatchDiscriminator::patch_size(96, 2) == 22);  // Causal PETS's D
}

TEST_CASE("baselines: every kind maps a batch of T1s to PETs of the same grid") {
  for (const std::string kind : {"unet", "unet-cond", "pix2pix", "cyclegan", "bmgan", "bpgan"}) {
    CAPTURE(kind);
    Generator init(1);
    const auto model = make_model(model_preset("tiny", "AV45", kind), init);
    CHECK(model->kind() == kind);
    const Inputs in = tiny_inputs(2, 10);
    const Tensor pet = model->synthesise(in);
    CHECK(pet.shape() == Shape{2, 1, 16, 16, 16});
    const bool unet = kind == "unet" || kind == "unet-cond";
    if (kind == "bmgan") {  // the reference's raw Tanh
      for (int64_t i = 0; i < pet.numel(); ++i) REQUIRE((pet.data()[i] >= -1.f && pet.data()[i] <= 1.f));
    } else if (!unet) {
      for (int64_t i = 0; i < pet.numel(); ++i) REQUIRE((pet.data()[i] >= 0.f && pet.data()[i] <= 1.f));
    } else {  // MONAI's zero_module output convolution: an untrained U-Net predicts zeros
      for (int64_t i = 0; i < pet.numel(); ++i) REQUIRE(pet.data()[i] == 0.f);
    }
    if (unet)  // the U-Nets read the tabular vector (zeroed without the condition)
      CHECK_THROWS_WITH_AS(model->synthesise(Inputs{in.t1, tiny_inputs(2, 1).csf, Tensor::zeros({2, 3})}),
                           doctest::Contains("covariates"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(model->synthesise(Inputs{Tensor::zeros({2, 2, 16, 16, 16}), in.csf, in.covariates}),
                         doctest::Contains("T1"), std::invalid_argument);
  }
  Generator init(2);
  const auto demo = make_model(model_preset("demo", "AV45", "unet"), init);
  const auto& unet = dynamic_cast<const AttentionUNetModel&>(*demo);
  CHECK(unet.discriminator->forward(Tensor::zeros({1, 1, 48, 64, 48})).shape() == Shape{1, 1, 4, 6, 4});
}

TEST_CASE("baselines: only unet-cond reads the tabular inputs, through its cross-attentions") {
  const Inputs in = tiny_inputs(1, 20);
  Inputs changed = in;
  changed.csf = add_scalar(in.csf, 0.5f);
  changed.covariates = add_scalar(in.covariates, -0.25f);
  for (const std::string kind : {"unet", "unet-cond", "pix2pix", "cyclegan", "bmgan", "bpgan"}) {
    CAPTURE(kind);
    Generator init(3);
    const auto model = make_model(model_preset("tiny", "AV45", kind), init);
    randomise(*model, 100);
    model->eval();
    NoGradGuard no_grad;
    const double moved = max_difference(model->synthesise(in), model->synthesise(changed));
    if (kind == "unet-cond") {
      CHECK(moved > 1e-4);
    } else {
      CHECK(moved == 0.0);
    }
    const auto [conditional, rest] = model->split_conditional_path();
    CHECK(conditional.empty() == (kind != "unet-cond"));
    for (const auto& [name, p] : conditional) CHECK_MESSAGE(contains(name, ".attn2."), name);
    CHECK(count(conditional) + count(rest) == count(model->generator_parameters()));
  }
}

TEST_CASE("CycleGAN: two Pix2Pix generators and two unconditional PatchGANs; every switch of its loss acts") {
  Generator init(5), init2(5);
  const auto cycle = make_model(model_preset("demo", "AV45", "cyclegan"), init);
  const auto p2p = make_model(model_preset("demo", "AV45", "pix2pix"), init2);
  const auto& c = dynamic_cast<const CycleGAN&>(*cycle);
  CHECK(count(c.generator_parameters()) == 2 * count(p2p->generator_parameters()));
  // Pix2Pix's D reads (T1, PET): its first convolution has one input channel more.
  const int64_t first_conv = 16 * 4 * 4 * 4;
  CHECK(count(c.discriminator_parameters()) == 2 * (count(p2p->discriminator_parameters()) - first_conv));
  CHECK(c.pet_discriminator->forward(Tensor::zeros({1, 1, 48, 64, 48})).shape() == Shape{1, 1, 4, 6, 4});

  Generator init3(6);
  const auto tiny = make_model(model_preset("tiny", "AV45", "cyclegan"), init3);
  const Inputs in = tiny_inputs(2, 40);
  const Tensor pet = cpets::testing::random_tensor({2, 1, 16, 16, 16}, 44, 0.f, 1.f);
  Generator noise(7);
  ObjectiveConfig o;
  o.lambda_adv = 1.f;
  const LossTerms all = tiny->generator_loss(in, pet, PhaseContext{noise, o});
  // total = λ_cyc·cycle + λ_cyc·λ_id·identity + λ_adv·adv, with the logged terms
  const double expected = 10 * term(all, "cycle") + 5 * term(all, "identity") + term(all, "adv");
  CHECK(all.total.item() == doctest::Approx(expected).epsilon(1e-5));
  o.lambda_identity = 0.f;
  o.lambda_adv = 0.f;
  const LossTerms cycle_only = tiny->generator_loss(in, pet, PhaseContext{noise, o});
  CHECK(std::isnan(term(cycle_only, "identity")));
  CHECK(std::isnan(term(cycle_only, "adv")));
  CHECK(cycle_only.total.item() == doctest::Approx(10 * term(cycle_only, "cycle")).epsilon(1e-5));
  CHECK(term(cycle_only, "pet_l1") == doctest::Approx(term(all, "pet_l1")));
  const LossTerms d = tiny->discriminator_loss(in, pet, PhaseContext{noise, o});
  CHECK(0.5 * d.total.item() == doctest::Approx(term(d, "d_pet") + term(d, "d_t1")).epsilon(1e-5));

  ModelConfig no_d = model_preset("tiny", "AV45", "cyclegan");
  no_d.discriminator = false;
  Generator init4(8);
  const auto without = make_model(no_d, init4);
  CHECK(without->discriminator_parameters().empty());
  CHECK_THROWS_AS(without->discriminator_loss(in, pet, PhaseContext{noise, o}), std::logic_error);
}

TEST_CASE("BMGAN: the reference's parameter counts, its code input, and E trained on KL alone") {
  // Counts from instantiating bl_methods/BMGAN/bmgan_model.py (MONAI 1.6.1, PyTorch 2.15):
  // dense_unet_generator() and ResNet_encoder() at the reference's widths; at the demo's,
  // dense_unet_generator(16, 16, [32, 64, 64], [64], …, [64, 64, 64, 32]) and
  // ResNet_encoder(8, [16, 32, 32, 32, 32]) with Linear(32·2·2·2 → 8) heads.
  {
    Generator init(9);
    const auto full = make_model(model_preset("full", "AV45", "bmgan"), init);
    const auto& b = dynamic_cast<const BMGAN&>(*full);
    CHECK(b.generator->num_parameters() == 247592897);
    CHECK(b.encoder->num_parameters() == 6433756);
    CHECK(count(full->discriminator_parameters()) == 11177889);  // tools/torch_model.py's OUR_COUNTS too
    CHECK(PatchDiscriminator::patch_size(96, 4) == 4);  // PatchDiscriminator(3, 32, 1, num_layers_d = 4)
  }
  Generator init(10);
  const auto demo = make_model(model_preset("demo", "AV45", "bmgan"), init);
  const auto& b = dynamic_cast<const BMGAN&>(*demo);
  CHECK(b.generator->num_parameters() == 5980657);
  CHECK(b.encoder->num_parameters() == 322730);
  CHECK(count(demo->generator_parameters()) == 5980657 + 322730);  // E is stepped with G
  CHECK(b.discriminator->forward(Tensor::zeros({1, 1, 48, 64, 48})).shape() == Shape{1, 1, 1, 2, 1});

  Generator init2(11);
  const auto tiny = make_model(model_preset("tiny", "AV45", "bmgan"), init2);
  const auto& t = dynamic_cast<const BMGAN&>(*tiny);
  randomise(*tiny, 300);
  const Tensor t1 = cpets::testing::random_tensor({2, 1, 16, 16, 16}, 50, 0.f, 1.f);
  {
    NoGradGuard no_grad;
    const Tensor zero_code = t.generator->forward(t1, Tensor::zeros({2, 8}));
    CHECK(max_difference(tiny->synthesise(Inputs{t1, Tensor::zeros({2, 1}), Tensor::zeros({2, 4})}), zero_code) == 0.0);
    CHECK(max_difference(t.generator->forward(t1, Tensor::ones({2, 8})), zero_code) > 1e-4);  // the code is read
    CHECK_THROWS_WITH_AS(t.generator->forward(t1, Tensor::zeros({2, 7})), doctest::Contains("(B, 8)"), std::invalid_argument);
    const auto [mu, log_variance] = t.encoder->forward(t1);
    CHECK(mu.shape() == Shape{2, 8});
    CHECK(log_variance.shape() == Shape{2, 8});
  }
  // The generator phase's loss: E's KL reaches E only, and G's terms reach G only.
  Generator noise(12);
  ObjectiveConfig o;
  o.lambda_l1 = 20.f;
  o.lambda_adv = 1.f;
  tiny->set_discriminator_trainable(false);
  const LossTerms l = tiny->generator_loss(Inputs{t1, Tensor::zeros({2, 1}), Tensor::zeros({2, 4})},
                                           cpets::testing::random_tensor({2, 1, 16, 16, 16}, 51, 0.f, 1.f),
                                           PhaseContext{noise, o});
  const double kl = term(l, "encoder_kl");
  CHECK(l.total.item() == doctest::Approx(20 * term(l, "pet_l1") + term(l, "adv") + kl).epsilon(1e-5));
  CHECK(kl > 0);
  l.total.backward();
  for (const auto& [name, p] : tiny->generator_parameters()) CHECK_MESSAGE(p.grad().defined(), name);
  // Without G's terms, only E moves: the fake is detached from G's graph.
  for (auto& p : tiny->parameters()) p.zero_grad();
  const Tensor pet = cpets::testing::random_tensor({2, 1, 16, 16, 16}, 52, 0.f, 1.f);
  o.lambda_l1 = 1e-30f;
  o.lambda_adv = 0.f;
  tiny->generator_loss(Inputs{t1, Tensor::zeros({2, 1}), Tensor::zeros({2, 4})}, pet, PhaseContext{noise, o}).total.backward();
  double g_grad = 0, e_grad = 0;
  for (const auto& [name, p] : tiny->generator_parameters()) {
    if (!p.grad().defined()) continue;
    double s = 0;
    for (int64_t i = 0; i < p.numel(); ++i) s += std::fabs(p.grad().data()[i]);
    (name.rfind("encoder.", 0) == 0 ? e_grad : g_grad) += s;
  }
  CHECK(e_grad > 0);
  CHECK(g_grad < 1e-20);
}

namespace {

// Float64 references for BPGAN's hybrid loss terms, written from their definitions (bpgan.h).
double ssim_loss_reference(const Tensor& x, const Tensor& y) {
  const int64_t B = x.size(0), D = x.size(2), H = x.size(3), W = x.size(4), k = 11;
  std::vector<double> g(size_t(k), 0.0);
  double gs = 0;
  for (int64_t i = 0; i < k; ++i) gs += g[size_t(i)] = std::exp(-0.5 * std::pow((i - 5) / 1.5, 2));
  for (auto& v : g) v /= gs;
  const double c1 = 1e-4, c2 = 9e-4;
  double sum = 0;
  int64_t windows = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d + k <= D; ++d)
      for (int64_t h = 0; h + k <= H; ++h)
        for (int64_t w = 0; w + k <= W; ++w) {
          double mx = 0, my = 0, xx = 0, yy = 0, xy = 0;
          for (int64_t i = 0; i < k; ++i)
            for (int64_t j = 0; j < k; ++j)
              for (int64_t l = 0; l < k; ++l) {
                const double wt = g[size_t(i)] * g[size_t(j)] * g[size_t(l)];
                const int64_t at = ((b * D + d + i) * H + h + j) * W + w + l;
                const double a = x.data()[at], c = y.data()[at];
                mx += wt * a, my += wt * c, xx += wt * a * a, yy += wt * c * c, xy += wt * a * c;
              }
          const double vx = xx - mx * mx, vy = yy - my * my, cov = xy - mx * my;
          sum += ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
          ++windows;
        }
  return 1.0 - sum / double(windows);
}

double gradient_profile_reference(const Tensor& x, const Tensor& y) {
  const Shape s = x.shape();
  const int64_t strides[3] = {s[3] * s[4], s[4], 1};
  double total = 0;
  for (int axis = 0; axis < 3; ++axis) {
    double sum = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const int64_t coordinate = (i / strides[axis]) % s[size_t(2 + axis)];
      if (coordinate + 1 >= s[size_t(2 + axis)]) continue;
      const int64_t j = i + strides[axis];
      sum += std::fabs((double(x.data()[j]) - x.data()[i]) - (double(y.data()[j]) - y.data()[i]));
      ++n;
    }
    total += sum / double(n);
  }
  return total / 3;
}

}  // namespace

TEST_CASE("BPGAN: the hybrid loss is its weighted terms; GP and SSIM equal float64 references and have exact gradients") {
  const Tensor x = cpets::testing::random_tensor({2, 1, 13, 12, 14}, 70, 0.f, 1.f);
  Tensor y = cpets::testing::random_tensor({2, 1, 13, 12, 14}, 71, 0.f, 1.f);
  for (int64_t i = 0; i < y.numel(); ++i) y.data()[i] = 0.6f * y.data()[i] + 0.4f * x.data()[i];  // correlated
  CHECK(ssim_loss(x, y).item() == doctest::Approx(ssim_loss_reference(x, y)).epsilon(1e-5));
  CHECK(gradient_profile_loss(x, y).item() == doctest::Approx(gradient_profile_reference(x, y)).epsilon(1e-5));
  CHECK(ssim_loss(x, x).item() == 0.f);
  CHECK(gradient_profile_loss(x, add_scalar(x, 0.25f)).item() == doctest::Approx(0.0).scale(1.0).epsilon(1e-6));
  CHECK(ssim_loss_reference(x, y) > 0.05);  // not a trivially similar pair
  CHECK_THROWS_WITH_AS(ssim_loss(Tensor::zeros({1, 1, 10, 16, 16}), Tensor::zeros({1, 1, 10, 16, 16})),
                       doctest::Contains("11-voxel Gaussian window"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(gradient_profile_loss(x, Tensor::zeros({2, 1, 13, 12, 13})), doctest::Contains("shape"),
                       std::invalid_argument);
  // Finite differences of a float32 mean over a few windows: the default step keeps the loss's
  // round-off (~1e-7 of 1) under the tolerance; the scale puts the gradients at O(0.1).
  const Tensor small_x = cpets::testing::random_tensor({1, 1, 12, 11, 12}, 72, 0.f, 1.f);
  const Tensor small_y = cpets::testing::random_tensor({1, 1, 12, 11, 12}, 73, 0.f, 1.f);
  cpets::testing::gradcheck([&](const std::vector<Tensor>& v) { return mul_scalar(ssim_loss(v[0], small_y), 100.f); },
                            {small_x});
  // GP is an L1 of differences: a real volume whose differences are ±0.5 along the axes keeps
  // every |Δx − Δy| away from its kink (|Δx| ≤ 0.2), with both signs.
  Tensor ramp = Tensor::empty({1, 1, 6, 5, 7});
  for (int64_t d = 0, i = 0; d < 6; ++d)
    for (int64_t h = 0; h < 5; ++h)
      for (int64_t w = 0; w < 7; ++w) ramp.data()[i++] = 0.5f * float(d - h + w);
  cpets::testing::gradcheck(
      [&](const std::vector<Tensor>& v) { return mul_scalar(gradient_profile_loss(v[0], ramp), 100.f); },
      {cpets::testing::random_tensor({1, 1, 6, 5, 7}, 74, 0.f, 0.2f)});

  // The generator phase: total = λ_l1·L1 + λ_gp·GP + λ_ssim·(1 − SSIM) + λ_adv·LSGAN, every term logged.
  Generator init(14);
  const auto tiny = make_model(model_preset("tiny", "AV45", "bpgan"), init);
  const Inputs in = tiny_inputs(2, 80);
  const Tensor pet = cpets::testing::random_tensor({2, 1, 16, 16, 16}, 84, 0.f, 1.f);
  Generator noise(15);
  ObjectiveConfig o;
  o.lambda_l1 = 100.f;
  o.lambda_adv = 1.f;
  tiny->set_discriminator_trainable(false);
  const LossTerms l = tiny->generator_loss(in, pet, PhaseContext{noise, o});
  CHECK(term(l, "gp") > 0);
  CHECK(term(l, "ssim_loss") > 0);
  CHECK(l.total.item() == doctest::Approx(100 * term(l, "pet_l1") + 100 * term(l, "gp") + 10 * term(l, "ssim_loss") +
                                          term(l, "adv"))
                              .epsilon(1e-5));
  {
    NoGradGuard no_grad;
    const Tensor fake = tiny->synthesise(in);
    CHECK(term(l, "ssim_loss") == doctest::Approx(ssim_loss_reference(fake, pet)).epsilon(1e-4));
  }
  l.total.backward();
  for (const auto& [name, p] : tiny->generator_parameters()) CHECK_MESSAGE(p.grad().defined(), name);
  o.lambda_gp = o.lambda_ssim = 0.f;
  const LossTerms plain = tiny->generator_loss(in, pet, PhaseContext{noise, o});
  CHECK(plain.total.item() == doctest::Approx(100 * term(plain, "pet_l1") + term(plain, "adv")).epsilon(1e-5));
  ModelConfig no_d = model_preset("tiny", "AV45", "bpgan");
  no_d.discriminator = false;
  Generator init2(16);
  const auto without = make_model(no_d, init2);
  CHECK(without->discriminator_parameters().empty());
  CHECK_THROWS_AS(without->discriminator_loss(in, pet, PhaseContext{noise, o}), std::logic_error);
}

TEST_CASE("BMGAN's blocks: gradients by finite differences (InstanceNorm, PReLU, dense concatenation, ConvTranspose)") {
  Generator init(13);
  const bmgan::DenseBlock dense(2, 3, init);
  const bmgan::ResidualUnit strided(2, 3, 2, 2, bmgan::Activation::prelu, init);
  const layers::ConvTranspose3d up(3, 2, 4, init, layers::ConvOptions{2, 1, true});
  const Tensor x = cpets::testing::random_tensor({1, 2, 4, 4, 4}, 60, -1.f, 1.f);
  // Many (Leaky/P)ReLU kinks after InstanceNorm: the fine step keeps the differences off them.
  cpets::testing::gradcheck([&](const std::vector<Tensor>& v) { return up.forward(dense.forward(v[0])); }, {x},
                            cpets::testing::fine_step());
  cpets::testing::gradcheck([&](const std::vector<Tensor>& v) { return strided.forward(v[0]); }, {x},
                            cpets::testing::fine_step());
  CHECK(dense.forward(x).shape() == Shape{1, 3, 4, 4, 4});
  CHECK(strided.forward(x).shape() == Shape{1, 3, 2, 2, 2});
  CHECK(up.forward(dense.forward(x)).shape() == Shape{1, 2, 8, 8, 8});
}

TEST_CASE("baselines: gradients through unet-cond's condition match finite differences") {
  Generator init(4);
  const auto model = make_model(model_preset("tiny", "AV45", "unet-cond"), init);
  randomise(*model, 200);
  const Tensor t1 = cpets::testing::random_tensor({1, 1, 16, 16, 16}, 30, 0.f, 1.f);
  cpets::testing::gradcheck(
      [&](const std::vector<Tensor>& x) { return model->synthesise(Inputs{t1, x[0], x[1]}); },
      {cpets::testing::random_tensor({1, 1}, 31, 0.f, 1.f), cpets::testing::random_tensor({1, 4}, 32, 0.f, 1.f)});
}

TEST_CASE("baselines: config kinds get their reference training defaults and clear errors") {
  const train::Config unet = train::make_config("tiny", {"model.kind=unet-cond"});
  CHECK(unet.model.kind == "unet-cond");
  CHECK(unet.train.lr == 5e-4);
  CHECK(unet.train.lr_discriminator == 1e-4);
  CHECK(unet.train.lambda_adv == 0.1);
  CHECK(unet.train.perceptual == "none");
  const train::Config p2p = train::make_config("demo", {"model.kind=pix2pix"});
  CHECK(p2p.train.lambda_l1 == 100);
  CHECK(p2p.train.beta1 == 0.5);
  CHECK(p2p.model.baseline_channels == std::array<int64_t, 4>{16, 32, 64, 128});
  CHECK(p2p.objective().lambda_l1 == 100.f);
  const train::Config cyc = train::make_config("demo", {"model.kind=cyclegan"});
  CHECK(cyc.train.lambda_cycle == 10);
  CHECK(cyc.train.lambda_identity == 0.5);
  CHECK(cyc.train.beta1 == 0.5);
  CHECK(cyc.objective().lambda_cycle == 10.f);
  CHECK(cyc.model.baseline_channels == std::array<int64_t, 4>{16, 32, 64, 128});
  const train::Config bm = train::make_config("demo", {"model.kind=bmgan"});
  CHECK(bm.train.lambda_l1 == 20);
  CHECK(bm.train.lr_discriminator == 2e-4);
  CHECK(bm.model.bmgan_levels == 3);
  CHECK(bm.model.discriminator_layers == 4);
  CHECK(train::make_config("full", {"model.kind=bmgan"}).model.bmgan_width_divisor == 1);
  const train::Config bp = train::make_config("demo", {"model.kind=bpgan"});
  CHECK(bp.train.lambda_l1 == 100);
  CHECK(bp.objective().lambda_gp == 100.f);
  CHECK(bp.objective().lambda_ssim == 10.f);
  CHECK(bp.train.beta1 == 0.5);
  CHECK(bp.model.baseline_channels == std::array<int64_t, 4>{8, 16, 32, 64});
  CHECK(train::make_config("tiny", {"model.kind=bpgan", "train.lambda_ssim=0"}).objective().lambda_ssim == 0.f);
  // A value given explicitly still wins over the kind's default.
  CHECK(train::make_config("tiny", {"model.kind=unet", "train.lr=3e-4"}).train.lr == 3e-4);

  auto err = [](std::vector<std::string> o) { return error_of([&] { train::make_config("tiny", o); }); };
  const std::string unknown = err({"model.kind=cyclegan2"});
  CHECK(contains(unknown, "model.kind"));
  CHECK(contains(unknown, "\"pix2pix\""));
  CHECK(contains(err({"model.kind=pix2pix", "model.volume=24,16,16"}), "divisible by 16"));
  CHECK(contains(err({"model.kind=unet", "model.baseline_groups=3"}), "baseline_groups"));
  CHECK(contains(err({"model.kind=unet", "model.baseline_heads=3"}), "baseline_heads"));
  CHECK(contains(err({"model.kind=pix2pix", "train.eps_pet=false"}), "train.eps_pet"));
  CHECK(contains(err({"model.kind=pix2pix", "train.lambda_cycle=5"}), "only cyclegan reads it"));
  CHECK(contains(err({"model.kind=pix2pix", "train.lambda_gp=5"}), "only bpgan reads it"));
  CHECK(contains(err({"model.kind=bpgan", "train.lambda_ssim=-1"}), "train.lambda_ssim"));
  CHECK(contains(err({"model.kind=bpgan", "model.volume=20,16,16"}), "divisible by 8"));
  CHECK(contains(err({"model.kind=bpgan", "model.volume=16,8,16"}), "11-voxel SSIM window"));
  CHECK(contains(err({"model.kind=bmgan", "model.bmgan_levels=5"}), "bmgan_levels"));
  CHECK(contains(err({"model.kind=bmgan", "model.bmgan_width_divisor=3"}), "bmgan_width_divisor"));
  CHECK(contains(err({"model.kind=bmgan", "model.bmgan_levels=4"}), "divisible by 32"));  // tiny's 16³
  CHECK(contains(err({"train.perceptual=none", "train.lambda_identity=0"}), "train.lambda_identity"));
  CHECK(contains(err({"model.kind=cyclegan", "train.lambda_cycle=-1"}), "train.lambda_cycle"));
  CHECK(contains(err({"model.kind=unet", "train.perceptual=lpips-squeeze", "train.perceptual_weights=x"}), "train.perceptual"));
  CHECK(train::make_config("tiny", {"model.kind=unet-cond", "train.lr_conditional_scale=10"}).train.lr_conditional_scale == 10);
}

TEST_CASE("every kind's parameter counts per preset equal tools/torch_model.py's (its OUR_COUNTS, --check-counts)") {
  // The PyTorch builds that `cpets-bench train --kind` times beside ours are checked against this
  // table by `tools/torch_model.py --check-counts` (not run here: ctest needs no PyTorch), so a
  // change here must be made there too.
  struct Row {
    const char* kind;
    const char* preset;
    int64_t generator, discriminator;
  };
  const Row rows[] = {
      {"causal-pets", "tiny", 82652, 11573},      {"causal-pets", "demo", 1387448, 169169},
      {"causal-pets", "full", 10164328, 2642753}, {"unet", "tiny", 108881, 11573},
      {"unet", "demo", 3150145, 697809},          {"unet", "full", 12562945, 11048769},
      {"unet-cond", "tiny", 108881, 11573},       {"unet-cond", "demo", 3150145, 697809},
      {"unet-cond", "full", 12562945, 11048769},  {"pix2pix", "tiny", 17709, 11829},
      {"pix2pix", "demo", 1050001, 698833},       {"pix2pix", "full", 16770625, 11052865},
      {"cyclegan", "tiny", 35418, 23146},         {"cyclegan", "demo", 2100002, 1395618},
      {"cyclegan", "full", 33541250, 22097538},   {"bmgan", "tiny", 254333 + 14980, 11573},
      {"bmgan", "demo", 5980657 + 322730, 705513},
      {"bpgan", "tiny", 38957, 11829},            {"bpgan", "demo", 552665, 698833},
      {"bpgan", "full", 2208177, 11052865},
      // bmgan full (G + E 247592897 + 6433756, D 11177889): the BMGAN test above, which builds it already.
  };
  for (const Row& r : rows) {
    CAPTURE(r.kind);
    CAPTURE(r.preset);
    Generator init(0);
    const auto model = make_model(model_preset(r.preset, "AV45", r.kind), init);
    CHECK(count(model->generator_parameters()) == r.generator);
    CHECK(count(model->discriminator_parameters()) == r.discriminator);
  }
}

// ---- the same networks as PyTorch's ---------------------------------------------------------------

TEST_CASE("baselines: each kind is the same network as tools/torch_model.py's — same weights, same synthetic PET") {
  // tools/torch_model.py --baseline-fixture: per kind (tiny preset) random weights under our
  // parameter names (the discriminators aside), random inputs and the PET its generator
  // synthesises in eval mode (BMGAN's code z = 0). Tolerance as test_golden's: float32 on both
  // sides with different summation orders, |ours − torch| ≤ 1e-4·max|torch|; a wrong layer,
  // order, norm or activation is off by 1e-2..1.
  const SafetensorsFile f = load_safetensors(std::string(CPETS_FIXTURES) + "/golden/baselines.safetensors");
  auto tensor = [&](const std::string& name) -> const Tensor& {
    const auto it = std::find_if(f.tensors.begin(), f.tensors.end(), [&](const auto& t) { return t.first == name; });
    REQUIRE_MESSAGE(it != f.tensors.end(), "fixture has no tensor " << name);
    return it->second;
  };
  for (const char* kind : {"unet", "unet-cond", "pix2pix", "cyclegan", "bmgan", "bpgan"}) {
    INFO(kind);
    Generator init(3);
    const auto model = make_model(model_preset("tiny", "AV45", kind), init);
    const std::string prefix = std::string(kind) + ".weight.";
    int64_t loaded = 0;
    NamedTensors state = model->state_dict();
    for (const auto& [name, t] : f.tensors) {
      if (name.rfind(prefix, 0) != 0) continue;
      const std::string ours = name.substr(prefix.size());
      const auto it = std::find_if(state.begin(), state.end(), [&](const auto& s) { return s.first == ours; });
      REQUIRE_MESSAGE(it != state.end(), "no parameter or buffer " << ours << " in our " << kind);
      REQUIRE_MESSAGE(it->second.numel() == t.numel(), ours << ": " << it->second.str() << " here, " << t.str() << " in PyTorch's");
      std::copy(t.data(), t.data() + t.numel(), it->second.data());
      ++loaded;
    }
    // Everything but the discriminators came from the fixture.
    int64_t expected = 0;
    for (const auto& [name, t] : state)
      if (name.find("discriminator") == std::string::npos && name.find("num_batches_tracked") == std::string::npos) ++expected;
    CHECK(loaded == expected);
    model->eval();
    NoGradGuard no_grad;
    const std::string in = std::string(kind) + ".input.";
    const Tensor pet = model->synthesise(Inputs{tensor(in + "t1"), tensor(in + "csf"), tensor(in + "covariates")});
    const Tensor& want = tensor(std::string(kind) + ".output.pet");
    REQUIRE(pet.shape() == want.shape());
    double scale = 0;
    for (int64_t i = 0; i < want.numel(); ++i) scale = std::max(scale, double(std::fabs(want.data()[i])));
    CHECK(max_difference(pet, want) <= 1e-4 * scale + 1e-9);
    CHECK(scale > 0);
    if (std::string(kind) == "bpgan") {  // the hybrid loss's own terms, on PyTorch's PET
      CHECK(gradient_profile_loss(want, tensor("bpgan.input.pet")).item() ==
            doctest::Approx(tensor("bpgan.loss.gp").item()).epsilon(1e-5));
      CHECK(ssim_loss(want, tensor("bpgan.input.pet")).item() ==
            doctest::Approx(tensor("bpgan.loss.ssim").item()).epsilon(1e-5));
    }
  }
}
