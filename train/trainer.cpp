#include "train/trainer.h"

#include "io/files.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <tuple>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/device.h"
#include "engine/ops_norm.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "kernels/cpu/isa.h"
#include "train/progress.h"

namespace cpets::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The noise stream's seed: the training seed with a tag, so ε is not drawn from the same Philox
// words as the initial weights (Generator(seed)).
constexpr uint64_t kNoiseTag = 0x6e6f697365303030ull;  // "noise000"

AdamOptions adam_options(const TrainConfig& t, double lr) {
  AdamOptions o;
  o.lr = lr;
  o.beta1 = t.beta1;
  o.beta2 = t.beta2;
  o.eps = t.adam_eps;
  o.weight_decay = 0.0;
  return o;
}

// One group at train.lr (model.md), or two when the conditional path has its own rate.
std::vector<ParamGroup> generator_groups(const models::SynthesisModel& model, const TrainConfig& t) {
  if (t.lr_conditional_scale == 1.0) return {{model.generator_parameters(), adam_options(t, t.lr)}};
  auto [conditional, rest] = model.split_conditional_path();
  if (conditional.empty())
    throw ConfigError("config key 'train.lr_conditional_scale' is " + std::to_string(t.lr_conditional_scale) +
                      " but model.kind \"" + model.kind() + "\" has no conditional path; leave it at 1");
  return {{std::move(rest), adam_options(t, t.lr)},
          {std::move(conditional), adam_options(t, t.lr * t.lr_conditional_scale)}};
}

// ‖∇‖ over f + G_P's cross-attention, and over the other generator parameters (double sums in
// parameter order: deterministic).
std::pair<double, double> conditional_gradient_norms(const models::SynthesisModel& model) {
  auto norm = [](const NamedTensors& params) {
    double s = 0;
    for (const auto& [name, p] : params) {
      const Tensor g = p.grad();
      if (!g.defined()) continue;
      const Tensor h = g.device() == Device::cpu() ? g : g.to(Device::cpu());
      for (int64_t i = 0; i < h.numel(); ++i) s += double(h.data()[i]) * double(h.data()[i]);
    }
    return std::sqrt(s);
  };
  const auto [conditional, rest] = model.split_conditional_path();
  return {norm(conditional), norm(rest)};
}

// The progress line's label for a logged term.
std::string short_term_name(const std::string& name) {
  if (name == "pet_l1") return "L1";
  if (name == "t1") return "T1";
  if (name == "kl") return "KL";
  if (name == "perceptual") return "perc";
  return name;
}

std::string group_digits(int64_t n) {
  std::string s = std::to_string(n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

std::string fixed(double v, int digits = 4) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// The one place validation computes its metrics (eval/metrics.h), on the model grid.
struct SessionMetrics {
  double l1, psnr, ssim;
};
SessionMetrics session_metrics(const float* pred, const float* real, std::array<int64_t, 3> shape) {
  const int64_t n = shape[0] * shape[1] * shape[2];
  return {eval::mae(pred, real, n), eval::psnr(pred, real, n), eval::ssim3d(pred, real, shape, eval::ssim_reference())};
}

bool same_ranges(const io::NormRanges& a, const io::NormRanges& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [k, r] : a) {
    const auto it = b.find(k);
    if (it == b.end() || it->second.min != r.min || it->second.max != r.max) return false;
  }
  return true;
}

// A resumed run appends to the log of the run it continues; entries after the checkpoint's step
// (written by the process that was interrupted after its last checkpoint) are dropped, so the log
// reads like one uninterrupted run.
void trim_log(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  bool dropped = false;
  while (std::getline(in, line)) {
    const json j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("step") && j["step"].is_number() && j["step"].get<int64_t>() > step) {
      dropped = true;
      continue;
    }
    kept += line + "\n";
  }
  in.close();
  if (!dropped) return;
  io::write_text_atomic(path.string(), kept);
}

}  // namespace

double StepLosses::term(const std::string& name) const {
  for (const auto& [key, value] : terms)
    if (key == name) return value;
  return kNaN;
}

json StepLosses::to_json() const {
  json j = {{"type", "step"}, {"step", step}, {"epoch", epoch}, {"batch", batch}, {"g_total", g_total}};
  for (const auto& [key, value] : terms) j[key] = value;
  j["d_total"] = d_total;
  j["grad_conditional"] = grad_conditional;
  j["grad_rest"] = grad_rest;
  j["seconds"] = seconds;
  return j;
}

