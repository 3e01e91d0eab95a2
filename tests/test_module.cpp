// Module/Parameter. The key names and their order are checked against PyTorch itself:
// tests/fixtures/safetensors/toy_module.safetensors holds the state_dict of a torch.nn model made
// by tools/make_safetensors_fixture.py, with PyTorch's state_dict / named_parameters key orders in
// its metadata. The C++ Toy below registers the same structure with plain Modules.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/module.h"
#include "engine/safetensors.h"

using namespace cpets;

namespace {

std::vector<std::string> keys(const NamedTensors& named) {
  std::vector<std::string> out;
  for (const auto& [name, t] : named) out.push_back(name);
  return out;
}

// Test scaffolding mirroring torch.nn.Conv3d / BatchNorm3d / Linear parameter layout.
struct Conv : Module {
  Conv(int64_t cin, int64_t cout, int64_t k, bool bias = true) {
    weight = register_parameter("weight", Tensor::zeros({cout, cin, k, k, k}));
    if (bias) this->bias = register_parameter("bias", Tensor::zeros({cout}));
  }
  Tensor weight, bias;
};

struct BatchNorm : Module {
  explicit BatchNorm(int64_t c) {
    weight = register_parameter("weight", Tensor::ones({c}));
    bias = register_parameter("bias", Tensor::zeros({c}));
    running_mean = register_buffer("running_mean", Tensor::zeros({c}));
    running_var = register_buffer("running_var", Tensor::ones({c}));
    register_buffer("num_batches_tracked", Tensor::zeros({}));
  }
  void on_train_mode(bool on) override { mode_changes += on ? 1 : -1; }
  Tensor weight, bias, running_mean, running_var;
  int mode_changes = 0;
};

struct Linear : Module {
  Linear(int64_t in, int64_t out) {
    weight = register_parameter("weight", Tensor::zeros({out, in}));
    bias = register_parameter("bias", Tensor::zeros({out}));
  }
  Tensor weight, bias;
};

struct Block : Module {
  Block(int64_t cin, int64_t cout) {
    conv1 = register_module("conv1", std::make_shared<Conv>(cin, cout, 3));
    norm = register_module("norm", std::make_shared<BatchNorm>(cout));
  }
  std::shared_ptr<Conv> conv1;
  std::shared_ptr<BatchNorm> norm;
};

struct Toy : Module {
  Toy() {
    encoder = register_module("encoder", std::make_shared<Module>());
    stem = encoder->register_module("stem", std::make_shared<Conv>(1, 2, 3, false));
    down = encoder->register_module("down", std::make_shared<ModuleList>());
    down->push_back(std::make_shared<Block>(2, 3));
    down->push_back(std::make_shared<Block>(3, 4));
    scale = register_buffer("scale", Tensor::ones({1}));
    head = register_module("head", std::make_shared<Linear>(4, 1));
    gain = register_parameter("gain", Tensor::ones({}));
  }
  std::shared_ptr<Module> encoder;
  std::shared_ptr<Conv> stem;
  std::shared_ptr<ModuleList> down;
  std::shared_ptr<Linear> head;
  Tensor scale, gain;
};

const std::string kToyFixture = std::string(CPETS_FIXTURES) + "/safetensors/toy_module.safetensors";

}  // namespace

TEST_CASE("state_dict and named_parameters keys and order equal PyTorch's for the same structure") {
  const SafetensorsFile file = load_safetensors(kToyFixture);
  const auto info = nlohmann::json::parse(file.metadata.at("torch_module"));
  const auto torch_state_order = info["state_dict_order"].get<std::vector<std::string>>();
  const auto torch_param_order = info["named_parameters_order"].get<std::vector<std::string>>();
  Toy toy;
  CHECK(keys(toy.state_dict()) == torch_state_order);
  CHECK(keys(toy.named_parameters()) == torch_param_order);
  CHECK(toy.num_parameters() == info["num_parameters"].get<int64_t>());
  CHECK(keys(toy.named_buffers()) ==
        std::vector<std::string>{"scale", "encoder.down.0.norm.running_mean", "encoder.down.0.norm.running_var",
                                 "encoder.down.0.norm.num_batches_tracked", "encoder.down.1.norm.running_mean",
                                 "encoder.down.1.norm.running_var", "encoder.down.1.norm.num_batches_tracked"});
  CHECK(keys(toy.head->named_parameters("head.")) == std::vector<std::string>{"head.weight", "head.bias"});
}

