// CausalPETS networks: parameter counts of the full and demo presets against the figures of
// docs/model.md (full) and tools/torch_model.py --count (demo); output shapes of the tiny preset;
// configuration validation and JSON; ablation switches; seeded initialisation.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "gradcheck.h"
#include "models/causal_pets.h"

using namespace cpets;
using namespace cpets::models;

TEST_CASE("full preset parameter counts equal model.md's") {
  Generator init(0);
  const CausalPETS model(model_preset("full"), init);
  const ParameterCounts c = count_parameters(model);
  CHECK(c.t1_decoder == 1808321);
  CHECK(c.discriminator == 2642753);
  CHECK(c.encoder == 6217478);
  CHECK(c.encoder_demographics == 83200);
  CHECK(c.encoder_transformer == 346752);
  CHECK(c.fusion == 83328);
  CHECK(c.pet_generator == 2055201);
  CHECK(c.total == 1808321 + 2642753 + 6217478 + 83328 + 2055201);
  // AV1451 has two CSF inputs: f's first layer gains one input column.
  Generator init2(0);
  const CausalPETS tau(model_preset("full", "AV1451"), init2);
  CHECK(count_parameters(tau).fusion == 83328 + 128);
}

TEST_CASE("demo preset parameter counts equal tools/torch_model.py --count demo") {
  Generator init(0);
  const CausalPETS model(model_preset("demo"), init);
  const ParameterCounts c = count_parameters(model);
  CHECK(c.encoder == 403078);
  CHECK(c.encoder_demographics == 12800);
  CHECK(c.encoder_transformer == 23200);
  CHECK(c.fusion == 12864);
  CHECK(c.t1_decoder == 454369);
  CHECK(c.pet_generator == 517137);
  CHECK(c.discriminator == 169169);
  CHECK(c.total == 1556617);
}

