// sum / mean over a set of axes, deterministic (kernels/cpu/reduce.h); the backward broadcasts the
// gradient back over the reduced axes.
#include "engine/ops_reduce.h"

#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/reduce.h"

namespace cpets {
namespace {

namespace k = kernels::cpu;

// One flag per dimension of `shape`: reduced or kept. Empty `axes` reduces everything.
std::vector<bool> reduced_axes(const Shape& shape, const std::vector<int64_t>& axes, const char* op) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  std::vector<bool> mask(rank, axes.empty());
  for (int64_t a : axes) {
    const int64_t d = a < 0 ? a + rank : a;
    if (d < 0 || d >= rank)
      throw std::out_of_range(std::string(op) + ": axis " + std::to_string(a) + " is out of range for shape " +
                              shape_str(shape) + " (valid: " + std::to_string(-rank) + " to " +
                              std::to_string(rank - 1) + ")");
    if (mask[d])
      throw std::invalid_argument(std::string(op) + ": axis " + std::to_string(a) + " appears twice in " +
                                  shape_str(axes) + " for shape " + shape_str(shape));
    mask[d] = true;
  }
  return mask;
}

Tensor reduce(const Tensor& a, const std::vector<int64_t>& axes, bool keepdim, bool average, const char* op) {
  const Shape& shape = a.shape();
  const std::vector<bool> mask = reduced_axes(shape, axes, op);
  Shape kept_shape, keep_shape;  // without / with the reduced axes as size 1
  int64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (mask[i]) count *= shape[i];
    else kept_shape.push_back(shape[i]);
    keep_shape.push_back(mask[i] ? 1 : shape[i]);
  }
  const double scale = average ? 1.0 / double(count) : 1.0;
  Tensor out = Tensor::empty(keepdim ? keep_shape : kept_shape, a.device());
  dispatch::sum_axes(a.device(), a.data(), shape, mask, out.data(), scale);
  return record(out, op, {a}, [shape, keep_shape, scale](const Tensor& g, const std::vector<bool>&) {
    Tensor dx = Tensor::empty(shape, g.device());
    dispatch::broadcast_to(g.device(), g.data(), keep_shape, dx.data(), shape, float(scale));
    return std::vector<Tensor>{dx};
  });
}

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int64_t>& axes, bool keepdim) {
  return reduce(a, axes, keepdim, false, "sum");
}

Tensor mean(const Tensor& a, const std::vector<int64_t>& axes, bool keepdim) {
  return reduce(a, axes, keepdim, true, "mean");
}

}  // namespace cpets
