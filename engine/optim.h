// Adam (torch.optim.Adam semantics, without amsgrad/maximize) over parameter groups, each with
// its own hyperparameters. The per-element update lives in kernels/cpu/adam.
//
// Parameters are named (Module::named_parameters, with a prefix per group when names could
// collide, e.g. "encoder."), and the optimiser state is exported under those names, so a
// checkpoint can hold it next to the model in one safetensors file and a resumed run continues
// bit for bit:
//   "<prefix><param>.exp_avg", "<prefix><param>.exp_avg_sq", "<prefix><param>.step" (scalar)
// Parameters that have never been stepped have no state and are absent, as in PyTorch.
// Learning rates are not part of the state: they come from the configuration / schedule.
#pragma once
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace cpets {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;  // as in module.h

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // L2 added to the gradient (Adam, not AdamW)
};

struct ParamGroup {
  NamedTensors params;
  AdamOptions options;
};

class Adam {
 public:
  explicit Adam(std::vector<ParamGroup> groups);
  explicit Adam(NamedTensors params, AdamOptions options = {});

  // One update of every parameter that has a gradient; parameters without one are skipped and
  // their step count does not advance (PyTorch's behaviour).
  void step();
  void zero_grad();  // drops the gradients of all parameters

  size_t num_groups() const { return groups_.size(); }
  const AdamOptions& options(size_t group) const;
  void set_lr(size_t group, double lr);
  int64_t step_count(const std::string& param_name) const;  // 0 before its first update

  NamedTensors state_dict(const std::string& prefix = "") const;
  // Replaces the whole state; parameters absent from `state` start afresh. Throws, changing
  // nothing, on unknown names, incomplete entries or shape mismatches.
  void load_state_dict(const NamedTensors& state, const std::string& prefix = "");

 private:
  struct ParamState {
    std::string name;
    Tensor param;
    Tensor exp_avg, exp_avg_sq;  // undefined until the first step
    int64_t step = 0;
  };
  struct Group {
    AdamOptions options;
    std::vector<ParamState> params;
  };
  const ParamState& find(const std::string& name) const;
  std::vector<Group> groups_;
};

}  // namespace cpets
