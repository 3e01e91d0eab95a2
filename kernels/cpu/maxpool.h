// Max pooling of NCDHW volumes without padding, PyTorch's semantics including ceil_mode (the
// output rounds up, windows running past the end are clipped, but the last window must start
// inside the input). Channels of all batch items are flattened into `planes` = B·C.
//
// The forward can record each output's argmax (flat index within its plane): the first maximum
// in scan order (d, then h, then w) on ties; a NaN in the window is the maximum (NaN propagates,
// first NaN wins). The backward sends each output's gradient to that index. Windows are reduced
// down the window rows first (contiguous, branch-free) and then across columns, so random data
// costs no branch mispredictions. Work is split by output rows (forward) and by planes
// (backward: overlapping windows may share an argmax, and one thread adds a plane's
// contributions in output order), so results are bitwise identical for any thread count.
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

// y (planes, oD, oH, oW) = max over each window; argmax (same shape) filled unless null.
// Planes must hold fewer than 2³¹ voxels when argmax is asked for.
void max_pool3d_forward(const MaxPool3dShape& s, const float* x, float* y, int32_t* argmax);
// dx (planes, D, H, W) from dy (planes, oD, oH, oW) and the forward's argmax; overwrites dx
// (zero where no argmax lies).
void max_pool3d_backward(const MaxPool3dShape& s, const int32_t* argmax, const float* dy, float* dx);

}  // namespace cpets::kernels::cpu
