// Elementwise ops: broadcasting binary ops, scalar ops and activations. Forward and backward run
// the kernels in kernels/cpu/elementwise.h; broadcast gradients are reduced with sum_to_shape.
#include "engine/ops_elementwise.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "kernels/cpu/elementwise.h"

namespace cpets {
namespace {

namespace k = kernels::cpu;

// NumPy broadcasting: shapes aligned on the right, each pair of sizes equal or one of them 1.
Shape broadcast_shape(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i + a.size() >= n ? a[i + a.size() - n] : 1;
    const int64_t db = i + b.size() >= n ? b[i + b.size() - n] : 1;
    if (da != db && da != 1 && db != 1) {
      std::ostringstream msg;  // (a stream, not string '+': GCC 12 warns falsely on long '+' chains)
      msg << op << ": shapes " << shape_str(a) << " and " << shape_str(b) << " cannot be broadcast: dimension "
          << int64_t(i) - int64_t(n) << " is " << da << " vs " << db << " (sizes must be equal or one of them 1)";
      throw std::invalid_argument(msg.str());
    }
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// `s` padded with leading 1s to rank n.
Shape right_aligned(const Shape& s, size_t n) {
  Shape out(n - s.size(), 1);
  out.insert(out.end(), s.begin(), s.end());
  return out;
}

const char* binary_name(k::BinaryOp op) {
  static const char* names[] = {"add", "sub", "mul", "div"};
  return names[static_cast<int>(op)];
}

// a op b into a new tensor of `out_shape` (the broadcast of both), on their device; no autograd.
Tensor binary_raw(k::BinaryOp op, const Tensor& a, const Tensor& b, const Shape& out_shape) {
  const Device dev = dispatch::same_device(binary_name(op), {a, b});
  Tensor out = Tensor::empty(out_shape, dev);
  const size_t n = out_shape.size();
  dispatch::binary_broadcast(dev, op, a.data(), right_aligned(a.shape(), n), b.data(), right_aligned(b.shape(), n),
                             out.data(), out_shape);
  return out;
}

Tensor unary_raw(k::UnaryOp op, const Tensor& a, float p0 = 0.f) {
  Tensor out = Tensor::empty(a.shape(), a.device());
  dispatch::unary_forward(a.device(), op, a.data(), out.data(), a.numel(), p0);
  return out;
}

// Unary op whose backward needs the input or the output (as the kernel says), saved detached.
Tensor unary_op(k::UnaryOp op, const char* name, const Tensor& a, float p0 = 0.f, float p1 = 0.f) {
  Tensor out = Tensor::empty(a.shape(), a.device());
  dispatch::unary_forward(a.device(), op, a.data(), out.data(), a.numel(), p0, p1);
  Tensor saved = k::unary_backward_uses_output(op) ? out.detach() : a.detach();
  return record(out, name, {a}, [saved, op, p0, p1](const Tensor& g, const std::vector<bool>&) {
    Tensor dx = Tensor::empty(g.shape(), g.device());
    dispatch::unary_backward(g.device(), op, saved.data(), g.data(), dx.data(), g.numel(), p0, p1);
    return std::vector<Tensor>{dx};
  });
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  const Shape shape = broadcast_shape(a.shape(), b.shape(), "add");
  Tensor out = binary_raw(k::BinaryOp::Add, a, b, shape);
  return record(out, "add", {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, const std::vector<bool>& needs) {
    return std::vector<Tensor>{needs[0] ? sum_to_shape(g, sa) : Tensor(), needs[1] ? sum_to_shape(g, sb) : Tensor()};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  const Shape shape = broadcast_shape(a.shape(), b.shape(), "sub");
  Tensor out = binary_raw(k::BinaryOp::Sub, a, b, shape);
  return record(out, "sub", {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, const std::vector<bool>& needs) {
    Tensor gb;
    if (needs[1]) gb = unary_raw(k::UnaryOp::Neg, sum_to_shape(g, sb));
    return std::vector<Tensor>{needs[0] ? sum_to_shape(g, sa) : Tensor(), gb};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  const Shape shape = broadcast_shape(a.shape(), b.shape(), "mul");
  Tensor out = binary_raw(k::BinaryOp::Mul, a, b, shape);
  // Each gradient needs only the other factor: save a factor only if its partner wants a gradient.
  Tensor saved_a = b.requires_grad() ? a.detach() : Tensor();
  Tensor saved_b = a.requires_grad() ? b.detach() : Tensor();
  return record(out, "mul", {a, b},
                [saved_a, saved_b, sa = a.shape(), sb = b.shape(), shape](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor ga, gb;
                  if (needs[0]) ga = sum_to_shape(binary_raw(k::BinaryOp::Mul, g, saved_b, shape), sa);
                  if (needs[1]) gb = sum_to_shape(binary_raw(k::BinaryOp::Mul, g, saved_a, shape), sb);
                  return std::vector<Tensor>{ga, gb};
                });
}

Tensor div(const Tensor& a, const Tensor& b) {
  const Shape shape = broadcast_shape(a.shape(), b.shape(), "div");
  Tensor out = binary_raw(k::BinaryOp::Div, a, b, shape);
  // d(a/b)/da = 1/b; d(a/b)/db = −a/b² = −out/b, so the backward needs b and (for b) the output.
  Tensor saved_out = b.requires_grad() ? out.detach() : Tensor();
  return record(out, "div", {a, b},
                [saved_out, b = b.detach(), sa = a.shape(), shape](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor ga, gb;
                  if (needs[0]) ga = sum_to_shape(binary_raw(k::BinaryOp::Div, g, b, shape), sa);
                  if (needs[1]) {
                    Tensor t = binary_raw(k::BinaryOp::Div, binary_raw(k::BinaryOp::Mul, g, saved_out, shape), b, shape);
                    gb = unary_raw(k::UnaryOp::Neg, sum_to_shape(t, b.shape()));
                  }
                  return std::vector<Tensor>{ga, gb};
                });
}

Tensor add_scalar(const Tensor& a, float s) {
  Tensor out = unary_raw(k::UnaryOp::AddScalar, a, s);
  return record(out, "add_scalar", {a}, [](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{g}; });
}

Tensor mul_scalar(const Tensor& a, float s) {
  Tensor out = unary_raw(k::UnaryOp::MulScalar, a, s);
  return record(out, "mul_scalar", {a}, [s](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{unary_raw(k::UnaryOp::MulScalar, g, s)};
  });
}

Tensor neg(const Tensor& a) {
  Tensor out = unary_raw(k::UnaryOp::Neg, a);
  return record(out, "neg", {a}, [](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{unary_raw(k::UnaryOp::Neg, g)};
  });
}

Tensor silu(const Tensor& a) { return unary_op(k::UnaryOp::Silu, "silu", a); }
Tensor gelu(const Tensor& a) { return unary_op(k::UnaryOp::Gelu, "gelu", a); }
Tensor geglu(const Tensor& x) {
  if (x.dim() == 0 || x.shape().back() % 2 != 0)
    throw std::invalid_argument("geglu: input " + x.str() +
                                " needs an even last dimension (the two halves a and b of a · GELU(b))");
  const int64_t F = x.shape().back() / 2, rows = F == 0 ? 0 : x.numel() / (2 * F);
  Shape out_shape = x.shape();
  out_shape.back() = F;
  Tensor out = Tensor::empty(out_shape, x.device());
  dispatch::geglu_forward(x.device(), x.data(), out.data(), rows, F);
  return record(out, "geglu", {x}, [saved = x.detach(), rows, F](const Tensor& g, const std::vector<bool>&) {
    Tensor dx = Tensor::empty(saved.shape(), saved.device());
    dispatch::geglu_backward(saved.device(), saved.data(), g.data(), dx.data(), rows, F);
    return std::vector<Tensor>{dx};
  });
}

Tensor leaky_relu(const Tensor& a, float negative_slope) {
  return unary_op(k::UnaryOp::LeakyRelu, "leaky_relu", a, negative_slope);
}
Tensor relu(const Tensor& a) { return unary_op(k::UnaryOp::Relu, "relu", a); }
Tensor sigmoid(const Tensor& a) { return unary_op(k::UnaryOp::Sigmoid, "sigmoid", a); }
Tensor tanh(const Tensor& a) { return unary_op(k::UnaryOp::Tanh, "tanh", a); }
Tensor exp(const Tensor& a) { return unary_op(k::UnaryOp::Exp, "exp", a); }
Tensor log(const Tensor& a) { return unary_op(k::UnaryOp::Log, "log", a); }

Tensor clamp(const Tensor& a, float lo, float hi) {
  if (!(lo <= hi))
    throw std::invalid_argument("clamp: lower bound " + std::to_string(lo) + " is above upper bound " +
                                std::to_string(hi));
  return unary_op(k::UnaryOp::Clamp, "clamp", a, lo, hi);
}

}  // namespace cpets