namespace {

Tensor uniform(const Shape& shape, uint64_t seed) {
  Generator g(seed);
  return rand(shape, g);
}

Inputs tiny_inputs(const ModelConfig& c, int64_t batch, uint64_t seed = 1) {
  return {uniform({batch, 1, c.volume[0], c.volume[1], c.volume[2]}, seed), uniform({batch, c.csf_inputs}, seed + 1),
          uniform({batch, c.covariate_inputs}, seed + 2)};
}

void check_equal(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  for (int64_t i = 0; i < a.numel(); ++i) REQUIRE(a.data()[i] == b.data()[i]);
}

bool has_prefix(const NamedTensors& named, const std::string& prefix) {
  for (const auto& [k, v] : named)
    if (k.rfind(prefix, 0) == 0) return true;
  return false;
}

// validate() must throw, and the message must name the field.
void check_rejected(const ModelConfig& c, const std::string& field) {
  try {
    c.validate();
    FAIL("validate() accepted a config with a bad " << field);
  } catch (const std::invalid_argument& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(field) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("tiny preset: output shapes of every network, the D patch grid, in the causal order") {
  const ModelConfig c = model_preset("tiny");
  Generator init(3), noise_gen(4);
  CausalPETS model(c, init);
  const Inputs in = tiny_inputs(c, 3);
  const Noise noise{model.sample_noise(3, noise_gen), model.sample_noise(3, noise_gen)};
  CHECK(noise.eps_t1.shape() == Shape{3, 3, 2, 2, 2});
  const Outputs out = model.forward(in, noise);
  CHECK(out.latent.mu.shape() == Shape{3, 3, 2, 2, 2});
  CHECK(out.latent.s.shape() == Shape{3, 3, 2, 2, 2});
  CHECK(out.tokens.shape() == Shape{3, c.fusion_tokens, c.context_width});
  CHECK(out.t1_rec.shape() == Shape{3, 1, 16, 16, 16});
  CHECK(out.pet_syn.shape() == Shape{3, 1, 16, 16, 16});
  // PatchGAN: 16 → 8 → 4 (stride 2) → 3 → 2 (stride 1, kernel 4, padding 1).
  CHECK(model.discriminate(out.pet_syn).shape() == Shape{3, 1, 2, 2, 2});
  // The pieces compose to forward: same values from the individual calls.
  const Latent S = model.encode(in.t1, in.covariates);
  check_equal(S.mu, out.latent.mu);
  check_equal(model.synthesise_pet(model.reparameterise(S, noise.eps_pet), model.fuse(in.csf, in.covariates)), out.pet_syn);
}

TEST_CASE("demo preset: the PatchGAN grid for 48×64×48 is 10×14×10") {
  Generator init(5);
  const ModelConfig c = model_preset("demo");
  PatchDiscriminator d(1, c.discriminator_channels, c.discriminator_layers, c.bn_eps, c.bn_momentum, init);
  CHECK(d.forward(uniform({1, 1, 48, 64, 48}, 9)).shape() == Shape{1, 1, 10, 14, 10});
}

TEST_CASE("latent forms: reference uses s as σ and log σ², vae clamps and exponentiates") {
  ModelConfig c = model_preset("tiny");
  Generator init(6);
  CausalPETS ref(c, init);
  Latent S{uniform({2, 3, 2, 2, 2}, 1), Tensor::from_vector({2, 3, 2, 2, 2}, std::vector<float>(48, -40.f))};
  for (int i = 0; i < 24; ++i) S.s.data()[i] = 0.1f * float(i) - 1.f;  // first sample ordinary values
  const Tensor eps = uniform({2, 3, 2, 2, 2}, 2);
  const Tensor z_ref = ref.reparameterise(S, eps);
  for (int64_t i = 0; i < 48; ++i)
    CHECK(z_ref.data()[i] == doctest::Approx(S.mu.data()[i] + eps.data()[i] * S.s.data()[i]));
  check_equal(ref.log_variance(S), S.s);
  check_equal(ref.reparameterise(S, Tensor()), S.mu);  // ε undefined: decode μ

  c.latent = "vae";
  Generator init2(6);
  CausalPETS vae(c, init2);
  const Tensor z = vae.reparameterise(S, eps), lv = vae.log_variance(S);
  for (int64_t i = 0; i < 48; ++i) {
    const double logvar = std::max(-30.0, double(S.s.data()[i]));
    CHECK(lv.data()[i] == doctest::Approx(logvar));
    CHECK(z.data()[i] == doctest::Approx(S.mu.data()[i] + eps.data()[i] * std::exp(0.5 * logvar)));
  }
  CHECK_THROWS_AS(vae.reparameterise(S, uniform({2, 3, 2, 2, 1}, 3)), std::invalid_argument);
}

TEST_CASE("fusion: mlp gives K tokens of c_ctx; raw is the [B_CSF, M] vector as one token and E self-attends") {
  ModelConfig c = model_preset("tiny", "AV1451");
  c.fusion = "raw";
  Generator init(7);
  CausalPETS model(c, init);
  CHECK(model.fusion->num_parameters() == 0);
  CHECK(model.encoder->demographics == nullptr);
  CHECK_FALSE(model.encoder->transformer->has_context());
  const Inputs in = tiny_inputs(c, 2);
  const Tensor tokens = model.fuse(in.csf, in.covariates);
  CHECK(tokens.shape() == Shape{2, 1, 6});
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t i = 0; i < 2; ++i) CHECK(tokens.data()[b * 6 + i] == in.csf.data()[b * 2 + i]);
    for (int64_t i = 0; i < 4; ++i) CHECK(tokens.data()[b * 6 + 2 + i] == in.covariates.data()[b * 4 + i]);
  }
  CHECK(model.forward(in, {}).pet_syn.shape() == Shape{2, 1, 16, 16, 16});

  // mlp: Linear → SiLU → Linear → SiLU → Linear, checked by hand on one sample.
  const ModelConfig m = model_preset("tiny");
  Generator init2(8);
  FusionMLP f(5, m, init2);
  const Tensor x = uniform({1, 5}, 4);
  const Tensor y = f.forward(x);
  CHECK(y.shape() == Shape{1, 3, 6});
  auto params = f.named_parameters();
  REQUIRE(params.size() == 6);
  auto layer = [&](const std::vector<double>& v, int k, bool act) {
    const Tensor& W = params[2 * k].second;
    const Tensor& b = params[2 * k + 1].second;
    std::vector<double> o(W.size(0));
    for (int64_t r = 0; r < W.size(0); ++r) {
      double s = b.data()[r];
      for (int64_t i = 0; i < W.size(1); ++i) s += W.data()[r * W.size(1) + i] * v[i];
      o[r] = act ? s / (1 + std::exp(-s)) : s;
    }
    return o;
  };
  std::vector<double> v(x.data(), x.data() + 5);
  v = layer(layer(layer(v, 0, true), 1, true), 2, false);
  for (int64_t i = 0; i < 18; ++i) CHECK(y.data()[i] == doctest::Approx(v[i]).epsilon(1e-5));
}

TEST_CASE("ablation switches remove networks and their state") {
  ModelConfig c = model_preset("tiny");
  c.t1_reconstruction = false;
  c.discriminator = false;
  Generator init(9);
  CausalPETS model(c, init);
  CHECK(model.t1_decoder == nullptr);
  CHECK(model.discriminator == nullptr);
  const NamedTensors state = model.state_dict();
  CHECK_FALSE(has_prefix(state, "t1_decoder."));
  CHECK_FALSE(has_prefix(state, "discriminator."));
  CHECK(has_prefix(state, "pet_generator."));
  CHECK(model.discriminator_parameters().empty());
  const ParameterCounts counts = count_parameters(model);
  CHECK(counts.t1_decoder == 0);
  CHECK(counts.discriminator == 0);
  CHECK(counts.total == counts.encoder + counts.fusion + counts.pet_generator);
  Generator ng(1);
  const Outputs out = model.forward(tiny_inputs(c, 2), {model.sample_noise(2, ng), model.sample_noise(2, ng)});
  CHECK_FALSE(out.t1_rec.defined());
  CHECK(out.pet_syn.defined());
  CHECK_THROWS_AS(model.discriminate(out.pet_syn), std::logic_error);
  CHECK_THROWS_AS(model.reconstruct_t1(out.latent.mu), std::logic_error);
}

TEST_CASE("state_dict names: the paper's network prefixes, generator/discriminator groups partition the parameters") {
  Generator init(10);
  CausalPETS model(model_preset("tiny"), init);
  const NamedTensors state = model.state_dict();
  for (const char* p : {"encoder.conv_in.", "encoder.down_blocks.2.downsampler.", "encoder.demographics.fc3.",
                        "encoder.transformer.attn2.to_k.", "fusion.fc1.", "t1_decoder.blocks.10.", "t1_decoder.conv_out.",
                        "pet_generator.up_blocks.0.attentions.2.", "pet_generator.up_blocks.2.upsampler.conv.",
                        "discriminator.norm2.running_var", "discriminator.final_conv."})
    CHECK_MESSAGE(has_prefix(state, p), p);
  const size_t g = model.generator_parameters().size(), d = model.discriminator_parameters().size();
  CHECK(g + d == model.parameters().size());
  CHECK(has_prefix(model.generator_parameters(), "pet_generator."));
  CHECK_FALSE(has_prefix(model.generator_parameters(), "discriminator."));
}

TEST_CASE("conditional path: f and G_P's cross-attention to B, split from the other generator parameters") {
  Generator init(10);
  CausalPETS model(model_preset("tiny"), init);
  const auto [conditional, rest] = model.split_conditional_path();
  CHECK(conditional.size() + rest.size() == model.generator_parameters().size());
  std::set<std::string> names;
  for (const auto& [name, _] : conditional) names.insert(name);
  // f whole, and to_q/to_k/to_v/to_out of the first (cross-attending) transformer of G_P only.
  for (const auto& [name, _] : model.fusion->named_parameters("fusion.")) CHECK_MESSAGE(names.count(name), name);
  for (const char* p : {"to_q.weight", "to_k.weight", "to_v.weight", "to_out.weight", "to_out.bias"})
    CHECK_MESSAGE(names.count(std::string("pet_generator.up_blocks.0.attentions.0.attn2.") + p), p);
  CHECK(names.size() == model.fusion->named_parameters().size() + 5);
  for (const auto& [name, _] : rest) {
    CHECK_MESSAGE(name.rfind("fusion.", 0) != 0, name);
    CHECK_MESSAGE(name.find("attentions.0.attn2.") == std::string::npos, name);
  }
}

TEST_CASE("transformer_zero_init: proj_out starts at zero (model.md) or at its random init") {
  ModelConfig c = model_preset("tiny");
  auto proj_out_abs_sum = [](const CausalPETS& m) {
    double s = 0;
    for (const auto& [name, p] : m.state_dict())
      if (name.find("proj_out.weight") != std::string::npos)
        for (int64_t i = 0; i < p.numel(); ++i) s += std::fabs(p.data()[i]);
    return s;
  };
  Generator a(3), b(3);
  CHECK(proj_out_abs_sum(CausalPETS(c, a)) == 0.0);
  c.transformer_zero_init = false;
  CHECK(proj_out_abs_sum(CausalPETS(c, b)) > 0.0);
  CHECK(model_config_from_json(to_json(c)).transformer_zero_init == false);
}

TEST_CASE("seed → identical weights; another seed → different weights") {
  Generator a(11), b(11), c(12);
  CausalPETS ma(model_preset("tiny"), a), mb(model_preset("tiny"), b), mc(model_preset("tiny"), c);
  const auto pa = ma.parameters(), pb = mb.parameters(), pc = mc.parameters();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) check_equal(pa[i], pb[i]);
  bool differs = false;
  for (size_t i = 0; i < pa.size() && !differs; ++i)
    for (int64_t k = 0; k < pa[i].numel() && !differs; ++k) differs = pa[i].data()[k] != pc[i].data()[k];
  CHECK(differs);
}

