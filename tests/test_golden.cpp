// The whole tiny CausalPETS against a PyTorch build of docs/model.md (tools/torch_model.py
// --fixture): same weights, inputs and noise → the same outputs, loss terms, gradient of L_G for
// every generator parameter, and one discriminator step (losses, gradients, BatchNorm running
// statistics); and a checkpoint of ours loaded into that PyTorch build (tools/export_torch.py).
//
// Tolerance: both sides compute in float32 with different summation orders (blocked GEMMs,
// fused group_norm_silu, flash-style attention with an online softmax, our reductions vs
// PyTorch's). Measured: PyTorch's own float32 gradients differ from its float64 ones by up to
// 9.5e-6 of the tensor's largest magnitude (GroupNorm scale gradients, sums over 2·16³ voxels
// with cancellation), and ours differ from PyTorch's float32 ones by up to ~1e-5 (forward values
// and the D step ~1e-6). So: |ours − torch| ≤ 1e-4 · max|torch| + 1e-9 for every element, a 10×
// margin over float32 rounding and far below what a wrong index, missing term, wrong scale or
// swapped GEGLU half gives (1e-2..1 relative).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/autograd.h"
#include "engine/safetensors.h"
#include "models/causal_pets.h"
#include "models/objective.h"
#include "train/checkpoint.h"

using namespace cpets;
using namespace cpets::models;

namespace {

constexpr double kRelTol = 1e-4;

struct Fixture {
  std::map<std::string, Tensor> t;
  SafetensorsMetadata meta;
  const Tensor& operator[](const std::string& k) const {
    auto it = t.find(k);
    REQUIRE_MESSAGE(it != t.end(), "fixture has no tensor " << k);
    return it->second;
  }
  // Tensors whose names start with `prefix`, with the prefix removed.
  NamedTensors with_prefix(const std::string& prefix) const {
    NamedTensors out;
    for (const auto& [k, v] : t)
      if (k.rfind(prefix, 0) == 0) out.emplace_back(k.substr(prefix.size()), v);
    return out;
  }
};

// tiny_step: the default model and objective. tiny_vae_raw: the other branches (vae latent, raw
// fusion, MSE T1 loss, no ε_PET, no discriminator).
Fixture load_fixture(const std::string& name = "tiny_step") {
  SafetensorsFile f = load_safetensors(std::string(CPETS_FIXTURES) + "/golden/" + name + ".safetensors");
  Fixture fx;
  for (auto& [k, v] : f.tensors) fx.t[k] = v;
  fx.meta = f.metadata;
  return fx;
}

// The largest relative difference seen in a test case, reported so the margin stays visible.
double worst_relative = 0;

// Largest |a − b| over the tensor's largest |b|; CHECKs the tolerance and the shape.
void check_close(const std::string& what, const Tensor& ours, const Tensor& torch_value) {
  INFO(what);
  REQUIRE(ours.defined());
  REQUIRE_MESSAGE(ours.shape() == torch_value.shape(), "shape " << ours.str() << " vs " << torch_value.str());
  double scale = 0, worst = 0;
  int64_t worst_i = 0;
  for (int64_t i = 0; i < ours.numel(); ++i) scale = std::max(scale, double(std::abs(torch_value.data()[i])));
  for (int64_t i = 0; i < ours.numel(); ++i) {
    const double d = std::abs(double(ours.data()[i]) - double(torch_value.data()[i]));
    if (d > worst) worst = d, worst_i = i;
  }
  // An all-zero reference (W_q, W_k of a cross-attention to a single token get exactly zero
  // gradient: the softmax over one key is 1) is held to the absolute 1e-9 alone.
  if (scale > 0) worst_relative = std::max(worst_relative, worst / scale);
  else if (worst > 0) MESSAGE(what << ": PyTorch exactly 0, ours within " << worst);
  CHECK_MESSAGE(worst <= kRelTol * scale + 1e-9, what << ": element " << worst_i << " ours " << ours.data()[worst_i]
                                                      << " torch " << torch_value.data()[worst_i] << " (max |torch| "
                                                      << scale << ", relative " << worst / std::max(scale, 1e-30) << ")");
}

struct Golden {
  Golden(const Golden&) = delete;
  Fixture fx;
  ModelConfig config;
  models::ObjectiveConfig objective;
  Generator init{7};
  std::shared_ptr<CausalPETS> model;
  Inputs in;
  Tensor pet;
  Noise noise;

