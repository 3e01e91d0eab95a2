// Shape ops: reshape (a view), permute/transpose (materialised), concat, slice, chunk and
// gather_slices, with backward. Copies run the kernels in kernels/cpu/layout.h.
#include "engine/ops_shape.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "kernels/cpu/layout.h"

namespace cpets {
namespace {

namespace k = kernels::cpu;

// Maps a possibly negative dimension into [0, rank); errors name the op and the shape.
int64_t normalize_dim(int64_t d, int64_t rank, const char* op, const Shape& shape) {
  const int64_t nd = d < 0 ? d + rank : d;
  if (nd < 0 || nd >= rank)
    throw std::out_of_range(std::string(op) + ": dimension " + std::to_string(d) + " is out of range for shape " +
                            shape_str(shape) + " (valid: " + std::to_string(-rank) + " to " +
                            std::to_string(rank - 1) + ")");
  return nd;
}

int64_t product(const Shape& s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= s[i];
  return p;
}

// The (outer, size, inner) factorisation of `shape` around dimension `dim`.
struct Around {
  int64_t outer, size, inner;
};
Around around(const Shape& shape, int64_t dim) {
  return {product(shape, 0, dim), shape[dim], product(shape, dim + 1, shape.size())};
}

Tensor permute_raw(const Tensor& a, const std::vector<int64_t>& perm) {
  Shape out_shape(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) out_shape[i] = a.shape()[perm[i]];
  Tensor out = Tensor::empty(out_shape, a.device());
  dispatch::permute_copy(a.device(), a.data(), a.shape(), perm, out.data());
  return out;
}

// Copy of a[start, end) along dim (dim already normalised, bounds checked).
Tensor slice_raw(const Tensor& a, int64_t dim, int64_t start, int64_t end) {
  const Around r = around(a.shape(), dim);
  Shape out_shape = a.shape();
  out_shape[dim] = end - start;
  Tensor out = Tensor::empty(out_shape, a.device());
  const int64_t len = (end - start) * r.inner;
  dispatch::copy_rows(a.device(), a.data() + start * r.inner, r.size * r.inner, out.data(), len, r.outer, len);
  return out;
}

// The gradient of `a` (shape `shape`) from gradients of its consecutive parts along dim, given as
// (gradient or undefined, size along dim) in order: each element written once, zeros only where
// a part has no gradient.
Tensor assemble_parts(const Shape& shape, int64_t dim, const std::vector<std::pair<Tensor, int64_t>>& parts) {
  std::vector<Tensor> given;
  for (const auto& part : parts) given.push_back(part.first);
  const Device dev = dispatch::same_device("gradient of slice/chunk", given);
  Tensor out = Tensor::empty(shape, dev);
  const Around r = around(shape, dim);
  std::vector<const float*> src;
  std::vector<int64_t> lens;
  for (const auto& [g, size] : parts) {
    src.push_back(g.defined() ? g.data() : nullptr);
    lens.push_back(size * r.inner);
  }
  dispatch::assemble_rows(dev, src, lens, out.data(), r.outer);
  return out;
}

}  // namespace

Tensor reshape(const Tensor& a, const Shape& shape) {
  Tensor out;
  try {
    out = a.view(shape);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("reshape " + a.str() + " to " + shape_str(shape) + ": " + e.what());
  }
  return record(out, "reshape", {a}, [in_shape = a.shape()](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g.view(in_shape)};
  });
}

Tensor permute(const Tensor& a, const std::vector<int64_t>& dims) {
  const int64_t rank = a.dim();
  if (static_cast<int64_t>(dims.size()) != rank)
    throw std::invalid_argument("permute: " + std::to_string(dims.size()) + " dimensions given for shape " + a.str() +
                                " of rank " + std::to_string(rank));
  std::vector<int64_t> perm(rank), inverse(rank, -1);
  for (int64_t i = 0; i < rank; ++i) {
    perm[i] = normalize_dim(dims[i], rank, "permute", a.shape());
    if (inverse[perm[i]] >= 0)
      throw std::invalid_argument("permute: dimension " + std::to_string(dims[i]) + " appears twice in " +
                                  shape_str(dims) + " for shape " + a.str());
    inverse[perm[i]] = i;
  }
  Tensor out = permute_raw(a, perm);
  return record(out, "permute", {a}, [inverse](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{permute_raw(g, inverse)};
  });
}

Tensor transpose(const Tensor& a, int64_t d0, int64_t d1) {
  const int64_t rank = a.dim();
  d0 = normalize_dim(d0, rank, "transpose", a.shape());
  d1 = normalize_dim(d1, rank, "transpose", a.shape());
  std::vector<int64_t> perm(rank);
  for (int64_t i = 0; i < rank; ++i) perm[i] = i;
  std::swap(perm[d0], perm[d1]);
  return permute(a, perm);
}

