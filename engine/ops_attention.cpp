// Fused multi-head attention: checks shapes, runs the flash-style kernels and records a backward
// that keeps only q, k, v, the output and the per-row logsumexp (O(N·C) memory).
#include "engine/ops_attention.h"

#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "kernels/cpu/attention.h"

namespace cpets {
namespace {

namespace kc = kernels::cpu;

void require_cpu_defined(const Tensor& t, const char* what) {
  if (!t.defined()) throw std::invalid_argument(std::string("attention: ") + what + " is undefined");
  if (t.device() != Device::CPU)
    throw std::invalid_argument(std::string("attention: ") + what + " is on " + device_name(t.device()) +
                                "; only the CPU backend implements this op so far");
}

kc::AttentionShape check_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads) {
  require_cpu_defined(q, "q");
  require_cpu_defined(k, "k");
  require_cpu_defined(v, "v");
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
  Tensor out = Tensor::empty(q.shape());
  Tensor lse = Tensor::empty({s.batch, s.heads, s.nq});
  if (out.numel() > 0) {
    Tensor scratch = Tensor::empty({kc::attention_forward_scratch_floats(s)});
    kc::attention_forward(s, q.data(), k.data(), v.data(), out.data(), lse.data(), scratch.data());
  }
  return record(out, "attention", {q, k, v},
                [q = q.detach(), k = k.detach(), v = v.detach(), o = out.detach(), lse, s](
                    const Tensor& g, const std::vector<bool>& needs) {
                  Tensor gq, gk, gv;
                  if (needs[0]) gq = Tensor::empty(q.shape());
                  if (needs[1] || needs[2]) {  // one pass makes both
                    gk = Tensor::empty(k.shape());
                    gv = Tensor::empty(v.shape());
                  }
                  if (q.numel() == 0) {  // no queries: nothing flows back
                    if (gk.defined()) gk.fill_(0.f);
                    if (gv.defined()) gv.fill_(0.f);
                    return std::vector<Tensor>{gq, gk, gv};
                  }
                  Tensor scratch = Tensor::empty({kc::attention_backward_scratch_floats(s)});
                  kc::attention_backward(s, q.data(), k.data(), v.data(), o.data(), lse.data(), g.data(),
                                         gq.defined() ? gq.data() : nullptr, gk.defined() ? gk.data() : nullptr,
                                         gv.defined() ? gv.data() : nullptr, scratch.data());
                  return std::vector<Tensor>{gq, gk, gv};
                });
}

}  // namespace cpets
