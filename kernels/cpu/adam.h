// The Adam update on raw buffers: PyTorch's torch.optim.Adam (single-tensor path) for one
// parameter tensor, in float, with the same operations and roundings:
//   g  = fma(weight_decay, param, grad)                     (only when weight_decay ≠ 0)
//   m  = fma(1 − β1, g, m · β1)
//   v  = fma((1 − β2) · g, g, v · β2)
//   p  = p + (−step_size · m) / (√v / bias_correction2_sqrt + eps)
// with step_size = lr / (1 − β1^t) and bias_correction2_sqrt = √(1 − β2^t) computed in double by
// the caller. Elementwise, in fixed chunks, so it is thread-count independent.
#pragma once
#include <cstdint>
#include <vector>

namespace cpets::kernels::cpu {

struct AdamScalars {
  float beta1, beta2, eps, weight_decay;
  // 1 − β computed in double by the caller: 1.f − float(0.999) is off by 1.3e-5 relative.
  float one_minus_beta1, one_minus_beta2;
  float step_size;              // lr / (1 − β1^t)
  float bias_correction2_sqrt;  // √(1 − β2^t)
};

void adam_step(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, const AdamScalars& s);

// One parameter tensor's update; a list of them is what the optimiser hands over (the CUDA kernel
// updates them all in one launch, kernels/cuda/adam.h).
struct AdamTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t n;
  AdamScalars s;  // per tensor: step counts (so bias corrections) may differ between tensors
};

inline void adam_multi_tensor(const std::vector<AdamTensor>& tensors) {
  for (const AdamTensor& t : tensors) adam_step(t.param, t.grad, t.exp_avg, t.exp_avg_sq, t.n, t.s);
}

}  // namespace cpets::kernels::cpu