Tensor concat(const std::vector<Tensor>& parts, int64_t dim) {
  if (parts.empty()) throw std::invalid_argument("concat: no tensors given");
  const Shape& first = parts[0].shape();
  const int64_t rank = parts[0].dim();
  if (rank == 0) throw std::invalid_argument("concat: cannot concatenate 0-d tensors (shape ())");
  dim = normalize_dim(dim, rank, "concat", first);
  Shape out_shape = first;
  out_shape[dim] = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Shape& s = parts[i].shape();
    bool ok = static_cast<int64_t>(s.size()) == rank;
    for (int64_t d = 0; ok && d < rank; ++d) ok = d == dim || s[d] == first[d];
    if (!ok)
      throw std::invalid_argument("concat along dimension " + std::to_string(dim) + ": part " + std::to_string(i) +
                                  " has shape " + shape_str(s) + " but part 0 has " + shape_str(first) +
                                  "; all other dimensions must match");
    out_shape[dim] += s[dim];
  }
  const Device dev = dispatch::same_device("concat", parts);
  Tensor out = Tensor::empty(out_shape, dev);
  const Around r = around(out_shape, dim);
  std::vector<int64_t> offsets;
  int64_t offset = 0;
  for (const Tensor& p : parts) {
    const int64_t len = p.shape()[dim] * r.inner;
    dispatch::copy_rows(dev, p.data(), len, out.data() + offset * r.inner, r.size * r.inner, r.outer, len);
    offsets.push_back(offset);
    offset += p.shape()[dim];
  }
  return record(out, "concat", parts, [offsets, dim](const Tensor& g, const std::vector<bool>& needs) {
    std::vector<Tensor> grads(needs.size());
    for (size_t i = 0; i < needs.size(); ++i) {
      const int64_t end = i + 1 < offsets.size() ? offsets[i + 1] : g.shape()[dim];
      if (needs[i]) grads[i] = slice_raw(g, dim, offsets[i], end);
    }
    return grads;
  });
}

Tensor slice(const Tensor& a, int64_t dim, int64_t start, int64_t end) {
  dim = normalize_dim(dim, a.dim(), "slice", a.shape());
  const int64_t size = a.shape()[dim];
  const int64_t s = start < 0 ? start + size : start, e = end < 0 ? end + size : end;
  if (s < 0 || s > e || e > size)
    throw std::out_of_range("slice [" + std::to_string(start) + ", " + std::to_string(end) + ") along dimension " +
                            std::to_string(dim) + " of shape " + a.str() + ": need 0 <= start <= end <= " +
                            std::to_string(size) + " (negative values count from the end)");
  Tensor out = slice_raw(a, dim, s, e);
  return record(out, "slice", {a}, [shape = a.shape(), dim, s, e, size](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{assemble_parts(shape, dim, {{Tensor(), s}, {g, e - s}, {Tensor(), size - e}})};
  });
}

std::vector<Tensor> chunk(const Tensor& a, int64_t chunks, int64_t dim) {
  dim = normalize_dim(dim, a.dim(), "chunk", a.shape());
  const int64_t size = a.shape()[dim];
  if (chunks < 1 || size % chunks != 0)
    throw std::invalid_argument("chunk: dimension " + std::to_string(dim) + " of shape " + a.str() + " has size " +
                                std::to_string(size) + ", which does not split into " + std::to_string(chunks) +
                                " equal parts");
  const int64_t step = size / chunks;
  std::vector<Tensor> out;
  for (int64_t c = 0; c < chunks; ++c) out.push_back(slice(a, dim, c * step, (c + 1) * step));
  return out;
}

Tensor gather_slices(const Tensor& volume, int64_t axis, const std::vector<int64_t>& index) {
  if (!volume.defined() || volume.dim() != 5 || volume.size(1) != 1)
    throw std::invalid_argument("gather_slices: expected a single-channel volume (B, 1, D, H, W); got " +
                                (volume.defined() ? volume.str() : std::string("undefined")));
  if (axis < 2 || axis > 4) throw std::invalid_argument("gather_slices: axis must be 2 (D), 3 (H) or 4 (W); got " + std::to_string(axis));
  const Shape& s = volume.shape();
  const int64_t count = s[0] * s[size_t(axis)];
  std::vector<bool> seen(size_t(count), false);
  for (int64_t i : index) {
    if (i < 0 || i >= count)
      throw std::invalid_argument("gather_slices: slice index " + std::to_string(i) + " is outside [0, " + std::to_string(count) +
                                  ") for volume " + volume.str() + " along axis " + std::to_string(axis));
    if (seen[size_t(i)]) throw std::invalid_argument("gather_slices: slice index " + std::to_string(i) + " is listed twice");
    seen[size_t(i)] = true;
  }
  const int a = int(axis - 2);
  const int64_t rows = axis == 2 ? s[3] : s[2], cols = axis == 4 ? s[3] : s[4];
  const int64_t n = int64_t(index.size());
  const Device dev = volume.device();
  Tensor out = Tensor::empty({n, 1, 1, rows, cols}, dev);
  dispatch::gather_axis_slices(dev, volume.data(), s[0], s[2], s[3], s[4], a, index.data(), n, out.data());
  return record(out, "gather_slices", {volume}, [s, a, index, dev](const Tensor& g, const std::vector<bool>&) {
    Tensor dx = Tensor::empty(s, dev);
    dispatch::scatter_axis_slices(dev, g.data(), s[0], s[2], s[3], s[4], a, index.data(), int64_t(index.size()),
                                  dx.data());
    return std::vector<Tensor>{dx};
  });
}

}  // namespace cpets
