// SpatialTransformer of docs/model.md §2 (latent-diffusion style), on (B, C, D, H, W) volumes:
//   r = x; x = proj_in(GN(x)); tokens (B, N = D·H·W, C);
//   x += attn1(norm1(x));                 self-attention
//   x += attn2(norm2(x), context)         cross-attention (self-attention when context is none)
//   x += ff(norm3(x))                     Linear(C→8C) → GEGLU → Linear(4C→C)
//   back to (B, C, D, H, W); out = proj_out(x) + r, proj_out zero-initialised (a fresh
//   transformer is the identity). No positional encoding; the context is not normalised.
#pragma once
#include <memory>

#include "engine/rng.h"
#include "layers/conv.h"
#include "layers/linear.h"
#include "layers/norm.h"

namespace cpets::layers {

// Multi-head attention: to_q, to_k, to_v without bias (k and v read the context's width),
// heads merged, to_out with bias.
class Attention : public Module {
 public:
  Attention(int64_t channels, int64_t context_channels, int64_t heads, Generator& init);
  // x (B, N, C); context (B, K, c_ctx), or undefined for self-attention.
  Tensor forward(const Tensor& x, const Tensor& context = Tensor()) const;
  std::shared_ptr<Linear> to_q, to_k, to_v, to_out;

 private:
  int64_t heads_;
};

class FeedForward : public Module {  // Linear(C→2·hidden) → GEGLU → Linear(hidden→C)
 public:
  FeedForward(int64_t channels, int64_t hidden, Generator& init);
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<Linear> proj, out;
};

// MONAI Generative's AttentionBlock, as the reference's classifier runs it: GroupNorm, q/k/v
// Linear with bias over the channels, multi-head self-attention (head width C / heads), added to
// the input. proj_attn exists (the reference's parameter counts include it) but is never applied:
// the reference's forward skips it (reference-implementation.md §8.14), and so do we.
class AttentionBlock : public Module {
 public:
  AttentionBlock(int64_t channels, int64_t heads, int64_t groups, float eps, Generator& init);
  Tensor forward(const Tensor& x) const;  // x (B, C, D, H, W)

  std::shared_ptr<GroupNorm> norm;
  std::shared_ptr<Linear> to_q, to_k, to_v, proj_attn;

 private:
  int64_t channels_, heads_;
};

class SpatialTransformer : public Module {
 public:
  // context_channels = 0: no context, the second attention is self-attention too.
  // zero_init_out = false leaves proj_out at its random init (docs/causal-fidelity.md: a zeroed
  // proj_out gives the context path exactly zero gradient at the start).
  SpatialTransformer(int64_t channels, int64_t heads, int64_t context_channels, int64_t groups, float gn_eps,
                     float ln_eps, Generator& init, bool zero_init_out = true);
  Tensor forward(const Tensor& x, const Tensor& context = Tensor()) const;

  bool has_context() const { return context_channels_ > 0; }

  std::shared_ptr<GroupNorm> norm;
  std::shared_ptr<Conv3d> proj_in, proj_out;  // 1³ convolutions, run as Linear on the tokens
  std::shared_ptr<LayerNorm> norm1, norm2, norm3;
  std::shared_ptr<Attention> attn1, attn2;
  std::shared_ptr<FeedForward> ff;

 private:
  int64_t channels_, context_channels_;
};

}  // namespace cpets::layers
