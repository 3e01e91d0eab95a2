// GroupNorm (and GroupNorm+SiLU), LayerNorm, BatchNorm3d and softmax with their backwards.
// GroupNorm and BatchNorm both reduce to per-(sample, channel) "rows" of S spatial elements:
// the forward is y = f((x − center)·scale + shift) per row, the backward two passes, a per-row
// pair of sums and then dx = k_dy·g + k_x·(x − center) + k0 per row; only the statistics and the
// per-row coefficients differ, and those are computed here in double.
#include "engine/ops_norm.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops_cuda.h"
#include "kernels/cpu/norm.h"

namespace cpets {
namespace {

namespace kc = kernels::cpu;

void require_param(const Tensor& p, int64_t n, const char* op, const char* what, const Tensor& x) {
  if (!p.defined()) return;
  if (p.device() != x.device())
    throw std::invalid_argument(std::string(op) + ": " + what + " is on " + device_name(p.device()) + " but input " +
                                x.str() + " is on " + device_name(x.device()) + "; move both to one device first");
  if (p.shape() != Shape{n})
    throw std::invalid_argument(std::string(op) + ": " + what + " has shape " + p.str() + " but input " + x.str() +
                                " needs (" + std::to_string(n) + ")");
}

// Parameter value for channel c: gamma defaults to 1, beta to 0.
inline float param_or(const Tensor& p, int64_t c, float dflt) { return p.defined() ? p.data()[c] : dflt; }

Tensor vector_tensor(const std::vector<double>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())});
  for (size_t i = 0; i < v.size(); ++i) t.data()[i] = static_cast<float>(v[i]);
  return t;
}

// Per-row coefficients of the forward y = f((x − center)·scale + shift).
struct RowAffine {
  std::vector<float> center, scale, shift;
  explicit RowAffine(int64_t rows) : center(rows), scale(rows), shift(rows) {}
};

// ---- GroupNorm ---------------------------------------------------------------------------------

struct GroupNormDims {
  int64_t B, C, G, Cg, S;
};

GroupNormDims check_group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta,
                               const char* op) {
  if (!x.defined()) throw std::invalid_argument(std::string(op) + ": input is undefined");
  if (x.dim() < 2)
    throw std::invalid_argument(std::string(op) + ": input " + x.str() + " must be (B, C, ...) with at least 2 dims");
  const int64_t C = x.size(1);
  if (groups <= 0 || C % groups != 0)
    throw std::invalid_argument(std::string(op) + ": " + std::to_string(C) + " channels of input " + x.str() +
                                " cannot be split into " + std::to_string(groups) +
                                " groups; pick a group count that divides C");
  require_param(gamma, C, op, "gamma", x);
  require_param(beta, C, op, "beta", x);
  const int64_t B = x.size(0);
  const int64_t S = B * C > 0 ? x.numel() / (B * C) : 0;
  return {B, C, groups, C / groups, S};
}

RowAffine group_norm_rows(const GroupNormDims& d, const std::vector<float>& mean, const std::vector<float>& rstd,
                          const Tensor& gamma, const Tensor& beta) {
  RowAffine a(d.B * d.C);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t c = 0; c < d.C; ++c) {
      const int64_t r = b * d.C + c, bg = b * d.G + c / d.Cg;
      a.center[r] = mean[bg];
      a.scale[r] = rstd[bg] * param_or(gamma, c, 1.f);
      a.shift[r] = param_or(beta, c, 0.f);
    }
  return a;
}

struct GroupNormSaved {
  GroupNormDims d;
  std::vector<float> mean, rstd;  // per (b, g)
};

