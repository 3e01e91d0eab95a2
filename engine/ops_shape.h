#pragma once
#include <vector>

#include "engine/tensor.h"

namespace cpets {

Tensor reshape(const Tensor& a, const Shape& shape);           // a view; one entry may be -1
Tensor permute(const Tensor& a, const std::vector<int64_t>& dims);  // materialised (contiguous)
Tensor transpose(const Tensor& a, int64_t d0, int64_t d1);
Tensor concat(const std::vector<Tensor>& parts, int64_t dim);
Tensor slice(const Tensor& a, int64_t dim, int64_t start, int64_t end);  // [start, end), step 1
// Equal parts (copies): a loop of slice, each part with its own gradient.
std::vector<Tensor> chunk(const Tensor& a, int64_t chunks, int64_t dim);
// The slices along `axis` (2 = D, 3 = H, 4 = W) of a (B, 1, D, H, W) volume listed in `index`
// (slice s = image s / n, position s % n, n = size of that axis), as (count, 1, 1, rows, cols)
// with the two remaining axes in order. Differentiable; the indices must be distinct.
Tensor gather_slices(const Tensor& volume, int64_t axis, const std::vector<int64_t>& index);

}  // namespace cpets
