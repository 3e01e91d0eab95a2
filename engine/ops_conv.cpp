// conv3d, avg_pool3d and upsample_nearest2x: shape checks, kernels by device (dispatch.h),
// backward closures.
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops_conv.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_shape.h"
#include "kernels/cpu/conv3d.h"
#include "kernels/cpu/pool.h"

namespace cpets {
namespace {

namespace kc = kernels::cpu;

std::string int3_str(Int3 v) {
  return "(" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ", " + std::to_string(v[2]) + ")";
}

void require_5d(const char* op, const char* what, const Tensor& t) {
  if (!t.defined()) throw std::invalid_argument(std::string(op) + ": " + what + " is undefined");
  if (t.dim() != 5)
    throw std::invalid_argument(std::string(op) + ": " + what + " must be 5-D (B, C, D, H, W); got " + t.str());
}

kc::Conv3dShape conv_shape(const Tensor& x, const Tensor& weight, const Tensor& bias, Int3 stride, Int3 padding) {
  require_5d("conv3d", "input", x);
  require_5d("conv3d", "weight", weight);
  const std::string shapes = " (input " + x.str() + ", weight " + weight.str() + ", stride " + int3_str(stride) +
                             ", padding " + int3_str(padding) + ")";
  if (weight.size(1) != x.size(1))
    throw std::invalid_argument("conv3d: weight expects " + std::to_string(weight.size(1)) + " input channels but the input has " +
                                std::to_string(x.size(1)) + shapes);
  dispatch::same_device("conv3d", {x, weight, bias});
  if (bias.defined()) {
    if (bias.dim() != 1 || bias.size(0) != weight.size(0))
      throw std::invalid_argument("conv3d: bias must have shape (" + std::to_string(weight.size(0)) + "); got " + bias.str() + shapes);
  }
  kc::Conv3dShape s;
  s.batch = x.size(0);
  s.in_channels = x.size(1);
  s.out_channels = weight.size(0);
  for (int a = 0; a < 3; ++a) {
    s.in[a] = x.size(2 + a);
    s.kernel[a] = weight.size(2 + a);
    s.stride[a] = stride[a];
    s.padding[a] = padding[a];
    if (stride[a] < 1) throw std::invalid_argument("conv3d: stride must be >= 1" + shapes);
    if (padding[a] < 0 || padding[a] >= s.kernel[a])
      throw std::invalid_argument("conv3d: padding must be in [0, kernel size) on every axis" + shapes);
    if (s.kernel[a] < 1 || x.size(2 + a) < 1 || s.batch < 1 || s.in_channels < 1 || s.out_channels < 1)
      throw std::invalid_argument("conv3d: empty input or weight" + shapes);
    if (s.in[a] + 2 * padding[a] < s.kernel[a])
      throw std::invalid_argument("conv3d: the kernel is larger than the padded input" + shapes);
  }
  return s;
}

Shape conv_out_shape(const kc::Conv3dShape& s) {
  return {s.batch, s.out_channels, s.out_size(0), s.out_size(1), s.out_size(2)};
}

}  // namespace

Tensor conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias, Int3 stride, Int3 padding) {
  const kc::Conv3dShape s = conv_shape(x, weight, bias, stride, padding);
  const Device dev = x.device();
  Tensor y = Tensor::empty(conv_out_shape(s), dev);
  dispatch::conv3d_forward(dev, s, x.data(), weight.data(), bias.defined() ? bias.data() : nullptr, y.data());
  std::vector<Tensor> inputs = {x, weight};
  if (bias.defined()) inputs.push_back(bias);
  return record(y, "conv3d", inputs,
                [s, x = x.detach(), w = weight.detach(), has_bias = bias.defined(), dev](const Tensor& g, const std::vector<bool>& needs) {
                  std::vector<Tensor> grads(has_bias ? 3 : 2);
                  if (needs[0]) {
                    grads[0] = Tensor::empty(x.shape(), dev);
                    dispatch::conv3d_backward_data(dev, s, g.data(), w.data(), grads[0].data());
                  }
                  const bool need_bias = has_bias && needs[2];
                  if (needs[1]) {
                    grads[1] = Tensor::empty(w.shape(), dev);
                    Tensor db = need_bias ? Tensor::empty({s.out_channels}, dev) : Tensor();
                    dispatch::conv3d_backward_weight(dev, s, x.data(), g.data(), grads[1].data(),
                                                     need_bias ? db.data() : nullptr);
                    if (need_bias) grads[2] = db;
                  } else if (need_bias) {
                    grads[2] = Tensor::empty({s.out_channels}, dev);
                    dispatch::conv3d_backward_weight(dev, s, x.data(), g.data(), nullptr, grads[2].data());
                  }
                  return grads;
                });
}

