#pragma once
#include <vector>

#include "engine/tensor.h"

namespace cpets {

Tensor l1_loss(const Tensor& pred, const Tensor& target);   // mean |pred − target|
Tensor mse_loss(const Tensor& pred, const Tensor& target);  // mean (pred − target)²
// −½ Σ(1 + logvar − mu² − exp(logvar)) / B, summed over all but dim 0, B = mu.size(0).
Tensor kl_gaussian(const Tensor& mu, const Tensor& logvar);
// Least-squares GAN term: mean((logits − target)²), target 1 for "real", 0 for "fake".
Tensor lsgan_loss(const Tensor& logits, float target);
// PyTorch's CrossEntropyLoss(weight = class_weights, reduction = "mean") on logits (B, C) and
// class indices: Σ_i w[y_i]·(−log softmax(x_i)[y_i]) / Σ_i w[y_i]. Empty weights: all 1.
Tensor cross_entropy(const Tensor& logits, const std::vector<int>& targets, const std::vector<float>& class_weights = {});
// LPIPS's per-layer term: fa, fb (B, C, d, h, w) features, lin_weight (1, C, 1, 1, 1); returns
// (B, 1, d, h, w) = Σ_c w_c (f̂a_c − f̂b_c)², f̂ = f / (‖f‖₂ + eps) over channels (eps: lpips'
// normalize_tensor's). Differentiable w.r.t. all three.
Tensor lpips_layer_distance(const Tensor& fa, const Tensor& fb, const Tensor& lin_weight, float eps = 1e-10f);

}  // namespace cpets
