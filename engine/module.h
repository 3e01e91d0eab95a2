// Module: the PyTorch-like container that layers and models build on. A module owns named
// parameters (trained), buffers (state such as BatchNorm running statistics, saved but not
// trained) and child modules, all in registration order. Dotted names ("encoder.down.0.conv1.weight")
// and the state_dict order (each module's parameters, then its buffers, then its children, depth
// first) are exactly PyTorch's, so checkpoints interchange with PyTorch via safetensors.
//
// Tensors are handles sharing their storage: a layer keeps the Tensor returned by
// register_parameter as a member and reads it in forward; load_state_dict copies values *into*
// the registered tensors, so those members stay valid. Do not assign a new Tensor to a registered
// member — the module would keep the old one.
//
//   struct Block : Module {
//     Block(int c) { weight = register_parameter("weight", Tensor::zeros({c, c}));
//                    norm = register_module("norm", std::make_shared<GroupNorm>(...)); }
//     Tensor weight; std::shared_ptr<GroupNorm> norm;
//   };
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace cpets {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;  // also declared in safetensors.h

struct LoadResult {
  std::vector<std::string> missing_keys;     // in the module, not in the input
  std::vector<std::string> unexpected_keys;  // in the input, not in the module
};

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;  // a copy would share tensors silently; hold modules by shared_ptr
  Module& operator=(const Module&) = delete;

  // Registration. Names are non-empty, contain no '.', and are unique within the module across
  // parameters, buffers and children. Parameters become leaves with requires_grad = true.
  Tensor register_parameter(const std::string& name, Tensor value);
  // Persistent buffers are in state_dict; non-persistent ones (derived values) are not.
  Tensor register_buffer(const std::string& name, Tensor value, bool persistent = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> child) {
    add_child(name, child);
    return child;
  }

  // Recursive views, in PyTorch's order; `prefix` is prepended to every name (e.g. "encoder.").
  NamedTensors named_parameters(const std::string& prefix = "") const;
  std::vector<Tensor> parameters() const;
  NamedTensors named_buffers(const std::string& prefix = "") const;  // persistent and not
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
  // This module ("" or prefix without the trailing dot) and every descendant, depth first.
  std::vector<std::pair<std::string, const Module*>> named_modules(const std::string& prefix = "") const;

  // Parameters and persistent buffers, ordered; the tensors share storage with the module's.
  NamedTensors state_dict(const std::string& prefix = "") const;
  // Copies values in by name. Shape mismatches and (when strict) missing or unexpected keys
  // throw std::runtime_error listing every offending key; nothing is modified in that case.
  LoadResult load_state_dict(const NamedTensors& state, bool strict = true);
  LoadResult load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

  // Training mode (dropout, BatchNorm statistics…), set recursively.
  // Moves every parameter and buffer, recursively, to `device` in place (Tensor::move_to_): the
  // members that layers hold stay valid, and an optimiser built before or after sees the moved
  // tensors.
  void to(Device device);
  // Where the parameters are (the first parameter's device; CPU for a module without any).
  Device device() const;
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  void zero_grad();                   // drops every parameter's gradient (PyTorch's set_to_none)
  void set_requires_grad(bool on);    // recursively: freeze (false) or unfreeze parameters
  int64_t num_parameters(bool trainable_only = false) const;

 protected:
  // Hook for modules that must react to a mode change; called on each module by train().
  virtual void on_train_mode(bool) {}

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> child);
  void check_new_name(const std::string& name, const char* kind) const;
  void collect(const std::string& prefix, NamedTensors* params, NamedTensors* buffers, bool persistent_only) const;

  NamedTensors params_;
  struct Buffer {
    std::string name;
    Tensor value;
    bool persistent;
  };
  std::vector<Buffer> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// An indexable list of submodules named "0", "1", … (as torch.nn.ModuleList), e.g.
//   down = register_module("down", std::make_shared<ModuleList>());
//   down->push_back(std::make_shared<ResBlock>(...));   // "down.0.…"
//   auto block = down->at<ResBlock>(0);
class ModuleList : public Module {
 public:
  ModuleList() = default;
  explicit ModuleList(std::vector<std::shared_ptr<Module>> modules);

  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> module) {
    register_module(std::to_string(items_.size()), module);
    items_.push_back(module);
    return module;
  }
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  const std::shared_ptr<Module>& operator[](size_t i) const;
  // Typed access; throws if index is out of range or the module is of another type.
  template <class M>
  std::shared_ptr<M> at(size_t i) const {
    auto typed = std::dynamic_pointer_cast<M>((*this)[i]);
    if (!typed) throw_wrong_type(i);
    return typed;
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  [[noreturn]] void throw_wrong_type(size_t i) const;
  std::vector<std::shared_ptr<Module>> items_;
};

}  // namespace cpets