  explicit Golden(const std::string& name = "tiny_step") : fx(load_fixture(name)) {
    worst_relative = 0;
    config = model_config_from_json(nlohmann::json::parse(fx.meta.at("config")), model_preset("tiny"));
    const auto o = nlohmann::json::parse(fx.meta.at("objective"));
    objective.lambda_adv = o.at("lambda_adv").get<float>();
    objective.beta_kl = o.at("beta_kl").get<float>();
    objective.t1_loss = o.at("t1_loss").get<std::string>();
    objective.eps_pet = o.at("eps_pet").get<bool>();
    model = std::make_shared<CausalPETS>(config, init);
    model->load_state_dict(fx.with_prefix("weight."));  // strict: every name and shape must agree
    in = {fx["input.t1"], fx["input.csf"], fx["input.covariates"]};
    pet = fx["input.pet"];
    noise = {fx["noise.eps_t1"], fx["noise.eps_pet"]};
  }
};

}  // namespace

TEST_CASE("golden fixture: the tiny preset here and in tools/torch_model.py are the same network") {
  Fixture fx = load_fixture();
  const auto j = nlohmann::json::parse(fx.meta.at("config"));
  // The grid's voxel size is not part of the network (and the fixture predates the key).
  ModelConfig fixture_config = model_config_from_json(j);
  CHECK(!j.contains("voxel_mm"));
  fixture_config.voxel_mm = model_preset("tiny").voxel_mm;
  CHECK(to_json(fixture_config) == to_json(model_preset("tiny")));
  Generator init(1);
  CausalPETS model(model_preset("tiny"), init);
  // Same names, in the same (PyTorch) order, and the same shapes.
  const NamedTensors ours = model.state_dict();
  const NamedTensors theirs = fx.with_prefix("weight.");
  REQUIRE(ours.size() == theirs.size());
  std::map<std::string, Shape> their_shapes;
  for (const auto& [k, v] : theirs) their_shapes[k] = v.shape();
  for (const auto& [k, v] : ours) {
    INFO(k);
    REQUIRE(their_shapes.count(k) == 1);
    CHECK(their_shapes[k] == v.shape());
  }
}

namespace {
void check_generator_step(Golden& g) {
  g.model->train();
  if (g.model->discriminator) g.model->discriminator->set_requires_grad(false);  // D frozen in the G step
  const models::GeneratorLosses L = models::generator_objective(*g.model, g.in, g.pet, g.noise, g.objective);
  check_close("mu", L.outputs.latent.mu, g.fx["output.mu"]);
  check_close("s", L.outputs.latent.s, g.fx["output.s"]);
  check_close("tokens", L.outputs.tokens, g.fx["output.tokens"]);
  check_close("t1_rec", L.outputs.t1_rec, g.fx["output.t1_rec"]);
  check_close("pet_syn", L.outputs.pet_syn, g.fx["output.pet_syn"]);
  check_close("loss.pet_l1", L.pet_l1, g.fx["loss.pet_l1"]);
  check_close("loss.t1", L.t1, g.fx["loss.t1"]);
  check_close("loss.kl", L.kl, g.fx["loss.kl"]);
  if (g.model->discriminator) check_close("loss.adv", L.adv, g.fx["loss.adv"]);
  CHECK(L.adv.defined() == (g.fx.t.count("loss.adv") == 1));
  check_close("loss.total", L.total, g.fx["loss.total"]);
  CHECK_FALSE(L.perceptual.defined());

  L.total.backward();
  const NamedTensors params = g.model->generator_parameters();
  CHECK(params.size() == g.fx.with_prefix("grad.").size());
  for (const auto& [name, p] : params) check_close("grad of " + name, p.grad(), g.fx["grad." + name]);
  for (const auto& [name, p] : g.model->discriminator_parameters()) {
    INFO(name);
    CHECK_FALSE(p.grad().defined());  // frozen
  }
  MESSAGE("generator step: largest relative difference to PyTorch " << worst_relative);
}
}  // namespace

