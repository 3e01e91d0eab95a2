#include "models/synthesis_model.h"

#include <stdexcept>

#include "engine/ops.h"
#include "models/baselines/bmgan.h"
#include "models/baselines/bpgan.h"
#include "models/baselines/cyclegan.h"
#include "models/baselines/pix2pix.h"
#include "models/baselines/unet.h"
#include "models/causal_pets.h"

namespace cpets::models {

Tensor batch_noise(const Shape& shape, Generator& gen, BatchShard shard, Device device) {
  const int64_t b = shape.at(0);
  const int64_t global = shard.global > 0 ? shard.global : b;
  if (shard.offset < 0 || shard.offset + b > global)
    throw std::invalid_argument("batch_noise: rows [" + std::to_string(shard.offset) + ", " +
                                std::to_string(shard.offset + b) + ") are outside the global batch of " +
                                std::to_string(global));
  if (global == b) return randn(shape, gen, 0.f, 1.f, device);
  Shape whole = shape;
  whole[0] = global;
  return slice(randn(whole, gen, 0.f, 1.f, device), 0, shard.offset, shard.offset + b);
}

Abduction SynthesisModel::abduct(const Tensor& t1, const Tensor& /*covariates*/) const { return {t1, {}}; }

std::pair<NamedTensors, NamedTensors> SynthesisModel::split_conditional_path() const {
  return {{}, generator_parameters()};
}

void SynthesisModel::set_discriminator_trainable(bool on) const {
  for (auto& [name, p] : discriminator_parameters()) {
    Tensor t = p;
    t.set_requires_grad(on);
  }
}

std::vector<std::pair<std::string, int64_t>> SynthesisModel::parameter_table() const {
  auto count = [](const NamedTensors& params) {
    int64_t n = 0;
    for (const auto& [name, p] : params) n += p.numel();
    return n;
  };
  return {{"generator", count(generator_parameters())},
          {"discriminator", count(discriminator_parameters())},
          {"total", num_parameters()}};
}

std::shared_ptr<SynthesisModel> make_model(const ModelConfig& config, Generator& init) {
  config.validate();
  if (config.kind == "causal-pets") return std::make_shared<CausalPETS>(config, init);
  if (config.kind == "unet" || config.kind == "unet-cond") return std::make_shared<AttentionUNetModel>(config, init);
  if (config.kind == "pix2pix") return std::make_shared<Pix2Pix>(config, init);
  if (config.kind == "cyclegan") return std::make_shared<CycleGAN>(config, init);
  if (config.kind == "bmgan") return std::make_shared<BMGAN>(config, init);
  if (config.kind == "bpgan") return std::make_shared<BPGAN>(config, init);
  throw std::invalid_argument("make_model: model kind \"" + config.kind + "\" has no implementation");
}

}  // namespace cpets::models
