#include "engine/optim.h"

#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <unordered_set>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/profiler.h"
#include "engine/dispatch.h"
#include "kernels/cpu/adam.h"

namespace cpets {

namespace {

void validate(const AdamOptions& o, size_t group) {
  const std::string where = "Adam group " + std::to_string(group) + ": ";
  if (!(o.lr >= 0)) throw std::invalid_argument(where + "invalid learning rate " + std::to_string(o.lr));
  if (!(o.beta1 >= 0 && o.beta1 < 1)) throw std::invalid_argument(where + "invalid beta1 " + std::to_string(o.beta1) + " (need 0 <= beta1 < 1)");
  if (!(o.beta2 >= 0 && o.beta2 < 1)) throw std::invalid_argument(where + "invalid beta2 " + std::to_string(o.beta2) + " (need 0 <= beta2 < 1)");
  if (!(o.eps >= 0)) throw std::invalid_argument(where + "invalid eps " + std::to_string(o.eps));
  if (!(o.weight_decay >= 0)) throw std::invalid_argument(where + "invalid weight_decay " + std::to_string(o.weight_decay));
}

// Steps are exported as float scalars: exact up to 2^24.
constexpr int64_t kMaxExportableStep = int64_t(1) << 24;

}  // namespace

Adam::Adam(NamedTensors params, AdamOptions options) : Adam(std::vector<ParamGroup>{{std::move(params), options}}) {}

Adam::Adam(std::vector<ParamGroup> groups) {
  std::set<std::string> names;
  std::unordered_set<const TensorImpl*> tensors;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    validate(groups[gi].options, gi);
    Group g{groups[gi].options, {}};
    for (auto& [name, t] : groups[gi].params) {
      if (!t.defined()) throw std::invalid_argument("Adam: parameter '" + name + "' is undefined");
      if (!t.is_leaf()) throw std::invalid_argument("Adam: parameter '" + name + "' is not a leaf tensor; optimise leaves only");
      if (!names.insert(name).second)
        throw std::invalid_argument("Adam: parameter name '" + name + "' appears twice; give each group a distinct prefix");
      if (!tensors.insert(t.impl()).second)
        throw std::invalid_argument("Adam: parameter '" + name + "' is the same tensor as another parameter (in this or another group)");
      g.params.push_back({name, t, Tensor(), Tensor(), 0});
    }
    groups_.push_back(std::move(g));
  }
}

const AdamOptions& Adam::options(size_t group) const {
  if (group >= groups_.size())
    throw std::out_of_range("Adam: group " + std::to_string(group) + " out of range (" + std::to_string(groups_.size()) + " groups)");
  return groups_[group].options;
}

void Adam::set_lr(size_t group, double lr) {
  options(group);  // range check
  AdamOptions o = groups_[group].options;
  o.lr = lr;
  validate(o, group);
  groups_[group].options = o;
}

void Adam::step() {
  profiler::Scope scope("adam_step");
  NoGradGuard no_grad;
  std::vector<kernels::cpu::AdamTensor> tensors;  // updated together (on a GPU by one fused launch)
  std::optional<Device> device;
  for (auto& group : groups_) {
    const AdamOptions& o = group.options;
    for (auto& ps : group.params) {
      Tensor grad = ps.param.grad();
      if (!grad.defined()) continue;
      if (grad.shape() != ps.param.shape())
        throw std::runtime_error("Adam: gradient " + grad.str() + " does not match parameter '" + ps.name + "' " + ps.param.str());
      if (grad.device() != ps.param.device())
        throw std::runtime_error("Adam: gradient of parameter '" + ps.name + "' is on " + grad.device().str() +
                                 " but the parameter is on " + ps.param.device().str());
      if (!ps.exp_avg.defined()) {
        ps.exp_avg = Tensor::zeros(ps.param.shape(), ps.param.device());
        ps.exp_avg_sq = Tensor::zeros(ps.param.shape(), ps.param.device());
      }
      // State follows its parameter (a model moved with Module::to, or a CPU checkpoint loaded
      // into a model on the GPU).
      ps.exp_avg.move_to_(ps.param.device());
      ps.exp_avg_sq.move_to_(ps.param.device());
      ps.step += 1;
      // As PyTorch: bias corrections and step size in double, then used as float scalars.
      const double bias_correction1 = 1.0 - std::pow(o.beta1, double(ps.step));
      const double bias_correction2 = 1.0 - std::pow(o.beta2, double(ps.step));
      const kernels::cpu::AdamScalars s{float(o.beta1),
                                        float(o.beta2),
                                        float(o.eps),
                                        float(o.weight_decay),
                                        float(1.0 - o.beta1),
                                        float(1.0 - o.beta2),
                                        float(o.lr / bias_correction1),
                                        float(std::sqrt(bias_correction2))};
      if (device && *device != ps.param.device())
        throw std::runtime_error("Adam: parameter '" + ps.name + "' is on " + ps.param.device().str() +
                                 " but earlier ones are on " + device->str() + "; move the model to one device");
      device = ps.param.device();
      tensors.push_back({ps.param.data(), grad.data(), ps.exp_avg.data(), ps.exp_avg_sq.data(), ps.param.numel(), s});
    }
  }
  if (device) dispatch::adam_multi_tensor(*device, tensors);
}