TEST_CASE("golden: generator objective, its outputs and every generator gradient match PyTorch") {
  Golden g;
  check_generator_step(g);
}

TEST_CASE("golden: vae latent, raw fusion, MSE T1 loss, no ε_PET, no discriminator match PyTorch") {
  Golden g("tiny_vae_raw");
  REQUIRE(g.config.latent == "vae");
  REQUIRE(g.config.fusion == "raw");
  REQUIRE_FALSE(g.config.discriminator);
  REQUIRE(g.objective.t1_loss == "mse");
  REQUIRE_FALSE(g.objective.eps_pet);
  check_generator_step(g);
}

TEST_CASE("golden: discriminator step (losses, gradients, BatchNorm running statistics) matches PyTorch") {
  Golden g;
  g.model->train();
  g.model->discriminator->set_requires_grad(false);
  const models::GeneratorLosses L = models::generator_objective(*g.model, g.in, g.pet, g.noise, g.objective);
  L.total.backward();  // as in the fixture, the generator step's D forward moved the running statistics

  g.model->discriminator->set_requires_grad(true);
  const models::DiscriminatorLosses D = models::discriminator_objective(*g.model, L.outputs.pet_syn.detach(), g.pet);
  check_close("d fake", D.fake, g.fx["dloss.fake"]);
  check_close("d real", D.real, g.fx["dloss.real"]);
  D.total.backward();
  for (const auto& [name, p] : g.model->discriminator_parameters()) check_close("grad of " + name, p.grad(), g.fx["dgrad." + name]);
  for (const auto& [name, b] : g.model->discriminator->named_buffers("discriminator."))
    check_close("buffer " + name, b, g.fx["after." + name]);
  MESSAGE("discriminator step: largest relative difference to PyTorch " << worst_relative);
}

// ---- the objective's switches, on the tiny preset with its default initialisation ---------------

namespace {
struct TinySetup {
  ModelConfig config = model_preset("tiny");
  Generator init{21}, gen{22};
  std::shared_ptr<CausalPETS> model = std::make_shared<CausalPETS>(config, init);
  Inputs in{rand({2, 1, 16, 16, 16}, gen), rand({2, 1}, gen), rand({2, 4}, gen)};
  Tensor pet = rand({2, 1, 16, 16, 16}, gen);
  Noise noise{model->sample_noise(2, gen), model->sample_noise(2, gen)};
};

double mean_sq_diff(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += std::pow(double(a.data()[i]) - double(b.data()[i]), 2);
  return s / double(a.numel());
}
}  // namespace

TEST_CASE("objective: L_G is the weighted sum of its terms; MSE T1 loss; unknown T1 loss rejected") {
  TinySetup t;
  models::ObjectiveConfig cfg;
  cfg.lambda_adv = 0.25f;  // weights that make each term visible in the sum
  cfg.beta_kl = 0.5f;
  cfg.t1_loss = "mse";
  const auto L = models::generator_objective(*t.model, t.in, t.pet, t.noise, cfg);
  CHECK(L.total.item() == doctest::Approx(L.pet_l1.item() + L.t1.item() + 0.5 * L.kl.item() + 0.25 * L.adv.item()));
  CHECK(L.t1.item() == doctest::Approx(mean_sq_diff(L.outputs.t1_rec, t.in.t1)).epsilon(1e-5));
  cfg.t1_loss = "l2";
  CHECK_THROWS_AS(models::generator_objective(*t.model, t.in, t.pet, t.noise, cfg), std::invalid_argument);
}