TEST_CASE("config validation names the field and the fix") {
  for (const char* p : {"full", "demo", "tiny"}) CHECK_NOTHROW(model_preset(p).validate());
  ModelConfig c = model_preset("demo");
  c.volume = {48, 60, 48};
  check_rejected(c, "volume");
  c = model_preset("demo");
  c.encoder_channels = {16, 30, 32};
  check_rejected(c, "encoder_channels");
  c = model_preset("demo");
  c.encoder_heads = 3;
  check_rejected(c, "encoder_heads");
  c = model_preset("demo");
  c.generator_groups = 5;
  check_rejected(c, "generator_channels");
  c = model_preset("demo");
  c.t1_decoder_channels = {32, 32, 32, 12};
  check_rejected(c, "t1_decoder_channels");
  c = model_preset("demo");
  c.latent = "gaussian";
  check_rejected(c, "latent");
  c = model_preset("demo");
  c.fusion = "attention";
  check_rejected(c, "fusion");
  c = model_preset("demo");
  c.fusion_tokens = 0;
  check_rejected(c, "fusion_tokens");
  c = model_preset("demo");
  c.perceptual = "vgg";
  check_rejected(c, "perceptual");
  c = model_preset("tiny");
  c.volume = {8, 16, 16};
  check_rejected(c, "volume");  // too small for the PatchGAN
  c.discriminator = false;
  CHECK_NOTHROW(c.validate());
  CHECK_THROWS_AS(model_preset("huge"), std::invalid_argument);
  CHECK_THROWS_AS(model_preset("demo", "FDG"), std::invalid_argument);
  CHECK(model_preset("demo", "AV1451").csf_inputs == 2);
  // The constructor validates too.
  c = model_preset("tiny");
  c.generator_heads = 3;
  Generator init(1);
  CHECK_THROWS_AS(CausalPETS(c, init), std::invalid_argument);
}

