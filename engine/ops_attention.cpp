// Fused multi-head attention: checks shapes, runs the flash-style kernels and records a backward
// that keeps only q, k, v, the output and the per-row logsumexp (O(N·C) memory).
#include "engine/ops_attention.h"

#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "kernels/cpu/attention.h"

namespace cpets {
namespace {

namespace kc = kernels::cpu;

void require_defined(const Tensor& t, const char* what) {
  if (!t.defined()) throw std::invalid_argument(std::string("attention: ") + what + " is undefined");
}

kc::AttentionShape check_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads) {
  require_defined(q, "q");
  require_defined(k, "k");
  require_defined(v, "v");
  dispatch::same_device("attention", {q, k, v});
  const std::string shapes = "q " + q.str() + ", k " + k.str() + ", v " + v.str();
  if (q.dim() != 3 || k.dim() != 3 || v.dim() != 3)
    throw std::invalid_argument("attention: q, k, v must be (batch, tokens, channels); got " + shapes);
  if (k.shape() != v.shape())
    throw std::invalid_argument("attention: k and v must have the same shape; got " + shapes);
  if (k.size(0) != q.size(0) || k.size(2) != q.size(2))
    throw std::invalid_argument("attention: k and v must have q's batch and channel sizes (project the context to " +
                                std::to_string(q.size(2)) + " channels first); got " + shapes);
  const int64_t C = q.size(2);
  if (heads < 1 || C % heads != 0)
    throw std::invalid_argument("attention: heads = " + std::to_string(heads) + " must be ≥ 1 and divide the " +
                                std::to_string(C) + " channels; got " + shapes);
  if (k.size(1) < 1 && q.size(1) > 0)
    throw std::invalid_argument("attention: there must be at least one key token; got " + shapes);
  return {q.size(0), q.size(1), k.size(1), C, heads};
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads) {
  const kc::AttentionShape s = check_attention(q, k, v, heads);
  const Device dev = q.device();
  Tensor out = Tensor::empty(q.shape(), dev);
  Tensor lse = Tensor::empty({s.batch, s.heads, s.nq}, dev);
  if (out.numel() > 0) dispatch::attention_forward(dev, s, q.data(), k.data(), v.data(), out.data(), lse.data());
  return record(out, "attention", {q, k, v},
                [q = q.detach(), k = k.detach(), v = v.detach(), o = out.detach(), lse, s](
                    const Tensor& g, const std::vector<bool>& needs) {
                  Tensor gq, gk, gv;
                  const Device dev = q.device();
                  if (needs[0]) gq = Tensor::empty(q.shape(), dev);
                  if (needs[1] || needs[2]) {  // one pass makes both
                    gk = Tensor::empty(k.shape(), dev);
                    gv = Tensor::empty(v.shape(), dev);
                  }
                  if (q.numel() == 0) {  // no queries: nothing flows back
                    if (gk.defined()) gk.fill_(0.f);
                    if (gv.defined()) gv.fill_(0.f);
                    return std::vector<Tensor>{gq, gk, gv};
                  }
                  dispatch::attention_backward(dev, s, q.data(), k.data(), v.data(), o.data(), lse.data(), g.data(),
                                               gq.defined() ? gq.data() : nullptr, gk.defined() ? gk.data() : nullptr,
                                               gv.defined() ? gv.data() : nullptr);
                  return std::vector<Tensor>{gq, gk, gv};
                });
}

}  // namespace cpets
