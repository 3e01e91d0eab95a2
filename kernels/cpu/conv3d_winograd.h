// Winograd F(2×2×2, 3×3×3) for the 3×3×3, stride-1, pad-1 convolutions on the CPU: forward,
// input gradient (the same convolution of dy with the weights transposed Cin ↔ Cout and
// flipped) and weight gradient (the transposed algorithm: x and dy transformed per tile, their
// products summed over all tiles in each Winograd position, one output transform at the end). 64 multiplications per 2×2×2 output tile and (cin, cout) pair
// instead of 216 for the direct kernel, at the price of input and output transforms.
//
// The input is never transformed as a whole (that would be 8× its size): each task takes one
// row of up to 12 tiles along W at a (batch, tile-d, tile-h) position, transforms it for all input
// channels into a block that stays in L2, multiplies it in each of the 64 Winograd positions
// (FMA over vectors of 16 output channels, tiles broadcast), and transforms the products back into
// the output. Weights are transformed once per call. The per-thread blocks (transformed input,
// products: ~0.2 MB at 32 channels) and the transformed weights (64·Cin·Cout floats) live in
// thread-local buffers reused across calls; conv3d_release_scratch() does not free them. Tasks write disjoint outputs and do the
// same arithmetic whatever thread runs them: results are bitwise identical for any thread count.
//
// Compiled for every instruction-set level (kernels/cpu/isa.h), like the direct kernel: the same
// tests hold on each.
#pragma once
#include "kernels/cpu/conv3d.h"

namespace cpets::kernels::cpu {

// Outputs per tile along D and H for an input of size in (D, H, W): 4 (F(4, 3) along D and H,
// F(2, 3) along W: 144 products per 32 outputs) when D and H are both ≥ 16, else 2 (F(2³, 3³):
// 64 per 8). F(4, 3)'s larger transform constants cost precision: measured errors of
// 2–7·10⁻⁶ of the output's peak, against 1–4·10⁻⁷ for F(2, 3) and 1–15·10⁻⁷ for the direct
// kernel (the order of the F(4×4, 3×3) kernels cuDNN and oneDNN use, far below TF32's 10⁻³).
int conv3d_winograd_tile_rows(const int64_t in[3]);

// The shapes this kernel handles: kernel 3³, stride 1, padding 1 on every axis. Throws
// std::invalid_argument naming the offending field otherwise.
bool conv3d_winograd_supports(const Conv3dShape& s);

// y (B, Cout, D, H, W) = conv(x, w) + bias (bias may be null). Same contract as conv3d_forward.
void conv3d_winograd_forward(const Conv3dShape& s, const float* x, const float* w, const float* bias, float* y);
// dx (B, Cin, D, H, W) from dy (B, Cout, D, H, W); overwrites dx. Same contract as
// conv3d_backward_data.
void conv3d_winograd_backward_data(const Conv3dShape& s, const float* dy, const float* w, float* dx);

// dw (Cout, Cin, 3, 3, 3) from x and dy; overwrites dw. The bias gradient is left to the caller.
// The products are summed over tiles in fixed chunks of tile rows (the count set by the shape,
// not the thread count; at most 64 MB of partial sums), merged in chunk order in double.
void conv3d_winograd_backward_weight(const Conv3dShape& s, const float* x, const float* dy, float* dw);

// Routing from conv3d_forward, conv3d_backward_data and conv3d_backward_weight (kernels/cpu/conv3d.cpp): on, unless
// the environment has CPETS_CONV_WINOGRAD=0 or it is switched off here (tests compare paths).
void conv3d_set_winograd_enabled(bool on);
bool conv3d_winograd_enabled();

// Whether a supported shape is routed to Winograd, for a pass that reads `cin` channels and
// writes `cout` (the forward and weight gradient: Cin → Cout; the input gradient: Cout → Cin). Rule: both ≥ 16
// (below, output vectors are padded to 16 channels and the transforms outweigh the saved
// multiplications) and every spatial axis ≥ 4 (below, most of each 4³ tile is padding).
bool conv3d_winograd_worthwhile(const Conv3dShape& s, int64_t cin, int64_t cout);

}  // namespace cpets::kernels::cpu
