// Parameter initialisers (PyTorch's torch.nn.init semantics), all drawing from a Generator so a
// seed fixes a model's initial weights regardless of thread count. They write into the tensor's
// storage (no autograd history) and return it.
//
// Layer defaults, as PyTorch's Conv3d/Linear reset_parameters():
//   kaiming_uniform_(weight, gen)                 // a = √5 → U(±1/√fan_in)
//   bias_uniform_(bias, fan_in(weight), gen)      // U(±1/√fan_in)
#pragma once
#include <cmath>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace cpets {

// fan_in = size(1) · kernel volume, fan_out = size(0) · kernel volume, for weights laid out
// (C_out, C_in, k…) — Linear (out, in) and Conv3d (out, in/groups, kD, kH, kW). Needs dim ≥ 2.
int64_t fan_in(const Tensor& weight);
int64_t fan_out(const Tensor& weight);

Tensor& uniform_(Tensor& t, Generator& gen, float lo, float hi);
Tensor& normal_(Tensor& t, Generator& gen, float mean = 0.f, float std = 1.f);
Tensor& constant_(Tensor& t, float value);
Tensor& zeros_(Tensor& t);
Tensor& ones_(Tensor& t);

// U(−b, b) with b = gain·√(3 / fan_in), gain = √(2 / (1 + a²)) (leaky_relu gain). With the
// default a = √5 this is b = 1/√fan_in, PyTorch's default for Conv and Linear weights.
Tensor& kaiming_uniform_(Tensor& weight, Generator& gen, double a = std::sqrt(5.0));
// U(−1/√fan_in, 1/√fan_in): PyTorch's Conv/Linear bias default (fan_in of the matching weight).
Tensor& bias_uniform_(Tensor& bias, int64_t fan_in, Generator& gen);
// U(−b, b) with b = gain·√(6 / (fan_in + fan_out)).
Tensor& xavier_uniform_(Tensor& weight, Generator& gen, double gain = 1.0);

}  // namespace cpets
