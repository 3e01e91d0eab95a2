// Raw kernels of the perceptual loss (models/perceptual.cpp): the LPIPS per-layer distance
// between channel-normalised feature maps, and the gather/scatter of 2-D slices out of a volume.
//
// Feature maps are (N, C, P): N images, C channels, P pixels; every pixel's channel vector is
// normalised to unit length as LPIPS does, f / (‖f‖₂ + eps). Work is split by (image, pixel
// block) and every output is written by one thread with a fixed summation order, so results
// are bitwise identical for any thread count.
#pragma once
#include <cstdint>

namespace cpets::kernels::cpu {

// out (N, P) = Σ_c w[c] · (â_c − b̂_c)², â = a / (‖a‖ + eps) per pixel (norm over channels).
void normalized_distance_forward(const float* a, const float* b, const float* w, int64_t N, int64_t C, int64_t P,
                                 float eps, float* out);
// From dout (N, P): da, db (N, C, P) and dw (C), each skipped where null; overwrites them.
// Where a pixel's features are all zero the derivative of f / (‖f‖ + eps) is taken as its limit
// I / eps (the Jacobian's rank-one term vanishes with f), not PyTorch's 0·∞ = NaN.
void normalized_distance_backward(const float* a, const float* b, const float* w, const float* dout, int64_t N,
                                  int64_t C, int64_t P, float eps, float* da, float* db, float* dw);

// Slices of a single-channel volume x (B, D, H, W) across `axis` (0 = D, 1 = H, 2 = W). Slice s
// (of B·n, n = size of that axis) is image b = s / n at position s % n; it keeps the two other
// axes in order, (H, W), (D, W) or (D, H). out (count, rows, cols) = the slices listed in `index`.
void gather_axis_slices(const float* x, int64_t B, int64_t D, int64_t H, int64_t W, int axis, const int64_t* index,
                        int64_t count, float* out);
// The adjoint: dx (B, D, H, W) = zero except the listed slices, which receive dout's. The
// indices must be distinct (each element of dx is written once).
void scatter_axis_slices(const float* dout, int64_t B, int64_t D, int64_t H, int64_t W, int axis,
                         const int64_t* index, int64_t count, float* dx);

}  // namespace cpets::kernels::cpu
