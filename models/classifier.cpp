#include "models/classifier.h"

#include <stdexcept>
#include <string>

#include "engine/ops_elementwise.h"
#include "engine/ops_shape.h"

namespace cpets::models {

namespace {
[[noreturn]] void invalid(const std::string& field, const std::string& problem, const std::string& fix) {
  throw std::invalid_argument("classifier config: " + field + " " + problem + "; " + fix);
}
}  // namespace

std::array<int64_t, 3> ClassifierConfig::final_grid() const {
  std::array<int64_t, 3> g = volume;
  for (auto& n : g) n >>= channels.size();
  return g;
}

int64_t ClassifierConfig::flatten_size() const {
  const auto g = final_grid();
  return channels.back() * g[0] * g[1] * g[2];
}

void ClassifierConfig::validate() const {
  if (channels.empty() || channels.size() != attention.size())
    invalid("channels/attention", "have " + std::to_string(channels.size()) + " and " + std::to_string(attention.size()) +
                                      " levels", "give one attention flag per level");
  const int64_t multiple = int64_t(1) << channels.size();
  for (int64_t n : volume)
    if (n < multiple || n % multiple != 0)
      invalid("volume", "has a size not divisible by " + std::to_string(multiple),
              "each of the " + std::to_string(channels.size()) + " levels halves the grid: pad or crop");
  if (in_channels != 1 && in_channels != 2) invalid("in_channels", "is " + std::to_string(in_channels), "use 1 or 2");
  if (context_channels < 0) invalid("context_channels", "is negative", "use 0 (no tabular input) or its width");
  for (size_t l = 0; l < channels.size(); ++l) {
    if (groups < 1 || channels[l] % groups != 0)
      invalid("channels", "has " + std::to_string(channels[l]) + ", not a multiple of groups " + std::to_string(groups),
              "use multiples of the group count");
    if (attention[l] && (head_channels < 1 || channels[l] % head_channels != 0))
      invalid("head_channels", "= " + std::to_string(head_channels) + " does not divide " + std::to_string(channels[l]),
              "choose a head width that divides every attention level's channels");
  }
  if (!(dropout >= 0 && dropout < 1)) invalid("dropout", "is " + std::to_string(dropout), "use a rate in [0, 1)");
  if (hidden < 1 || classes < 2) invalid("hidden/classes", "are too small", "hidden ≥ 1, classes ≥ 2");
}

ClassifierConfig classifier_preset(const std::string& name, int64_t in_channels, int64_t context_channels) {
  ClassifierConfig c;
  c.preset = name;
  c.in_channels = in_channels;
  c.context_channels = context_channels;
  if (name == "demo") {
    c.volume = {48, 64, 48};
    c.channels = {8, 16, 32, 32};
    c.attention = {false, false, true, true};
    c.groups = 8;
    c.head_channels = 16;
    c.hidden = 128;
  } else if (name == "tiny") {
    c.volume = {16, 16, 16};
    c.channels = {4, 8, 8};
    c.attention = {false, true, true};
    c.groups = 2;
    c.head_channels = 4;
    c.hidden = 16;
  } else if (name != "full") {
    throw std::invalid_argument("classifier preset '" + name + "' is unknown; use full, demo or tiny");
  }
  c.validate();
  return c;
}

DiagnosisClassifier::DiagnosisClassifier(const ClassifierConfig& config, Generator& init) : config_(config) {
  config.validate();
  const auto& ch = config.channels;
  conv_in_ = register_module("conv_in", std::make_shared<layers::Conv3d>(config.in_channels, ch[0], 3, init,
                                                                         layers::ConvOptions{1, 1, true}));
  auto down_blocks = register_module("down_blocks", std::make_shared<ModuleList>());
  int64_t width = ch[0];
  for (size_t l = 0; l < ch.size(); ++l) {
    auto block = down_blocks->push_back(std::make_shared<Module>());
    auto resnets = block->register_module("resnets", std::make_shared<ModuleList>());
    std::shared_ptr<ModuleList> attentions;
    if (config.attention[l]) attentions = block->register_module("attentions", std::make_shared<ModuleList>());
    Level level;
    const int64_t heads = config.attention[l] ? ch[l] / config.head_channels : 1;
    for (int j = 0; j < 2; ++j) {
      level.resnets.push_back(resnets->push_back(
          std::make_shared<layers::ResnetBlock>(j == 0 ? width : ch[l], ch[l], config.groups, config.norm_eps, init)));
      if (!config.attention[l]) continue;
      if (config.context_channels > 0)
        level.cross_attentions.push_back(attentions->push_back(std::make_shared<layers::SpatialTransformer>(
            ch[l], heads, config.context_channels, config.groups, config.norm_eps, config.ln_eps, init)));
      else
        level.self_attentions.push_back(attentions->push_back(
            std::make_shared<layers::AttentionBlock>(ch[l], heads, config.groups, config.norm_eps, init)));
    }
    level.downsampler = block->register_module(
        "downsampler",
        std::make_shared<layers::ResnetBlock>(ch[l], ch[l], config.groups, config.norm_eps, init, layers::Resample::down));
    levels_.push_back(std::move(level));
    width = ch[l];
  }
  auto out = register_module("out", std::make_shared<ModuleList>());
  hidden_ = out->register_module("0", std::make_shared<layers::Linear>(config.flatten_size(), config.hidden, init));
  logits_ = out->register_module("3", std::make_shared<layers::Linear>(config.hidden, config.classes, init));
}

Tensor DiagnosisClassifier::forward(const Tensor& x, const Tensor& context, Generator* dropout_noise) const {
  const auto& c = config_;
  if (x.dim() != 5 || x.size(1) != c.in_channels || x.size(2) != c.volume[0] || x.size(3) != c.volume[1] ||
      x.size(4) != c.volume[2])
    throw std::invalid_argument("DiagnosisClassifier: input must be (B, " + std::to_string(c.in_channels) + ", " +
                                std::to_string(c.volume[0]) + ", " + std::to_string(c.volume[1]) + ", " +
                                std::to_string(c.volume[2]) + "), got " + x.str());
  if ((c.context_channels > 0) != context.defined())
    throw std::invalid_argument(c.context_channels > 0 ? "DiagnosisClassifier: built with tabular input but given none"
                                                       : "DiagnosisClassifier: built without tabular input but given a context");
  Tensor h = conv_in_->forward(x);
  for (const Level& level : levels_) {
    for (size_t j = 0; j < level.resnets.size(); ++j) {
      h = level.resnets[j]->forward(h);
      if (j < level.cross_attentions.size()) h = level.cross_attentions[j]->forward(h, context);
      if (j < level.self_attentions.size()) h = level.self_attentions[j]->forward(h);
    }
    h = level.downsampler->forward(h);
  }
  h = relu(hidden_->forward(reshape(h, {h.size(0), -1})));
  if (is_training() && dropout_noise && c.dropout > 0) {  // inverted dropout: E[output] unchanged
    Tensor mask = rand(h.shape(), *dropout_noise);  // drawn on the host (the same Philox stream as on a device)
    for (int64_t i = 0; i < mask.numel(); ++i) mask.data()[i] = mask.data()[i] < c.dropout ? 0.f : 1.f / (1 - c.dropout);
    h = mul(h, mask.to(h.device()));
  }
  return logits_->forward(h);
}

}  // namespace cpets::models
