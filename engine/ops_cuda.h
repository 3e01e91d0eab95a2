// CUDA versions of the norms, whose CPU versions compute statistics and per-row coefficients on
// the host between kernels. On the GPU those small computations run as kernels too, so no op
// waits for the host. The CPU op validates its inputs and then hands CUDA tensors here (see
// CPETS_ROUTE_CUDA); everything else dispatches per kernel (dispatch.h). This second op body is
// being retired: the losses now have one body for both devices (engine/ops_loss.cpp through
// dispatch, the pattern the norms are to follow). Defined only in CUDA builds
// (ops_norm_cuda.cpp); without CUDA no tensor can be on the GPU, and the route compiles away.
#pragma once
#include "engine/device.h"
#include "engine/tensor.h"

namespace cpets::cuda_ops {

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu);
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
// Inputs already validated; n = values per channel (B·S), > 1 when batch statistics are used.
Tensor batch_norm3d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor running_mean, Tensor running_var,
                    bool training, float momentum, float eps);

}  // namespace cpets::cuda_ops

// In a CPU op, after validation: `CPETS_ROUTE_CUDA(x, layer_norm(x, gamma, beta, eps));` returns the CUDA
// version's result when x is on the GPU. The branch is discarded at compile time without CUDA.
#define CPETS_ROUTE_CUDA(tensor, call)                                              \
  do {                                                                              \
    if constexpr (::cpets::kHaveCuda) {                                             \
      if ((tensor).device() == ::cpets::Device::CUDA) return ::cpets::cuda_ops::call; \
    }                                                                               \
  } while (0)
