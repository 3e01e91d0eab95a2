#pragma once
#include <vector>

#include "engine/tensor.h"

namespace cpets {

// Reductions over `axes` (negative counts from the end); an empty list means all axes.
// Summation order is fixed, so results do not depend on the thread count.
Tensor sum(const Tensor& a, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor mean(const Tensor& a, const std::vector<int64_t>& axes = {}, bool keepdim = false);

}  // namespace cpets
