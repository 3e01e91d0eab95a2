// The downstream diagnosis classifier of the paper's Tables 2, 3 and 7 (pMCI vs sMCI, AD vs CN),
// as the reference builds it (reference-implementation.md §1.9: MONAI Generative's
// DiffusionModelEncoder in the repository's copy): conv_in, then per level two ResnetBlocks — each
// followed, at the attention levels, by a SpatialTransformer cross-attending to the tabular token
// (with tabular input) or an AttentionBlock (without) — and a ResnetBlock(down) ending every
// level; flatten → Linear(F → 512) → ReLU → Dropout(0.1) → Linear(512 → 2) logits.
// Where we differ from the reference:
//   - the head's input is the true flatten size F (4,608 at 96 × 128 × 96: 128 × 3 × 4 × 3); the
//     reference declares Linear(4096, 512), which cannot run on its own encoder's output;
//   - no timestep MLP: the reference builds one (5,248 parameters) and never uses its output.
// So the full preset has the reference's parameters − 5,248 + 262,144 (512 × 512 for the larger
// head): 8,532,898 for PET alone, 9,594,274 for PET with the AV45 tabular token (tested against
// the reference class instantiated in PyTorch with the head fixed).
// Dropout masks come from a Generator the caller passes (deterministic, resumable); none in eval.
#pragma once
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "engine/module.h"
#include "engine/rng.h"
#include "layers/conv.h"
#include "layers/linear.h"
#include "layers/resnet.h"
#include "layers/transformer.h"

namespace cpets::models {

struct ClassifierConfig {
  std::string preset = "full";
  std::array<int64_t, 3> volume{96, 128, 96};
  int64_t in_channels = 1;       // 1: PET (or T1) alone; 2: PET and T1, in that order
  int64_t context_channels = 0;  // 0: no tabular input; else the tabular token's width (5 AV45, 6 AV1451)
  std::vector<int64_t> channels{16, 32, 64, 128, 128};
  std::vector<bool> attention{false, false, false, true, true};
  int64_t groups = 16;
  int64_t head_channels = 32;  // attention head width
  float norm_eps = 1e-6f, ln_eps = 1e-5f;
  int64_t hidden = 512;
  float dropout = 0.1f;
  int64_t classes = 2;

  // Each level halves the grid: the volume must be divisible by 2^levels.
  std::array<int64_t, 3> final_grid() const;
  int64_t flatten_size() const;
  void validate() const;  // throws std::invalid_argument naming the field and the fix
};
// "full" (the reference's), "demo" (48 × 64 × 48, four levels [8, 16, 32, 32], attention at the
// last two) or "tiny" (16³, three levels, for tests).
ClassifierConfig classifier_preset(const std::string& name, int64_t in_channels, int64_t context_channels);

class DiagnosisClassifier : public Module {
 public:
  DiagnosisClassifier(const ClassifierConfig& config, Generator& init);
  // x (B, in_channels, D, H, W); context (B, 1, context_channels) or undefined without tabular
  // input; dropout_noise draws the dropout masks in training mode (null: no dropout).
  Tensor forward(const Tensor& x, const Tensor& context = Tensor(), Generator* dropout_noise = nullptr) const;
  const ClassifierConfig& config() const { return config_; }

 private:
  struct Level {
    std::vector<std::shared_ptr<layers::ResnetBlock>> resnets;
    std::vector<std::shared_ptr<layers::SpatialTransformer>> cross_attentions;  // with tabular input
    std::vector<std::shared_ptr<layers::AttentionBlock>> self_attentions;       // without
    std::shared_ptr<layers::ResnetBlock> downsampler;
  };
  ClassifierConfig config_;
  std::shared_ptr<layers::Conv3d> conv_in_;
  std::vector<Level> levels_;
  std::shared_ptr<layers::Linear> hidden_, logits_;
};

}  // namespace cpets::models