std::vector<Tensor> group_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                        const GroupNormSaved& sv, bool silu, const std::vector<bool>& needs) {
  const GroupNormDims& d = sv.d;
  const int64_t rows = d.B * d.C;
  const RowAffine a = group_norm_rows(d, sv.mean, sv.rstd, gamma, beta);
  std::vector<double> sum_g(rows), sum_gx(rows);
  // With SiLU, the first pass stores g = dy·SiLU'(z) in the dx buffer: one more write, but the
  // second pass then skips a second exp and division per element (compute-bound otherwise).
  Tensor gx = needs[0] ? Tensor::empty(x.shape()) : Tensor();
  float* g_store = silu && gx.defined() ? gx.data() : nullptr;
  kc::row_grad_sums(gy.data(), x.data(), rows, d.S, a.center.data(), a.scale.data(), a.shift.data(), silu,
                    sum_g.data(), sum_gx.data(), g_store);
  Tensor ggamma, gbeta;
  if (needs[1] && gamma.defined()) {
    std::vector<double> acc(d.C, 0.0);
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t c = 0; c < d.C; ++c) acc[c] += double(sv.rstd[b * d.G + c / d.Cg]) * sum_gx[b * d.C + c];
    ggamma = vector_tensor(acc);
  }
  if (needs[2] && beta.defined()) {
    std::vector<double> acc(d.C, 0.0);
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t c = 0; c < d.C; ++c) acc[c] += sum_g[b * d.C + c];
    gbeta = vector_tensor(acc);
  }
  if (needs[0]) {
    // dx = r·(γ·g − mean_group(γ·g) − x̂·mean_group(γ·g·x̂)), x̂ = (x − μ)·r.
    RowAffine k(rows);  // reused as k_dy, k_x, k0
    const double n = double(d.Cg * d.S);
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t g = 0; g < d.G; ++g) {
        const double r = sv.rstd[b * d.G + g];
        double m1 = 0, m2 = 0;
        for (int64_t c = g * d.Cg; c < (g + 1) * d.Cg; ++c) {
          const double gm = param_or(gamma, c, 1.f);
          m1 += gm * sum_g[b * d.C + c];
          m2 += gm * r * sum_gx[b * d.C + c];
        }
        m1 /= n;
        m2 /= n;
        for (int64_t c = g * d.Cg; c < (g + 1) * d.Cg; ++c) {
          const int64_t row = b * d.C + c;
          k.center[row] = static_cast<float>(r * param_or(gamma, c, 1.f));
          k.scale[row] = static_cast<float>(-r * r * m2);
          k.shift[row] = static_cast<float>(-r * m1);
        }
      }
    const float* g = g_store ? g_store : gy.data();
    kc::row_grad_apply(g, x.data(), gx.data(), rows, d.S, a.center.data(), a.scale.data(), a.shift.data(), false,
                       k.center.data(), k.scale.data(), k.shift.data());
  }
  return {gx, ggamma, gbeta};
}

Tensor group_norm_op(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu) {
  const char* op = silu ? "group_norm_silu" : "group_norm";
  const GroupNormDims d = check_group_norm(x, groups, gamma, beta, op);
  CPETS_ROUTE_CUDA(x, group_norm(x, groups, gamma, beta, eps, silu));
  Tensor y = Tensor::empty(x.shape());
  if (x.numel() == 0) return y;
  auto sv = std::make_shared<GroupNormSaved>();
  sv->d = d;
  const int64_t BG = d.B * d.G;
  std::vector<double> mean(BG), var(BG);
  kc::segment_moments(x.data(), 1, BG, d.Cg * d.S, mean.data(), var.data());
  sv->mean.resize(BG);
  sv->rstd.resize(BG);
  for (int64_t i = 0; i < BG; ++i) {
    sv->mean[i] = static_cast<float>(mean[i]);
    sv->rstd[i] = static_cast<float>(1.0 / std::sqrt(var[i] + double(eps)));
  }
  const RowAffine a = group_norm_rows(d, sv->mean, sv->rstd, gamma, beta);
  kc::affine_rows(x.data(), y.data(), d.B * d.C, d.S, a.center.data(), a.scale.data(), a.shift.data(), silu);
  return record(y, op, {x, gamma, beta},
                [x = x.detach(), gamma = gamma.defined() ? gamma.detach() : Tensor(),
                 beta = beta.defined() ? beta.detach() : Tensor(), sv, silu](const Tensor& gy,
                                                                             const std::vector<bool>& needs) {
                  return group_norm_backward(gy, x, gamma, beta, *sv, silu, needs);
                });
}

}  // namespace

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps) {
  return group_norm_op(x, groups, gamma, beta, eps, false);
}

Tensor group_norm_silu(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps) {
  return group_norm_op(x, groups, gamma, beta, eps, true);
}

