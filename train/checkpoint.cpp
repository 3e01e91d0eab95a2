#include "train/checkpoint.h"

#include "engine/device.h"

#include "io/files.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>

#include "engine/safetensors.h"

namespace cpets::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kMetaKey = "cpets";
const std::string kGenPrefix = "optim.generator.";
const std::string kDiscPrefix = "optim.discriminator.";

json ranges_to_json(const io::NormRanges& r) {
  json j = json::object();
  for (const auto& [k, v] : r) j[k] = {v.min, v.max};
  return j;
}

io::NormRanges ranges_from_json(const json& j) {
  io::NormRanges r;
  for (const auto& [k, v] : j.items()) r[k] = {v.at(0).get<double>(), v.at(1).get<double>()};
  return r;
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

}  // namespace

std::string step_checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

json checkpoint_meta_to_json(const CheckpointMeta& m) {
  const auto& s = m.state;
  return {{"format", kCheckpointFormat},
          {"step", s.step},
          {"position", {{"epoch", s.position.epoch}, {"batch", s.position.batch}}},
          {"noise_rng", Generator(s.noise.seed, s.noise.offset).state_string()},
          {"best_val_l1", std::isfinite(s.best_val_l1) ? json(s.best_val_l1) : json(nullptr)},
          {"best_step", s.best_step},
          {"last_validation", s.last_validation},
          {"ranks", s.ranks},
          {"tracer", m.tracer},
          {"ranges", ranges_to_json(m.ranges)},
          {"config", config_to_json(m.config)},
          {"model_config", models::to_json(m.config.model)}};
}

CheckpointMeta checkpoint_meta_from_json(const json& j, const std::string& source) {
  try {
    const int format = j.at("format").get<int>();
    if (format != kCheckpointFormat)
      throw std::runtime_error("format " + std::to_string(format) + " (this build reads format " +
                               std::to_string(kCheckpointFormat) + ")");
    CheckpointMeta m;
    m.config = saved_config_from_json(j.at("config"));
    m.tracer = j.at("tracer").get<std::string>();
    m.ranges = ranges_from_json(j.at("ranges"));
    auto& s = m.state;
    s.step = j.at("step").get<int64_t>();
    s.position = {j.at("position").at("epoch").get<int64_t>(), j.at("position").at("batch").get<int64_t>()};
    Generator g;
    g.set_state_string(j.at("noise_rng").get<std::string>());
    s.noise = g.state();
    s.best_val_l1 = j.at("best_val_l1").is_null() ? std::numeric_limits<double>::infinity()
                                                   : j.at("best_val_l1").get<double>();
    s.best_step = j.at("best_step").get<int64_t>();
    s.last_validation = j.at("last_validation");
    s.ranks = j.value("ranks", int64_t{1});  // checkpoints from before data-parallel training: one process
    return m;
  } catch (const std::exception& e) {
    throw std::runtime_error(source + ": unreadable checkpoint state: " + e.what());
  }
}

std::string save_checkpoint(const std::string& dir, const std::string& name, const models::SynthesisModel& model,
                            const Adam& g_optimizer, const Adam* d_optimizer, const CheckpointMeta& meta) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create the checkpoint folder '" + dir + "': " + ec.message());
  NamedTensors tensors = model.state_dict();
  for (auto& t : g_optimizer.state_dict(kGenPrefix)) tensors.push_back(std::move(t));
  if (d_optimizer)
    for (auto& t : d_optimizer->state_dict(kDiscPrefix)) tensors.push_back(std::move(t));
  const std::string text = checkpoint_meta_to_json(meta).dump(2);
  const fs::path st = fs::path(dir) / (name + ".safetensors");
  save_safetensors(st.string(), tensors, {{kMetaKey, text}});  // atomic
  io::write_text_atomic((fs::path(dir) / (name + ".json")).string(), text + "\n");
  return st.string();
}

