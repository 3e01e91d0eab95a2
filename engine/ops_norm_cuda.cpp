// GroupNorm (+SiLU), LayerNorm and BatchNorm3d on CUDA tensors (ops_cuda.h). The same
// decomposition as the CPU ops in ops_norm.cpp — statistics, per-row coefficients, one
// elementwise pass forward; row sums, coefficients, one elementwise pass backward — with the
// statistics and coefficients computed by small kernels, so nothing waits for the host.
#if CPETS_HAVE_CUDA
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/ops_cuda.h"
#include "kernels/cuda/norm.h"

namespace cpets::cuda_ops {
namespace {

namespace kg = kernels::cuda;

Tensor device_floats(int64_t n) { return Tensor::empty({n}, Device::CUDA); }
// Double arrays live in float tensors of twice the length (allocator blocks are 256-byte aligned).
Tensor device_doubles(int64_t n) { return Tensor::empty({2 * n}, Device::CUDA); }
double* as_doubles(const Tensor& t) { return reinterpret_cast<double*>(const_cast<float*>(t.data())); }
const float* data_or_null(const Tensor& t) { return t.defined() ? t.data() : nullptr; }

struct Workspace {
  explicit Workspace(size_t bytes) : holder(device_floats(int64_t((bytes + 3) / 4))), size(bytes) {}
  kg::Workspace get() const { return {const_cast<float*>(holder.data()), size}; }
  Tensor holder;
  size_t size;
};

// Per-row forward coefficients (center, scale, shift), B·C each.
struct Rows {
  Tensor center, scale, shift;
  explicit Rows(int64_t rows) : center(device_floats(rows)), scale(device_floats(rows)), shift(device_floats(rows)) {}
};

// Backward pass 1 and the coefficient buffers of pass 2.
struct RowSums {
  Tensor sum_g, sum_gx;
  RowSums(const Tensor& gy, const Tensor& x, int64_t rows, int64_t S, const Rows& a, bool silu)
      : sum_g(device_doubles(rows)), sum_gx(device_doubles(rows)) {
    Workspace ws(kg::row_grad_sums_workspace_bytes(rows, S));
    kg::row_grad_sums(gy.data(), x.data(), rows, S, a.center.data(), a.scale.data(), a.shift.data(), silu,
                      as_doubles(sum_g), as_doubles(sum_gx), ws.get(), cuda_stream());
  }
};

}  // namespace

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu) {
  const char* op = silu ? "group_norm_silu" : "group_norm";
  Tensor y = Tensor::empty(x.shape(), Device::CUDA);
  if (x.numel() == 0) return y;
  const int64_t B = x.size(0), C = x.size(1), G = groups, S = x.numel() / (B * C), rows = B * C;
  Tensor mean_d = device_doubles(B * G), var_d = device_doubles(B * G);
  {
    Workspace ws(kg::segment_moments_workspace_bytes(1, B * G, (C / G) * S));
    kg::segment_moments(x.data(), 1, B * G, (C / G) * S, as_doubles(mean_d), as_doubles(var_d), ws.get(),
                        cuda_stream());
  }
  auto rows_ab = std::make_shared<Rows>(rows);
  Tensor mean = device_floats(B * G), rstd = device_floats(B * G);
  kg::group_norm_rows(as_doubles(mean_d), as_doubles(var_d), eps, data_or_null(gamma), data_or_null(beta), B, C, G,
                      mean.data(), rstd.data(), rows_ab->center.data(), rows_ab->scale.data(), rows_ab->shift.data(),
                      cuda_stream());
  kg::affine_rows(x.data(), y.data(), rows, S, rows_ab->center.data(), rows_ab->scale.data(), rows_ab->shift.data(),
                  silu, cuda_stream());
  return record(y, op, {x, gamma, beta},
                [x = x.detach(), gamma = gamma.defined() ? gamma.detach() : Tensor(), has_beta = beta.defined(),
                 rows_ab, rstd, B, C, G, S, silu](const Tensor& gy, const std::vector<bool>& needs) {
                  const int64_t rows = B * C;
                  const RowSums sums(gy, x, rows, S, *rows_ab, silu);
                  Tensor gx, ggamma, gbeta, k_dy, k_x, k0;
                  if (needs[0]) {
                    gx = Tensor::empty(x.shape(), Device::CUDA);
                    k_dy = device_floats(rows);
                    k_x = device_floats(rows);
                    k0 = device_floats(rows);
                  }
                  if (needs[1] && gamma.defined()) ggamma = device_floats(C);
                  if (needs[2] && has_beta) gbeta = device_floats(C);
                  kg::group_norm_backward_coefs(as_doubles(sums.sum_g), as_doubles(sums.sum_gx), rstd.data(),
                                                data_or_null(gamma), B, C, G, S,
                                                k_dy.defined() ? k_dy.data() : nullptr,
                                                k_x.defined() ? k_x.data() : nullptr,
                                                k0.defined() ? k0.data() : nullptr,
                                                ggamma.defined() ? ggamma.data() : nullptr,
                                                gbeta.defined() ? gbeta.data() : nullptr, cuda_stream());
                  if (needs[0])
                    kg::row_grad_apply(gy.data(), x.data(), gx.data(), rows, S, rows_ab->center.data(),
                                       rows_ab->scale.data(), rows_ab->shift.data(), silu, k_dy.data(), k_x.data(),
                                       k0.data(), cuda_stream());
                  return std::vector<Tensor>{gx, ggamma, gbeta};
                });
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  const int64_t D = x.size(-1);
  const int64_t rows = D > 0 ? x.numel() / D : 0;
  // The kernels take both affine parameters or neither: fill in the missing one.
  Tensor g = gamma.defined() ? gamma : (beta.defined() ? Tensor::ones({D}, Device::CUDA) : Tensor());
  Tensor b = beta.defined() ? beta : (gamma.defined() ? Tensor::zeros({D}, Device::CUDA) : Tensor());
  Tensor y = Tensor::empty(x.shape(), Device::CUDA);
  Tensor mean = device_floats(rows), rstd = device_floats(rows);
  kg::layer_norm_forward(x.data(), y.data(), rows, D, data_or_null(g), data_or_null(b), eps, mean.data(), rstd.data(),
                         cuda_stream());
  return record(y, "layer_norm", {x, gamma, beta},
                [x = x.detach(), g = g.defined() ? g.detach() : Tensor(), mean, rstd, rows, D,
                 has_gamma = gamma.defined(), has_beta = beta.defined()](const Tensor& gy,
                                                                         const std::vector<bool>& needs) {
                  Tensor gx = needs[0] ? Tensor::empty(x.shape(), Device::CUDA) : Tensor();
                  Tensor ggamma = needs[1] && has_gamma ? device_floats(D) : Tensor();
                  Tensor gbeta = needs[2] && has_beta ? device_floats(D) : Tensor();
                  Workspace ws(kg::layer_norm_backward_workspace_bytes(rows, D));
                  kg::layer_norm_backward(gy.data(), x.data(), rows, D, data_or_null(g), mean.data(), rstd.data(),
                                          gx.defined() ? gx.data() : nullptr,
                                          ggamma.defined() ? ggamma.data() : nullptr,
                                          gbeta.defined() ? gbeta.data() : nullptr, ws.get(), cuda_stream());
                  return std::vector<Tensor>{gx, ggamma, gbeta};
                });
}

