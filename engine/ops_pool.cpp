// max_pool3d: shape checks, the kernel (through dispatch, either device), and the backward that
// routes gradients to the argmax recorded by the forward (only when a gradient will be needed).
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/ops_conv.h"
#include "engine/dispatch.h"
#include "kernels/cpu/maxpool.h"

namespace cpets {
namespace {

namespace kc = kernels::cpu;

std::string describe(const Tensor& x, Int3 kernel, Int3 stride, bool ceil_mode) {
  auto i3 = [](Int3 v) {
    return "(" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ", " + std::to_string(v[2]) + ")";
  };
  return " (input " + x.str() + ", kernel " + i3(kernel) + ", stride " + i3(stride) +
         ", ceil_mode " + (ceil_mode ? "true" : "false") + ")";
}

kc::MaxPool3dShape pool_shape(const Tensor& x, Int3 kernel, Int3 stride, bool ceil_mode) {
  if (!x.defined()) throw std::invalid_argument("max_pool3d: input is undefined");
  if (x.dim() != 5) throw std::invalid_argument("max_pool3d: input must be 5-D (B, C, D, H, W); got " + x.str());
  kc::MaxPool3dShape s;
  s.planes = x.size(0) * x.size(1);
  for (int a = 0; a < 3; ++a) {
    if (kernel[a] < 1 || stride[a] < 1)
      throw std::invalid_argument("max_pool3d: kernel and stride must be >= 1 on every axis" +
                                  describe(x, kernel, stride, ceil_mode));
    s.in[a] = x.size(2 + a);
    s.kernel[a] = kernel[a];
    s.stride[a] = stride[a];
    s.out[a] = kc::max_pool_out_size(s.in[a], kernel[a], stride[a], ceil_mode);
    if (s.out[a] < 1)
      throw std::invalid_argument("max_pool3d: the input is smaller than the kernel on axis " + std::to_string(2 + a) +
                                  describe(x, kernel, stride, ceil_mode) + "; use a smaller kernel or a larger input");
  }
  if (s.planes < 1) throw std::invalid_argument("max_pool3d: empty input" + describe(x, kernel, stride, ceil_mode));
  return s;
}

}  // namespace

Tensor max_pool3d(const Tensor& x, Int3 kernel, Int3 stride, bool ceil_mode) {
  const kc::MaxPool3dShape s = pool_shape(x, kernel, stride, ceil_mode);
  const Shape out_shape = {x.size(0), x.size(1), s.out[0], s.out[1], s.out[2]};
  const Device dev = x.device();
  Tensor y = Tensor::empty(out_shape, dev);
  if (!(grad_enabled() && x.requires_grad())) {
    dispatch::max_pool3d_forward(dev, s, x.data(), y.data(), nullptr);
    return y;
  }
  if (s.in_voxels() >= (int64_t(1) << 31))
    throw std::invalid_argument("max_pool3d: planes of 2^31 voxels or more cannot record their argmax" +
                                describe(x, kernel, stride, ceil_mode));
  // The argmax indices (int32) live in a float tensor's storage, so they come from the caching
  // allocator like every activation; only their bits are used, never their float values.
  Tensor argmax = Tensor::empty(out_shape, dev);
  int32_t* idx = reinterpret_cast<int32_t*>(argmax.data());
  dispatch::max_pool3d_forward(dev, s, x.data(), y.data(), idx);
  return record(y, "max_pool3d", {x}, [s, argmax, in_shape = x.shape(), dev](const Tensor& g, const std::vector<bool>&) {
    Tensor dx = Tensor::empty(in_shape, dev);
    dispatch::max_pool3d_backward(dev, s, reinterpret_cast<const int32_t*>(argmax.data()), g.data(), dx.data());
    return std::vector<Tensor>{dx};
  });
}

}  // namespace cpets
