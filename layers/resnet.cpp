#include "layers/resnet.h"

#include "engine/ops_conv.h"
#include "engine/ops_elementwise.h"

namespace cpets::layers {

namespace {
const ConvOptions kSame3{1, 1, true};  // 3³, stride 1, pad 1

Tensor resample(const Tensor& x, Resample r) {
  switch (r) {
    case Resample::down: return avg_pool3d(x, 2, 2);
    case Resample::up: return upsample_nearest2x(x);
    case Resample::none: break;
  }
  return x;
}
}  // namespace

ResnetBlock::ResnetBlock(int64_t in_channels, int64_t out_channels, int64_t groups, float eps, Generator& init,
                         Resample resample)
    : resample_(resample) {
  norm1 = register_module("norm1", std::make_shared<GroupNorm>(groups, in_channels, eps));
  conv1 = register_module("conv1", std::make_shared<Conv3d>(in_channels, out_channels, 3, init, kSame3));
  norm2 = register_module("norm2", std::make_shared<GroupNorm>(groups, out_channels, eps));
  conv2 = register_module("conv2", std::make_shared<Conv3d>(out_channels, out_channels, 3, init, kSame3));
  conv2->zero_();
  if (in_channels != out_channels)
    skip_connection = register_module("skip_connection", std::make_shared<Conv3d>(in_channels, out_channels, 1, init));
}

Tensor ResnetBlock::forward(const Tensor& x) const {
  Tensor h = resample(norm1->forward_silu(x), resample_);
  const Tensor skip_in = resample(x, resample_);
  h = conv2->forward(norm2->forward_silu(conv1->forward(h)));
  return add(skip_connection ? skip_connection->forward(skip_in) : skip_in, h);
}

AEResBlock::AEResBlock(int64_t in_channels, int64_t out_channels, int64_t groups, float eps, Generator& init) {
  norm1 = register_module("norm1", std::make_shared<GroupNorm>(groups, in_channels, eps));
  conv1 = register_module("conv1", std::make_shared<Conv3d>(in_channels, out_channels, 3, init, kSame3));
  norm2 = register_module("norm2", std::make_shared<GroupNorm>(groups, out_channels, eps));
  conv2 = register_module("conv2", std::make_shared<Conv3d>(out_channels, out_channels, 3, init, kSame3));
  if (in_channels != out_channels)
    nin_shortcut = register_module("nin_shortcut", std::make_shared<Conv3d>(in_channels, out_channels, 1, init));
}

Tensor AEResBlock::forward(const Tensor& x) const {
  const Tensor h = conv2->forward(norm2->forward_silu(conv1->forward(norm1->forward_silu(x))));
  return add(nin_shortcut ? nin_shortcut->forward(x) : x, h);
}

}  // namespace cpets::layers