json ValidationResult::to_json() const {
  json j = {{"type", "validation"}, {"step", step}, {"epoch", epoch}, {"sessions", sessions},
            {"l1", l1},             {"psnr", psnr}, {"ssim", ssim},   {"seconds", seconds}};
  if (!causal.is_null()) j["causal"] = causal;
  return j;
}

Trainer::Trainer(Config config, std::optional<CohortSplits> data, std::shared_ptr<dist::Communicator> comm)
    : config_(std::move(config)),
      comm_(comm ? std::move(comm) : std::shared_ptr<dist::Communicator>(dist::make_single())),
      noise_(derive_seed(config_.train.seed, kNoiseTag)) {
  comm_->require_same("configuration", config_to_json(config_).dump(),
                      "every rank must be started with the same command line, config file and --set options");
  if (config_.train.threads > 0) omp_set_num_threads(static_cast<int>(config_.train.threads));
  place_on_device();
  for (const auto& [family, choice] : op_backends(config_.train))
    if (!choice.empty()) set_backend(family, choice);
  data_ = data ? std::move(*data) : open_cohort(config_.data);
  if (data_.tracer != config_.data.tracer)
    throw ConfigError("data.tracer is " + config_.data.tracer + " but the cohort given is " + data_.tracer);
  const auto& t = config_.train;
  const int64_t ranks = comm_->world();
  if (static_cast<int64_t>(data_.train.size()) < t.batch_size * ranks)
    throw ConfigError("config key 'train.batch_size' is " + std::to_string(t.batch_size) +
                      (ranks > 1 ? " per rank × " + std::to_string(ranks) + " ranks" : std::string()) +
                      " but the training split of '" + data_.cohort_dir + "' has only " +
                      std::to_string(data_.train.size()) + " " + data_.tracer +
                      " session(s); lower train.batch_size" + (ranks > 1 ? " or the number of ranks" : "") +
                      ", or use a larger cohort");
  build_datasets();

  Generator init(t.seed);
  model_ = models::make_model(config_.model, init);  // drawn on the host: the same weights on every device
  model_->to(device_);
  model_->train();
  const models::ObjectiveConfig obj = config_.objective();
  if (obj.lambda_perceptual > 0) {
    perceptual_ = models::load_lpips_squeeze(t.perceptual_weights);
    perceptual_->to(device_);
  }
  g_opt_ = std::make_unique<Adam>(generator_groups(*model_, t));
  if (discriminator_step_enabled())
    d_opt_ = std::make_unique<Adam>(model_->discriminator_parameters(), adam_options(t, t.lr_discriminator));
  model_->set_discriminator_trainable(false);  // unfrozen for its own step only
  if (ranks > 1) {
    // Every rank drew the same weights from the same seed; rank 0's win all the same.
    dist::GradientReducer::broadcast_from_root(*comm_, model_->state_dict());
    const auto bucket_bytes = static_cast<int64_t>(t.bucket_mb * (1 << 20));
    g_sync_ = std::make_unique<dist::GradientReducer>(*comm_, model_->generator_parameters(), bucket_bytes);
    if (d_opt_) d_sync_ = std::make_unique<dist::GradientReducer>(*comm_, model_->discriminator_parameters(), bucket_bytes);
  }
  state_.noise = noise_.state();
  state_.ranks = ranks;
  make_loader();
}

void Trainer::place_on_device() {
  const DeviceChoice choice = parse_device(config_.train.device);
  device_ = choice.device;
  if (device_.is_cpu()) return;
  if (comm_->world() > 1 && choice.index_given)
    throw ConfigError("config key 'train.device' is " + config_.train.device + " but " + std::to_string(comm_->world()) +
                      " ranks train: each uses the GPU of its local rank; set train.device=cuda");
  if (comm_->world() > 1 && !comm_->buffer_device().is_cuda())
    throw ConfigError("train.device=cuda with " + std::to_string(comm_->world()) + " ranks over " + comm_->backend() +
                      ": GPU ranks communicate over NCCL (cpets-train --comm nccl, or auto)");
  if (comm_->world() > 1) {
    select_cuda_device(comm_->local_rank());
    device_ = Device::cuda(comm_->local_rank());
  } else {
    device_ = open_device(config_.train.device);
  }
}

