#include "engine/module.h"

#include <set>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "engine/autograd.h"

namespace cpets {

namespace {
std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}
}  // namespace

void Module::check_new_name(const std::string& name, const char* kind) const {
  if (name.empty()) throw std::invalid_argument(std::string("register_") + kind + ": empty name");
  if (name.find('.') != std::string::npos)
    throw std::invalid_argument(std::string("register_") + kind + ": name '" + name + "' contains '.'; dots separate submodules");
  bool taken = false;
  for (const auto& p : params_) taken |= p.first == name;
  for (const auto& b : buffers_) taken |= b.name == name;
  for (const auto& c : children_) taken |= c.first == name;
  if (taken)
    throw std::invalid_argument(std::string("register_") + kind + ": name '" + name + "' is already used by a parameter, buffer or submodule");
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  check_new_name(name, "parameter");
  if (!value.defined()) throw std::invalid_argument("register_parameter '" + name + "': the tensor is undefined");
  if (!value.is_leaf()) value = value.detach();
  value.set_requires_grad(true);
  params_.emplace_back(name, value);
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value, bool persistent) {
  check_new_name(name, "buffer");
  if (!value.defined()) throw std::invalid_argument("register_buffer '" + name + "': the tensor is undefined");
  if (!value.is_leaf()) value = value.detach();
  buffers_.push_back({name, value, persistent});
  return value;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> child) {
  check_new_name(name, "module");
  if (!child) throw std::invalid_argument("register_module '" + name + "': null module");
  children_.emplace_back(name, std::move(child));
}

void Module::collect(const std::string& prefix, NamedTensors* params, NamedTensors* buffers, bool persistent_only) const {
  if (params)
    for (const auto& [name, t] : params_) params->emplace_back(prefix + name, t);
  if (buffers)
    for (const auto& b : buffers_)
      if (b.persistent || !persistent_only) buffers->emplace_back(prefix + b.name, b.value);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", params, buffers, persistent_only);
}

NamedTensors Module::named_parameters(const std::string& prefix) const {
  NamedTensors all, unique;
  collect(prefix, &all, nullptr, false);
  // A tensor registered in two places (weight tying) is listed once, as in PyTorch.
  std::unordered_set<const TensorImpl*> seen;
  for (auto& entry : all)
    if (seen.insert(entry.second.impl()).second) unique.push_back(std::move(entry));
  return unique;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

void Module::to(Device device) {
  for (auto& [name, t] : named_parameters()) t.move_to_(device);
  for (auto& [name, t] : named_buffers()) t.move_to_(device);
}

Device Module::device() const {
  const NamedTensors p = named_parameters();
  return p.empty() ? Device::cpu() : p.front().second.device();
}

NamedTensors Module::named_buffers(const std::string& prefix) const {
  NamedTensors out;
  collect(prefix, nullptr, &out, false);
  return out;
}

std::vector<std::pair<std::string, const Module*>> Module::named_modules(const std::string& prefix) const {
  std::vector<std::pair<std::string, const Module*>> out{{prefix, this}};
  for (const auto& [name, child] : children_) {
    auto sub = child->named_modules(prefix.empty() ? name : prefix + "." + name);
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

NamedTensors Module::state_dict(const std::string& prefix) const {
  // PyTorch order: each module's parameters, then its persistent buffers, then its children.
  NamedTensors out;
  for (const auto& [name, t] : params_) out.emplace_back(prefix + name, t);
  for (const auto& b : buffers_)
    if (b.persistent) out.emplace_back(prefix + b.name, b.value);
  for (const auto& [name, child] : children_) {
    NamedTensors sub = child->state_dict(prefix + name + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

LoadResult Module::load_state_dict(const NamedTensors& state, bool strict) {
  std::unordered_map<std::string, Tensor> own;
  const NamedTensors mine = state_dict();
  for (const auto& [name, t] : mine) own.emplace(name, t);

  LoadResult result;
  std::vector<std::string> mismatches, problems;
  std::set<std::string> given;
  for (const auto& [name, t] : state) {
    if (!given.insert(name).second) problems.push_back("key '" + name + "' appears twice in the input");
    auto it = own.find(name);
    if (it == own.end()) {
      result.unexpected_keys.push_back(name);
    } else if (!t.defined()) {
      problems.push_back("'" + name + "' is an undefined tensor");
    } else if (t.shape() != it->second.shape()) {
      mismatches.push_back(name + ": checkpoint " + t.str() + " vs model " + it->second.str());
    }
  }
  for (const auto& [name, t] : mine)
    if (!given.count(name)) result.missing_keys.push_back(name);

  std::string error;
  if (!problems.empty()) error += "; " + join(problems);
  if (!mismatches.empty()) error += "; shape mismatches: " + join(mismatches);
  if (strict && !result.missing_keys.empty()) error += "; missing keys: " + join(result.missing_keys);
  if (strict && !result.unexpected_keys.empty()) error += "; unexpected keys: " + join(result.unexpected_keys);
  if (!error.empty())
    throw std::runtime_error("load_state_dict: " + error.substr(2) + " (nothing was loaded)");

  NoGradGuard no_grad;
  for (const auto& [name, t] : state) {
    auto it = own.find(name);
    if (it != own.end()) it->second.copy_from(t);
  }
  return result;
}

LoadResult Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  return load_state_dict(NamedTensors(state.begin(), state.end()), strict);
}

void Module::train(bool on) {
  training_ = on;
  on_train_mode(on);
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (auto& [name, t] : named_parameters()) t.zero_grad();
}

void Module::set_requires_grad(bool on) {
  for (auto& [name, t] : named_parameters()) t.set_requires_grad(on);
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters())
    if (!trainable_only || t.requires_grad()) n += t.numel();
  return n;
}

ModuleList::ModuleList(std::vector<std::shared_ptr<Module>> modules) {
  for (auto& m : modules) push_back(std::move(m));
}

const std::shared_ptr<Module>& ModuleList::operator[](size_t i) const {
  if (i >= items_.size())
    throw std::out_of_range("ModuleList: index " + std::to_string(i) + " out of range for " + std::to_string(items_.size()) + " modules");
  return items_[i];
}

void ModuleList::throw_wrong_type(size_t i) const {
  throw std::invalid_argument("ModuleList: module " + std::to_string(i) + " is not of the requested type");
}

}  // namespace cpets