Tensor conv_transpose3d(const Tensor& x, const Tensor& weight, const Tensor& bias, Int3 stride, Int3 padding) {
  require_5d("conv_transpose3d", "input", x);
  require_5d("conv_transpose3d", "weight", weight);
  dispatch::same_device("conv_transpose3d", {x, weight, bias});
  const std::string shapes = " (input " + x.str() + ", weight " + weight.str() + ", stride " + int3_str(stride) +
                             ", padding " + int3_str(padding) + ")";
  if (weight.size(0) != x.size(1))
    throw std::invalid_argument("conv_transpose3d: weight (Cin, Cout, k, k, k) expects " + std::to_string(weight.size(0)) +
                                " input channels but the input has " + std::to_string(x.size(1)) + shapes);
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(1)))
    throw std::invalid_argument("conv_transpose3d: bias must have shape (" + std::to_string(weight.size(1)) + "); got " +
                                bias.str() + shapes);
  // The convolution this is the transpose of: its input is our output, its output our input.
  kc::Conv3dShape s;
  s.batch = x.size(0);
  s.in_channels = weight.size(1);
  s.out_channels = weight.size(0);
  for (int a = 0; a < 3; ++a) {
    if (stride[a] < 1 || padding[a] < 0 || padding[a] >= weight.size(2 + a))
      throw std::invalid_argument("conv_transpose3d: stride must be >= 1 and padding in [0, kernel size)" + shapes);
    s.kernel[a] = weight.size(2 + a);
    s.stride[a] = stride[a];
    s.padding[a] = padding[a];
    s.in[a] = (x.size(2 + a) - 1) * stride[a] - 2 * padding[a] + s.kernel[a];
    if (x.size(2 + a) < 1 || s.in[a] < 1)
      throw std::invalid_argument("conv_transpose3d: the output would be empty" + shapes);
  }
  if (s.batch < 1 || s.in_channels < 1 || s.out_channels < 1)
    throw std::invalid_argument("conv_transpose3d: empty input or weight" + shapes);
  const Device dev = x.device();
  Tensor y = Tensor::empty({s.batch, s.in_channels, s.in[0], s.in[1], s.in[2]}, dev);
  dispatch::conv3d_backward_data(dev, s, x.data(), weight.data(), y.data());
  Tensor out = record(y, "conv_transpose3d", {x, weight},
                      [s, x = x.detach(), w = weight.detach(), dev](const Tensor& g, const std::vector<bool>& needs) {
                        std::vector<Tensor> grads(2);
                        if (needs[0]) {
                          grads[0] = Tensor::empty(x.shape(), dev);
                          dispatch::conv3d_forward(dev, s, g.data(), w.data(), nullptr, grads[0].data());
                        }
                        if (needs[1]) {
                          grads[1] = Tensor::empty(w.shape(), dev);
                          dispatch::conv3d_backward_weight(dev, s, g.data(), x.data(), grads[1].data(), nullptr);
                        }
                        return grads;
                      });
  return bias.defined() ? add(out, reshape(bias, {1, s.in_channels, 1, 1, 1})) : out;
}

Tensor avg_pool3d(const Tensor& x, int64_t kernel, int64_t stride) {
  require_5d("avg_pool3d", "input", x);
  if (kernel < 1 || stride < 1)
    throw std::invalid_argument("avg_pool3d: kernel and stride must be >= 1; got kernel " + std::to_string(kernel) +
                                ", stride " + std::to_string(stride));
  for (int a = 2; a < 5; ++a)
    if (x.size(a) < kernel)
      throw std::invalid_argument("avg_pool3d: input " + x.str() + " is smaller than the kernel " + std::to_string(kernel) +
                                  " on axis " + std::to_string(a));
  const int64_t B = x.size(0), C = x.size(1), D = x.size(2), H = x.size(3), W = x.size(4);
  Tensor y = Tensor::empty({B, C, kc::pool_out_size(D, kernel, stride), kc::pool_out_size(H, kernel, stride),
                            kc::pool_out_size(W, kernel, stride)},
                           x.device());
  dispatch::avg_pool3d_forward(x.device(), x.data(), B * C, D, H, W, kernel, stride, y.data());
  return record(y, "avg_pool3d", {x}, [shape = x.shape(), kernel, stride](const Tensor& g, const std::vector<bool>& needs) {
    Tensor dx = Tensor::empty(shape, g.device());
    dispatch::avg_pool3d_backward(g.device(), g.data(), shape[0] * shape[1], shape[2], shape[3], shape[4], kernel,
                                  stride, dx.data());
    return std::vector<Tensor>{dx};
  });
}

Tensor upsample_nearest2x(const Tensor& x) {
  require_5d("upsample_nearest2x", "input", x);
  const int64_t B = x.size(0), C = x.size(1), D = x.size(2), H = x.size(3), W = x.size(4);
  Tensor y = Tensor::empty({B, C, 2 * D, 2 * H, 2 * W}, x.device());
  dispatch::upsample_nearest2x_forward(x.device(), x.data(), B * C, D, H, W, y.data());
  return record(y, "upsample_nearest2x", {x}, [shape = x.shape()](const Tensor& g, const std::vector<bool>& needs) {
    Tensor dx = Tensor::empty(shape, g.device());
    dispatch::upsample_nearest2x_backward(g.device(), g.data(), shape[0] * shape[1], shape[2], shape[3], shape[4],
                                          dx.data());
    return std::vector<Tensor>{dx};
  });
}

}  // namespace cpets
