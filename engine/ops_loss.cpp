// Scalar losses as fused kernels (kernels/cpu/loss.h, kernels/cuda/loss.h through dispatch): one
// deterministic reduction forward that writes the value on the inputs' device, one elementwise
// pass backward that reads the upstream gradient there — one body for both devices. Also LPIPS's
// per-layer feature distance (a map, not a scalar), for the perceptual loss.
#include "engine/ops_loss.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_reduce.h"

namespace cpets {
namespace {

using dispatch::LossTerm;

void require_same_shape(const Tensor& a, const Tensor& b, const char* op, const char* na, const char* nb) {
  if (a.shape() != b.shape())
    throw std::invalid_argument(std::string(op) + ": " + na + " " + a.str() + " and " + nb + " " + b.str() +
                                " must have the same shape");
  if (a.numel() == 0) throw std::invalid_argument(std::string(op) + ": empty input of shape " + a.str());
  if (a.device() != b.device())
    throw std::invalid_argument(std::string(op) + ": " + na + " is on " + a.device().str() + " but " + nb +
                                " is on " + b.device().str() + "; move both to one device first");
}

// Allocates the gradient outputs that are wanted, on the device; returns their data pointers
// (null if not).
float* grad_slot(Tensor& slot, bool wanted, const Shape& shape, Device d) {
  if (!wanted) return nullptr;
  slot = Tensor::empty(shape, d);
  return slot.data();
}

// float(mul · Σ term / div) as a new scalar on the inputs' device.
Tensor loss_value(LossTerm term, const Tensor& a, const Tensor& b, float target, double mul, double div) {
  Tensor out = Tensor::empty({}, a.device());
  dispatch::loss_sum(a.device(), term, a.data(), b.defined() ? b.data() : nullptr, target, a.numel(), mul, div,
                     out.data());
  return out;
}

}  // namespace

Tensor l1_loss(const Tensor& pred, const Tensor& target) {
  require_same_shape(pred, target, "l1_loss", "pred", "target");
  const int64_t n = pred.numel();
  Tensor out = loss_value(LossTerm::AbsDiff, pred, target, 0.f, 1.0, double(n));
  return record(out, "l1_loss", {pred, target},
                [p = pred.detach(), t = target.detach(), n](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor dp, dt;
                  float* dpp = grad_slot(dp, needs[0], p.shape(), p.device());
                  float* dtp = grad_slot(dt, needs[1], p.shape(), p.device());
                  dispatch::abs_diff_grad(p.device(), p.data(), t.data(), n, g.data(), 1.0, double(n), dpp, dtp);
                  return std::vector<Tensor>{dp, dt};
                });
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  require_same_shape(pred, target, "mse_loss", "pred", "target");
  const int64_t n = pred.numel();
  Tensor out = loss_value(LossTerm::SqDiff, pred, target, 0.f, 1.0, double(n));
  return record(out, "mse_loss", {pred, target},
                [p = pred.detach(), t = target.detach(), n](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor dp, dt;
                  float* dpp = grad_slot(dp, needs[0], p.shape(), p.device());
                  float* dtp = grad_slot(dt, needs[1], p.shape(), p.device());
                  dispatch::diff_grad(p.device(), p.data(), t.data(), 0.f, n, g.data(), 2.0, double(n), dpp, dtp);
                  return std::vector<Tensor>{dp, dt};
                });
}

Tensor kl_gaussian(const Tensor& mu, const Tensor& logvar) {
  require_same_shape(mu, logvar, "kl_gaussian", "mu", "logvar");
  if (mu.dim() == 0) throw std::invalid_argument("kl_gaussian: mu must have a batch dimension, got shape ()");
  const int64_t n = mu.numel(), batch = mu.size(0);
  Tensor out = loss_value(LossTerm::KlTerms, mu, logvar, 0.f, -0.5, double(batch));
  return record(out, "kl_gaussian", {mu, logvar},
                [m = mu.detach(), lv = logvar.detach(), n, batch](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor dmu, dlv;
                  float* dmup = grad_slot(dmu, needs[0], m.shape(), m.device());
                  float* dlvp = grad_slot(dlv, needs[1], m.shape(), m.device());
                  dispatch::kl_grad(m.device(), m.data(), lv.data(), n, g.data(), 1.0, double(batch), dmup, dlvp);
                  return std::vector<Tensor>{dmu, dlv};
                });
}

Tensor lsgan_loss(const Tensor& logits, float target) {
  const int64_t n = logits.numel();
  if (n == 0) throw std::invalid_argument("lsgan_loss: empty logits of shape " + logits.str());
  Tensor out = loss_value(LossTerm::SqDiffScalar, logits, Tensor(), target, 1.0, double(n));
  return record(out, "lsgan_loss", {logits}, [x = logits.detach(), target, n](const Tensor& g, const std::vector<bool>&) {
    Tensor dx = Tensor::empty(x.shape(), x.device());
    dispatch::diff_grad(x.device(), x.data(), nullptr, target, n, g.data(), 2.0, double(n), dx.data(), nullptr);
    return std::vector<Tensor>{dx};
  });
}

// A composite of existing ops: the classifier's logits are (B, 2), far too small for a kernel of
// their own, and every op below has both devices and its own gradient.
Tensor cross_entropy(const Tensor& logits, const std::vector<int>& targets, const std::vector<float>& class_weights) {
  if (logits.dim() != 2 || logits.size(0) < 1 || logits.size(1) < 2)
    throw std::invalid_argument("cross_entropy: logits must be (B, C) with C ≥ 2, got " + logits.str());
  const int64_t B = logits.size(0), C = logits.size(1);
  if (int64_t(targets.size()) != B)
    throw std::invalid_argument("cross_entropy: " + std::to_string(targets.size()) + " targets for logits " + logits.str());
  if (!class_weights.empty() && int64_t(class_weights.size()) != C)
    throw std::invalid_argument("cross_entropy: " + std::to_string(class_weights.size()) + " class weights for " +
                                std::to_string(C) + " classes");
  // The per-row maximum, a constant: log-softmax is invariant to it, it only keeps exp in range.
  const Tensor host = logits.detach().to(Device::cpu());
  Tensor row_max = Tensor::empty({B, 1});
  Tensor pick = Tensor::zeros({B, C});  // w[y_i] / Σ w[y_j] at (i, y_i)
  double total = 0;
  for (int64_t i = 0; i < B; ++i) {
    if (targets[size_t(i)] < 0 || targets[size_t(i)] >= C)
      throw std::invalid_argument("cross_entropy: target " + std::to_string(targets[size_t(i)]) + " of sample " +
                                  std::to_string(i) + " is not a class in [0, " + std::to_string(C) + ")");
    float m = host.data()[i * C];
    for (int64_t c = 1; c < C; ++c) m = std::max(m, host.data()[i * C + c]);
    row_max.data()[i] = m;
    total += class_weights.empty() ? 1.0 : class_weights[size_t(targets[size_t(i)])];
  }
  if (!(total > 0)) throw std::invalid_argument("cross_entropy: the targets' class weights sum to " + std::to_string(total));
  for (int64_t i = 0; i < B; ++i) {
    const int y = targets[size_t(i)];
    pick.data()[i * C + y] = float((class_weights.empty() ? 1.0 : class_weights[size_t(y)]) / total);
  }
  const Device dev = logits.device();
  const Tensor shifted = sub(logits, row_max.to(dev));
  const Tensor log_probs = sub(shifted, log(sum(exp(shifted), {1}, /*keepdim=*/true)));
  return neg(sum(mul(log_probs, pick.to(dev))));
}

Tensor lpips_layer_distance(const Tensor& fa, const Tensor& fb, const Tensor& lin_weight, float eps) {
  if (!fa.defined() || !fb.defined() || !lin_weight.defined() || fa.dim() != 5 || fa.shape() != fb.shape() ||
      lin_weight.numel() != fa.size(1) || lin_weight.size(0) != 1)
    throw std::invalid_argument("lpips_layer_distance: expected features (B, C, d, h, w) of equal shape and a (1, C, 1, 1, 1) "
                                "weight; got " + (fa.defined() ? fa.str() : "undefined") + ", " +
                                (fb.defined() ? fb.str() : "undefined") + " and " +
                                (lin_weight.defined() ? lin_weight.str() : "undefined"));
  const int64_t N = fa.size(0), C = fa.size(1), P = fa.size(2) * fa.size(3) * fa.size(4);
  const Device dev = dispatch::same_device("lpips_layer_distance", {fa, fb, lin_weight});
  Tensor out = Tensor::empty({N, 1, fa.size(2), fa.size(3), fa.size(4)}, dev);
  dispatch::normalized_distance_forward(dev, fa.data(), fb.data(), lin_weight.data(), N, C, P, eps, out.data());
  return record(out, "lpips_layer_distance", {fa, fb, lin_weight},
                [a = fa.detach(), b = fb.detach(), w = lin_weight.detach(), N, C, P, eps, dev](const Tensor& g, const std::vector<bool>& needs) {
                  std::vector<Tensor> grads(3);
                  for (int i = 0; i < 3; ++i)
                    if (needs[size_t(i)]) grads[size_t(i)] = Tensor::empty(i == 0 ? a.shape() : i == 1 ? b.shape() : w.shape(), dev);
                  dispatch::normalized_distance_backward(dev, a.data(), b.data(), w.data(), g.data(), N, C, P, eps,
                                                   needs[0] ? grads[0].data() : nullptr, needs[1] ? grads[1].data() : nullptr,
                                                   needs[2] ? grads[2].data() : nullptr);
                  return grads;
                });
}

}  // namespace cpets
