// CUDA versions of the ops whose CPU versions compute between kernels on the host (statistics
// and per-row coefficients of the norms, the loss values). On the GPU those small computations
// run as kernels too, so no op waits for the host. The CPU op validates its inputs and then hands
// CUDA tensors here (see CPETS_ROUTE_CUDA); everything else dispatches per kernel (dispatch.h).
// Defined only in CUDA builds (ops_loss_cuda.cpp, ops_norm_cuda.cpp); without CUDA no tensor can
// be on the GPU, and the route compiles away.
#pragma once
#include "engine/device.h"
#include "engine/tensor.h"

namespace cpets::cuda_ops {

Tensor l1_loss(const Tensor& pred, const Tensor& target);
Tensor mse_loss(const Tensor& pred, const Tensor& target);
Tensor kl_gaussian(const Tensor& mu, const Tensor& logvar);
Tensor lsgan_loss(const Tensor& logits, float target);

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu);
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
// Inputs already validated; n = values per channel (B·S), > 1 when batch statistics are used.
Tensor batch_norm3d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor running_mean, Tensor running_var,
                    bool training, float momentum, float eps);

}  // namespace cpets::cuda_ops

// In a CPU op, after validation: `CPETS_ROUTE_CUDA(x, l1_loss(pred, target));` returns the CUDA
// version's result when x is on the GPU. The branch is discarded at compile time without CUDA.
#define CPETS_ROUTE_CUDA(tensor, call)                                              \
  do {                                                                              \
    if constexpr (::cpets::kHaveCuda) {                                             \
      if ((tensor).device() == ::cpets::Device::CUDA) return ::cpets::cuda_ops::call; \
    }                                                                               \
  } while (0)
