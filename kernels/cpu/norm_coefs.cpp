// The per-row coefficient computations of GroupNorm and BatchNorm (norm.h), in double, with the
// same arithmetic in the same order as kernels/cuda/norm.cu's small kernels. Not per ISA level:
// these loops are over rows and channels, not voxels.
#include <cmath>

#include "kernels/cpu/norm.h"

namespace cpets::kernels::cpu {
namespace {
inline float param_or(const float* p, int64_t c, float dflt) { return p ? p[c] : dflt; }
}  // namespace

void group_norm_rows(const double* mean, const double* var, float eps, const float* gamma, const float* beta,
                     int64_t B, int64_t C, int64_t G, float* mean_out, float* rstd_out, float* center, float* scale,
                     float* shift) {
  for (int64_t bg = 0; bg < B * G; ++bg) {
    mean_out[bg] = static_cast<float>(mean[bg]);
    rstd_out[bg] = static_cast<float>(1.0 / std::sqrt(var[bg] + double(eps)));
  }
  const int64_t Cg = C / G;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t r = b * C + c, bg = b * G + c / Cg;
      center[r] = mean_out[bg];
      scale[r] = rstd_out[bg] * param_or(gamma, c, 1.f);
      shift[r] = param_or(beta, c, 0.f);
    }
}

void group_norm_backward_coefs(const double* sum_g, const double* sum_gx, const float* rstd, const float* gamma,
                               int64_t B, int64_t C, int64_t G, int64_t S, float* k_dy, float* k_x, float* k0,
                               float* dgamma, float* dbeta) {
  const int64_t Cg = C / G;
  // dγ = Σ_b r·Σ g·(x − μ), dβ = Σ_b Σ g, summed over the batch in order.
  for (int64_t c = 0; c < C && (dgamma || dbeta); ++c) {
    double ag = 0, ab = 0;
    for (int64_t b = 0; b < B; ++b) {
      ag += double(rstd[b * G + c / Cg]) * sum_gx[b * C + c];
      ab += sum_g[b * C + c];
    }
    if (dgamma) dgamma[c] = static_cast<float>(ag);
    if (dbeta) dbeta[c] = static_cast<float>(ab);
  }
  if (!k_dy) return;
  // dx = r·(γ·g − mean_group(γ·g) − x̂·mean_group(γ·g·x̂)), x̂ = (x − μ)·r.
  const double n = double(Cg * S);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g) {
      const double r = rstd[b * G + g];
      double m1 = 0, m2 = 0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        const double gm = param_or(gamma, c, 1.f);
        m1 += gm * sum_g[b * C + c];
        m2 += gm * r * sum_gx[b * C + c];
      }
      m1 /= n;
      m2 /= n;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        const int64_t row = b * C + c;
        k_dy[row] = static_cast<float>(r * param_or(gamma, c, 1.f));
        k_x[row] = static_cast<float>(-r * r * m2);
        k0[row] = static_cast<float>(-r * m1);
      }
    }
}

void batch_norm_stats(const double* mean, const double* var, int64_t C, double n, float eps, float* center,
                      float* rstd, float* running_mean, float* running_var, float momentum) {
  const double unbias = n / (n - 1.0);
  for (int64_t c = 0; c < C; ++c) {
    center[c] = static_cast<float>(mean[c]);
    rstd[c] = static_cast<float>(1.0 / std::sqrt(var[c] + double(eps)));
    if (!running_mean) continue;
    running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + double(momentum) * mean[c]);
    running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + double(momentum) * var[c] * unbias);
  }
}

void batch_norm_running_stats(const float* running_mean, const float* running_var, int64_t C, float eps,
                              float* center, float* rstd) {
  for (int64_t c = 0; c < C; ++c) {
    center[c] = running_mean[c];
    rstd[c] = static_cast<float>(1.0 / std::sqrt(double(running_var[c]) + double(eps)));
  }
}

void batch_norm_rows(const float* center, const float* rstd, const float* gamma, const float* beta, int64_t B,
                     int64_t C, float* row_center, float* row_scale, float* row_shift) {
  for (int64_t row = 0; row < B * C; ++row) {
    const int64_t c = row % C;
    row_center[row] = center[c];
    row_scale[row] = rstd[c] * param_or(gamma, c, 1.f);
    row_shift[row] = param_or(beta, c, 0.f);
  }
}

void batch_norm_backward_coefs(const double* sum_g, const double* sum_gx, const float* rstd, const float* gamma,
                               int64_t B, int64_t C, double n, bool batch_stats, float* k_dy, float* k_x, float* k0,
                               float* dgamma, float* dbeta) {
  // Batch statistics: dx = rγ·(dy − mean(dy) − x̂·mean(dy·x̂)); running ones: dx = rγ·dy.
  for (int64_t c = 0; c < C; ++c) {
    double s1 = 0, s2 = 0;
    for (int64_t b = 0; b < B; ++b) {
      s1 += sum_g[b * C + c];
      s2 += sum_gx[b * C + c];
    }
    const double r = rstd[c], rg = r * param_or(gamma, c, 1.f);
    if (dgamma) dgamma[c] = static_cast<float>(r * s2);
    if (dbeta) dbeta[c] = static_cast<float>(s1);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = b * C + c;
      k_dy[row] = static_cast<float>(rg);
      k_x[row] = batch_stats ? static_cast<float>(-rg * r * r * s2 / n) : 0.f;
      k0[row] = batch_stats ? static_cast<float>(-rg * s1 / n) : 0.f;
    }
  }
}

}  // namespace cpets::kernels::cpu
