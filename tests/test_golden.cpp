// The whole tiny CausalPETS against a PyTorch build of docs/model.md (tools/torch_model.py
// --fixture): same weights, inputs and noise → the same outputs, loss terms, gradient of L_G for
// every generator parameter, and one discriminator step (losses, gradients, BatchNorm running
// statistics).
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
#include "train/objective.h"

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

Fixture load_fixture() {
  SafetensorsFile f = load_safetensors(std::string(CPETS_FIXTURES) + "/golden/tiny_step.safetensors");
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
  worst_relative = std::max(worst_relative, worst / std::max(scale, 1e-30));
  CHECK_MESSAGE(worst <= kRelTol * scale + 1e-9, what << ": element " << worst_i << " ours " << ours.data()[worst_i]
                                                      << " torch " << torch_value.data()[worst_i] << " (max |torch| "
                                                      << scale << ", relative " << worst / std::max(scale, 1e-30) << ")");
}

struct Golden {
  Golden(const Golden&) = delete;
  Fixture fx = load_fixture();
  ModelConfig config;
  Generator init{7};
  std::shared_ptr<CausalPETS> model;
  Inputs in;
  Tensor pet;
  Noise noise;

  Golden() {
    worst_relative = 0;
    config = model_config_from_json(nlohmann::json::parse(fx.meta.at("config")), model_preset("tiny"));
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
  CHECK(to_json(model_config_from_json(j)) == to_json(model_preset("tiny")));
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

TEST_CASE("golden: generator objective, its outputs and every generator gradient match PyTorch") {
  Golden g;
  g.model->train();
  g.model->discriminator->set_requires_grad(false);  // D frozen during the generator step
  train::ObjectiveConfig cfg;  // λ_adv 0.005, β 0.001, L1 T1 loss, no perceptual term (as the fixture)
  const train::GeneratorLosses L = train::generator_objective(*g.model, g.in, g.pet, g.noise, cfg);
  check_close("mu", L.outputs.latent.mu, g.fx["output.mu"]);
  check_close("s", L.outputs.latent.s, g.fx["output.s"]);
  check_close("tokens", L.outputs.tokens, g.fx["output.tokens"]);
  check_close("t1_rec", L.outputs.t1_rec, g.fx["output.t1_rec"]);
  check_close("pet_syn", L.outputs.pet_syn, g.fx["output.pet_syn"]);
  check_close("loss.pet_l1", L.pet_l1, g.fx["loss.pet_l1"]);
  check_close("loss.t1", L.t1, g.fx["loss.t1"]);
  check_close("loss.kl", L.kl, g.fx["loss.kl"]);
  check_close("loss.adv", L.adv, g.fx["loss.adv"]);
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

TEST_CASE("golden: discriminator step (losses, gradients, BatchNorm running statistics) matches PyTorch") {
  Golden g;
  g.model->train();
  g.model->discriminator->set_requires_grad(false);
  train::ObjectiveConfig cfg;
  const train::GeneratorLosses L = train::generator_objective(*g.model, g.in, g.pet, g.noise, cfg);
  L.total.backward();  // as in the fixture, the generator step's D forward moved the running statistics

  g.model->discriminator->set_requires_grad(true);
  const train::DiscriminatorLosses D = train::discriminator_objective(*g.model, L.outputs.pet_syn.detach(), g.pet);
  check_close("d fake", D.fake, g.fx["dloss.fake"]);
  check_close("d real", D.real, g.fx["dloss.real"]);
  D.total.backward();
  for (const auto& [name, p] : g.model->discriminator_parameters()) check_close("grad of " + name, p.grad(), g.fx["dgrad." + name]);
  for (const auto& [name, b] : g.model->discriminator->named_buffers("discriminator."))
    check_close("buffer " + name, b, g.fx["after." + name]);
  MESSAGE("discriminator step: largest relative difference to PyTorch " << worst_relative);
}
