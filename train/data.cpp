#include "train/data.h"

#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <set>
#include <stdexcept>

#include "engine/rng.h"
#include "io/nifti.h"
#include "io/preprocess.h"

namespace cpets::train {

namespace fs = std::filesystem;

// ---- volumes -------------------------------------------------------------------------------

PreparedVolume prepare_volume(const std::string& path, std::array<int64_t, 3> model_volume, double voxel_mm) {
  io::Volume v = io::read_nifti(path);  // its errors name the file
  if (voxel_mm > 0) {
    const std::string why = io::grid_mismatch(v, voxel_mm);
    if (!why.empty()) {
      char mm[32];
      std::snprintf(mm, sizeof mm, "%g", voxel_mm);
      throw std::runtime_error(path + ": " + why + "; the model reads " + mm + " mm RAS+ grids — resample the cohort "
                               "once with `cpets-data prepare COHORT --out NEW --voxel-mm " + mm + "` (docs/your-data.md)");
    }
  }
  PreparedVolume p;
  p.original = {v.shape, v.affine};
  try {
    p.max = io::normalize_by_max(v);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  p.volume = io::pad_crop_to(v, model_volume);
  return p;
}

io::Volume restore_to_grid(const io::Volume& model_grid, const VolumeGrid& original) {
  // pad_crop_to moved the affine by whole voxels, so nearest-neighbour resampling through the
  // affines is the exact inverse: every original voxel lands on a model voxel centre or outside.
  return io::resample_to_grid(model_grid, original.shape, original.affine, io::Interp::nearest, 0.f);
}

// ---- the cohort ------------------------------------------------------------------------------

std::vector<float> csf_vector(const io::PairedRecord& r, const io::NormRanges& ranges, const std::string& tracer) {
  if (r.tracer != tracer)
    throw std::invalid_argument("record " + r.subject + " PET " + io::format_date(r.pet_date) + " is " + r.tracer +
                                ", not the model's tracer " + tracer);
  return io::csf_inputs(r, ranges);
}

std::vector<float> covariate_vector(const io::PairedRecord& r, const io::NormRanges& ranges) {
  return io::covariate_inputs(r, ranges);
}

namespace {

std::string list_lines(const std::vector<std::string>& lines, size_t max_lines = 20) {
  std::string s;
  for (size_t i = 0; i < lines.size() && i < max_lines; ++i) s += "\n  " + lines[i];
  if (lines.size() > max_lines) s += "\n  … and " + std::to_string(lines.size() - max_lines) + " more";
  return s;
}

// The cohort folder and the cohort table from data.cohort (a folder or its cohort.csv).
std::pair<fs::path, fs::path> cohort_location(const DataConfig& cfg) {
  if (cfg.cohort.empty())
    throw std::runtime_error(
        "data.cohort is empty: point it at a cohort folder (cohort.csv + t1/ + pet/), e.g. --set data.cohort=out/demo/cohort "
        "(cpets-phantom --out DIR writes one)");
  const fs::path p(cfg.cohort);
  std::error_code ec;
  if (fs::is_regular_file(p, ec)) return {p.parent_path().empty() ? fs::path(".") : p.parent_path(), p};
  if (!fs::is_directory(p, ec))
    throw std::runtime_error("data.cohort '" + cfg.cohort + "' is neither a folder nor a file; check the path");
  return {p, p / "cohort.csv"};
}

std::vector<io::PairedRecord> read_records(const DataConfig& cfg, const fs::path& dir, const fs::path& table) {
  if (!cfg.paired_csv.empty()) {
    fs::path paired(cfg.paired_csv);
    if (paired.is_relative()) paired = dir / paired;
    auto records = io::read_paired(paired.string());
    std::vector<std::string> bad;
    for (const auto& r : records)
      if (r.split != "train" && r.split != "val" && r.split != "test")
        bad.push_back(r.subject + " PET " + io::format_date(r.pet_date) + ": split '" + r.split + "'");
    if (!bad.empty())
      throw std::runtime_error(paired.string() + ": " + std::to_string(bad.size()) +
                               " record(s) without a train/val/test split (write the table with cpets-data pair):" +
                               list_lines(bad));
    return records;
  }
  std::error_code ec;
  if (!fs::exists(table, ec))
    throw std::runtime_error("no cohort table '" + table.string() +
                             "': data.cohort must be a folder holding cohort.csv (or set data.paired_csv)");
  const io::Cohort cohort = io::read_cohort(table.string(), io::parse_missing_policy(cfg.on_missing), &std::cerr);
  io::Pairing pairing = io::pair_sessions(cohort);
  io::assign_splits(pairing.paired, cfg.split_seed);
  return std::move(pairing.paired);
}

}  // namespace

void renormalise(CohortSplits& splits, const io::NormRanges& ranges) {
  splits.ranges = ranges;
  for (auto* part : {&splits.train, &splits.val, &splits.test})
    for (auto& s : *part) {
      s.csf = csf_vector(s.record, ranges, splits.tracer);
      s.covariates = covariate_vector(s.record, ranges);
    }
}

CohortSplits open_cohort(const DataConfig& cfg, const io::NormRanges* ranges) {
  const auto [dir, table] = cohort_location(cfg);
  std::vector<io::PairedRecord> all = read_records(cfg, dir, table);

  std::vector<io::PairedRecord> records;
  std::set<std::string> tracers;
  for (auto& r : all) {
    tracers.insert(r.tracer);
    if (r.tracer == cfg.tracer) records.push_back(r);
  }
  if (records.empty()) {
    std::string found;
    for (const auto& t : tracers) found += (found.empty() ? "" : ", ") + t;
    throw std::runtime_error("the cohort in '" + dir.string() + "' has no paired " + cfg.tracer +
                             " session (tracers found: " + (found.empty() ? "none" : found) +
                             "); set data.tracer to one of those or check the pairing (cpets-data pair)");
  }
  const auto missing = io::missing_images(records, dir.string());
  if (!missing.empty())
    throw std::runtime_error(std::to_string(missing.size()) + " image file(s) of the paired " + cfg.tracer +
                             " sessions are missing under '" + dir.string() + "':" + list_lines(missing) +
                             "\n(remove those sessions from the table, or restore the files)");

  const bool has_train = std::any_of(records.begin(), records.end(), [](const auto& r) { return r.split == "train"; });
  if (!ranges && !has_train)
    throw std::runtime_error("the training split of '" + dir.string() + "' has no " + cfg.tracer +
                             " session, so there is nothing to fit the normalisation ranges on; the cohort is too small");
  CohortSplits out;
  out.tracer = cfg.tracer;
  out.cohort_dir = dir.string();
  out.ranges = ranges ? *ranges : io::fit_ranges(records);  // training split only
  for (const auto& r : records) {
    Session s;
    s.record = r;
    const io::ImagePaths p = io::image_paths(r);
    s.t1_path = (dir / p.t1).string();
    s.pet_path = (dir / p.pet).string();
    auto& part = r.split == "train" ? out.train : r.split == "val" ? out.val : out.test;
    part.push_back(std::move(s));
  }
  renormalise(out, out.ranges);
  return out;
}

// ---- the dataset -----------------------------------------------------------------------------

Dataset::Dataset(std::vector<Session> sessions, std::array<int64_t, 3> volume, int64_t cache_mb, double voxel_mm)
    : sessions_(std::move(sessions)), volume_(volume), voxel_mm_(voxel_mm), cache_bytes_(std::max<int64_t>(cache_mb, 0) << 20) {}

std::shared_ptr<const Dataset::Pair> Dataset::load(int64_t i) const {
  if (i < 0 || i >= size())
    throw std::out_of_range("session index " + std::to_string(i) + " outside a dataset of " + std::to_string(size()));
  if (cache_bytes_ > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cached_.find(i);
    if (it != cached_.end()) return it->second;
  }
  const Session& s = sessions_[static_cast<size_t>(i)];
  auto pair = std::make_shared<Pair>(prepare_volume(s.t1_path, volume_, voxel_mm_),
                                     prepare_volume(s.pet_path, volume_, voxel_mm_));
  io::check_same_grid(pair->first.volume, pair->second.volume, {s.t1_path, s.pet_path});
  const int64_t bytes = static_cast<int64_t>(sizeof(float)) * (pair->first.volume.numel() + pair->second.volume.numel());
  std::lock_guard<std::mutex> lock(mu_);
  if (cached_bytes_ + bytes <= cache_bytes_ && cached_.emplace(i, pair).second) cached_bytes_ += bytes;
  return pair;
}

Batch Dataset::collate(const std::vector<int64_t>& indices, bool pinned) const {
  if (indices.empty()) throw std::invalid_argument("Dataset::collate: empty batch");
  const int64_t b = static_cast<int64_t>(indices.size());
  const int64_t voxels = volume_[0] * volume_[1] * volume_[2];
  const auto& first = session(indices[0]);
  const int64_t n_csf = static_cast<int64_t>(first.csf.size()), n_cov = static_cast<int64_t>(first.covariates.size());
  const auto make = [pinned](const Shape& shape) { return pinned ? Tensor::empty_pinned(shape) : Tensor::empty(shape); };
  Batch batch;
  batch.t1 = make({b, 1, volume_[0], volume_[1], volume_[2]});
  batch.pet = make({b, 1, volume_[0], volume_[1], volume_[2]});
  batch.csf = make({b, n_csf});
  batch.covariates = make({b, n_cov});
  batch.sessions = indices;
  for (int64_t k = 0; k < b; ++k) {
    const auto pair = load(indices[static_cast<size_t>(k)]);
    std::memcpy(batch.t1.data() + k * voxels, pair->first.volume.data.data(), sizeof(float) * voxels);
    std::memcpy(batch.pet.data() + k * voxels, pair->second.volume.data.data(), sizeof(float) * voxels);
    const Session& s = session(indices[static_cast<size_t>(k)]);
    std::copy(s.csf.begin(), s.csf.end(), batch.csf.data() + k * n_csf);
    std::copy(s.covariates.begin(), s.covariates.end(), batch.covariates.data() + k * n_cov);
  }
  return batch;
}

// ---- order -----------------------------------------------------------------------------------

// The data-order stream's seed: distinct from every other stream drawn from the same seed, so
// shuffles are not correlated with weights or noise.
constexpr uint64_t kOrderTag = 0x6461746131303030ull;  // "data1000"

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  if (n < 0 || epoch < 0) throw std::invalid_argument("epoch_order: n and epoch must be ≥ 0");
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  if (n < 2) return order;
  Generator gen(derive_seed(seed, kOrderTag), static_cast<uint64_t>(epoch) << 32);
  std::vector<float> u(static_cast<size_t>(n - 1));
  gen.fill_uniform(u.data(), n - 1);
  for (int64_t i = n - 1; i >= 1; --i) {  // Fisher–Yates
    const int64_t j = std::min<int64_t>(i, static_cast<int64_t>(u[static_cast<size_t>(n - 1 - i)] * static_cast<float>(i + 1)));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

int64_t batches_per_epoch(int64_t n, int64_t batch_size) {
  if (batch_size < 1) throw std::invalid_argument("batch size must be ≥ 1, got " + std::to_string(batch_size));
  return n / batch_size;
}

// ---- the loader ------------------------------------------------------------------------------

BatchLoader::BatchLoader(const Dataset& data, int64_t batch_size, uint64_t seed, LoaderPosition start, bool prefetch,
                         RankShard shard, bool pin_memory)
    : data_(data),
      batch_size_(batch_size),
      seed_(seed),
      shard_(shard),
      position_(start),
      prefetch_(prefetch),
      pin_memory_(pin_memory) {
  if (shard.ranks < 1 || shard.rank < 0 || shard.rank >= shard.ranks)
    throw std::invalid_argument("loader: rank " + std::to_string(shard.rank) + " of " + std::to_string(shard.ranks));
  per_epoch_ = train::batches_per_epoch(data.size(), batch_size * shard.ranks);
  if (per_epoch_ < 1)
    throw std::invalid_argument("batch size " + std::to_string(batch_size) +
                                (shard.ranks > 1 ? " × " + std::to_string(shard.ranks) + " ranks" : std::string()) +
                                " is larger than the " + std::to_string(data.size()) +
                                " training sessions (drop_last leaves no batch); lower train.batch_size" +
                                (shard.ranks > 1 ? " or the number of ranks" : ""));
  if (start.batch < 0 || start.batch >= per_epoch_ || start.epoch < 0)
    throw std::invalid_argument("loader position epoch " + std::to_string(start.epoch) + " batch " +
                                std::to_string(start.batch) + " is outside an epoch of " + std::to_string(per_epoch_) +
                                " batches (was the checkpoint written with another batch size or cohort?)");
  if (prefetch_) {
    worker_ = std::thread([this] { worker_loop(); });
    request(position_);
  }
}

BatchLoader::~BatchLoader() {
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
}

Batch BatchLoader::make(LoaderPosition p) const {
  std::vector<int64_t> order;
  {
    std::lock_guard<std::mutex> lock(order_mu_);
    if (order_epoch_ != p.epoch) {
      order_ = epoch_order(data_.size(), seed_, p.epoch);
      order_epoch_ = p.epoch;
    }
    // This rank's rows of global batch p.batch: ranks in order, each batch_size_ sessions.
    const int64_t first = (p.batch * shard_.ranks + shard_.rank) * batch_size_;
    order.assign(order_.begin() + first, order_.begin() + first + batch_size_);
  }
  Batch b = data_.collate(order, pin_memory_);
  b.epoch = p.epoch;
  b.index = p.batch;
  return b;
}

LoaderPosition BatchLoader::after(LoaderPosition p) const {
  return p.batch + 1 < per_epoch_ ? LoaderPosition{p.epoch, p.batch + 1} : LoaderPosition{p.epoch + 1, 0};
}

void BatchLoader::worker_loop() {
  // One thread: reading and gunzipping are serial anyway, and the cores belong to the step.
  omp_set_num_threads(1);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || requested_.has_value(); });
    if (stop_) return;
    const LoaderPosition p = *requested_;
    requested_.reset();
    lock.unlock();
    std::optional<Batch> made;
    std::exception_ptr error;
    try {
      made = make(p);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    ready_ = std::move(made);
    ready_position_ = p;
    error_ = error;
    pending_ = false;
    cv_.notify_all();
  }
}

void BatchLoader::request(LoaderPosition p) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    requested_ = p;
    pending_ = true;
    ready_.reset();
    error_ = nullptr;
  }
  cv_.notify_all();
}

Batch BatchLoader::next() {
  if (!prefetch_) {
    Batch b = make(position_);
    position_ = after(position_);
    return b;
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !pending_; });  // the batch at position_ was requested earlier
  if (error_) {
    auto e = error_;
    lock.unlock();
    request(position_);  // a later next() retries the same batch
    std::rethrow_exception(e);
  }
  if (!ready_ || !(ready_position_ == position_))
    throw std::logic_error("BatchLoader: prefetched batch does not match the position");
  Batch b = std::move(*ready_);
  ready_.reset();
  lock.unlock();
  position_ = after(position_);
  request(position_);  // prefetch the one after
  return b;
}

}  // namespace cpets::train
