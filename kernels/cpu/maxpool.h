// Max pooling of NCDHW volumes without padding, PyTorch's semantics including ceil_mode (the
// output rounds up, windows running past the end are clipped, but the last window must start
// inside the input). Channels of all batch items are flattened into `planes` = B·C.
//
// The backward sends each output's gradient to the argmax of its window: the first maximum in
// scan order (d, then h, then w) on ties; a NaN in the window is the maximum (first NaN wins).
// The argmax is recomputed from x rather than stored, so the forward keeps no index tensor.
// Work is split by output rows (forward) and by planes (backward); each element is written by
// one thread in a fixed order, so results are bitwise identical for any thread count.
#pragma once
#include <cstdint>

namespace cpets::kernels::cpu {

struct MaxPool3dShape {
  int64_t planes = 1;
  int64_t in[3] = {1, 1, 1};      // D, H, W
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t out[3] = {1, 1, 1};     // from max_pool_out_size
  int64_t in_voxels() const { return in[0] * in[1] * in[2]; }
  int64_t out_voxels() const { return out[0] * out[1] * out[2]; }
};

// PyTorch's output length for padding 0, dilation 1; may be < 1 (the caller reports it).
int64_t max_pool_out_size(int64_t in, int64_t kernel, int64_t stride, bool ceil_mode);

// y (planes, oD, oH, oW) = max over each window.
void max_pool3d_forward(const MaxPool3dShape& s, const float* x, float* y);
// dx (planes, D, H, W) from dy (planes, oD, oH, oW); overwrites dx (zero where no argmax lies).
void max_pool3d_backward(const MaxPool3dShape& s, const float* x, const float* dy, float* dx);

}  // namespace cpets::kernels::cpu