TEST_CASE("objective: no ε_PET decodes μ; λ_adv = 0 leaves D untouched; wrong target shape rejected") {
  TinySetup t;
  models::ObjectiveConfig cfg;
  cfg.eps_pet = false;
  cfg.lambda_adv = 0.f;
  const float batches_before = t.model->discriminator->state_dict().back().second.item();
  const auto L = models::generator_objective(*t.model, t.in, t.pet, t.noise, cfg);
  CHECK_FALSE(L.adv.defined());
  CHECK(t.model->discriminator->state_dict().back().second.item() == batches_before);  // D never ran
  const Tensor mu_decode = t.model->synthesise_pet(L.outputs.latent.mu, L.outputs.tokens);
  for (int64_t i = 0; i < mu_decode.numel(); ++i) REQUIRE(mu_decode.data()[i] == L.outputs.pet_syn.data()[i]);
  CHECK_THROWS_AS(models::generator_objective(*t.model, t.in, rand({2, 1, 16, 16, 8}, t.gen), t.noise, cfg),
                  std::invalid_argument);
}

TEST_CASE("objective: a perceptual weight without a network is an error, never silently skipped") {
  TinySetup t;
  models::ObjectiveConfig cfg;
  cfg.lambda_perceptual = 0.02f;
  try {
    models::generator_objective(*t.model, t.in, t.pet, t.noise, cfg);
    FAIL("λ_p > 0 without a perceptual network was accepted");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("lambda_perceptual") != std::string::npos);
  }
}

TEST_CASE("discriminator objective: fake + real, detached fake required, no D is an error") {
  TinySetup t;
  const auto L = models::generator_objective(*t.model, t.in, t.pet, t.noise, {});
  CHECK_THROWS_AS(models::discriminator_objective(*t.model, L.outputs.pet_syn, t.pet), std::invalid_argument);
  const auto D = models::discriminator_objective(*t.model, L.outputs.pet_syn.detach(), t.pet);
  CHECK(D.total.item() == doctest::Approx(D.fake.item() + D.real.item()));
  ModelConfig c = model_preset("tiny");
  c.discriminator = false;
  Generator init(3);
  CausalPETS no_d(c, init);
  CHECK_THROWS_AS(models::discriminator_objective(no_d, t.pet, t.pet), std::logic_error);
}

// The other direction: a checkpoint written by cpets-train (tiny preset, 3 steps on the demo
// phantom; committed) loaded by tools/export_torch.py into the PyTorch build gives the same
// synthetic PET as our own load_for_inference. The fixture was made with
// `export_torch.py tests/fixtures/interop/tiny_checkpoint.safetensors --fixture …_torch.safetensors`.
TEST_CASE("interop: a cpets-train checkpoint synthesises in PyTorch what it synthesises here") {
  const std::string dir = std::string(CPETS_FIXTURES) + "/interop/";
  const train::InferenceBundle b = train::load_for_inference(dir + "tiny_checkpoint.safetensors");
  CHECK(b.model->kind() == "causal-pets");
  CHECK(b.meta.state.step == 3);
  Fixture f;
  for (auto& [k, v] : load_safetensors(dir + "tiny_checkpoint_torch.safetensors").tensors) f.t[k] = v;
  const Tensor t1 = f["t1"], csf = f["csf"], cov = f["covariates"];
  REQUIRE(t1.shape() == Shape{2, 1, 16, 16, 16});
  b.model->eval();
  NoGradGuard no_grad;
  check_close("synthetic PET from the checkpoint", b.model->synthesise(Inputs{t1, csf, cov}), f["pet_syn"]);
}
