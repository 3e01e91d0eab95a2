// Image similarity metrics of docs/model.md §6, on raw float buffers in (D, H, W) order (W
// fastest, io::Volume's layout) or on io::Volume: MAE, MSE, PSNR with data range 1, and SSIM and
// MS-SSIM in 3-D computed exactly as torchmetrics does (reference-implementation.md §5.2):
//
//   per scale: reflect-pad each axis by p = (k − 1)/2 (PyTorch "reflect": the edge voxel is not
//   repeated), convolve x, y, x², y², xy with the normalised separable Gaussian (valid), then
//   μ, σ² = max(E[x²] − μ², 0), σxy = E[xy] − μxμy,
//   SSIM map = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),
//   cs map   = (2σxy + C2) / (σx² + σy² + C2),    C1 = (k1·L)², C2 = (k2·L)²;
//   SSIM = mean of the whole map; cs = mean of the map without the p border voxels on each side.
//   MS-SSIM: ReLU on both, 2×2×2 average pooling (odd sizes floor) between scales,
//   Π_{i<5} cs_i^{β_i} · SSIM_5^{β_5}, β = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333).
//
// The Gaussian window size follows from σ as torchmetrics computes it: k = 2·int(3.5σ + 0.5) + 1,
// i.e. 11 for σ 1.5 and 5 for σ 0.5 (the two settings of the reference code).
//
// Sums are taken in double (torchmetrics computes in the input's float32; the fixtures compare
// against its algorithm run in float64). Every loop is OpenMP-parallel over independent outputs
// and every reduction is combined in a fixed order, so the results are bitwise identical for any
// thread count.
//
// Volumes too small for MS-SSIM: torchmetrics requires H and W ≥ 2^5 and H//16 > k − 1 and
// W//16 > k − 1 (and the reflection padding needs D//16 > (k − 1)/2 at the coarsest scale). A
// 48×64×48 volume fails this for both settings (H//16 = 4), a 96×128×96 one for k = 11 (it is
// why the reference metrics.py zero-pads to 192×224×192). ms_ssim3d then throws
// std::invalid_argument naming the shape and the rule. The documented fallback is
// ms_ssim3d_padded: both volumes are zero-padded, centred, to ms_ssim_legal_shape(...) first
// (the reference metrics.py protocol); it reports the padded shape it used, because padding
// changes the number (a zero border is perfectly "similar").
#pragma once
#include <array>
#include <cstdint>
#include <limits>
#include <string>

#include "io/volume.h"

namespace cpets::eval {

using Shape3 = std::array<int64_t, 3>;  // (D, H, W)

// ---- voxel-wise errors -----------------------------------------------------------------------
double mae(const float* a, const float* b, int64_t n);  // mean |a − b|
double mse(const float* a, const float* b, int64_t n);  // mean (a − b)²
// 10·log10(L² / MSE); +infinity when the volumes are identical (MSE = 0).
double psnr(const float* a, const float* b, int64_t n, double data_range = 1.0);

double mae(const io::Volume& a, const io::Volume& b);
double mse(const io::Volume& a, const io::Volume& b);
double psnr(const io::Volume& a, const io::Volume& b, double data_range = 1.0);

// ---- SSIM / MS-SSIM ----------------------------------------------------------------------------
struct SsimOptions {
  double sigma = 1.5;       // Gaussian σ in voxels (isotropic)
  double k1 = 0.01, k2 = 0.03;
  double data_range = 1.0;  // L
};
inline SsimOptions ssim_reference() { return {1.5, 0.01, 0.03, 1.0}; }  // σ 1.5, window 11
inline SsimOptions ssim_small() { return {0.5, 0.01, 0.03, 1.0}; }      // σ 0.5, window 5
int gaussian_window(double sigma);  // 2·int(3.5σ + 0.5) + 1

struct SsimResult {
  double ssim = 0;  // mean of the full SSIM map
  double cs = 0;    // mean of the contrast-sensitivity map without the border
};
// `preds` is the synthetic volume and `target` the real one (the order matters only through
// which is which in the cs map's symmetric formula, i.e. not at all). Throws
// std::invalid_argument when the shapes differ or an axis is not longer than the padding.
SsimResult ssim3d_full(const float* preds, const float* target, Shape3 shape, const SsimOptions& opt = {});
double ssim3d(const float* preds, const float* target, Shape3 shape, const SsimOptions& opt = {});
double ssim3d(const io::Volume& preds, const io::Volume& target, const SsimOptions& opt = {});

inline constexpr std::array<double, 5> kMsSsimBetas{0.0448, 0.2856, 0.3001, 0.2363, 0.1333};

// Empty when MS-SSIM with this window is legal for `shape`, otherwise the reason (shape and rule).
std::string ms_ssim_problem(Shape3 shape, const SsimOptions& opt = {});
// The smallest shape ≥ `shape` (per axis) on which MS-SSIM is legal.
Shape3 ms_ssim_legal_shape(Shape3 shape, const SsimOptions& opt = {});

double ms_ssim3d(const float* preds, const float* target, Shape3 shape, const SsimOptions& opt = {});
double ms_ssim3d(const io::Volume& preds, const io::Volume& target, const SsimOptions& opt = {});

struct PaddedMsSsim {
  double value = 0;
  Shape3 shape{};       // the shape it was computed on
  bool padded = false;  // false when the input shape was already legal
};
// MS-SSIM after centred zero-padding of both volumes to ms_ssim_legal_shape (documented
// fallback for volumes too small; see the top of this file).
PaddedMsSsim ms_ssim3d_padded(const io::Volume& preds, const io::Volume& target, const SsimOptions& opt = {});

// ---- the reference code's protocol ---------------------------------------------------------------
// reference-implementation.md §5.2 (a), the reference's unet/scripts/metrics.py, for reproducing
// its tables: the synthetic volume is scaled so its mean equals the real one's, both are
// zero-padded (centred) / centre-cropped to `shape` (192×224×192 there), and MAE, PSNR (data
// range 1) and, optionally, MS-SSIM (σ 1.5, legal at that size) are taken over the whole padded
// volume — which dilutes MAE ~7× and raises PSNR ~8.5 dB against the 96×128×96 content.
// `real` must already be divided by its maximum (as the reference does).
struct ReferenceProtocolMetrics {
  double mae = 0, psnr = 0;
  double ms_ssim = std::numeric_limits<double>::quiet_NaN();  // NaN unless asked for
  double scale = 1;                                           // mean(real) / mean(syn)
};
inline constexpr Shape3 kReferencePaddedShape{192, 224, 192};
ReferenceProtocolMetrics reference_protocol_metrics(const io::Volume& real, const io::Volume& syn,
                                                    Shape3 shape = kReferencePaddedShape, bool with_ms_ssim = false);

}  // namespace cpets::eval
