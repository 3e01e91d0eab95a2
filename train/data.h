// Training data (docs/model.md §4): a cohort folder (cohort.csv + t1/… + pet/…, the layout
// io/cohort.h and cpets-phantom use) or an existing paired table, for one tracer; sessions paired
// and split by subject (io::pair_sessions, io::assign_splits), normalisation ranges fitted on the
// training split only (or taken from a checkpoint), volumes read, divided by their maximum and
// pad/cropped to the model volume, batches in a deterministic shuffled order per epoch drawn from
// (seed, epoch), drop_last, with the next batch prefetched on a background thread.
//
// prepare_volume / restore_to_grid are also what inference uses (cpets-infer), so a volume goes
// through exactly the same steps at training and at test time.
#pragma once
#include <array>
#include <condition_variable>
#include <exception>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/tensor.h"
#include "io/cohort.h"
#include "io/volume.h"
#include "train/config.h"

namespace cpets::train {

// ---- one volume, as the model sees it ------------------------------------------------------
struct VolumeGrid {
  std::array<int64_t, 3> shape{0, 0, 0};  // (D, H, W)
  io::Affine affine = io::identity_affine();
};

struct PreparedVolume {
  io::Volume volume;    // model grid (shape = ModelConfig::volume), values in [0, 1]
  VolumeGrid original;  // the file's grid, for restore_to_grid
  float max = 0;        // the file's maximum, which the volume was divided by
};

// read_nifti → divide by the maximum → symmetric pad / centre crop to `model_volume` (D, H, W).
// The returned volume's affine keeps every voxel's world position (io::pad_crop_to), so
// restore_to_grid can invert the pad/crop exactly. Errors name the file.
// With voxel_mm > 0 the file must be on a canonical grid of that voxel size (io::grid_mismatch):
// otherwise padding would give the model another field of view, and it is refused naming the
// file and the fix (cpets-data prepare).
PreparedVolume prepare_volume(const std::string& path, std::array<int64_t, 3> model_volume, double voxel_mm = 0);

// Puts a model-grid volume (as prepare_volume returned, with its affine) back onto the original
// grid: each original voxel takes the model voxel at the same world position; voxels the crop
// had removed are 0. Intensities are left as they are (multiply by PreparedVolume::max to undo
// the normalisation if wanted).
io::Volume restore_to_grid(const io::Volume& model_grid, const VolumeGrid& original);

// ---- the cohort ----------------------------------------------------------------------------
struct Session {
  io::PairedRecord record;             // split assigned
  std::string t1_path, pet_path;       // resolved against the cohort folder
  std::vector<float> csf, covariates;  // normalised with the cohort's ranges (io::csf_inputs…)
};

struct CohortSplits {
  std::string tracer;      // "AV45" | "AV1451"
  std::string cohort_dir;
  io::NormRanges ranges;   // fitted on `train` (or the ones passed in)
  std::vector<Session> train, val, test;
};

// Reads data.cohort/cohort.csv (pairs and splits it with data.split_seed) or data.paired_csv
// (its split column is used as written), keeps the sessions of data.tracer, fits the ranges on
// the training split — unless `ranges` is given (resume, inference: never refit; the training
// split may then be empty) — and checks that every image file exists. Throws
// std::runtime_error listing every missing image (io::missing_images), or naming the tracer or
// split that came out empty.
CohortSplits open_cohort(const DataConfig& cfg, const io::NormRanges* ranges = nullptr);

// Recomputes every session's csf/covariates with `ranges` (resume: the checkpoint's ranges win).
void renormalise(CohortSplits& splits, const io::NormRanges& ranges);

// The tabular model inputs of one record, as training builds them (B_CSF for the tracer, M).
std::vector<float> csf_vector(const io::PairedRecord& r, const io::NormRanges& ranges, const std::string& tracer);
std::vector<float> covariate_vector(const io::PairedRecord& r, const io::NormRanges& ranges);

// ---- batches -------------------------------------------------------------------------------
struct Batch {
  Tensor t1, pet;         // (B, 1, D, H, W)
  Tensor csf;             // (B, csf_inputs)
  Tensor covariates;      // (B, 4)
  std::vector<int64_t> sessions;  // indices into the dataset
  int64_t epoch = 0, index = 0;   // which batch of which epoch
};

// One split's sessions on the model volume. Prepared volumes are kept in memory after their first
// read until `cache_mb` is used up (the demo cohort fits; the full one at 96×128×96 needs
// 9.4 MB a session, so a large cohort caches a prefix and reads the rest each time).
// Thread-safe: the loader thread and the trainer may call collate concurrently.
class Dataset {
 public:
  Dataset(std::vector<Session> sessions, std::array<int64_t, 3> volume, int64_t cache_mb = 4096, double voxel_mm = 0);