void Adam::zero_grad() {
  for (auto& group : groups_)
    for (auto& ps : group.params) ps.param.zero_grad();
}

const Adam::ParamState& Adam::find(const std::string& name) const {
  for (const auto& group : groups_)
    for (const auto& ps : group.params)
      if (ps.name == name) return ps;
  throw std::invalid_argument("Adam: no parameter named '" + name + "'");
}

int64_t Adam::step_count(const std::string& param_name) const { return find(param_name).step; }

NamedTensors Adam::state_dict(const std::string& prefix) const {
  NamedTensors out;
  for (const auto& group : groups_)
    for (const auto& ps : group.params) {
      if (ps.step == 0) continue;
      if (ps.step > kMaxExportableStep)
        throw std::runtime_error("Adam: step count " + std::to_string(ps.step) + " of '" + ps.name + "' is too large to export exactly");
      out.emplace_back(prefix + ps.name + ".exp_avg", ps.exp_avg);
      out.emplace_back(prefix + ps.name + ".exp_avg_sq", ps.exp_avg_sq);
      out.emplace_back(prefix + ps.name + ".step", Tensor::scalar(float(ps.step)));
    }
  return out;
}

void Adam::load_state_dict(const NamedTensors& state, const std::string& prefix) {
  // Split "<prefix><param>.<field>" and check everything before touching the state.
  struct Entry {
    Tensor exp_avg, exp_avg_sq, step;
  };
  std::map<std::string, Entry> entries;
  for (const auto& [key, t] : state) {
    const auto dot = key.rfind('.');
    if (key.compare(0, prefix.size(), prefix) != 0 || dot == std::string::npos || dot < prefix.size())
      throw std::invalid_argument("Adam state: key '" + key + "' is not of the form '" + prefix + "<param>.<exp_avg|exp_avg_sq|step>'");
    const std::string name = key.substr(prefix.size(), dot - prefix.size()), field = key.substr(dot + 1);
    const ParamState& ps = find(name);  // throws for unknown parameters
    if (!t.defined()) throw std::invalid_argument("Adam state: '" + key + "' is undefined");
    Entry& e = entries[name];
    Tensor* slot = field == "exp_avg" ? &e.exp_avg : field == "exp_avg_sq" ? &e.exp_avg_sq : field == "step" ? &e.step : nullptr;
    if (!slot) throw std::invalid_argument("Adam state: key '" + key + "' has unknown field '" + field + "'");
    if (slot->defined()) throw std::invalid_argument("Adam state: key '" + key + "' appears twice");
    if (field != "step" && t.shape() != ps.param.shape())
      throw std::invalid_argument("Adam state: '" + key + "' has shape " + t.str() + " but the parameter is " + ps.param.str());
    if (field == "step" && (t.numel() != 1 || !(t.item() >= 1) || t.item() != std::floor(t.item())))
      throw std::invalid_argument("Adam state: '" + key + "' must be one positive integer step count");
    *slot = t;
  }
  for (const auto& [name, e] : entries)
    if (!e.exp_avg.defined() || !e.exp_avg_sq.defined() || !e.step.defined())
      throw std::invalid_argument("Adam state for '" + name + "' is incomplete: need exp_avg, exp_avg_sq and step");

  for (auto& group : groups_)
    for (auto& ps : group.params) {
      auto it = entries.find(ps.name);
      if (it == entries.end()) {
        ps.exp_avg = ps.exp_avg_sq = Tensor();
        ps.step = 0;
      } else {
        // On the parameter's device: a checkpoint read on the host resumes a GPU run.
        ps.exp_avg = it->second.exp_avg.clone().to(ps.param.device());
        ps.exp_avg_sq = it->second.exp_avg_sq.clone().to(ps.param.device());
        ps.step = int64_t(it->second.step.item());
      }
    }
}

}  // namespace cpets