std::vector<std::pair<int64_t, std::string>> list_step_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  static const std::regex pattern(R"(step-(\d+)\.safetensors)");
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string file = e.path().filename().string();
    if (e.is_regular_file() && std::regex_match(file, m, pattern)) out.emplace_back(std::stoll(m[1]), e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void prune_step_checkpoints(const std::string& dir, int64_t keep) {
  auto all = list_step_checkpoints(dir);
  const int64_t excess = static_cast<int64_t>(all.size()) - std::max<int64_t>(keep, 0);
  for (int64_t i = 0; i < excess; ++i) {
    const fs::path st = all[static_cast<size_t>(i)].second;
    std::error_code ec;
    fs::remove(st, ec);
    fs::path js = st;
    fs::remove(js.replace_extension(".json"), ec);
  }
}

std::string resolve_checkpoint(const std::string& path, bool prefer_best) {
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_regular_file(p, ec)) {
    if (p.extension() == ".safetensors") return p.string();
    if (p.extension() == ".json") {
      fs::path st = p;
      st.replace_extension(".safetensors");
      if (fs::is_regular_file(st, ec)) return st.string();
      throw std::runtime_error("checkpoint '" + path + "' has no " + st.filename().string() + " beside it");
    }
    throw std::runtime_error("'" + path + "' is not a checkpoint (expected a .safetensors or .json file, or a run folder)");
  }
  if (!fs::is_directory(p, ec))
    throw std::runtime_error("checkpoint path '" + path + "' does not exist");
  const fs::path dir = fs::is_directory(p / "checkpoints", ec) ? p / "checkpoints" : p;
  const fs::path best = dir / "best.safetensors";
  const auto steps = list_step_checkpoints(dir.string());
  if (prefer_best && fs::is_regular_file(best, ec)) return best.string();
  if (!steps.empty()) return steps.back().second;
  if (fs::is_regular_file(best, ec)) return best.string();
  throw std::runtime_error("no checkpoint in '" + dir.string() +
                           "' (looked for step-*.safetensors and best.safetensors); train with --out DIR first");
}

LoadedCheckpoint read_checkpoint(const std::string& path) {
  SafetensorsFile f = load_safetensors(path);
  const auto it = f.metadata.find(kMetaKey);
  if (it == f.metadata.end())
    throw std::runtime_error(path + " is a safetensors file but not a cpets checkpoint (no '" + kMetaKey +
                             "' metadata); model weights alone cannot resume a run");
  json j;
  try {
    j = json::parse(it->second);
  } catch (const json::parse_error& e) {
    throw std::runtime_error(path + ": the checkpoint state is not valid JSON: " + e.what());
  }
  LoadedCheckpoint c;
  c.path = path;
  c.meta = checkpoint_meta_from_json(j, path);
  for (auto& [name, t] : f.tensors) {
    if (starts_with(name, kGenPrefix))
      c.g_optimizer.emplace_back(name.substr(kGenPrefix.size()), std::move(t));
    else if (starts_with(name, kDiscPrefix))
      c.d_optimizer.emplace_back(name.substr(kDiscPrefix.size()), std::move(t));
    else
      c.model.emplace_back(name, std::move(t));
  }
  return c;
}

Device open_device(const std::string& text) {
  DeviceChoice choice;
  try {
    choice = parse_device(text);
  } catch (const ConfigError&) {
    throw ConfigError("--device " + text + " (train.device): use cpu, cuda or cuda:N (N: the GPU's index)");
  }
  if (choice.device.is_cpu()) return choice.device;
  // No GPU is a wrong choice of device (exit 2), not a failure of the run.
  const std::string name = choice.device.str();
  std::string why;
  if (!cuda_available(&why))
    throw ConfigError("--device " + text + " (train.device): " + name + ": " + why +
                      "; use --device cpu to run on the CPU");
  try {
    // Also the current GPU of this thread: timing events and synchronisation outside the ops
    // (which make their tensors' GPU current themselves) refer to it.
    select_cuda_device(choice.device.index);
  } catch (const std::runtime_error& e) {
    throw ConfigError("--device " + text + " (train.device): " + e.what() + "; pick one of them or --device cpu");
  }
  return choice.device;
}

InferenceBundle load_for_inference(const std::string& path, const std::string& device) {
  const Device d = open_device(device);
  const std::string file = resolve_checkpoint(path, /*prefer_best=*/true);
  LoadedCheckpoint c = read_checkpoint(file);
  InferenceBundle b;
  b.model_config = c.meta.config.model;
  Generator init(0);  // the weights are overwritten by the checkpoint's
  b.model = models::make_model(b.model_config, init);
  try {
    b.model->load_state_dict(c.model, /*strict=*/true);
  } catch (const std::exception& e) {
    throw std::runtime_error(file + ": the weights do not fit the model its config describes: " + e.what());
  }
  b.model->eval();
  b.model->to(d);
  b.ranges = c.meta.ranges;
  b.tracer = c.meta.tracer;
  b.path = file;
  b.meta = std::move(c.meta);
  return b;
}

}  // namespace cpets::train