// ---- LayerNorm ---------------------------------------------------------------------------------

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  const char* op = "layer_norm";
  if (!x.defined()) throw std::invalid_argument("layer_norm: input is undefined");
  if (x.dim() < 1) throw std::invalid_argument("layer_norm: input " + x.str() + " has no last dimension to normalise");
  const int64_t D = x.size(-1);
  require_param(gamma, D, op, "gamma", x);
  require_param(beta, D, op, "beta", x);
  CPETS_ROUTE_CUDA(x, layer_norm(x, gamma, beta, eps));
  const int64_t rows = D > 0 ? x.numel() / D : 0;
  // The kernel takes both affine parameters or neither: fill in the missing one.
  Tensor g = gamma.defined() ? gamma : (beta.defined() ? Tensor::ones({D}) : Tensor());
  Tensor b = beta.defined() ? beta : (gamma.defined() ? Tensor::zeros({D}) : Tensor());
  Tensor y = Tensor::empty(x.shape());
  auto mean = std::make_shared<std::vector<float>>(rows);
  auto rstd = std::make_shared<std::vector<float>>(rows);
  if (x.numel() > 0)
    kc::layer_norm_forward(x.data(), y.data(), rows, D, g.defined() ? g.data() : nullptr,
                           b.defined() ? b.data() : nullptr, eps, mean->data(), rstd->data());
  return record(y, op, {x, gamma, beta},
                [x = x.detach(), g = g.defined() ? g.detach() : Tensor(), mean, rstd, rows, D,
                 has_gamma = gamma.defined(), has_beta = beta.defined()](const Tensor& gy,
                                                                         const std::vector<bool>& needs) {
                  Tensor gx = needs[0] ? Tensor::empty(x.shape()) : Tensor();
                  Tensor ggamma = needs[1] && has_gamma ? Tensor::empty({D}) : Tensor();
                  Tensor gbeta = needs[2] && has_beta ? Tensor::empty({D}) : Tensor();
                  if (rows > 0)
                    kc::layer_norm_backward(gy.data(), x.data(), rows, D, g.defined() ? g.data() : nullptr,
                                            mean->data(), rstd->data(), gx.defined() ? gx.data() : nullptr,
                                            ggamma.defined() ? ggamma.data() : nullptr,
                                            gbeta.defined() ? gbeta.data() : nullptr);
                  else {
                    if (ggamma.defined()) ggamma.fill_(0.f);
                    if (gbeta.defined()) gbeta.fill_(0.f);
                  }
                  return std::vector<Tensor>{gx, ggamma, gbeta};
                });
}

// ---- BatchNorm3d -------------------------------------------------------------------------------

namespace {

// Per-channel statistics used by the forward (batch or running), kept for the backward.
struct BatchNormSaved {
  int64_t B = 0, C = 0, S = 0;
  bool batch_stats = true;
  std::vector<float> center, rstd;  // per channel: mean and 1/sqrt(var + eps)
};

RowAffine batch_norm_rows(const BatchNormSaved& sv, const Tensor& gamma, const Tensor& beta) {
  RowAffine a(sv.B * sv.C);
  for (int64_t b = 0; b < sv.B; ++b)
    for (int64_t c = 0; c < sv.C; ++c) {
      a.center[b * sv.C + c] = sv.center[c];
      a.scale[b * sv.C + c] = sv.rstd[c] * param_or(gamma, c, 1.f);
      a.shift[b * sv.C + c] = param_or(beta, c, 0.f);
    }
  return a;
}

// Batch statistics of x per channel; updates the running statistics in place when given.
void batch_statistics(const Tensor& x, BatchNormSaved& sv, Tensor& running_mean, Tensor& running_var,
                      float momentum, float eps) {
  std::vector<double> mean(sv.C), var(sv.C);
  kc::segment_moments(x.data(), sv.B, sv.C, sv.S, mean.data(), var.data());
  for (int64_t c = 0; c < sv.C; ++c) {
    sv.center[c] = static_cast<float>(mean[c]);
    sv.rstd[c] = static_cast<float>(1.0 / std::sqrt(var[c] + double(eps)));
  }
  if (!running_mean.defined()) return;
  const double n = double(sv.B * sv.S), unbias = n / (n - 1.0);
  float* rm = running_mean.data();
  float* rv = running_var.data();
  for (int64_t c = 0; c < sv.C; ++c) {
    rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + double(momentum) * mean[c]);
    rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + double(momentum) * var[c] * unbias);
  }
}

std::vector<Tensor> batch_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& gamma, bool has_beta,
                                        const BatchNormSaved& sv, const std::vector<bool>& needs) {
  const int64_t B = sv.B, C = sv.C, rows = B * C;
  const double n = double(B * sv.S);
  std::vector<float> center(rows);
  for (int64_t row = 0; row < rows; ++row) center[row] = sv.center[row % C];
  std::vector<double> sum_g(rows), sum_gx(rows);
  kc::row_grad_sums(gy.data(), x.data(), rows, sv.S, center.data(), nullptr, nullptr, false, sum_g.data(),
                    sum_gx.data());
  std::vector<double> s1(C, 0.0), s2(C, 0.0);  // Σ dy and Σ dy·(x − center) per channel
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      s1[c] += sum_g[b * C + c];
      s2[c] += sum_gx[b * C + c];
    }
  Tensor gx, ggamma, gbeta;
  if (needs[1] && gamma.defined()) {
    std::vector<double> v(C);
    for (int64_t c = 0; c < C; ++c) v[c] = double(sv.rstd[c]) * s2[c];
    ggamma = vector_tensor(v);
  }
  if (needs[2] && has_beta) gbeta = vector_tensor(s1);
  if (needs[0]) {
    // Batch statistics: dx = rγ·(dy − mean(dy) − x̂·mean(dy·x̂)); running ones: dx = rγ·dy.
    RowAffine k(rows);  // reused as k_dy, k_x, k0
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) {
        const double r = sv.rstd[c], rg = r * param_or(gamma, c, 1.f);
        const int64_t row = b * C + c;
        k.center[row] = static_cast<float>(rg);
        k.scale[row] = sv.batch_stats ? static_cast<float>(-rg * r * r * s2[c] / n) : 0.f;
        k.shift[row] = sv.batch_stats ? static_cast<float>(-rg * s1[c] / n) : 0.f;
      }
    gx = Tensor::empty(x.shape());
    kc::row_grad_apply(gy.data(), x.data(), gx.data(), rows, sv.S, center.data(), nullptr, nullptr, false,
                       k.center.data(), k.scale.data(), k.shift.data());
  }
  return {gx, ggamma, gbeta};
}