TEST_CASE("loading a PyTorch state_dict fills parameters and buffers in place") {
  const SafetensorsFile file = load_safetensors(kToyFixture);
  Toy toy;
  Tensor weight_handle = toy.down->at<Block>(1)->conv1->weight;  // members stay valid after loading
  const LoadResult r = toy.load_state_dict(file.tensors);
  CHECK(r.missing_keys.empty());
  CHECK(r.unexpected_keys.empty());
  for (const auto& [name, t] : file.tensors) {
    CAPTURE(name);
    const auto own = toy.state_dict();
    auto it = std::find_if(own.begin(), own.end(), [&](auto& p) { return p.first == name; });
    REQUIRE(it != own.end());
    CHECK(it->second.to_vector() == t.to_vector());
  }
  CHECK(weight_handle.to_vector() == std::find_if(file.tensors.begin(), file.tensors.end(), [](auto& p) {
                                       return p.first == "encoder.down.1.conv1.weight";
                                     })->second.to_vector());
  CHECK(toy.down->at<Block>(0)->norm->running_var.to_vector() != std::vector<float>(3, 1.f));  // buffers were loaded
  CHECK(toy.down->at<Block>(0)->norm->state_dict().back().second.item() == 7.f);            // int64 → float
  CHECK(weight_handle.requires_grad());
}

TEST_CASE("load_state_dict reports missing, unexpected and mis-shaped keys and then changes nothing") {
  Toy toy;
  NamedTensors state = toy.state_dict();
  for (auto& [name, t] : state) t = Tensor::full(t.shape(), 5.f);

  NamedTensors missing(state.begin() + 1, state.end());
  CHECK_THROWS_WITH_AS(toy.load_state_dict(missing), doctest::Contains("missing keys: gain"), std::runtime_error);

  NamedTensors extra = state;
  extra.emplace_back("encoder.down.2.conv1.weight", Tensor::zeros({1}));
  CHECK_THROWS_WITH_AS(toy.load_state_dict(extra), doctest::Contains("unexpected keys: encoder.down.2.conv1.weight"), std::runtime_error);

  NamedTensors wrong = state;
  wrong[2].second = Tensor::zeros({2, 1, 3, 3, 1});
  CHECK_THROWS_WITH_AS(toy.load_state_dict(wrong, /*strict=*/false),
                       doctest::Contains("encoder.stem.weight: checkpoint (2, 1, 3, 3, 1) vs model (2, 1, 3, 3, 3)"), std::runtime_error);

  NamedTensors twice = state;
  twice.push_back(state[0]);
  CHECK_THROWS_WITH_AS(toy.load_state_dict(twice), doctest::Contains("'gain' appears twice"), std::runtime_error);

  CHECK(toy.gain.item() == 1.f);  // every failed load left the model untouched
  CHECK(toy.stem->weight.to_vector() == std::vector<float>(54, 0.f));

  const LoadResult r = toy.load_state_dict(extra, /*strict=*/false);  // non-strict: report and load the rest
  CHECK(r.unexpected_keys == std::vector<std::string>{"encoder.down.2.conv1.weight"});
  CHECK(r.missing_keys.empty());
  CHECK(toy.gain.item() == 5.f);

  std::map<std::string, Tensor> as_map(missing.begin(), missing.end());
  CHECK(toy.load_state_dict(as_map, false).missing_keys == std::vector<std::string>{"gain"});
}

