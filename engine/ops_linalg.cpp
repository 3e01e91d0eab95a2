// matmul and linear on top of the deterministic sgemm kernels. Backwards are products too:
// for C = A·B, dA = dC·Bᵀ and dB = Aᵀ·dC; when B is shared across a batch (2-D b), the batch
// and row dimensions of A fold into one, so dB is a single product summed over the whole batch.
#include "engine/ops_linalg.h"

#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "kernels/cpu/gemm.h"

namespace cpets {
namespace {

namespace kc = kernels::cpu;

void require_defined(const Tensor& t, const char* op, const char* what) {
  if (!t.defined()) throw std::invalid_argument(std::string(op) + ": " + what + " is undefined");
}

Shape batch_dims(const Tensor& t) { return Shape(t.shape().begin(), t.shape().end() - 2); }

struct MatmulDims {
  int64_t batch, M, K, N;
  bool shared_b;  // b is 2-D and used for every batch entry
};

MatmulDims check_matmul(const Tensor& a, const Tensor& b) {
  require_defined(a, "matmul", "a");
  require_defined(b, "matmul", "b");
  dispatch::same_device("matmul", {a, b});
  const std::string shapes = "a " + a.str() + " @ b " + b.str();
  if (a.dim() < 2 || b.dim() < 2)
    throw std::invalid_argument("matmul: both operands need at least 2 dimensions (…, rows, cols), got " + shapes +
                                "; view a vector as (1, n) or (n, 1)");
  MatmulDims m{};
  m.M = a.size(-2);
  m.K = a.size(-1);
  m.N = b.size(-1);
  if (b.size(-2) != m.K)
    throw std::invalid_argument("matmul: inner dimensions differ in " + shapes + " (a's last must equal b's second-last)");
  m.shared_b = b.dim() == 2;
  if (!m.shared_b && batch_dims(a) != batch_dims(b))
    throw std::invalid_argument("matmul: batch dimensions differ in " + shapes +
                                "; they must be equal, or b must be 2-D to be shared by every batch entry");
  m.batch = shape_numel(batch_dims(a));
  return m;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  const MatmulDims m = check_matmul(a, b);
  Shape out_shape = batch_dims(a);
  out_shape.push_back(m.M);
  out_shape.push_back(m.N);
  const Device dev = a.device();
  Tensor out = Tensor::empty(out_shape, dev);
  if (m.shared_b)  // one tall product: the batch folds into the rows
    dispatch::sgemm(dev, false, false, m.batch * m.M, m.N, m.K, 1.f, a.data(), m.K, b.data(), m.N, 0.f, out.data(), m.N);
  else
    dispatch::sgemm_batched(dev, false, false, m.batch, m.M, m.N, m.K, 1.f, a.data(), m.K, m.M * m.K, b.data(), m.N, m.K * m.N,
                      0.f, out.data(), m.N, m.M * m.N);
  return record(out, "matmul", {a, b}, [a = a.detach(), b = b.detach(), m, dev](const Tensor& g, const std::vector<bool>& needs) {
    Tensor ga, gb;
    if (needs[0]) {  // dA = dC·Bᵀ
      ga = Tensor::empty(a.shape(), dev);
      if (m.shared_b)
        dispatch::sgemm(dev, false, true, m.batch * m.M, m.K, m.N, 1.f, g.data(), m.N, b.data(), m.N, 0.f, ga.data(), m.K);
      else
        dispatch::sgemm_batched(dev, false, true, m.batch, m.M, m.K, m.N, 1.f, g.data(), m.N, m.M * m.N, b.data(), m.N,
                          m.K * m.N, 0.f, ga.data(), m.K, m.M * m.K);
    }
    if (needs[1]) {  // dB = Aᵀ·dC, summed over the batch when B is shared
      gb = Tensor::empty(b.shape(), dev);
      if (m.shared_b)
        dispatch::sgemm(dev, true, false, m.K, m.N, m.batch * m.M, 1.f, a.data(), m.K, g.data(), m.N, 0.f, gb.data(), m.N);
      else
        dispatch::sgemm_batched(dev, true, false, m.batch, m.K, m.N, m.M, 1.f, a.data(), m.K, m.M * m.K, g.data(), m.N,
                          m.M * m.N, 0.f, gb.data(), m.N, m.K * m.N);
    }
    return std::vector<Tensor>{ga, gb};
  });
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  require_defined(x, "linear", "input");
  require_defined(weight, "linear", "weight");
  const Device dev = dispatch::same_device("linear", {x, weight, bias});
  if (weight.dim() != 2)
    throw std::invalid_argument("linear: weight must be (out_features, in_features), got " + weight.str());
  const int64_t out_f = weight.size(0), in_f = weight.size(1);
  if (x.dim() < 1 || x.size(-1) != in_f)
    throw std::invalid_argument("linear: input " + x.str() + " must end in in_features = " + std::to_string(in_f) +
                                " to match weight " + weight.str());
  if (bias.defined()) {
    if (bias.shape() != Shape{out_f})
      throw std::invalid_argument("linear: bias " + bias.str() + " must be (" + std::to_string(out_f) +
                                  ") to match weight " + weight.str());
  }
  const int64_t rows = x.numel() / in_f;
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Tensor out = Tensor::empty(out_shape, dev);
  float beta = 0.f;
  if (bias.defined()) {  // start from the bias in every row, then accumulate x·Wᵀ onto it
    dispatch::broadcast_to(dev, bias.data(), {1, out_f}, out.data(), {rows, out_f});
    beta = 1.f;
  }
  dispatch::sgemm(dev, false, true, rows, out_f, in_f, 1.f, x.data(), in_f, weight.data(), in_f, beta, out.data(), out_f);
  return record(out, "linear", {x, weight, bias},
                [x = x.detach(), w = weight.detach(), rows, in_f, out_f, dev](const Tensor& g, const std::vector<bool>& needs) {
                  Tensor gx, gw, gbias;
                  if (needs[0]) {  // dx = g·W
                    gx = Tensor::empty(x.shape(), dev);
                    dispatch::sgemm(dev, false, false, rows, in_f, out_f, 1.f, g.data(), out_f, w.data(), in_f, 0.f, gx.data(), in_f);
                  }
                  if (needs[1]) {  // dW = gᵀ·x
                    gw = Tensor::empty(w.shape(), dev);
                    dispatch::sgemm(dev, true, false, out_f, in_f, rows, 1.f, g.data(), out_f, x.data(), in_f, 0.f, gw.data(), in_f);
                  }
                  if (needs[2]) {  // db = column sums of g (deterministic reduction, in double)
                    gbias = Tensor::empty({out_f}, dev);
                    dispatch::sum_axes(dev, g.data(), {rows, out_f}, {true, false}, gbias.data());
                  }
                  return std::vector<Tensor>{gx, gw, gbias};
                });
}

}  // namespace cpets