void Trainer::make_loader() {
  loader_.reset();  // join the old worker before the new loader starts
  loader_ = std::make_unique<BatchLoader>(*train_set_, config_.train.batch_size, config_.train.data_seed, state_.position,
                                          config_.data.prefetch, RankShard{comm_->rank(), comm_->world()},
                                          /*pin_memory=*/device_.is_cuda());
}

Trainer::~Trainer() = default;

void Trainer::build_datasets() {
  train_set_ = std::make_unique<Dataset>(data_.train, config_.model.volume, config_.data.cache_mb, config_.model.voxel_mm);
  std::vector<Session> val = data_.val;
  if (config_.data.max_val_sessions > 0 && static_cast<int64_t>(val.size()) > config_.data.max_val_sessions)
    val.resize(static_cast<size_t>(config_.data.max_val_sessions));
  val_set_ = std::make_unique<Dataset>(std::move(val), config_.model.volume, config_.data.cache_mb, config_.model.voxel_mm);
  causal_ = CausalMonitor::open(data_, *train_set_, *val_set_);
}

bool Trainer::discriminator_step_enabled() const { return model_->trains_discriminator(config_.objective()); }

CheckpointMeta Trainer::meta() const {
  CheckpointMeta m;
  m.config = config_;
  m.ranges = data_.ranges;
  m.tracer = data_.tracer;
  m.state = state_;
  return m;
}

void Trainer::resume(const std::string& path) {
  const std::string file = resolve_checkpoint(path);
  LoadedCheckpoint ck = read_checkpoint(file);
  const Config& saved = ck.meta.config;
  if (models::to_json(saved.model) != models::to_json(config_.model)) {
    std::string diff;
    const json a = models::to_json(saved.model), b = models::to_json(config_.model);
    for (const auto& [k, v] : a.items())
      if (!b.contains(k) || b[k] != v) diff += "\n  model." + k + ": checkpoint " + v.dump() + ", now " + b[k].dump();
    throw ConfigError(file + ": the checkpoint was trained with another model configuration:" + diff +
                      "\nresume with the checkpoint's config (cpets-train --resume DIR without --config)");
  }
  auto require_same = [&](const std::string& key, const json& then, const json& now) {
    if (then != now)
      throw ConfigError("config key '" + key + "' is " + now.dump() + " but the checkpoint " + file + " used " +
                        then.dump() + "; resuming continues its data order and noise only with the same value");
  };
  require_same("data.tracer", saved.data.tracer, config_.data.tracer);
  const int64_t ranks = comm_->world();
  if (ck.meta.state.ranks == ranks) {
    require_same("train.batch_size", saved.train.batch_size, config_.train.batch_size);
  } else if (ck.meta.state.ranks * saved.train.batch_size != ranks * config_.train.batch_size) {
    // Another world size continues the same global batches (the loader re-shards them) only
    // when the global batch is the same.
    const int64_t global = ck.meta.state.ranks * saved.train.batch_size;
    throw ConfigError(file + " was trained by " + std::to_string(ck.meta.state.ranks) + " rank(s) × train.batch_size " +
                      std::to_string(saved.train.batch_size) + " (global batch " + std::to_string(global) +
                      "); this run has " + std::to_string(ranks) + " rank(s) × " +
                      std::to_string(config_.train.batch_size) + " = " + std::to_string(ranks * config_.train.batch_size) +
                      ". Resume with " + std::to_string(ck.meta.state.ranks) + " rank(s), or keep the global batch: " +
                      (global % ranks == 0 ? "--set train.batch_size=" + std::to_string(global / ranks)
                                           : std::to_string(global) + " sessions do not split over " +
                                                 std::to_string(ranks) + " ranks"));
  }
  require_same("train.seed", saved.train.seed, config_.train.seed);
  require_same("train.data_seed", saved.train.data_seed, config_.train.data_seed);

  if (!same_ranges(ck.meta.ranges, data_.ranges)) {
    // Never refit on resume: the network learnt the checkpoint's normalisation.
    renormalise(data_, ck.meta.ranges);
    loader_.reset();  // it reads the old training set
    build_datasets();
  }
  model_->load_state_dict(ck.model, /*strict=*/true);
  g_opt_->load_state_dict(ck.g_optimizer);
  if (d_opt_) d_opt_->load_state_dict(ck.d_optimizer);
  state_ = ck.meta.state;
  state_.ranks = ranks;
  resumed_ = true;
  noise_.set_state(state_.noise);
  comm_->require_same("checkpoint", file + " at step " + std::to_string(state_.step),
                      "every rank must resume from the same run folder (on a file system they share)");
  make_loader();
}

