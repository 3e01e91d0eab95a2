// The two residual blocks of docs/model.md §2.
//
// ResnetBlock (U-Net style, used by E and G_P): h = SiLU(GN(x)); down: AvgPool(2) on h and x,
// up: nearest ×2 on h and x; h = Conv3³(h); h = SiLU(GN(h)); h = Conv3³(h) zero-initialised;
// out = skip(x) + h, skip = identity or Conv1³. A fresh block is therefore an identity (or a
// 1×1 projection, possibly resampled).
//
// AEResBlock (auto-encoder style, used by G_T1): GN→SiLU→Conv3³→GN→SiLU→Conv3³ with the default
// init (not zeroed) + shortcut (Conv1³ when channels change).
#pragma once
#include <memory>

#include "engine/rng.h"
#include "layers/block.h"
#include "layers/conv.h"
#include "layers/norm.h"

namespace cpets::layers {

enum class Resample { none, down, up };

class ResnetBlock : public Block {
 public:
  // Parameters in PyTorch order: norm1, conv1, norm2, conv2, skip_connection (if in ≠ out).
  ResnetBlock(int64_t in_channels, int64_t out_channels, int64_t groups, float eps, Generator& init,
              Resample resample = Resample::none);
  Tensor forward(const Tensor& x) const override;

  std::shared_ptr<GroupNorm> norm1, norm2;
  std::shared_ptr<Conv3d> conv1, conv2, skip_connection;  // skip_connection null when in == out

 private:
  Resample resample_;
};

class AEResBlock : public Block {
 public:
  // Parameters: norm1, conv1, norm2, conv2, nin_shortcut (if in ≠ out).
  AEResBlock(int64_t in_channels, int64_t out_channels, int64_t groups, float eps, Generator& init);
  Tensor forward(const Tensor& x) const override;

  std::shared_ptr<GroupNorm> norm1, norm2;
  std::shared_ptr<Conv3d> conv1, conv2, nin_shortcut;
};

}  // namespace cpets::layers
