#pragma once
#include "engine/tensor.h"

namespace cpets {

// Multi-head scaled dot-product attention, fused (flash-style: never builds the Nq×Nk matrix).
// q (B, Nq, C), k and v (B, Nk, C); head h uses channels [h·C/heads, (h+1)·C/heads), scale
// 1/sqrt(C/heads). Returns (B, Nq, C) with heads merged in the same channel order.
// Cross-attention is simply k, v computed from another sequence (Nk ≠ Nq).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads);

}  // namespace cpets