  int64_t size() const { return static_cast<int64_t>(sessions_.size()); }
  const Session& session(int64_t i) const { return sessions_.at(static_cast<size_t>(i)); }
  std::array<int64_t, 3> volume() const { return volume_; }

  using Pair = std::pair<PreparedVolume, PreparedVolume>;  // (T1, PET)
  // The T1 and PET of session i on the model grid (cached when enabled). Errors name the files.
  std::shared_ptr<const Pair> load(int64_t i) const;
  // Stacks the given sessions into a batch; `pinned`: in page-locked host memory (a GPU run:
  // the copies to the device then run asynchronously, see Tensor::empty_pinned).
  Batch collate(const std::vector<int64_t>& indices, bool pinned = false) const;

 private:
  std::vector<Session> sessions_;
  std::array<int64_t, 3> volume_;
  double voxel_mm_;
  int64_t cache_bytes_;
  mutable int64_t cached_bytes_ = 0;
  mutable std::mutex mu_;
  mutable std::map<int64_t, std::shared_ptr<const Pair>> cached_;
};

// A permutation of [0, n) that depends only on (seed, epoch): Fisher–Yates driven by a Philox
// stream keyed by seed at offset epoch·2³², so any epoch's order is computed without the others.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);
// drop_last: the incomplete tail batch of an epoch is skipped.
int64_t batches_per_epoch(int64_t n, int64_t batch_size);

struct LoaderPosition {
  int64_t epoch = 0, batch = 0;  // the next (global) batch to hand out
  bool operator==(const LoaderPosition&) const = default;
};

// Data-parallel training: rank r of `ranks` takes rows [r·B, (r+1)·B) of every global batch of
// B·ranks sessions, so each epoch's sessions are used once across the ranks and the ranks
// together see exactly the batches one process with batch B·ranks would.
struct RankShard {
  int64_t rank = 0, ranks = 1;
};

// Hands out the batches of epoch_order(n, seed, epoch) in order, from `start` on, forever
// (epochs roll over). With prefetch, a background thread prepares the batch after the one just
// returned; which batch comes next never depends on timing, so results are identical with and
// without it. Errors on the loader thread are rethrown by next(). With pin_memory (a GPU run) the
// batches are made in page-locked memory, so that while the GPU computes one step the worker
// prepares the next batch and the trainer's copy of it to the GPU does not block the host.
class BatchLoader {
 public:
  // batch_size is this rank's share of a global batch of batch_size × shard.ranks.
  BatchLoader(const Dataset& data, int64_t batch_size, uint64_t seed, LoaderPosition start = {}, bool prefetch = true,
              RankShard shard = {}, bool pin_memory = false);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  Batch next();
  LoaderPosition position() const { return position_; }  // of the batch next() returns
  int64_t batches_per_epoch() const { return per_epoch_; }  // global batches
  RankShard shard() const { return shard_; }

 private:
  Batch make(LoaderPosition p) const;
  LoaderPosition after(LoaderPosition p) const;
  void request(LoaderPosition p);  // hands position p to the worker thread
  void worker_loop();

  const Dataset& data_;
  int64_t batch_size_ = 0, per_epoch_ = 0;
  uint64_t seed_ = 0;
  RankShard shard_;
  LoaderPosition position_;
  bool prefetch_ = true;
  bool pin_memory_ = false;

  // Worker hand-off, guarded by mu_: one request at a time, its result in ready_ or error_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<LoaderPosition> requested_;
  bool pending_ = false, stop_ = false;
  std::optional<Batch> ready_;
  LoaderPosition ready_position_;
  std::exception_ptr error_;
  std::thread worker_;

  // The order of the epoch last used (both threads ask for it).
  mutable std::mutex order_mu_;
  mutable int64_t order_epoch_ = -1;
  mutable std::vector<int64_t> order_;
};

}  // namespace cpets::train
