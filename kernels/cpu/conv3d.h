// 3-D convolution on the CPU: NCDHW activations, (Cout, Cin, kD, kH, kW) weights, zero padding,
// per-axis stride, as PyTorch's conv3d. Forward, input gradient and weight (+ bias) gradient.
//
// Forward and input gradient are direct convolutions vectorised along W (16 floats: one AVX-512 or two AVX2
// registers, or the portable level's arrays; kernels/cpu/isa.h) with 3 output vectors × 8 output channels in registers; the input
// gradient is the forward convolution of dy (padded k−1−p) with the transposed, flipped
// weights, done per output phase (sub-kernels) when the stride is > 1. The 3×3×3, stride-1,
// padding-1 shapes with ≥ 16 channels each way go to the Winograd kernel instead, for all three
// passes (kernels/cpu/conv3d_winograd.h; CPETS_CONV_WINOGRAD=0 switches it off). The weight gradient vectorises over output channels (dy
// transposed per chunk, input values broadcast) when Cout ≥ 16, else along W. Inputs are first
// copied into a zero-padded, W-phase-split layout so that every tap is a plain vector load,
// whatever the stride: a per-task ring of kD planes kept in L2 when it fits, else one scratch
// copy of the whole tensor.
//
// Scratch buffers (padded copies, packed weights, partial sums) are kept between calls and
// reused (fresh pages are slow to fault in); conv3d_release_scratch() gives them back. Calls
// from several threads at once are safe: each concurrent call leases its own set of buffers.
// Each call is parallel inside (OpenMP). Convolutions under ~4 MFLOP run on the calling thread. Work is split into chunks that do
// not depend on the thread count and reductions run in a fixed order, so every result is
// bitwise identical for any number of threads.
#pragma once
#include <array>
#include <cstdint>

namespace cpets::kernels::cpu {

struct Conv3dShape {
  int64_t batch = 1, in_channels = 1, out_channels = 1;
  int64_t in[3] = {1, 1, 1};       // D, H, W of the input
  int64_t kernel[3] = {1, 1, 1};   // kD, kH, kW
  int64_t stride[3] = {1, 1, 1};
  int64_t padding[3] = {0, 0, 0};  // zero padding on both sides
  int64_t out_size(int axis) const { return (in[axis] + 2 * padding[axis] - kernel[axis]) / stride[axis] + 1; }
  int64_t taps() const { return kernel[0] * kernel[1] * kernel[2]; }
  int64_t out_voxels() const { return out_size(0) * out_size(1) * out_size(2); }
  int64_t in_voxels() const { return in[0] * in[1] * in[2]; }
  // From its parts; every per-axis argument is {D, H, W}.
  static Conv3dShape of(int64_t batch, int64_t in_channels, int64_t out_channels, std::array<int64_t, 3> in,
                        std::array<int64_t, 3> kernel, std::array<int64_t, 3> stride = {1, 1, 1},
                        std::array<int64_t, 3> padding = {0, 0, 0}) {
    Conv3dShape s;
    s.batch = batch;
    s.in_channels = in_channels;
    s.out_channels = out_channels;
    for (int a = 0; a < 3; ++a) {
      s.in[a] = in[a];
      s.kernel[a] = kernel[a];
      s.stride[a] = stride[a];
      s.padding[a] = padding[a];
    }
    return s;
  }
};

// Small outputs (the deepest U-Net levels, 3–7 voxels wide): all three passes run as GEMMs over the
// input unrolled into columns (im2col; col2im for the input gradient), since the direct kernels
// vectorise along W and would leave most lanes idle. conv3d_im2col_worthwhile says which shapes;
// on unless the environment has CPETS_CONV_IM2COL=0 or it is switched off here (tests compare
// the paths). Winograd's shapes go to Winograd first.
bool conv3d_im2col_worthwhile(const Conv3dShape& s);
void conv3d_set_im2col_enabled(bool on);
bool conv3d_im2col_enabled();

// y (B, Cout, oD, oH, oW) = conv(x, w) + bias; bias may be null.
void conv3d_forward(const Conv3dShape& s, const float* x, const float* w, const float* bias, float* y);
// dx (B, Cin, D, H, W) from dy (B, Cout, oD, oH, oW); overwrites dx.
void conv3d_backward_data(const Conv3dShape& s, const float* dy, const float* w, float* dx);
// dw (Cout, Cin, kD, kH, kW) and dbias (Cout), each skipped where null; overwrites them.
void conv3d_backward_weight(const Conv3dShape& s, const float* x, const float* dy, float* dw, float* dbias);

// Frees the scratch buffers kept for later calls (every level's) (those of calls running now are freed when
// they return). The next call allocates afresh.
void conv3d_release_scratch();

}  // namespace cpets::kernels::cpu
