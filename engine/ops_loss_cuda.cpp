// The losses on CUDA tensors (ops_cuda.h): the value is computed and stored on the device by one
// deterministic reduction; the backward reads the upstream gradient on the device.
#if CPETS_HAVE_CUDA
#include <functional>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops_cuda.h"
#include "kernels/cuda/loss.h"

namespace cpets::cuda_ops {
namespace {

namespace kg = kernels::cuda;

// float(mul · Σ term / div) into a new scalar on the device.
Tensor loss_value(kg::LossTerm term, const Tensor& a, const Tensor& b, float target, double mul, double div) {
  const int64_t n = a.numel();
  Tensor out = Tensor::empty({}, Device::CUDA);
  const size_t bytes = kg::loss_workspace_bytes(n);
  Tensor ws = Tensor::empty({int64_t((bytes + 3) / 4)}, Device::CUDA);
  kg::loss_sum(term, a.data(), b.defined() ? b.data() : nullptr, target, n, mul, div, out.data(), {ws.data(), bytes},
               cuda_stream());
  return out;
}

float* grad_slot(Tensor& slot, bool wanted, const Shape& shape) {
  if (!wanted) return nullptr;
  slot = Tensor::empty(shape, Device::CUDA);
  return slot.data();
}

}  // namespace

Tensor l1_loss(const Tensor& pred, const Tensor& target) {
  const int64_t n = pred.numel();
  Tensor out = loss_value(kg::LossTerm::AbsDiff, pred, target, 0.f, 1.0, double(n));
  return record(out, "l1_loss", {pred, target},
                [p = pred.detach(), t = target.detach(), n](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor dp, dt;
                  float* dpp = grad_slot(dp, needs[0], p.shape());
                  float* dtp = grad_slot(dt, needs[1], p.shape());
                  kg::abs_diff_grad(p.data(), t.data(), n, g.data(), 1.0, double(n), dpp, dtp, cuda_stream());
                  return std::vector<Tensor>{dp, dt};
                });
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  const int64_t n = pred.numel();
  Tensor out = loss_value(kg::LossTerm::SqDiff, pred, target, 0.f, 1.0, double(n));
  return record(out, "mse_loss", {pred, target},
                [p = pred.detach(), t = target.detach(), n](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor dp, dt;
                  float* dpp = grad_slot(dp, needs[0], p.shape());
                  float* dtp = grad_slot(dt, needs[1], p.shape());
                  kg::diff_grad(p.data(), t.data(), 0.f, n, g.data(), 2.0, double(n), dpp, dtp, cuda_stream());
                  return std::vector<Tensor>{dp, dt};
                });
}

Tensor kl_gaussian(const Tensor& mu, const Tensor& logvar) {
  const int64_t n = mu.numel(), batch = mu.size(0);
  Tensor out = loss_value(kg::LossTerm::KlTerms, mu, logvar, 0.f, -0.5, double(batch));
  return record(out, "kl_gaussian", {mu, logvar},
                [m = mu.detach(), lv = logvar.detach(), n, batch](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor dmu, dlv;
                  float* dmup = grad_slot(dmu, needs[0], m.shape());
                  float* dlvp = grad_slot(dlv, needs[1], m.shape());
                  kg::kl_grad(m.data(), lv.data(), n, g.data(), 1.0, double(batch), dmup, dlvp, cuda_stream());
                  return std::vector<Tensor>{dmu, dlv};
                });
}

Tensor lsgan_loss(const Tensor& logits, float target) {
  const int64_t n = logits.numel();
  Tensor out = loss_value(kg::LossTerm::SqDiffScalar, logits, Tensor(), target, 1.0, double(n));
  return record(out, "lsgan_loss", {logits}, [x = logits.detach(), target, n](const Tensor& g, const std::vector<bool>&) {
    Tensor dx = Tensor::empty(x.shape(), Device::CUDA);
    kg::diff_grad(x.data(), nullptr, target, n, g.data(), 2.0, double(n), dx.data(), nullptr, cuda_stream());
    return std::vector<Tensor>{dx};
  });
}

}  // namespace cpets::cuda_ops
#endif