Tensor batch_norm3d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor running_mean, Tensor running_var,
                    bool training, float momentum, float eps) {
  const int64_t B = x.size(0), C = x.size(1), S = B * C > 0 ? x.numel() / (B * C) : 0, rows = B * C;
  const bool batch_stats = training || !running_mean.defined();
  const double n = double(B * S);
  Tensor center = device_floats(C), rstd = device_floats(C);
  if (batch_stats) {
    if (n <= 1)
      throw std::invalid_argument("batch_norm3d: input " + x.str() + " has " + std::to_string(int64_t(n)) +
                                  " value(s) per channel; batch statistics need more than 1");
    Tensor mean_d = device_doubles(C), var_d = device_doubles(C);
    Workspace ws(kg::segment_moments_workspace_bytes(B, C, S));
    kg::segment_moments(x.data(), B, C, S, as_doubles(mean_d), as_doubles(var_d), ws.get(), cuda_stream());
    const bool update = training && running_mean.defined();
    kg::batch_norm_stats(as_doubles(mean_d), as_doubles(var_d), C, n, eps, center.data(), rstd.data(),
                         update ? running_mean.data() : nullptr, update ? running_var.data() : nullptr, momentum,
                         cuda_stream());
  } else {
    kg::batch_norm_running_stats(running_mean.data(), running_var.data(), C, eps, center.data(), rstd.data(),
                                 cuda_stream());
  }
  auto rows_ab = std::make_shared<Rows>(rows);
  kg::batch_norm_rows(center.data(), rstd.data(), data_or_null(gamma), data_or_null(beta), B, C,
                      rows_ab->center.data(), rows_ab->scale.data(), rows_ab->shift.data(), cuda_stream());
  Tensor y = Tensor::empty(x.shape(), Device::CUDA);
  kg::affine_rows(x.data(), y.data(), rows, S, rows_ab->center.data(), rows_ab->scale.data(), rows_ab->shift.data(),
                  false, cuda_stream());
  return record(y, "batch_norm3d", {x, gamma, beta},
                [x = x.detach(), gamma = gamma.defined() ? gamma.detach() : Tensor(), has_beta = beta.defined(),
                 rows_ab, rstd, B, C, S, n, batch_stats](const Tensor& gy, const std::vector<bool>& needs) {
                  const int64_t rows = B * C;
                  const RowSums sums(gy, x, rows, S, *rows_ab, false);
                  Tensor gx = Tensor::empty(x.shape(), Device::CUDA);
                  Tensor k_dy = device_floats(rows), k_x = device_floats(rows), k0 = device_floats(rows);
                  Tensor ggamma = needs[1] && gamma.defined() ? device_floats(C) : Tensor();
                  Tensor gbeta = needs[2] && has_beta ? device_floats(C) : Tensor();
                  kg::batch_norm_backward_coefs(as_doubles(sums.sum_g), as_doubles(sums.sum_gx), rstd.data(),
                                                data_or_null(gamma), B, C, n, batch_stats, k_dy.data(), k_x.data(),
                                                k0.data(), ggamma.defined() ? ggamma.data() : nullptr,
                                                gbeta.defined() ? gbeta.data() : nullptr, cuda_stream());
                  if (!needs[0]) return std::vector<Tensor>{Tensor(), ggamma, gbeta};
                  kg::row_grad_apply(gy.data(), x.data(), gx.data(), rows, S, rows_ab->center.data(), nullptr,
                                     nullptr, false, k_dy.data(), k_x.data(), k0.data(), cuda_stream());
                  return std::vector<Tensor>{gx, ggamma, gbeta};
                });
}

}  // namespace cpets::cuda_ops
#endif