TEST_CASE("a checkpoint saved with safetensors loads into a fresh model") {
  Toy a, b;
  float v = 0.f;
  for (auto& [name, t] : a.state_dict())
    for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = v += 0.25f;
  const std::string path = (std::filesystem::temp_directory_path() / "cpets_test_module.safetensors").string();
  save_safetensors(path, a.state_dict());
  b.load_state_dict(load_safetensors(path).tensors);
  std::filesystem::remove(path);
  const auto sa = a.state_dict(), sb = b.state_dict();
  for (size_t i = 0; i < sa.size(); ++i) CHECK(sa[i].second.to_vector() == sb[i].second.to_vector());
}

TEST_CASE("train/eval recurse; zero_grad, set_requires_grad and num_parameters") {
  Toy toy;
  CHECK(toy.is_training());
  toy.eval();
  CHECK_FALSE(toy.is_training());
  CHECK_FALSE(toy.down->at<Block>(1)->norm->is_training());
  CHECK(toy.down->at<Block>(1)->norm->mode_changes == -1);  // the hook ran
  toy.head->train();
  CHECK(toy.head->is_training());
  CHECK_FALSE(toy.is_training());

  for (auto& p : toy.parameters()) p.set_grad(Tensor::ones(p.shape()));
  toy.zero_grad();
  for (auto& p : toy.parameters()) CHECK_FALSE(p.grad().defined());

  const int64_t total = toy.num_parameters();
  CHECK(total == 567);
  toy.encoder->set_requires_grad(false);  // freeze a submodule
  CHECK(toy.num_parameters(/*trainable_only=*/true) == total - toy.encoder->num_parameters());
  CHECK_FALSE(toy.stem->weight.requires_grad());
  CHECK(toy.head->weight.requires_grad());
  toy.set_requires_grad(true);
  CHECK(toy.num_parameters(true) == total);

  auto mods = toy.named_modules();
  CHECK(mods.size() == 11);  // toy, encoder, stem, down, 2 × (block, conv1, norm), head
  CHECK(mods[0].first.empty());
  CHECK(mods[3].first == "encoder.down");
  CHECK(mods[4].first == "encoder.down.0");
}

TEST_CASE("registration validates names; non-persistent buffers stay out of state_dict; tied weights listed once") {
  Module m;
  Tensor w = m.register_parameter("w", Tensor::zeros({2}));
  CHECK(w.requires_grad());
  CHECK_THROWS_WITH_AS(m.register_parameter("w", Tensor::zeros({2})), doctest::Contains("'w' is already used"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(m.register_buffer("w", Tensor::zeros({2})), doctest::Contains("'w' is already used"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(m.register_parameter("a.b", Tensor::zeros({2})), doctest::Contains("contains '.'"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(m.register_parameter("", Tensor::zeros({2})), doctest::Contains("empty name"), std::invalid_argument);
  CHECK_THROWS_AS(m.register_parameter("u", Tensor()), std::invalid_argument);
  CHECK_THROWS_AS(m.register_module("c", std::shared_ptr<Module>()), std::invalid_argument);

  m.register_buffer("cache", Tensor::zeros({3}), /*persistent=*/false);
  CHECK(keys(m.state_dict()) == std::vector<std::string>{"w"});
  CHECK(keys(m.named_buffers()) == std::vector<std::string>{"cache"});

  auto child = m.register_module("child", std::make_shared<Module>());
  child->register_parameter("tied", w);  // the same tensor in two places
  CHECK(keys(m.named_parameters()) == std::vector<std::string>{"w"});
  CHECK(keys(m.state_dict()) == std::vector<std::string>{"w", "child.tied"});
  CHECK(m.num_parameters() == 2);

  ModuleList list({std::make_shared<Conv>(1, 1, 1), std::make_shared<Linear>(2, 2)});
  CHECK(list.size() == 2);
  CHECK(list.at<Linear>(1)->weight.shape() == Shape{2, 2});
  CHECK_THROWS_WITH_AS(list.at<Linear>(0), doctest::Contains("module 0 is not of the requested type"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(list[2], doctest::Contains("index 2 out of range for 2"), std::out_of_range);
  int n = 0;
  for (const auto& mod : list) n += mod != nullptr;
  CHECK(n == 2);
  CHECK(keys(list.state_dict()) == std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias"});
}
