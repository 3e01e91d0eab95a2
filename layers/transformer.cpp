#include "layers/transformer.h"

#include <stdexcept>
#include <string>

#include "engine/ops_attention.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_linalg.h"
#include "engine/ops_shape.h"

namespace cpets::layers {

Attention::Attention(int64_t channels, int64_t context_channels, int64_t heads, Generator& init) : heads_(heads) {
  if (heads < 1 || channels % heads != 0)
    throw std::invalid_argument("Attention: " + std::to_string(channels) + " channels cannot be split into " +
                                std::to_string(heads) + " heads; choose a head count that divides the channels");
  to_q = register_module("to_q", std::make_shared<Linear>(channels, channels, init, false));
  to_k = register_module("to_k", std::make_shared<Linear>(context_channels, channels, init, false));
  to_v = register_module("to_v", std::make_shared<Linear>(context_channels, channels, init, false));
  to_out = register_module("to_out", std::make_shared<Linear>(channels, channels, init, true));
}

Tensor Attention::forward(const Tensor& x, const Tensor& context) const {
  const Tensor& ctx = context.defined() ? context : x;
  if (ctx.dim() != 3 || x.dim() != 3 || ctx.size(0) != x.size(0))
    throw std::invalid_argument("Attention: tokens " + x.str() + " and context " + ctx.str() +
                                " must be (B, N, C) and (B, K, c_ctx) with the same B");
  const Tensor q = to_q->forward(x), k = to_k->forward(ctx), v = to_v->forward(ctx);
  return to_out->forward(attention(q, k, v, heads_));
}

FeedForward::FeedForward(int64_t channels, int64_t hidden, Generator& init) {
  proj = register_module("proj", std::make_shared<Linear>(channels, 2 * hidden, init));
  out = register_module("out", std::make_shared<Linear>(hidden, channels, init));
}

Tensor FeedForward::forward(const Tensor& x) const { return out->forward(geglu(proj->forward(x))); }

SpatialTransformer::SpatialTransformer(int64_t channels, int64_t heads, int64_t context_channels, int64_t groups,
                                       float gn_eps, float ln_eps, Generator& init, bool zero_init_out)
    : channels_(channels), context_channels_(context_channels) {
  const int64_t kv_width = context_channels > 0 ? context_channels : channels;
  norm = register_module("norm", std::make_shared<GroupNorm>(groups, channels, gn_eps));
  proj_in = register_module("proj_in", std::make_shared<Conv3d>(channels, channels, 1, init));
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(channels, ln_eps));
  attn1 = register_module("attn1", std::make_shared<Attention>(channels, channels, heads, init));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(channels, ln_eps));
  attn2 = register_module("attn2", std::make_shared<Attention>(channels, kv_width, heads, init));
  norm3 = register_module("norm3", std::make_shared<LayerNorm>(channels, ln_eps));
  ff = register_module("ff", std::make_shared<FeedForward>(channels, 4 * channels, init));
  proj_out = register_module("proj_out", std::make_shared<Conv3d>(channels, channels, 1, init));
  if (zero_init_out) proj_out->zero_();
}

namespace {
// A 1³ convolution is a Linear over channels: applied to tokens (B, N, C) it saves a permute.
// reshape keeps the gradient flowing to the (C, C, 1, 1, 1) weight.
Tensor pointwise(const Conv3d& conv, const Tensor& tokens) {
  return linear(tokens, reshape(conv.weight, {conv.out_channels(), conv.in_channels()}), conv.bias);
}
}  // namespace

Tensor SpatialTransformer::forward(const Tensor& x, const Tensor& context) const {
  if (x.dim() != 5 || x.size(1) != channels_)
    throw std::invalid_argument("SpatialTransformer(" + std::to_string(channels_) + "): input must be (B, " +
                                std::to_string(channels_) + ", D, H, W), got " + x.str());
  if (has_context() && (!context.defined() || context.dim() != 3 || context.size(0) != x.size(0) ||
                        context.size(2) != context_channels_))
    throw std::invalid_argument("SpatialTransformer: context must be (B = " + std::to_string(x.size(0)) + ", K, " +
                                std::to_string(context_channels_) + "), got " +
                                (context.defined() ? context.str() : std::string("none")));
  if (!has_context() && context.defined())
    throw std::invalid_argument("SpatialTransformer: built without context (self-attention in both slots) but given a "
                                "context " + context.str());
  const Shape shape = x.shape();
  const int64_t B = shape[0], C = shape[1], N = shape[2] * shape[3] * shape[4];
  // (B, C, N) → (B, N, C): the only materialised layout change on the way in (one on the way out).
  Tensor t = pointwise(*proj_in, transpose(reshape(norm->forward(x), {B, C, N}), 1, 2));
  t = add(t, attn1->forward(norm1->forward(t)));
  t = add(t, attn2->forward(norm2->forward(t), context));
  t = add(t, ff->forward(norm3->forward(t)));
  const Tensor h = reshape(transpose(pointwise(*proj_out, t), 1, 2), shape);
  return add(h, x);
}

AttentionBlock::AttentionBlock(int64_t channels, int64_t heads, int64_t groups, float eps, Generator& init)
    : channels_(channels), heads_(heads) {
  if (heads < 1 || channels % heads != 0)
    throw std::invalid_argument("AttentionBlock: " + std::to_string(heads) + " heads do not divide " +
                                std::to_string(channels) + " channels");
  norm = register_module("norm", std::make_shared<GroupNorm>(groups, channels, eps));
  to_q = register_module("to_q", std::make_shared<Linear>(channels, channels, init));
  to_k = register_module("to_k", std::make_shared<Linear>(channels, channels, init));
  to_v = register_module("to_v", std::make_shared<Linear>(channels, channels, init));
  proj_attn = register_module("proj_attn", std::make_shared<Linear>(channels, channels, init));
}

Tensor AttentionBlock::forward(const Tensor& x) const {
  if (x.dim() != 5 || x.size(1) != channels_)
    throw std::invalid_argument("AttentionBlock(" + std::to_string(channels_) + "): input must be (B, " +
                                std::to_string(channels_) + ", D, H, W), got " + x.str());
  const Shape shape = x.shape();
  const int64_t B = shape[0], C = shape[1], N = shape[2] * shape[3] * shape[4];
  const Tensor t = transpose(reshape(norm->forward(x), {B, C, N}), 1, 2);
  const Tensor a = attention(to_q->forward(t), to_k->forward(t), to_v->forward(t), heads_);
  return add(reshape(transpose(a, 1, 2), shape), x);
}

}  // namespace cpets::layers
