// Scalar losses as fused kernels (kernels/cpu/loss.h): one deterministic reduction forward, one
// elementwise pass backward.
#include "engine/ops_loss.h"

#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/ops_cuda.h"
#include "kernels/cpu/loss.h"

namespace cpets {
namespace {

namespace k = kernels::cpu;

void require_same_shape(const Tensor& a, const Tensor& b, const char* op, const char* na, const char* nb) {
  if (a.shape() != b.shape())
    throw std::invalid_argument(std::string(op) + ": " + na + " " + a.str() + " and " + nb + " " + b.str() +
                                " must have the same shape");
  if (a.numel() == 0) throw std::invalid_argument(std::string(op) + ": empty input of shape " + a.str());
  if (a.device() != b.device())
    throw std::invalid_argument(std::string(op) + ": " + na + " is on " + device_name(a.device()) + " but " + nb +
                                " is on " + device_name(b.device()) + "; move both to one device first");
}

// Allocates the gradient outputs that are wanted; returns their data pointers (null if not).
float* grad_slot(Tensor& slot, bool wanted, const Shape& shape) {
  if (!wanted) return nullptr;
  slot = Tensor::empty(shape);
  return slot.data();
}

}  // namespace

Tensor l1_loss(const Tensor& pred, const Tensor& target) {
  require_same_shape(pred, target, "l1_loss", "pred", "target");
  CPETS_ROUTE_CUDA(pred, l1_loss(pred, target));
  const int64_t n = pred.numel();
  Tensor out = Tensor::scalar(float(k::abs_diff_sum(pred.data(), target.data(), n) / double(n)));
  return record(out, "l1_loss", {pred, target},
                [p = pred.detach(), t = target.detach(), n](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor dp, dt;
                  float* dpp = grad_slot(dp, needs[0], p.shape());
                  float* dtp = grad_slot(dt, needs[1], p.shape());
                  k::abs_diff_grad(p.data(), t.data(), n, float(double(g.item()) / double(n)), dpp, dtp);
                  return std::vector<Tensor>{dp, dt};
                });
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  require_same_shape(pred, target, "mse_loss", "pred", "target");
  CPETS_ROUTE_CUDA(pred, mse_loss(pred, target));
  const int64_t n = pred.numel();
  Tensor out = Tensor::scalar(float(k::sq_diff_sum(pred.data(), target.data(), n) / double(n)));
  return record(out, "mse_loss", {pred, target},
                [p = pred.detach(), t = target.detach(), n](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor dp, dt;
                  float* dpp = grad_slot(dp, needs[0], p.shape());
                  float* dtp = grad_slot(dt, needs[1], p.shape());
                  k::diff_grad(p.data(), t.data(), 0.f, n, float(2.0 * double(g.item()) / double(n)), dpp, dtp);
                  return std::vector<Tensor>{dp, dt};
                });
}

Tensor kl_gaussian(const Tensor& mu, const Tensor& logvar) {
  require_same_shape(mu, logvar, "kl_gaussian", "mu", "logvar");
  if (mu.dim() == 0) throw std::invalid_argument("kl_gaussian: mu must have a batch dimension, got shape ()");
  CPETS_ROUTE_CUDA(mu, kl_gaussian(mu, logvar));
  const int64_t n = mu.numel(), batch = mu.size(0);
  Tensor out = Tensor::scalar(float(-0.5 * k::kl_terms_sum(mu.data(), logvar.data(), n) / double(batch)));
  return record(out, "kl_gaussian", {mu, logvar},
                [m = mu.detach(), lv = logvar.detach(), n, batch](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor dmu, dlv;
                  float* dmup = grad_slot(dmu, needs[0], m.shape());
                  float* dlvp = grad_slot(dlv, needs[1], m.shape());
                  k::kl_grad(m.data(), lv.data(), n, float(double(g.item()) / double(batch)), dmup, dlvp);
                  return std::vector<Tensor>{dmu, dlv};
                });
}

Tensor lsgan_loss(const Tensor& logits, float target) {
  const int64_t n = logits.numel();
  if (n == 0) throw std::invalid_argument("lsgan_loss: empty logits of shape " + logits.str());
  CPETS_ROUTE_CUDA(logits, lsgan_loss(logits, target));
  Tensor out = Tensor::scalar(float(k::sq_diff_scalar_sum(logits.data(), target, n) / double(n)));
  return record(out, "lsgan_loss", {logits}, [x = logits.detach(), target, n](const Tensor& g, const std::vector<bool>&) {
    Tensor dx = Tensor::empty(x.shape());
    k::diff_grad(x.data(), nullptr, target, n, float(2.0 * double(g.item()) / double(n)), dx.data(), nullptr);
    return std::vector<Tensor>{dx};
  });
}

}  // namespace cpets