TEST_CASE("config JSON: round trip, partial override, unknown keys and wrong types rejected") {
  ModelConfig c = model_preset("demo", "AV1451");
  c.latent = "vae";
  c.t1_reconstruction = false;
  c.norm_eps = 2e-6f;
  const nlohmann::json j = to_json(c);
  CHECK(to_json(model_config_from_json(j)) == j);
  const ModelConfig back = model_config_from_json(nlohmann::json::parse(j.dump()));
  CHECK(back.volume == c.volume);
  CHECK(back.generator_channels == c.generator_channels);
  CHECK(back.latent == "vae");
  CHECK(back.norm_eps == c.norm_eps);
  CHECK_FALSE(back.t1_reconstruction);

  const ModelConfig partial = model_config_from_json({{"fusion_tokens", 2}}, model_preset("demo"));
  CHECK(partial.fusion_tokens == 2);
  CHECK(partial.context_width == 32);  // the rest from the base

  try {
    model_config_from_json({{"fusion_token", 2}});
    FAIL("unknown key accepted");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("fusion_token") != std::string::npos);
  }
  try {
    model_config_from_json({{"volume", {48, 64}}});
    FAIL("a 2-element volume accepted");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("volume") != std::string::npos);
  }
  CHECK_THROWS_AS(model_config_from_json({{"encoder_heads", "four"}}), std::invalid_argument);
  CHECK_THROWS_AS(model_config_from_json(nlohmann::json::array()), std::invalid_argument);
}

