// The five trained networks of Causal PETS, each a Module built from layers/ (docs/model.md §3).
// Constructors draw initial weights from a Generator in registration order.
#pragma once
#include <memory>

#include "engine/module.h"
#include "engine/rng.h"
#include "models/config.h"

namespace cpets::models {

// MLP_M and f: Linear(n→w) → SiLU → Linear(w→w) → SiLU → Linear(w→K·c_ctx) → (B, K, c_ctx).
// With config.fusion == "raw" there is no MLP: forward returns the input as one token (B, 1, n).
class FusionMLP : public Module {
 public:
  FusionMLP(int64_t inputs, const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& x) const;  // x (B, inputs)
};

// E (g_S). forward returns the head's (B, 2z, d, h, w) output; channels [0, z) are μ, [z, 2z) s.
class Encoder : public Module {
 public:
  Encoder(const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& t1, const Tensor& covariates) const;
  std::shared_ptr<FusionMLP> demographics;  // MLP_M (null with fusion == "raw")
};

class T1Decoder : public Module {  // G_T1
 public:
  T1Decoder(const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& z) const;
};

class PETGenerator : public Module {  // G_P
 public:
  PETGenerator(const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& z, const Tensor& tokens) const;
};

class PatchDiscriminator : public Module {  // D
 public:
  PatchDiscriminator(const ModelConfig& config, Generator& init);
  Tensor forward(const Tensor& pet) const;  // raw logits (B, 1, …)
};

}  // namespace cpets::models
