#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <vector>

#include "io/preprocess.h"
#include "kernels/cpu/parallel.h"

namespace cpets::eval {

namespace {

using kernels::cpu::deterministic_sum;
using kernels::cpu::parallel_for;

int64_t numel(Shape3 s) { return s[0] * s[1] * s[2]; }

void check_buffers(const float* a, const float* b, int64_t n, const char* what) {
  if (n <= 0) throw std::invalid_argument(std::string(what) + ": empty volume (0 voxels)");
  if (!a || !b) throw std::invalid_argument(std::string(what) + ": null data pointer");
}

void check_same_shape(const io::Volume& a, const io::Volume& b, const char* what) {
  if (a.shape != b.shape)
    throw std::invalid_argument(std::string(what) + ": the volumes have different shapes, " + io::shape_string(a.shape) +
                                " and " + io::shape_string(b.shape) + "; resample one onto the other's grid first");
  if (int64_t(a.data.size()) != a.numel() || int64_t(b.data.size()) != b.numel())
    throw std::invalid_argument(std::string(what) + ": a volume's data size does not match its shape " +
                                io::shape_string(a.shape));
}

// ---- the Gaussian window and reflection ---------------------------------------------------------

std::vector<double> gaussian_taps(double sigma) {
  const int k = gaussian_window(sigma);
  std::vector<double> g(static_cast<size_t>(k), 0.0);
  double sum = 0;
  for (int i = 0; i < k; ++i) {
    const double d = (1.0 - k) / 2.0 + i;  // torch.arange((1 − k)/2, (1 + k)/2)
    g[size_t(i)] = std::exp(-(d / sigma) * (d / sigma) / 2.0);
    sum += g[size_t(i)];
  }
  for (auto& v : g) v /= sum;
  return g;
}

// For every output position o and tap a, the source index of the reflect-padded input
// (PyTorch "reflect": −1 → 1, n → n − 2).
std::vector<int64_t> reflect_table(int64_t n, int k) {
  const int p = (k - 1) / 2;
  std::vector<int64_t> t(static_cast<size_t>(n * k));
  for (int64_t o = 0; o < n; ++o)
    for (int a = 0; a < k; ++a) {
      int64_t i = o + a - p;
      if (i < 0) i = -i;
      if (i >= n) i = 2 * (n - 1) - i;
      t[size_t(o * k + a)] = i;
    }
  return t;
}

// One row convolved along W: out[w] = Σ_a g[a]·row[reflect(w + a − p)]. The interior, where no
// reflection happens, runs tap by tap over contiguous memory (vectorised); the p border voxels
// on each side go through the reflection table.
void blur_row(const double* row, double* out, int64_t W, const std::vector<double>& g, const std::vector<int64_t>& table) {
  const int k = int(g.size()), p = (k - 1) / 2;
  const int64_t lo = std::min<int64_t>(p, W), hi = std::max<int64_t>(W - p, lo);
  auto border = [&](int64_t w) {
    const int64_t* t = &table[size_t(w * k)];
    double acc = 0;
    for (int a = 0; a < k; ++a) acc += g[size_t(a)] * row[t[a]];
    out[w] = acc;
  };
  for (int64_t w = 0; w < lo; ++w) border(w);
  std::fill(out + lo, out + hi, 0.0);
  for (int a = 0; a < k; ++a) {
    const double ga = g[size_t(a)];
    const double* r = row + a - p;
    for (int64_t w = lo; w < hi; ++w) out[w] += ga * r[w];
  }
  for (int64_t w = hi; w < W; ++w) border(w);
}

// out[0..len) = Σ_a g[a]·in[table[o·k + a]·stride + …]: the H pass within a slice (rows of W,
// stride W) or the D pass across slices (whole slices, stride H·W), for output line/slice o.
void blur_lines(const double* in, int64_t stride, double* out, int64_t len, int64_t o, const std::vector<double>& g,
                const std::vector<int64_t>& table) {
  const int k = int(g.size());
  std::fill(out, out + len, 0.0);
  for (int a = 0; a < k; ++a) {
    const double ga = g[size_t(a)];
    const double* r = in + table[size_t(o * k + a)] * stride;
    for (int64_t i = 0; i < len; ++i) out[i] += ga * r[i];
  }
}

void check_ssim_shape(Shape3 s, int k) {
  const int p = (k - 1) / 2;
  for (int ax = 0; ax < 3; ++ax)
    if (s[size_t(ax)] <= p)
      throw std::invalid_argument("SSIM: volume " + io::shape_string(s) + " is too small for the " + std::to_string(k) +
                                  "-voxel Gaussian window: reflection padding by " + std::to_string(p) +
                                  " needs every axis longer than " + std::to_string(p) + " voxels");
}

// SSIM and cs of two double volumes (see the header for the formulas).
SsimResult ssim_core(const double* x, const double* y, Shape3 s, const SsimOptions& opt) {
  if (!(opt.sigma > 0)) throw std::invalid_argument("SSIM: sigma must be > 0, got " + std::to_string(opt.sigma));
  if (!(opt.data_range > 0)) throw std::invalid_argument("SSIM: data_range must be > 0");
  const int k = gaussian_window(opt.sigma);
  check_ssim_shape(s, k);
  const int64_t n = numel(s), plane = s[1] * s[2];
  const auto g = gaussian_taps(opt.sigma);
  const std::array<std::vector<int64_t>, 3> tables{reflect_table(s[0], k), reflect_table(s[1], k), reflect_table(s[2], k)};

  // The five local moments E[x], E[y], E[x²], E[y²], E[xy], in two passes over D slices (two
  // fork/joins in all, which matters on a busy machine): (1) per slice, blur along W then H;
  // (2) per output slice, blur along D and reduce the SSIM and cs maps of that slice at once.
  const int64_t H = s[1], W = s[2];
  std::vector<double> wh(static_cast<size_t>(5 * n));  // map-major: moment m at wh[m·n …]
  parallel_for(s[0], 1, [&](int64_t d0, int64_t d1) {
    std::vector<double> src(static_cast<size_t>(plane)), row_blurred(static_cast<size_t>(plane));
    for (int64_t d = d0; d < d1; ++d)
      for (int m = 0; m < 5; ++m) {
        const double* xs = x + d * plane;
        const double* ys = y + d * plane;
        for (int64_t i = 0; i < plane; ++i)
          src[size_t(i)] = m == 0 ? xs[i] : m == 1 ? ys[i] : m == 2 ? xs[i] * xs[i] : m == 3 ? ys[i] * ys[i] : xs[i] * ys[i];
        for (int64_t h = 0; h < H; ++h) blur_row(&src[size_t(h * W)], &row_blurred[size_t(h * W)], W, g, tables[2]);
        double* dst = &wh[size_t(m * n + d * plane)];
        for (int64_t h = 0; h < H; ++h) blur_lines(row_blurred.data(), W, dst + h * W, W, h, g, tables[1]);
      }
  });

  const double c1 = std::pow(opt.k1 * opt.data_range, 2), c2 = std::pow(opt.k2 * opt.data_range, 2);
  const int64_t p = (k - 1) / 2;
  // Per-slice sums (double), combined in slice order.
  std::vector<double> ssim_slice(static_cast<size_t>(s[0])), cs_slice(static_cast<size_t>(s[0]));
  parallel_for(s[0], 1, [&](int64_t d0, int64_t d1) {
    std::vector<double> mom(static_cast<size_t>(5 * plane));
    for (int64_t d = d0; d < d1; ++d) {
      for (int m = 0; m < 5; ++m) blur_lines(&wh[size_t(m * n)], plane, &mom[size_t(m * plane)], plane, d, g, tables[0]);
      double ssum = 0, csum = 0;
      const bool inner_d = d >= p && d < s[0] - p;
      for (int64_t h = 0; h < H; ++h) {
        const bool inner_dh = inner_d && h >= p && h < H - p;
        for (int64_t w = 0; w < W; ++w) {
          const size_t i = size_t(h * W + w);
          const double mx = mom[i], my = mom[size_t(plane) + i];
          const double mx2 = mx * mx, my2 = my * my, mxy = mx * my;
          const double vx = std::max(mom[size_t(2 * plane) + i] - mx2, 0.0);
          const double vy = std::max(mom[size_t(3 * plane) + i] - my2, 0.0);
          const double cov = mom[size_t(4 * plane) + i] - mxy;
          const double upper = 2 * cov + c2, lower = vx + vy + c2;
          ssum += ((2 * mxy + c1) * upper) / ((mx2 + my2 + c1) * lower);
          if (inner_dh && w >= p && w < W - p) csum += upper / lower;
        }
      }
      ssim_slice[size_t(d)] = ssum;
      cs_slice[size_t(d)] = csum;
    }
  });
  double ssum = 0, csum = 0;
  for (int64_t d = 0; d < s[0]; ++d) ssum += ssim_slice[size_t(d)], csum += cs_slice[size_t(d)];
  const bool has_inner = s[0] > 2 * p && s[1] > 2 * p && s[2] > 2 * p;
  const int64_t inner = (s[0] - 2 * p) * (s[1] - 2 * p) * (s[2] - 2 * p);
  SsimResult r;
  r.ssim = ssum / double(n);
  // torchmetrics takes the mean of an empty tensor (NaN) when an axis is ≤ 2·pad.
  r.cs = has_inner ? csum / double(inner) : std::numeric_limits<double>::quiet_NaN();
  return r;
}

// 2×2×2 average pooling, odd sizes floored (F.avg_pool3d(x, 2)).
std::vector<double> avg_pool2(const std::vector<double>& v, Shape3 s, Shape3& out_shape) {
  out_shape = {s[0] / 2, s[1] / 2, s[2] / 2};
  const Shape3 o = out_shape;
  std::vector<double> out(static_cast<size_t>(numel(o)));
  parallel_for(o[0], 1, [&](int64_t d0, int64_t d1) {
    for (int64_t d = d0; d < d1; ++d)
      for (int64_t h = 0; h < o[1]; ++h)
        for (int64_t w = 0; w < o[2]; ++w) {
          double acc = 0;
          for (int a = 0; a < 2; ++a)
            for (int b = 0; b < 2; ++b)
              for (int c = 0; c < 2; ++c) acc += v[size_t(((2 * d + a) * s[1] + 2 * h + b) * s[2] + 2 * w + c)];
          out[size_t((d * o[1] + h) * o[2] + w)] = acc / 8.0;
        }
  });
  return out;
}

std::vector<double> to_double(const float* p, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  parallel_for(n, 1 << 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) v[size_t(i)] = p[i];
  });
  return v;
}

}  // namespace