StepLosses training_step(const StepContext& ctx, const Batch& batch, int64_t step_number) {
  models::SynthesisModel& model = ctx.model;
  const models::Inputs in{batch.t1, batch.csf, batch.covariates};
  const models::PhaseContext phase{ctx.noise, ctx.objective, ctx.perceptual, ctx.shard};
  StepLosses out;
  out.epoch = batch.epoch;
  out.batch = batch.index;

  // 1. Generator: D frozen (it is, outside its own step), one backward over the generator.
  ctx.g_opt.zero_grad();
  const models::LossTerms g = model.generator_loss(in, batch.pet, phase);
  out.g_total = g.total.item() * g.log_scale;
  if (!std::isfinite(out.g_total)) {  // stop before a non-finite gradient reaches the weights
    std::string terms;
    for (const auto& [name, value] : g.terms) terms += (terms.empty() ? "" : ", ") + name + " " + std::to_string(value);
    throw std::runtime_error("step " + std::to_string(step_number) + " (epoch " + std::to_string(batch.epoch) +
                             ", batch " + std::to_string(batch.index) + "): the generator loss is " +
                             std::to_string(out.g_total) + " (" + terms +
                             "); resume from the last checkpoint with a lower train.lr");
  }
  if (ctx.g_sync) ctx.g_sync->begin();
  g.total.backward();
  if (ctx.g_sync) ctx.g_sync->finish();  // the ranks' mean gradient, the same on every rank
  std::tie(out.grad_conditional, out.grad_rest) = conditional_gradient_norms(model);
  ctx.g_opt.step();
  out.terms = g.terms;

  // 2. Discriminator on fakes regenerated by the updated generator.
  out.d_total = kNaN;
  if (ctx.d_opt && model.trains_discriminator(ctx.objective)) {
    model.set_discriminator_trainable(true);
    ctx.d_opt->zero_grad();
    const models::LossTerms d = model.discriminator_loss(in, batch.pet, phase);
    if (ctx.d_sync) ctx.d_sync->begin();
    d.total.backward();
    if (ctx.d_sync) ctx.d_sync->finish();
    ctx.d_opt->step();
    model.set_discriminator_trainable(false);
    out.d_total = d.total.item() * d.log_scale;
    out.terms.insert(out.terms.end(), d.terms.begin(), d.terms.end());
  }
  out.step = step_number;
  return out;
}

