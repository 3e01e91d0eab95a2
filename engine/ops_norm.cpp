// GroupNorm (and GroupNorm+SiLU), LayerNorm, BatchNorm3d and softmax with their backwards, one
// body for both devices (every computation goes through dispatch). GroupNorm and BatchNorm both
// reduce to per-(sample, channel) "rows" of S spatial elements: the forward is
// y = f((x − center)·scale + shift) per row, the backward two passes, a per-row pair of sums and
// then dx = k_dy·g + k_x·(x − center) + k0 per row; only the statistics and the per-row
// coefficients differ, computed in double by small kernels (kernels/cpu/norm_coefs.cpp, and on
// the GPU as kernels, so no step waits for the host).
#include "engine/ops_norm.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/dispatch.h"

namespace cpets {
namespace {

void require_param(const Tensor& p, int64_t n, const char* op, const char* what, const Tensor& x) {
  if (!p.defined()) return;
  if (p.device() != x.device())
    throw std::invalid_argument(std::string(op) + ": " + what + " is on " + p.device().str() + " but input " +
                                x.str() + " is on " + x.device().str() + "; move both to one device first");
  if (p.shape() != Shape{n})
    throw std::invalid_argument(std::string(op) + ": " + what + " has shape " + p.str() + " but input " + x.str() +
                                " needs (" + std::to_string(n) + ")");
}

const float* data_or_null(const Tensor& t) { return t.defined() ? t.data() : nullptr; }
float* data_or_null(Tensor& t) { return t.defined() ? t.data() : nullptr; }

// Double arrays (statistics, row sums) live in float tensors of twice the length, on the op's
// device (allocator blocks are at least 64-byte aligned).
Tensor doubles(int64_t n, Device d) { return Tensor::empty({2 * n}, d); }
double* as_doubles(const Tensor& t) { return reinterpret_cast<double*>(const_cast<float*>(t.data())); }

// Per-row coefficients of the forward y = f((x − center)·scale + shift), kept for the backward.
struct RowAffine {
  Tensor center, scale, shift;
  RowAffine(int64_t rows, Device d)
      : center(Tensor::empty({rows}, d)), scale(Tensor::empty({rows}, d)), shift(Tensor::empty({rows}, d)) {}
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

struct GroupNormSaved {
  GroupNormDims d;
  std::shared_ptr<RowAffine> rows;
  Tensor rstd;  // per (b, g)
};

std::vector<Tensor> group_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& gamma, bool has_beta,
                                        const GroupNormSaved& sv, bool silu, const std::vector<bool>& needs) {
  const GroupNormDims& d = sv.d;
  const Device dev = x.device();
  const int64_t rows = d.B * d.C;
  const RowAffine& a = *sv.rows;
  const Tensor sum_g = doubles(rows, dev), sum_gx = doubles(rows, dev);
  // With SiLU, the first pass may store g = dy·SiLU'(z) in the dx buffer: one more write, but the
  // second pass then skips a second exp and division per element (compute-bound otherwise).
  Tensor gx = needs[0] ? Tensor::empty(x.shape(), dev) : Tensor();
  const bool stored = dispatch::row_grad_sums(dev, gy.data(), x.data(), rows, d.S, a.center.data(), a.scale.data(),
                                              a.shift.data(), silu, as_doubles(sum_g), as_doubles(sum_gx),
                                              silu ? data_or_null(gx) : nullptr);
  Tensor ggamma = needs[1] && gamma.defined() ? Tensor::empty({d.C}, dev) : Tensor();
  Tensor gbeta = needs[2] && has_beta ? Tensor::empty({d.C}, dev) : Tensor();
  Tensor k_dy, k_x, k0;
  if (needs[0]) k_dy = Tensor::empty({rows}, dev), k_x = Tensor::empty({rows}, dev), k0 = Tensor::empty({rows}, dev);
  dispatch::group_norm_backward_coefs(dev, as_doubles(sum_g), as_doubles(sum_gx), sv.rstd.data(), data_or_null(gamma),
                                      d.B, d.C, d.G, d.S, data_or_null(k_dy), data_or_null(k_x), data_or_null(k0),
                                      data_or_null(ggamma), data_or_null(gbeta));
  if (needs[0])
    dispatch::row_grad_apply(dev, stored ? gx.data() : gy.data(), x.data(), gx.data(), rows, d.S, a.center.data(),
                             a.scale.data(), a.shift.data(), silu && !stored, k_dy.data(), k_x.data(), k0.data());
  return {gx, ggamma, gbeta};
}

Tensor group_norm_op(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu) {
  const char* op = silu ? "group_norm_silu" : "group_norm";
  const GroupNormDims d = check_group_norm(x, groups, gamma, beta, op);
  const Device dev = x.device();
  Tensor y = Tensor::empty(x.shape(), dev);
  if (x.numel() == 0) return y;
  auto sv = std::make_shared<GroupNormSaved>();
  sv->d = d;
  const int64_t BG = d.B * d.G;
  const Tensor mean = doubles(BG, dev), var = doubles(BG, dev);
  dispatch::segment_moments(dev, x.data(), 1, BG, d.Cg * d.S, as_doubles(mean), as_doubles(var));
  sv->rows = std::make_shared<RowAffine>(d.B * d.C, dev);
  sv->rstd = Tensor::empty({BG}, dev);
  Tensor mean_f = Tensor::empty({BG}, dev);
  RowAffine& a = *sv->rows;
  dispatch::group_norm_rows(dev, as_doubles(mean), as_doubles(var), eps, data_or_null(gamma), data_or_null(beta), d.B,
                            d.C, d.G, mean_f.data(), sv->rstd.data(), a.center.data(), a.scale.data(), a.shift.data());
  dispatch::affine_rows(dev, x.data(), y.data(), d.B * d.C, d.S, a.center.data(), a.scale.data(), a.shift.data(), silu);
  return record(y, op, {x, gamma, beta},
                [x = x.detach(), gamma = gamma.defined() ? gamma.detach() : Tensor(), has_beta = beta.defined(), sv,
                 silu](const Tensor& gy, const std::vector<bool>& needs) {
                  return group_norm_backward(gy, x, gamma, has_beta, *sv, silu, needs);
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
  const Device dev = x.device();
  const int64_t rows = D > 0 ? x.numel() / D : 0;
  // The kernels take both affine parameters or neither: fill in the missing one.
  Tensor g = gamma.defined() ? gamma : (beta.defined() ? Tensor::ones({D}, dev) : Tensor());
  Tensor b = beta.defined() ? beta : (gamma.defined() ? Tensor::zeros({D}, dev) : Tensor());
  Tensor y = Tensor::empty(x.shape(), dev);
  Tensor mean = Tensor::empty({rows}, dev), rstd = Tensor::empty({rows}, dev);
  if (x.numel() > 0)
    dispatch::layer_norm_forward(dev, x.data(), y.data(), rows, D, data_or_null(g), data_or_null(b), eps, mean.data(),
                                 rstd.data());
  return record(y, op, {x, gamma, beta},
                [x = x.detach(), g = g.defined() ? g.detach() : Tensor(), mean, rstd, rows, D,
                 has_gamma = gamma.defined(), has_beta = beta.defined()](const Tensor& gy,
                                                                         const std::vector<bool>& needs) {
                  const Device dev = x.device();
                  Tensor gx = needs[0] ? Tensor::empty(x.shape(), dev) : Tensor();
                  Tensor ggamma = needs[1] && has_gamma ? Tensor::empty({D}, dev) : Tensor();
                  Tensor gbeta = needs[2] && has_beta ? Tensor::empty({D}, dev) : Tensor();
                  if (rows > 0)
                    dispatch::layer_norm_backward(dev, gy.data(), x.data(), rows, D, data_or_null(g), mean.data(),
                                                  rstd.data(), data_or_null(gx), data_or_null(ggamma),
                                                  data_or_null(gbeta));
                  else {
                    if (ggamma.defined()) ggamma.fill_(0.f);
                    if (gbeta.defined()) gbeta.fill_(0.f);
                  }
                  return std::vector<Tensor>{gx, ggamma, gbeta};
                });
}

// ---- BatchNorm3d -------------------------------------------------------------------------------

namespace {

// Per-channel statistics used by the forward (batch or running) and the per-row coefficients,
// kept for the backward.
struct BatchNormSaved {
  int64_t B = 0, C = 0, S = 0;
  bool batch_stats = true;
  Tensor rstd;  // per channel: 1/sqrt(var + eps)
  std::shared_ptr<RowAffine> rows;
  ReplicaSum replicas;  // synchronised BatchNorm: the statistics' sum over replicas (else empty)
  double n_total = 0;   // values per channel over all replicas
};

thread_local ReplicaSum g_replica_sum;

// A (doubles) tensor's values on the host, and back.
std::vector<double> host_doubles(const Tensor& t, int64_t n) {
  const Tensor h = t.device() == Device::cpu() ? t : t.to(Device::cpu());
  return std::vector<double>(as_doubles(h), as_doubles(h) + n);
}
void store_doubles(Tensor& t, const std::vector<double>& v) {
  Tensor h = doubles(static_cast<int64_t>(v.size()), Device::cpu());
  std::copy(v.begin(), v.end(), as_doubles(h));
  t.copy_from(h);
}

// Per-channel (mean, biased var) of this replica's n values → those of all replicas; returns
// the total count. Sums Σn·mean and Σn·(var + mean²) in double.
double combine_moments(const ReplicaSum& sum, Tensor& mean, Tensor& var, int64_t C, double n) {
  const std::vector<double> m = host_doubles(mean, C), v = host_doubles(var, C);
  std::vector<double> s(static_cast<size_t>(2 * C + 1));
  for (int64_t c = 0; c < C; ++c) {
    s[size_t(c)] = n * m[size_t(c)];
    s[size_t(C + c)] = n * (v[size_t(c)] + m[size_t(c)] * m[size_t(c)]);
  }
  s[size_t(2 * C)] = n;
  sum(s.data(), 2 * C + 1);
  const double total = s[size_t(2 * C)];
  std::vector<double> gm(static_cast<size_t>(C)), gv(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    gm[size_t(c)] = s[size_t(c)] / total;
    gv[size_t(c)] = std::max(0.0, s[size_t(C + c)] / total - gm[size_t(c)] * gm[size_t(c)]);
  }
  store_doubles(mean, gm);
  store_doubles(var, gv);
  return total;
}

// Row sums (B·C rows) → the per-channel sums over all replicas, laid out as rows again with the
// totals in the first sample's rows and zeros elsewhere, so the coefficient kernel's sum over
// the batch gives the totals.
Tensor replica_row_totals(const ReplicaSum& sum, const Tensor& sum_g, const Tensor& sum_gx, int64_t B, int64_t C,
                          Tensor* totals_gx) {
  const std::vector<double> g = host_doubles(sum_g, B * C), gx = host_doubles(sum_gx, B * C);
  std::vector<double> s(static_cast<size_t>(2 * C), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      s[size_t(c)] += g[size_t(b * C + c)];
      s[size_t(C + c)] += gx[size_t(b * C + c)];
    }
  sum(s.data(), 2 * C);
  std::vector<double> rows_g(static_cast<size_t>(B * C), 0.0), rows_gx(static_cast<size_t>(B * C), 0.0);
  std::copy(s.begin(), s.begin() + C, rows_g.begin());
  std::copy(s.begin() + C, s.end(), rows_gx.begin());
  Tensor out_g = doubles(B * C, sum_g.device());
  *totals_gx = doubles(B * C, sum_g.device());
  store_doubles(out_g, rows_g);
  store_doubles(*totals_gx, rows_gx);
  return out_g;
}

std::vector<Tensor> batch_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& gamma, bool has_beta,
                                        const BatchNormSaved& sv, const std::vector<bool>& needs) {
  const Device dev = x.device();
  const int64_t B = sv.B, C = sv.C, rows = B * C;
  const double n = double(B * sv.S);
  const Tensor sum_g = doubles(rows, dev), sum_gx = doubles(rows, dev);
  dispatch::row_grad_sums(dev, gy.data(), x.data(), rows, sv.S, sv.rows->center.data(), nullptr, nullptr, false,
                          as_doubles(sum_g), as_doubles(sum_gx), nullptr);
  Tensor ggamma = needs[1] && gamma.defined() ? Tensor::empty({C}, dev) : Tensor();
  Tensor gbeta = needs[2] && has_beta ? Tensor::empty({C}, dev) : Tensor();
  Tensor k_dy = Tensor::empty({rows}, dev), k_x = Tensor::empty({rows}, dev), k0 = Tensor::empty({rows}, dev);
  dispatch::batch_norm_backward_coefs(dev, as_doubles(sum_g), as_doubles(sum_gx), sv.rstd.data(), data_or_null(gamma),
                                      B, C, n, sv.batch_stats, k_dy.data(), k_x.data(), k0.data(),
                                      data_or_null(ggamma), data_or_null(gbeta));
  if (sv.replicas && sv.batch_stats) {
    // The input gradient needs the whole batch's sums (γ, β keep this replica's, above).
    Tensor total_gx;
    const Tensor total_g = replica_row_totals(sv.replicas, sum_g, sum_gx, B, C, &total_gx);
    dispatch::batch_norm_backward_coefs(dev, as_doubles(total_g), as_doubles(total_gx), sv.rstd.data(),
                                        data_or_null(gamma), B, C, sv.n_total, true, k_dy.data(), k_x.data(), k0.data(),
                                        nullptr, nullptr);
  }
  Tensor gx;
  if (needs[0]) {
    gx = Tensor::empty(x.shape(), dev);
    dispatch::row_grad_apply(dev, gy.data(), x.data(), gx.data(), rows, sv.S, sv.rows->center.data(), nullptr,
                             nullptr, false, k_dy.data(), k_x.data(), k0.data());
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
  const Device dev = x.device();
  auto sv = std::make_shared<BatchNormSaved>();
  sv->B = x.size(0);
  sv->C = x.size(1);
  sv->S = sv->B * sv->C > 0 ? x.numel() / (sv->B * sv->C) : 0;
  const int64_t C = sv->C;
  Tensor center = Tensor::empty({C}, dev);
  sv->rstd = Tensor::empty({C}, dev);
  // Without running statistics (track_running_stats=False) eval also uses the batch's.
  sv->batch_stats = training || !running_mean.defined();
  if (sv->batch_stats) {
    const int64_t n = sv->B * sv->S;
    if (n <= 1)
      throw std::invalid_argument("batch_norm3d: input " + x.str() + " has " + std::to_string(n) +
                                  " value(s) per channel; batch statistics need more than 1");
    Tensor mean = doubles(C, dev), var = doubles(C, dev);
    dispatch::segment_moments(dev, x.data(), sv->B, C, sv->S, as_doubles(mean), as_doubles(var));
    sv->n_total = double(n);
    if (g_replica_sum) {
      sv->replicas = g_replica_sum;
      sv->n_total = combine_moments(sv->replicas, mean, var, C, double(n));
    }
    const bool update = training && running_mean.defined();
    dispatch::batch_norm_stats(dev, as_doubles(mean), as_doubles(var), C, sv->n_total, eps, center.data(),
                               sv->rstd.data(), update ? running_mean.data() : nullptr,
                               update ? running_var.data() : nullptr, momentum);
  } else {
    dispatch::batch_norm_running_stats(dev, running_mean.data(), running_var.data(), C, eps, center.data(),
                                       sv->rstd.data());
  }
  sv->rows = std::make_shared<RowAffine>(sv->B * C, dev);
  RowAffine& a = *sv->rows;
  dispatch::batch_norm_rows(dev, center.data(), sv->rstd.data(), data_or_null(gamma), data_or_null(beta), sv->B, C,
                            a.center.data(), a.scale.data(), a.shift.data());
  Tensor y = Tensor::empty(x.shape(), dev);
  dispatch::affine_rows(dev, x.data(), y.data(), sv->B * C, sv->S, a.center.data(), a.scale.data(), a.shift.data(),
                        false);
  return record(y, "batch_norm3d", {x, gamma, beta},
                [x = x.detach(), gamma = gamma.defined() ? gamma.detach() : Tensor(), has_beta = beta.defined(),
                 sv](const Tensor& gy, const std::vector<bool>& needs) {
                  return batch_norm_backward(gy, x, gamma, has_beta, *sv, needs);
                });
}

BatchNormReplicaGuard::BatchNormReplicaGuard(ReplicaSum sum) : previous_(std::move(g_replica_sum)) {
  g_replica_sum = std::move(sum);
}
BatchNormReplicaGuard::~BatchNormReplicaGuard() { g_replica_sum = std::move(previous_); }

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
