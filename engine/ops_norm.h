#pragma once
#include <functional>

#include "engine/tensor.h"

namespace cpets {

// x (B, C, ...) normalised per (sample, group of C/groups channels); gamma, beta (C) or undefined.
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps);
// SiLU(group_norm(x, ...)) in one op: one memory pass less each way and no intermediate tensor
// (the backward recomputes the normalised values from x). ResnetBlocks always use this pair.
Tensor group_norm_silu(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps);
// Normalises over the last dimension; gamma, beta of that size or undefined.
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
// x (B, C, D, H, W). Training: batch statistics, and running_mean/var (C) updated in place with
// `momentum` (unbiased variance, as PyTorch). Eval: running statistics. gamma/beta may be undefined.
Tensor batch_norm3d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor running_mean,
                    Tensor running_var, bool training, float momentum, float eps);

// Batch statistics over several replicas of a batch (synchronised BatchNorm, data-parallel
// training): while a guard is alive on this thread, batch_norm3d's batch statistics — forward
// moments and backward gradient sums, per channel — are summed over the replicas with `sum`
// (an in-place sum of `count` doubles that every replica calls in the same order), so each
// replica normalises by the statistics of the whole batch. γ and β keep this replica's own
// gradients (a data-parallel gradient average adds them up). The engine knows nothing else of
// replicas; the op remembers `sum` for its backward.
using ReplicaSum = std::function<void(double* values, int64_t count)>;
class BatchNormReplicaGuard {
 public:
  explicit BatchNormReplicaGuard(ReplicaSum sum);
  ~BatchNormReplicaGuard();
  BatchNormReplicaGuard(const BatchNormReplicaGuard&) = delete;
  BatchNormReplicaGuard& operator=(const BatchNormReplicaGuard&) = delete;

 private:
  ReplicaSum previous_;
};
Tensor softmax(const Tensor& x, int64_t dim = -1);

}  // namespace cpets