void check_batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                      const Tensor& running_var) {
  const char* op = "batch_norm3d";
  if (!x.defined()) throw std::invalid_argument("batch_norm3d: input is undefined");
  if (x.dim() != 5) throw std::invalid_argument("batch_norm3d: input " + x.str() + " must be (B, C, D, H, W)");
  const int64_t C = x.size(1);
  require_param(gamma, C, op, "gamma", x);
  require_param(beta, C, op, "beta", x);
  require_param(running_mean, C, op, "running_mean", x);
  require_param(running_var, C, op, "running_var", x);
  if (running_mean.defined() != running_var.defined())
    throw std::invalid_argument("batch_norm3d: give both running_mean and running_var, or neither");
}

}  // namespace

Tensor batch_norm3d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor running_mean,
                    Tensor running_var, bool training, float momentum, float eps) {
  check_batch_norm(x, gamma, beta, running_mean, running_var);
  CPETS_ROUTE_CUDA(x, batch_norm3d(x, gamma, beta, running_mean, running_var, training, momentum, eps));
  auto sv = std::make_shared<BatchNormSaved>();
  sv->B = x.size(0);
  sv->C = x.size(1);
  sv->S = sv->B * sv->C > 0 ? x.numel() / (sv->B * sv->C) : 0;
  sv->center.resize(sv->C);
  sv->rstd.resize(sv->C);
  // Without running statistics (track_running_stats=False) eval also uses the batch's.
  sv->batch_stats = training || !running_mean.defined();
  if (sv->batch_stats) {
    const int64_t n = sv->B * sv->S;
    if (n <= 1)
      throw std::invalid_argument("batch_norm3d: input " + x.str() + " has " + std::to_string(n) +
                                  " value(s) per channel; batch statistics need more than 1");
    Tensor no_update;
    batch_statistics(x, *sv, training ? running_mean : no_update, training ? running_var : no_update, momentum, eps);
  } else {
    for (int64_t c = 0; c < sv->C; ++c) {
      sv->center[c] = running_mean.data()[c];
      sv->rstd[c] = static_cast<float>(1.0 / std::sqrt(double(running_var.data()[c]) + double(eps)));
    }
  }
  Tensor y = Tensor::empty(x.shape());
  const RowAffine a = batch_norm_rows(*sv, gamma, beta);
  kc::affine_rows(x.data(), y.data(), sv->B * sv->C, sv->S, a.center.data(), a.scale.data(), a.shift.data(), false);
  return record(y, "batch_norm3d", {x, gamma, beta},
                [x = x.detach(), gamma = gamma.defined() ? gamma.detach() : Tensor(), has_beta = beta.defined(),
                 sv](const Tensor& gy, const std::vector<bool>& needs) {
                  return batch_norm_backward(gy, x, gamma, has_beta, *sv, needs);
                });
}

// ---- softmax -----------------------------------------------------------------------------------

Tensor softmax(const Tensor& x, int64_t dim) {
  if (!x.defined()) throw std::invalid_argument("softmax: input is undefined");
  const int64_t nd = std::max<int64_t>(x.dim(), 1);
  const int64_t d = dim < 0 ? dim + nd : dim;
  if (d < 0 || d >= nd)
    throw std::invalid_argument("softmax: dim " + std::to_string(dim) + " is out of range for input " + x.str());
  int64_t outer = 1, inner = 1;
  const int64_t D = x.dim() == 0 ? 1 : x.size(d);
  for (int64_t i = 0; i < d; ++i) outer *= x.size(i);
  for (int64_t i = d + 1; i < x.dim(); ++i) inner *= x.size(i);
  Tensor y = Tensor::empty(x.shape(), x.device());
  if (x.numel() > 0) dispatch::softmax_forward(x.device(), x.data(), y.data(), outer, D, inner);
  return record(y, "softmax", {x},
                [y = y.detach(), outer, D, inner](const Tensor& gy, const std::vector<bool>&) {
                  Tensor gx = Tensor::empty(y.shape(), y.device());
                  if (y.numel() > 0) dispatch::softmax_backward(y.device(), y.data(), gy.data(), gx.data(), outer, D, inner);
                  return std::vector<Tensor>{gx};
                });
}

}  // namespace cpets