StepLosses Trainer::step() {
  const auto t0 = std::chrono::steady_clock::now();
  Batch batch = loader_->next();
  for (Tensor* t : {&batch.t1, &batch.pet, &batch.csf, &batch.covariates}) *t = t->to(device_);
  const int64_t b = config_.train.batch_size;
  // BatchNorm statistics (the discriminator's) are each rank's own during a step; rank 0's are
  // the model's, so every rank starts a step from them (and a checkpoint holds them).
  if (comm_->world() > 1) dist::GradientReducer::broadcast_from_root(*comm_, model_->named_buffers());
  // Synchronised BatchNorm: its statistics are summed over the ranks on this thread, after the
  // reducers' in-flight buckets (one thread in the communicator at a time, the same order on
  // every rank).
  std::optional<BatchNormReplicaGuard> sync_bn;
  if (comm_->world() > 1 && config_.train.sync_batchnorm)
    sync_bn.emplace([this](double* values, int64_t count) {
      for (dist::GradientReducer* r : {g_sync_.get(), d_sync_.get()})
        if (r) r->quiesce();
      comm_->all_reduce_sum(values, count, dist::DType::F64);
    });
  const StepContext ctx{*model_,
                        *g_opt_,
                        discriminator_step_enabled() ? d_opt_.get() : nullptr,
                        perceptual_.get(),
                        noise_,
                        config_.objective(),
                        g_sync_.get(),
                        d_sync_.get(),
                        models::BatchShard{comm_->rank() * b, comm_->world() * b}};
  StepLosses out = training_step(ctx, batch, state_.step + 1);
  average_over_ranks(out);
  ++state_.step;
  state_.position = loader_->position();
  state_.noise = noise_.state();
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

void Trainer::average_over_ranks(StepLosses& losses) {
  const int ranks = comm_->world();
  if (ranks == 1) return;
  // Every loss is a mean over its batch, so the mean over equal shards is the global batch's.
  std::vector<double> values{losses.g_total, losses.d_total};
  for (const auto& [name, value] : losses.terms) values.push_back(value);
  comm_->all_reduce_sum(values.data(), static_cast<int64_t>(values.size()), dist::DType::F64);
  for (double& v : values) v /= ranks;
  losses.g_total = values[0];
  losses.d_total = values[1];
  for (size_t i = 0; i < losses.terms.size(); ++i) losses.terms[i].second = values[i + 2];
}

ValidationResult Trainer::validate_on_root() {
  if (comm_->world() == 1) return validate();
  std::string text = comm_->is_root() ? validate().to_json().dump() : std::string();
  uint64_t size = text.size();
  comm_->broadcast(&size, sizeof size, 0);
  text.resize(size);
  comm_->broadcast(text.data(), static_cast<int64_t>(size), 0);
  const json j = json::parse(text);
  ValidationResult v;
  v.step = j.at("step");
  v.epoch = j.at("epoch");
  v.sessions = j.at("sessions");
  auto number = [&](const char* key) { return j.at(key).is_null() ? kNaN : j.at(key).get<double>(); };  // NaN → null
  v.l1 = number("l1");
  v.psnr = number("psnr");
  v.ssim = number("ssim");
  v.seconds = number("seconds");
  if (j.contains("causal")) v.causal = j.at("causal");
  return v;
}

bool Trainer::record_validation(const ValidationResult& v) {
  state_.last_validation = v.to_json();
  if (!(v.l1 < state_.best_val_l1)) return false;
  state_.best_val_l1 = v.l1;
  state_.best_step = state_.step;
  return true;
}

ValidationResult Trainer::validate() {
  const auto t0 = std::chrono::steady_clock::now();
  ValidationResult r;
  r.step = state_.step;
  r.epoch = state_.position.epoch;
  const int64_t n = val_set_->size();
  if (n == 0) {
    r.l1 = r.psnr = r.ssim = kNaN;
    return r;
  }
  NoGradGuard no_grad;
  model_->eval();
  double l1 = 0, psnr = 0, ssim = 0;
  const eval::Synthesiser synthesiser(model_);
  if (causal_) causal_->begin();
  for (int64_t i = 0; i < n; ++i) {
    const Batch one = val_set_->collate({i});
    const models::Abduction abduction = model_->abduct(one.t1.to(device_), one.covariates.to(device_));
    const Tensor pet = model_->synthesise(abduction, one.csf.to(device_), one.covariates.to(device_)).to(Device::cpu());  // ε = 0
    if (causal_) {
      const auto pair = val_set_->load(i);
      io::Volume syn = io::make_volume(pair->second.volume.shape, 0.f, pair->second.volume.affine);
      std::copy(pet.data(), pet.data() + pet.numel(), syn.data.begin());
      causal_->add(synthesiser, i, abduction, syn);
    }
    const SessionMetrics m = session_metrics(pet.data(), one.pet.data(), val_set_->volume());
    l1 += m.l1;
    psnr += m.psnr;
    ssim += m.ssim;
  }
  if (causal_) r.causal = causal_->finish();
  model_->train();
  r.sessions = n;
  r.l1 = l1 / n;
  r.psnr = psnr / n;
  r.ssim = ssim / n;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

std::string Trainer::save(const std::string& out_dir, const std::optional<ValidationResult>& validation) {
  const fs::path dir = fs::path(out_dir) / "checkpoints";
  const bool best = validation && record_validation(*validation);
  const CheckpointMeta m = meta();
  const std::string path = save_checkpoint(dir.string(), step_checkpoint_name(state_.step), *model_, *g_opt_, d_opt_.get(), m);
  if (best) save_checkpoint(dir.string(), "best", *model_, *g_opt_, d_opt_.get(), m);
  prune_step_checkpoints(dir.string(), config_.train.keep_last);
  return path;
}

int64_t Trainer::total_steps(const RunOptions& opt) const {
  const int64_t epochs = opt.epochs.value_or(config_.train.epochs);
  int64_t total = epochs * loader_->batches_per_epoch();
  const int64_t cap = opt.max_steps > 0 ? opt.max_steps : config_.train.max_steps;
  if (cap > 0) total = std::min(total, cap);
  return total;
}

void Trainer::run(const RunOptions& opt) {
  // Data-parallel ranks other than 0 train in silence and write nothing.
  const bool root = comm_->is_root();
  std::ostream silent(nullptr);
  std::ostream& os = !root ? silent : opt.progress_stream ? *opt.progress_stream : std::cerr;
  const int64_t total = total_steps(opt);
  const auto& t = config_.train;
  if (opt.until_conditional && (!causal_ || t.validate_every <= 0))
    throw ConfigError(std::string("--until-conditional needs causal metrics at validation: ") +
                      (!causal_ ? "the cohort '" + data_.cohort_dir + "' has no atlas/regions.json (or it does not fit the model grid)"
                                : "train.validate_every is 0; set it to 1"));
  std::ofstream log;
  const std::string out_dir = root ? opt.out_dir : std::string();
  if (!opt.out_dir.empty()) {
    const auto existing = list_step_checkpoints((fs::path(opt.out_dir) / "checkpoints").string());
    if (state_.step == 0 && !resumed_ && !existing.empty())
      throw ConfigError("the run folder '" + opt.out_dir + "' already holds checkpoints of a run (up to step " +
                        std::to_string(existing.back().first) + "); continue it with --resume " + opt.out_dir +
                        ", or choose another --out");
  }
  if (!out_dir.empty()) {
    fs::create_directories(out_dir);
    std::ofstream(fs::path(out_dir) / "config.json") << config_to_json(config_).dump(2) << "\n";
    const fs::path log_path = fs::path(out_dir) / "train.jsonl";
    trim_log(log_path, state_.step);
    log.open(log_path, std::ios::app);
    if (!log) throw std::runtime_error("cannot write the training log '" + log_path.string() + "'");
  }
  auto write_log = [&](const json& j) {
    if (log.is_open()) log << j.dump() << "\n" << std::flush;
  };
  // Which CPU kernels run, in the log and on screen: losses are bitwise reproducible per level and
  // thread count, so a comparison of runs needs both.
  const std::string isa = kernels::cpu::cpu_isa_name(kernels::cpu::cpu_isa());
  json backends = json::object();  // what CUDA tensors run on (CPU tensors always use kernels/cpu)
  for (const auto& [family, choice] : op_backends(config_.train)) backends[family] = backend_name(family);
  const int64_t ranks = comm_->world();
  write_log({{"type", "start"},
             {"step", state_.step},
             {"device", device_.is_cuda() ? cuda_device_description(device_.index) : std::string("cpu")},
             {"cpu_isa", isa},
             {"threads", omp_get_max_threads()},
             {"ranks", ranks},
             {"communicator", comm_->backend()},
             {"backends", backends}});
  if (device_.is_cuda()) os << "device: " << cuda_device_description(device_.index) << "\n";
  os << "CPU kernels: " << kernels::cpu::cpu_isa_description() << ", " << omp_get_max_threads() << " threads"
     << (ranks > 1 ? " per rank" : "") << "\n";
  if (ranks > 1)
    os << "data-parallel: " << ranks << " ranks over " << comm_->backend() << ", gradients in " << g_sync_->bucket_count()
       << " bucket(s) of ≤ " << t.bucket_mb << " MiB (generator)\n";
  const int64_t per_epoch = loader_->batches_per_epoch();
  os << "training " << data_.train.size() << " " << data_.tracer << " sessions (" << per_epoch << " batches of "
     << t.batch_size;
  if (ranks > 1) os << " × " << ranks << " ranks = " << t.batch_size * ranks;
  os << " per epoch), " << val_set_->size() << " validation sessions; steps " << state_.step << " → " << total << "\n";

  if (state_.step >= total) {
    os << "nothing to do: the run is at step " << state_.step << " and the limit (--max-steps / train.epochs) is "
       << total << "\n";
    return;
  }
  ProgressLine progress(os, state_.step, total, opt.progress, std::max<int64_t>(1, total / 20));
  int64_t last_saved = -1, last_validated = -1;
  auto validate_and_report = [&](const std::string& when) {
    const ValidationResult v = validate_on_root();
    last_validated = state_.step;
    state_.last_validation = v.to_json();
    write_log(v.to_json());
    progress.message("validation " + when + ": L1 " + fixed(v.l1) + "  PSNR " + fixed(v.psnr, 2) + " dB  SSIM " +
                     fixed(v.ssim) + "  (" + std::to_string(v.sessions) + " sessions, " + fixed(v.seconds, 1) + " s)");
    if (!v.causal.is_null()) progress.message("  causal: " + CausalMonitor::describe(v.causal));
    if (!out_dir.empty())  // the run's curves so far, for a browser
      eval::write_curves_html((fs::path(out_dir) / "curves.html").string(), "Training curves: " + out_dir,
                              eval::training_curves((fs::path(out_dir) / "train.jsonl").string()));
    return v;
  };
  auto checkpoint = [&](const std::optional<ValidationResult>& v) {
    if (opt.out_dir.empty()) return;
    if (!root) {  // the same state as rank 0's, which writes it
      if (v) record_validation(*v);
      last_saved = state_.step;
      return;
    }
    const std::string path = save(opt.out_dir, v);
    last_saved = state_.step;
    progress.message("checkpoint " + path + (state_.best_step == state_.step ? " (best so far)" : ""));
  };

  bool stopped = false;
  // Training time as train.jsonl counts it (steps and validations), so that a resumed budget adds up.
  double spent = 0;
  auto out_of_time = [&] { return opt.max_seconds > 0 && spent >= opt.max_seconds; };
  while (state_.step < total) {
    if (comm_->any(opt.stop && opt.stop->load())) {  // every rank stops at the same step
      stopped = true;
      break;
    }
    const StepLosses s = step();
    spent += s.seconds;
    write_log(s.to_json());
    std::string text = "epoch " + std::to_string(s.epoch) + "  G " + fixed(s.g_total);
    for (const auto& [name, value] : s.terms) {  // the generator's terms; D's are summed in "D"
      if (std::isnan(value) || name.rfind("d_", 0) == 0) continue;
      text += "  " + short_term_name(name) + " " + fixed(value, name == "kl" ? 2 : 4);
    }
    if (!std::isnan(s.d_total)) text += "  D " + fixed(s.d_total);
    progress.update(state_.step, text);

    const bool epoch_done = state_.position.batch == 0;
    const int64_t epochs_done = state_.position.epoch;
    std::optional<ValidationResult> v;
    if (epoch_done && t.validate_every > 0 && epochs_done % t.validate_every == 0 && val_set_->size() > 0) {
      v = validate_and_report("after epoch " + std::to_string(epochs_done));
      spent += v->seconds;
    }
    if (v && opt.until_conditional && CausalMonitor::conditional_path_on(v->causal)) {
      progress.message("the conditional path is on at step " + std::to_string(state_.step) +
                       " (SUVR below the mean PET's error, r ≥ 0.8, CSF interventions tracking the truth): stopping");
      checkpoint(v);
      conditional_on_ = true;
      break;
    }
    const bool epoch_ckpt = epoch_done && t.checkpoint_every > 0 && epochs_done % t.checkpoint_every == 0;
    const bool step_ckpt = t.checkpoint_every_steps > 0 && state_.step % t.checkpoint_every_steps == 0;
    const bool improved = v && v->l1 < state_.best_val_l1;  // keep every new best on disk
    if (epoch_ckpt || step_ckpt || improved) checkpoint(v);
    if (comm_->any(out_of_time())) {
      progress.message("wall-time budget of " + fixed(opt.max_seconds, 1) + " s reached at step " +
                       std::to_string(state_.step));
      break;
    }
  }
  std::optional<ValidationResult> v;
  if (!stopped && last_validated != state_.step && t.validate_every > 0 && val_set_->size() > 0 && state_.step > 0)
    v = validate_and_report("at step " + std::to_string(state_.step));
  if (last_saved != state_.step) checkpoint(v);
  progress.finish();
  if (g_sync_ && g_sync_->stats().steps > 0) {
    const dist::ReducerStats& s = g_sync_->stats();
    write_log({{"type", "data_parallel"},
               {"ranks", ranks},
               {"steps", s.steps},
               {"allreduce_seconds", s.reduce_seconds},
               {"exposed_seconds", s.exposed_seconds},
               {"hidden_fraction", s.hidden_fraction()}});
    os << "gradient all-reduce (generator): " << fixed(s.reduce_seconds / double(s.steps), 3) << " s a step, "
       << fixed(100.0 * s.hidden_fraction(), 0) << " % of it hidden behind the backward pass\n";
  }
}

std::string describe_parameters(const models::SynthesisModel& model) {
  std::ostringstream s;
  s << "  model.kind " << model.kind() << "\n";
  for (const auto& [name, n] : model.parameter_table()) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "  %-34s %14s\n", name.c_str(), group_digits(n).c_str());
    s << buf;
  }
  return s.str();
}

}  // namespace cpets::train