TEST_CASE("bad inputs give clear messages naming the shapes") {
  const ModelConfig c = model_preset("tiny");
  Generator init(13);
  CausalPETS model(c, init);
  Inputs in = tiny_inputs(c, 2);
  auto message = [&](const Inputs& x) {
    try {
      model.forward(x, {});
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  Inputs wrong_volume = in;
  wrong_volume.t1 = uniform({2, 1, 16, 16, 24}, 1);
  CHECK(message(wrong_volume).find("(2, 1, 16, 16, 24)") != std::string::npos);
  Inputs wrong_cov = in;
  wrong_cov.covariates = uniform({2, 3}, 1);
  CHECK(message(wrong_cov).find("covariates") != std::string::npos);
  Inputs wrong_csf = in;
  wrong_csf.csf = uniform({2, 2}, 1);
  CHECK(message(wrong_csf).find("csf") != std::string::npos);
  Inputs wrong_batch = in;
  wrong_batch.csf = uniform({3, 1}, 1);
  CHECK_FALSE(message(wrong_batch).empty());
  CHECK_THROWS_AS(model.sample_noise(0, init), std::invalid_argument);
}

TEST_CASE("tiny CausalPETS forward and backward are bitwise identical for 1 and 2 threads") {
  const ModelConfig c = model_preset("tiny");
  Generator init(14);
  CausalPETS model(c, init);
  // Non-trivial weights everywhere (the zero-initialised convs would hide half the graph).
  Generator fill(15);
  for (auto& p : model.parameters()) {
    Tensor t = p;
    NoGradGuard ng;
    t.copy_from(add(t, randn(t.shape(), fill, 0.f, 0.05f)));
  }
  const Inputs in = tiny_inputs(c, 2);
  Generator ng(16);
  const Noise noise{model.sample_noise(2, ng), model.sample_noise(2, ng)};
  auto run = [&] {
    model.zero_grad();
    const Outputs out = model.forward(in, noise);
    Tensor loss = add(add(sum(out.pet_syn), sum(out.t1_rec)), sum(model.discriminate(out.pet_syn)));
    loss.backward();
    std::vector<Tensor> r{out.pet_syn.detach(), out.t1_rec.detach()};
    for (auto& p : model.parameters()) r.push_back(p.grad().clone());
    return r;
  };
  const auto one = cpets::testing::with_threads(1, run);
  const auto two = cpets::testing::with_threads(2, run);
  REQUIRE(one.size() == two.size());
  for (size_t i = 0; i < one.size(); ++i) check_equal(one[i], two[i]);
}

TEST_CASE("batch_noise: ranks' shards of a global batch are the rows of one whole draw") {
  Generator whole_gen(42);
  const std::vector<float> whole = batch_noise({4, 2, 3}, whole_gen).to_vector();
  std::vector<float> joined;
  for (int64_t r = 0; r < 2; ++r) {
    Generator rank_gen(42);  // every rank's Generator is in the same state
    const Tensor part = batch_noise({2, 2, 3}, rank_gen, BatchShard{2 * r, 4});
    CHECK(part.shape() == Shape{2, 2, 3});
    const std::vector<float> v = part.to_vector();
    joined.insert(joined.end(), v.begin(), v.end());
    CHECK(rank_gen.state().offset == whole_gen.state().offset);  // and stays in step with one process
  }
  CHECK(joined == whole);
  Generator g(1);
  CHECK_THROWS_AS(batch_noise({2, 3}, g, BatchShard{3, 4}), std::invalid_argument);
}