// ---- voxel-wise errors -------------------------------------------------------------------------

double mae(const float* a, const float* b, int64_t n) {
  check_buffers(a, b, n, "MAE");
  return deterministic_sum(n, [&](int64_t i) { return std::fabs(double(a[i]) - double(b[i])); }) / double(n);
}

double mse(const float* a, const float* b, int64_t n) {
  check_buffers(a, b, n, "MSE");
  return deterministic_sum(n, [&](int64_t i) {
           const double d = double(a[i]) - double(b[i]);
           return d * d;
         }) /
         double(n);
}

double psnr(const float* a, const float* b, int64_t n, double data_range) {
  const double e = mse(a, b, n);
  if (e == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(data_range * data_range / e);
}

double mae(const io::Volume& a, const io::Volume& b) {
  check_same_shape(a, b, "MAE");
  return mae(a.data.data(), b.data.data(), a.numel());
}
double mse(const io::Volume& a, const io::Volume& b) {
  check_same_shape(a, b, "MSE");
  return mse(a.data.data(), b.data.data(), a.numel());
}
double psnr(const io::Volume& a, const io::Volume& b, double data_range) {
  check_same_shape(a, b, "PSNR");
  return psnr(a.data.data(), b.data.data(), a.numel(), data_range);
}

// ---- SSIM / MS-SSIM ------------------------------------------------------------------------------

int gaussian_window(double sigma) { return 2 * int(3.5 * sigma + 0.5) + 1; }

SsimResult ssim3d_full(const float* preds, const float* target, Shape3 shape, const SsimOptions& opt) {
  check_buffers(preds, target, numel(shape), "SSIM");
  const auto x = to_double(preds, numel(shape)), y = to_double(target, numel(shape));
  return ssim_core(x.data(), y.data(), shape, opt);
}

double ssim3d(const float* preds, const float* target, Shape3 shape, const SsimOptions& opt) {
  return ssim3d_full(preds, target, shape, opt).ssim;
}

double ssim3d(const io::Volume& preds, const io::Volume& target, const SsimOptions& opt) {
  check_same_shape(preds, target, "SSIM");
  return ssim3d(preds.data.data(), target.data.data(), preds.shape, opt);
}

std::string ms_ssim_problem(Shape3 s, const SsimOptions& opt) {
  const int k = gaussian_window(opt.sigma), p = (k - 1) / 2;
  const int64_t div = 16;  // (number of betas − 1)²; also the total down-sampling 2⁴
  std::string why;
  auto add = [&](const std::string& w) { why += (why.empty() ? "" : "; ") + w; };
  if (s[1] < 32 || s[2] < 32) add("H and W must be ≥ 32 (2^5)");
  if (s[1] / div <= k - 1) add("H//16 = " + std::to_string(s[1] / div) + " must be > " + std::to_string(k - 1));
  if (s[2] / div <= k - 1) add("W//16 = " + std::to_string(s[2] / div) + " must be > " + std::to_string(k - 1));
  if (s[0] / div <= p)
    add("D//16 = " + std::to_string(s[0] / div) + " must be > " + std::to_string(p) +
        " (the reflection padding at the coarsest scale)");
  if (why.empty()) return "";
  char sigma[32];
  std::snprintf(sigma, sizeof sigma, "%g", opt.sigma);
  return "MS-SSIM (5 scales, Gaussian σ " + std::string(sigma) + ", window " + std::to_string(k) +
         ") is not defined for a " + io::shape_string(s) + " (D×H×W) volume: " + why +
         ". Use a larger volume, or ms_ssim3d_padded (zero-pads to " + io::shape_string(ms_ssim_legal_shape(s, opt)) +
         ", as the reference metrics.py does with 192×224×192)";
}

Shape3 ms_ssim_legal_shape(Shape3 s, const SsimOptions& opt) {
  const int k = gaussian_window(opt.sigma), p = (k - 1) / 2;
  const int64_t hw_min = std::max<int64_t>(32, 16 * int64_t(k)), d_min = 16 * int64_t(p + 1);
  return {std::max(s[0], d_min), std::max(s[1], hw_min), std::max(s[2], hw_min)};
}

double ms_ssim3d(const float* preds, const float* target, Shape3 shape, const SsimOptions& opt) {
  check_buffers(preds, target, numel(shape), "MS-SSIM");
  if (auto why = ms_ssim_problem(shape, opt); !why.empty()) throw std::invalid_argument(why);
  auto x = to_double(preds, numel(shape)), y = to_double(target, numel(shape));
  Shape3 s = shape;
  double result = 1.0;
  for (size_t scale = 0; scale < kMsSsimBetas.size(); ++scale) {
    const SsimResult r = ssim_core(x.data(), y.data(), s, opt);
    const bool last = scale + 1 == kMsSsimBetas.size();
    const double v = std::max(last ? r.ssim : r.cs, 0.0);  // normalize = "relu"
    result *= std::pow(v, kMsSsimBetas[scale]);
    if (!last) {
      Shape3 next;
      x = avg_pool2(x, s, next);
      y = avg_pool2(y, s, next);
      s = next;
    }
  }
  return result;
}

double ms_ssim3d(const io::Volume& preds, const io::Volume& target, const SsimOptions& opt) {
  check_same_shape(preds, target, "MS-SSIM");
  return ms_ssim3d(preds.data.data(), target.data.data(), preds.shape, opt);
}

PaddedMsSsim ms_ssim3d_padded(const io::Volume& preds, const io::Volume& target, const SsimOptions& opt) {
  check_same_shape(preds, target, "MS-SSIM");
  PaddedMsSsim r;
  r.shape = ms_ssim_legal_shape(preds.shape, opt);
  r.padded = r.shape != preds.shape;
  if (!r.padded) {
    r.value = ms_ssim3d(preds, target, opt);
    return r;
  }
  const io::Volume a = io::pad_crop_to(preds, r.shape), b = io::pad_crop_to(target, r.shape);
  r.value = ms_ssim3d(a, b, opt);
  return r;
}

ReferenceProtocolMetrics reference_protocol_metrics(const io::Volume& real, const io::Volume& syn, Shape3 shape,
                                                    bool with_ms_ssim) {
  check_same_shape(real, syn, "reference-protocol metrics");
  const int64_t n = real.numel();
  const double real_mean = deterministic_sum(n, [&](int64_t i) { return double(real.data[size_t(i)]); }) / double(n);
  const double syn_mean = deterministic_sum(n, [&](int64_t i) { return double(syn.data[size_t(i)]); }) / double(n);
  if (!(syn_mean != 0) || !std::isfinite(syn_mean))
    throw std::invalid_argument("reference-protocol metrics: the synthetic volume's mean is " + std::to_string(syn_mean) +
                                "; it cannot be scaled to the real mean");
  ReferenceProtocolMetrics r;
  r.scale = real_mean / syn_mean;
  io::Volume scaled = syn;
  for (auto& v : scaled.data) v = float(double(v) * r.scale);
  const io::Volume a = io::pad_crop_to(scaled, shape), b = io::pad_crop_to(real, shape);
  r.mae = mae(a, b);
  r.psnr = psnr(a, b);
  if (with_ms_ssim) r.ms_ssim = ms_ssim3d(a, b, ssim_reference());
  return r;
}

}  // namespace cpets::eval
