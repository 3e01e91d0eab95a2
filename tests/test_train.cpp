// train/: configuration (keys, types, values, overrides), data (volume preparation and its
// inverse, splits and ranges, the per-epoch order, the prefetching loader), checkpoints (atomic
// files, keep-last-K, round trip) and the trainer (same seed ⇒ same losses; an interrupted and
// resumed run equals an uninterrupted one, losses and weights bit for bit).
//
// The cohort is written by the test itself: small NIfTI volumes of odd shapes (so pad and crop
// both happen) on the "tiny" model preset's 16³ grid.
#include <doctest/doctest.h>
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/backend.h"
#include "engine/device.h"
#include "engine/rng.h"
#include "io/cohort.h"
#include "io/nifti.h"
#include "io/preprocess.h"
#include "kernels/cpu/isa.h"
#include "models/causal_pets.h"
#include "train/checkpoint.h"
#include "train/comparison.h"
#include "train/config.h"
#include "train/data.h"
#include "train/experiment.h"
#include "train/progress.h"
#include "train/trainer.h"
#include "synthetic_cohort.h"
#include "test_support.h"

using namespace cpets;
using namespace cpets::train;
namespace fs = std::filesystem;
using cpets::testing::error_of;
using cpets::testing::synthetic_volume;
using cpets::testing::write_cohort;
using cpets::testing::TempDir;
using cpets::testing::ThreadCount;
using json = nlohmann::json;

namespace {

// The trainer tests run on one thread (ThreadCount, test_support.h: measured 0.03 s per step on
// one thread vs 0.75 s on two under load); the 1-vs-2-thread determinism test below is the
// exception.

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// One cohort for the whole file (writing NIfTIs is the slow part).
const fs::path& cohort_dir() {
  static TempDir dir;
  static bool written = false;
  if (!written) {
    write_cohort(dir.path, 14);
    written = true;
  }
  return dir.path;
}

std::vector<std::string> tiny_overrides(const std::string& cohort) {
  return {"data.cohort=" + cohort, "train.perceptual=none", "train.batch_size=2", "data.max_val_sessions=2"};
}

Config tiny_config(std::vector<std::string> extra = {}) {
  auto o = tiny_overrides(cohort_dir().string());
  o.insert(o.end(), extra.begin(), extra.end());
  return make_config("tiny", o);
}

bool same_bits(double a, double b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, sizeof a) == 0;
}

void check_same_losses(const StepLosses& a, const StepLosses& b) {
  CHECK(a.step == b.step);
  CHECK(a.epoch == b.epoch);
  CHECK(a.batch == b.batch);
  CHECK(same_bits(a.g_total, b.g_total));
  CHECK(same_bits(a.d_total, b.d_total));
  REQUIRE(a.terms.size() == b.terms.size());
  for (size_t i = 0; i < a.terms.size(); ++i) {
    CHECK(a.terms[i].first == b.terms[i].first);
    CHECK_MESSAGE(same_bits(a.terms[i].second, b.terms[i].second), a.terms[i].first);
  }
}

// Same names, shapes and bits (in any order: safetensors files are sorted by name).
bool same_tensors(const NamedTensors& a, const NamedTensors& b) {
  if (a.size() != b.size()) return false;
  std::map<std::string, Tensor> by_name(b.begin(), b.end());
  for (const auto& [name, t] : a) {
    const auto it = by_name.find(name);
    if (it == by_name.end() || it->second.shape() != t.shape()) return false;
    if (std::memcmp(it->second.data(), t.data(), sizeof(float) * t.numel()) != 0) return false;
  }
  return true;
}

}  // namespace

// ---- configuration -------------------------------------------------------------------------------

TEST_CASE("config: the shipped configs load and match model.md's table") {
  const std::string root = std::string(CPETS_FIXTURES) + "/../../configs/";
  const Config demo = load_config(root + "demo.json");
  CHECK(demo.model.preset == "demo");
  CHECK(demo.model.volume == std::array<int64_t, 3>{48, 64, 48});
  CHECK(demo.train.batch_size == 2);
  CHECK(demo.train.lr == doctest::Approx(1e-4));
  CHECK(demo.train.lr_discriminator == doctest::Approx(5e-4));
  CHECK(demo.train.lambda_adv == doctest::Approx(0.005));
  CHECK(demo.train.beta_kl == doctest::Approx(0.001));
  CHECK(demo.objective().lambda_perceptual == 0.f);
  CHECK(demo.model.perceptual == "none");
  // The measured fix of docs/causal-fidelity.md in the demo; the full preset keeps model.md's rate.
  CHECK(demo.train.lr_conditional_scale == 10.0);
  CHECK_FALSE(demo.model.transformer_zero_init);

  // The full preset needs the converted perceptual weights, and says so.
  const std::string err = error_of([&] { load_config(root + "full.json"); });
  CHECK(contains(err, "train.perceptual_weights"));
  CHECK(contains(err, "train.perceptual=none"));
  const Config full = load_config(root + "full.json", {"train.perceptual_weights=/some/lpips.safetensors"});
  CHECK(full.model.volume == std::array<int64_t, 3>{96, 128, 96});
  CHECK(full.model.encoder_channels == std::array<int64_t, 3>{64, 128, 128});
  CHECK(full.objective().lambda_perceptual == doctest::Approx(0.02f));
  CHECK(full.train.lr_conditional_scale == 1.0);
  CHECK(full.model.transformer_zero_init);
}

TEST_CASE("config: a folder, a number out of double range and binary junk are refused naming the file") {
  TempDir dir;
  CHECK(contains(error_of([&] { load_config(dir.str()); }), "is a folder"));
  const std::string big = dir.str() + "/big.json";
  std::ofstream(big) << R"({"train": {"lr": 1e999}})";
  const std::string e = error_of([&] { load_config(big); });
  CHECK(contains(e, big));
  CHECK(contains(e, "out of range"));
  const std::string junk = dir.str() + "/junk.json";
  std::ofstream(junk, std::ios::binary) << std::string("\x89PNG\r\n\x1a\n\0\0", 10);
  CHECK(contains(error_of([&] { load_config(junk); }), "is not valid JSON"));
}

TEST_CASE("config: overrides set keys of every type, and the result round-trips through JSON") {
  const Config c = tiny_config({"train.lr=2e-4", "model.fusion_tokens=4", "train.eps_pet=false", "train.t1_loss=mse",
                                "model.volume=[16,24,16]", "train.epochs=3", "data.split_seed=9"});
  CHECK(c.train.lr == 2e-4);
  CHECK(c.model.fusion_tokens == 4);
  CHECK_FALSE(c.train.eps_pet);
  CHECK_FALSE(c.objective().eps_pet);
  CHECK(c.objective().t1_loss == "mse");
  CHECK(c.model.volume == std::array<int64_t, 3>{16, 24, 16});
  CHECK(c.data.split_seed == 9u);
  // An array key also takes comma-separated values; an integral float is an integer.
  CHECK(tiny_config({"model.volume=24,16,16"}).model.volume == std::array<int64_t, 3>{24, 16, 16});
  CHECK(tiny_config({"train.epochs=5.0"}).train.epochs == 5);
  // Numbers for a string key stay strings (a folder may be called 2024).
  CHECK(make_config("tiny", {"train.perceptual=none", "data.cohort=2024"}).data.cohort == "2024");

  const Config back = config_from_json(config_to_json(c));
  CHECK(config_to_json(back) == config_to_json(c));
}

TEST_CASE("config: the ablation switches reach the model and the objective") {
  const Config c = tiny_config({"train.t1_reconstruction=false", "train.discriminator=false"});
  CHECK_FALSE(c.model.t1_reconstruction);
  CHECK_FALSE(c.model.discriminator);
  CHECK(c.objective().lambda_adv == 0.f);
  // …and only the train section sets them.
  const std::string err = error_of([] { tiny_config({"model.discriminator=false"}); });
  CHECK(contains(err, "model.discriminator"));
  CHECK(contains(err, "train.discriminator"));
}

TEST_CASE("config: train.device is cpu, cuda or cuda:N; without a GPU the trainer says so") {
  CHECK(parse_device("cpu").device == Device::cpu());
  CHECK(parse_device("cuda").device == Device::cuda(0));
  CHECK_FALSE(parse_device("cuda").index_given);
  CHECK(parse_device("cuda:3").device == Device::cuda(3));
  CHECK(parse_device("cuda:3").index_given);
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "CUDA", "cuda:-1"}) {
    const std::string e = error_of([&] { tiny_config({std::string("train.device=") + bad}); });
    CHECK(contains(e, "train.device"));
    CHECK(contains(e, "cpu, cuda or cuda:N"));
  }
  CHECK(tiny_config().train.device == "cpu");
  CHECK(Trainer(tiny_config()).model().device() == Device::cpu());
  if (!cuda_available()) {
    const std::string e = error_of([] { Trainer t(tiny_config({"train.device=cuda:1"})); });
    CHECK(contains(e, "cuda:1"));
    CHECK((contains(e, "no CUDA backend") || contains(e, "no usable CUDA device")));
  }
}

TEST_CASE("config: the op backends (train.conv_backend, …) are checked by name and applied by the trainer") {
  std::string e = error_of([] { tiny_config({"train.conv_backend=cudnm"}); });
  CHECK(contains(e, "train.conv_backend"));
  CHECK(contains(e, "\"cudnn\""));
  e = error_of([] { tiny_config({"train.precision=fp16"}); });
  CHECK(contains(e, "train.precision"));
  CHECK(contains(e, "\"bf16\""));
  // The old name is refused with the new one, not as a plain unknown key.
  e = error_of([] { tiny_config({"train.conv_precision=tf32"}); });
  CHECK(contains(e, "renamed"));
  CHECK(contains(e, "train.precision"));
  // A run saved under the old name (its config.json, its checkpoints) still loads, with the value.
  nlohmann::json saved = config_to_json(tiny_config());
  saved["train"].erase("precision");
  saved["train"]["conv_precision"] = "fp32";
  CHECK(saved_config_from_json(saved).train.precision == "fp32");
  CHECK(contains(error_of([&] { config_from_json(saved); }), "renamed"));
  // tf32/bf16 are tensor-core arithmetic: on the CPU, an error naming the key and both ways out.
  e = error_of([] { tiny_config({"train.precision=bf16"}); });
  CHECK(contains(e, "train.precision"));
  CHECK(contains(e, "train.device"));
  CHECK(contains(e, "--device cuda"));
  CHECK(contains(e, "precision=fp32"));
  // cuDNN's reference convolution has no bf16.
  e = error_of([] { tiny_config({"train.device=cuda", "train.precision=bf16", "train.conv_backend=cudnn"}); });
  CHECK(contains(e, "train.conv_backend"));
  CHECK(contains(e, "tf32"));
  const std::string before = backend_name("gemm");
  set_backend("precision", "tf32");
  {
    ThreadCount one(1);
    Trainer t(tiny_config({"train.gemm_backend=cublas", "train.precision=fp32"}));
    CHECK(backend_name("gemm") == "cublas");
    CHECK(backend_name("precision") == "fp32");
  }
  set_backend("gemm", before);
  set_backend("precision", "fp32");
  CHECK(op_backends(tiny_config().train).front() == std::pair<std::string, std::string>{"conv", ""});  // "" = not set
}

TEST_CASE("config: unknown keys, wrong types and impossible values name the key and the fix") {
  auto err = [](std::vector<std::string> o) { return error_of([&] { tiny_config(o); }); };
  std::string e = err({"train.lrr=1e-4"});
  CHECK(contains(e, "'train.lrr' is unknown"));
  CHECK(contains(e, "did you mean 'train.lr'"));
  e = err({"model.fusion_tokenz=3"});
  CHECK(contains(e, "model.fusion_tokenz"));
  CHECK(contains(e, "model.fusion_tokens"));
  e = err({"trian.lr=1"});
  CHECK(contains(e, "'trian' is unknown"));
  e = err({"train.batch_size=2.5"});
  CHECK(contains(e, "train.batch_size"));
  CHECK(contains(e, "integer"));
  e = err({"train.lr=fast"});
  CHECK(contains(e, "train.lr"));
  CHECK(contains(e, "should be a number"));
  e = err({"train.eps_pet=1"});
  CHECK(contains(e, "train.eps_pet"));
  CHECK(contains(e, "boolean"));
  e = err({"model.volume=[16,16]"});
  CHECK(contains(e, "model.volume"));
  CHECK(contains(e, "3 entries"));
  e = err({"train.lr=-1"});
  CHECK(contains(e, "train.lr"));
  CHECK(contains(e, "positive"));
  e = err({"train.seed=-3"});
  CHECK(contains(e, "train.seed"));
  CHECK(contains(e, "negative"));
  e = err({"train.t1_loss=l2"});
  CHECK(contains(e, "train.t1_loss"));
  CHECK(contains(e, "\"mse\""));
  e = err({"data.tracer=FDG"});
  CHECK(contains(e, "data.tracer"));
  e = err({"model.encoder_groups=3"});
  CHECK(contains(e, "model section"));
  CHECK(contains(e, "encoder_groups"));
  e = err({"model.csf_inputs=2"});
  CHECK(contains(e, "model.csf_inputs"));
  e = err({"train.lr"});
  CHECK(contains(e, "KEY=VALUE"));
  e = err({"train.lr.x=1"});
  CHECK(contains(e, "'train.lr' is a value"));

  TempDir dir;
  const fs::path bad = dir.path / "bad.json";
  std::ofstream(bad) << "{\"train\": {\"lr\": 1e-4,}}";
  e = error_of([&] { load_config(bad.string()); });
  CHECK(contains(e, bad.string()));
  CHECK(contains(e, "not valid JSON"));
  const fs::path typo = dir.path / "typo.json";
  std::ofstream(typo) << "{\"model\": {\"preset\": \"tiny\"}, \"train\": {\"perceptual\": \"none\", \"bach_size\": 4}}";
  e = error_of([&] { load_config(typo.string()); });
  CHECK(contains(e, typo.string()));
  CHECK(contains(e, "train.bach_size"));
  CHECK(contains(e, "train.batch_size"));
}

// ---- data ------------------------------------------------------------------------------------------

TEST_CASE("data: prepare_volume divides by the maximum and pads/crops like MONAI; restore_to_grid inverts it") {
  TempDir dir;
  for (auto shape : {std::array<int64_t, 3>{13, 18, 15}, std::array<int64_t, 3>{16, 21, 9}}) {
    io::Volume v = synthetic_volume(shape, 3, true);
    v.affine[0][3] = -7.5;  // a non-trivial origin
    const std::string path = (dir.path / "v.nii.gz").string();
    io::write_nifti(path, v);
    const std::array<int64_t, 3> target{16, 16, 16};
    const PreparedVolume p = prepare_volume(path, target);
    float mx = 0;
    for (float x : v.data) mx = std::max(mx, x);
    CHECK(p.max == mx);
    CHECK(p.original.shape == shape);
    REQUIRE(p.volume.shape == target);
    // Naive symmetric pad / centre crop, per axis.
    for (int64_t d = 0; d < 16; ++d)
      for (int64_t h = 0; h < 16; ++h)
        for (int64_t w = 0; w < 16; ++w) {
          const int64_t idx[3] = {d, h, w};
          int64_t src[3];
          bool inside = true;
          for (int a = 0; a < 3; ++a) {
            const int64_t n = shape[a];
            src[a] = n < 16 ? idx[a] - (16 - n) / 2 : idx[a] + (n / 2 - 8);
            inside = inside && src[a] >= 0 && src[a] < n;
          }
          const float want = inside ? v.at(src[0], src[1], src[2]) / mx : 0.f;
          if (p.volume.at(d, h, w) != want) {
            FAIL("voxel (" << d << "," << h << "," << w << ") is " << p.volume.at(d, h, w) << ", want " << want);
          }
        }
    // Back on the original grid: kept voxels exact, cropped-away voxels zero.
    const io::Volume back = restore_to_grid(p.volume, p.original);
    REQUIRE(back.shape == shape);
    for (int64_t d = 0; d < shape[0]; ++d)
      for (int64_t h = 0; h < shape[1]; ++h)
        for (int64_t w = 0; w < shape[2]; ++w) {
          const int64_t idx[3] = {d, h, w};
          bool kept = true;
          for (int a = 0; a < 3; ++a) {
            const int64_t n = shape[a], start = n < 16 ? -((16 - n) / 2) : n / 2 - 8;
            kept = kept && idx[a] - start >= 0 && idx[a] - start < 16;
          }
          const float want = kept ? v.at(d, h, w) / mx : 0.f;
          if (back.at(d, h, w) != want) FAIL("restored voxel (" << d << "," << h << "," << w << ") differs");
        }
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) CHECK(back.affine[i][j] == doctest::Approx(v.affine[i][j]));
  }
  CHECK(contains(error_of([&] { prepare_volume((dir.path / "absent.nii.gz").string(), {16, 16, 16}); }), "absent.nii.gz"));
  const io::Volume zero = io::make_volume({8, 8, 8}, 0.f);
  io::write_nifti((dir.path / "zero.nii.gz").string(), zero);
  const std::string e = error_of([&] { prepare_volume((dir.path / "zero.nii.gz").string(), {16, 16, 16}); });
  CHECK(contains(e, "zero.nii.gz"));
  CHECK(contains(e, "maximum"));
}

TEST_CASE("data: epoch_order is a permutation fixed by (seed, epoch)") {
  for (int64_t n : {1, 2, 7, 100}) {
    const auto a = epoch_order(n, 5, 3);
    std::set<int64_t> seen(a.begin(), a.end());
    CHECK(static_cast<int64_t>(seen.size()) == n);
    CHECK(*seen.begin() == 0);
    CHECK(*seen.rbegin() == n - 1);
    CHECK(a == epoch_order(n, 5, 3));
  }
  CHECK(epoch_order(100, 5, 3) != epoch_order(100, 5, 4));
  CHECK(epoch_order(100, 5, 3) != epoch_order(100, 6, 3));
  // Every position is visited by roughly uniform shuffles: element 0 lands everywhere.
  std::set<int64_t> where;
  for (int64_t e = 0; e < 200; ++e) {
    const auto o = epoch_order(5, 1, e);
    where.insert(std::find(o.begin(), o.end(), 0) - o.begin());
  }
  CHECK(where.size() == 5);
  CHECK(batches_per_epoch(9, 2) == 4);  // drop_last
  CHECK(batches_per_epoch(1, 2) == 0);
}

TEST_CASE("data: open_cohort splits by subject, fits ranges on train only, and builds the model inputs") {
  DataConfig cfg;
  cfg.cohort = cohort_dir().string();
  const CohortSplits s = open_cohort(cfg);
  CHECK(s.tracer == "AV45");
  CHECK(s.train.size() + s.val.size() + s.test.size() == 14);
  REQUIRE(s.train.size() >= 4);
  REQUIRE(s.val.size() >= 1);
  std::set<std::string> train_subjects;
  std::vector<io::PairedRecord> train_records;
  for (const auto& x : s.train) train_subjects.insert(x.record.subject), train_records.push_back(x.record);
  for (const auto* part : {&s.val, &s.test})
    for (const auto& x : *part) CHECK(train_subjects.count(x.record.subject) == 0);
  // Ranges from the training records alone.
  double lo = 1e9, hi = -1e9;
  for (const auto& r : train_records) lo = std::min(lo, r.abeta.value), hi = std::max(hi, r.abeta.value);
  CHECK(s.ranges.at("ABETA").min == lo);
  CHECK(s.ranges.at("ABETA").max == hi);
  for (const auto& x : s.train) {
    REQUIRE(x.csf.size() == 1);
    CHECK(x.csf[0] == doctest::Approx((x.record.abeta.value - lo) / (hi - lo)));
    REQUIRE(x.covariates.size() == 4);
    CHECK(x.covariates[1] == x.record.sex);
    CHECK(x.covariates[2] == x.record.apoe4);
    CHECK(fs::exists(x.t1_path));
  }
  // Given ranges are used as they are (resume, inference).
  io::NormRanges fixed = s.ranges;
  fixed["ABETA"] = {0, 2000};
  const CohortSplits again = open_cohort(cfg, &fixed);
  CHECK(again.train[0].csf[0] == doctest::Approx(again.train[0].record.abeta.value / 2000.0));

  cfg.tracer = "AV1451";
  const std::string e = error_of([&] { open_cohort(cfg); });
  CHECK(contains(e, "AV1451"));
  CHECK(contains(e, "tracers found: AV45"));
}

TEST_CASE("data: an existing paired table is used with its own split column") {
  DataConfig cfg;
  cfg.cohort = cohort_dir().string();
  const CohortSplits s = open_cohort(cfg);
  std::vector<io::PairedRecord> records;
  for (const auto* part : {&s.train, &s.val, &s.test})
    for (const auto& x : *part) records.push_back(x.record);
  // Move every val and test session to train except one of each: the table decides.
  int kept_val = 0, kept_test = 0;
  for (auto& r : records) {
    if (r.split == "val" && kept_val++ > 0) r.split = "train";
    if (r.split == "test" && kept_test++ > 0) r.split = "train";
  }
  TempDir dir;
  const std::string paired = (dir.path / "paired.csv").string();
  io::write_paired_csv(paired, records);
  cfg.paired_csv = paired;
  const CohortSplits p = open_cohort(cfg);
  CHECK(p.val.size() == 1);
  CHECK(p.test.size() == 1);
  CHECK(p.train.size() == records.size() - 2);
  // A table without splits is refused, naming the file.
  for (auto& r : records) r.split = "";
  io::write_paired_csv(paired, records);
  const std::string e = error_of([&] { open_cohort(cfg); });
  CHECK(contains(e, paired));
  CHECK(contains(e, "split"));
}

TEST_CASE("data: missing and unreadable images are reported by file") {
  TempDir dir;
  write_cohort(dir.path, 6);
  DataConfig cfg;
  cfg.cohort = dir.str();
  const CohortSplits ok = open_cohort(cfg);
  // A corrupt image fails at loading time, naming the file.
  const std::string victim = ok.train[0].pet_path;
  std::ofstream(victim, std::ios::trunc) << "not a nifti";
  Dataset ds(ok.train, {16, 16, 16});
  CHECK(contains(error_of([&] { ds.collate({0}); }), victim));
  // Missing files are listed before anything is trained.
  fs::remove(ok.train[1].t1_path);
  fs::remove(ok.val.empty() ? ok.test[0].pet_path : ok.val[0].pet_path);
  const std::string e = error_of([&] { open_cohort(cfg); });
  CHECK(contains(e, "2 image file(s)"));
  CHECK(contains(e, ok.train[1].record.subject));
  CHECK(contains(e, "t1.nii.gz"));
  CHECK(contains(e, "av45.nii.gz"));
  cfg.cohort = (dir.path / "nowhere").string();
  CHECK(contains(error_of([&] { open_cohort(cfg); }), "nowhere"));
}

TEST_CASE("data: the loader's batches do not depend on prefetching, pinning or on where it started") {
  DataConfig cfg;
  cfg.cohort = cohort_dir().string();
  const CohortSplits s = open_cohort(cfg);
  Dataset ds(s.train, {16, 16, 16});
  const int64_t per_epoch = batches_per_epoch(ds.size(), 3);
  BatchLoader plain(ds, 3, 11, {}, /*prefetch=*/false);
  BatchLoader fetched(ds, 3, 11, {}, /*prefetch=*/true);
  // A GPU run's loader makes page-locked batches (ordinary memory without a GPU): same contents.
  BatchLoader pinned(ds, 3, 11, {}, /*prefetch=*/true, RankShard{}, /*pin_memory=*/true);
  std::vector<Batch> seq;
  for (int64_t i = 0; i < 2 * per_epoch + 1; ++i) {
    Batch a = plain.next(), b = fetched.next(), c = pinned.next();
    CHECK(c.t1.is_pinned() == cuda_available());
    CHECK_FALSE(a.t1.is_pinned());
    CHECK(c.sessions == a.sessions);
    CHECK(c.t1.to_vector() == a.t1.to_vector());
    CHECK(c.covariates.to_vector() == a.covariates.to_vector());
    CHECK(a.sessions == b.sessions);
    CHECK(a.epoch == i / per_epoch);
    CHECK(a.index == i % per_epoch);
    CHECK(std::memcmp(a.t1.data(), b.t1.data(), sizeof(float) * a.t1.numel()) == 0);
    CHECK(std::memcmp(a.pet.data(), b.pet.data(), sizeof(float) * a.pet.numel()) == 0);
    CHECK(a.csf.to_vector() == b.csf.to_vector());
    CHECK(a.covariates.to_vector() == b.covariates.to_vector());
    seq.push_back(std::move(a));
  }
  // The order is epoch_order's, and an epoch covers distinct sessions.
  const auto order = epoch_order(ds.size(), 11, 1);
  CHECK(seq[static_cast<size_t>(per_epoch)].sessions == std::vector<int64_t>(order.begin(), order.begin() + 3));
  std::set<int64_t> epoch0;
  for (int64_t i = 0; i < per_epoch; ++i) epoch0.insert(seq[i].sessions.begin(), seq[i].sessions.end());
  CHECK(static_cast<int64_t>(epoch0.size()) == per_epoch * 3);
  // Starting mid-way gives the continuation.
  BatchLoader late(ds, 3, 11, {1, 1}, true);
  CHECK(late.next().sessions == seq[static_cast<size_t>(per_epoch + 1)].sessions);
  CHECK(late.position() == (2 < per_epoch ? LoaderPosition{1, 2} : LoaderPosition{2, 0}));
  // Values: t1 of the first batch's first session is the prepared volume.
  const PreparedVolume p = prepare_volume(s.train[static_cast<size_t>(seq[0].sessions[0])].t1_path, {16, 16, 16});
  CHECK(std::memcmp(seq[0].t1.data(), p.volume.data.data(), sizeof(float) * p.volume.numel()) == 0);
  CHECK(seq[0].t1.shape() == Shape{3, 1, 16, 16, 16});
  CHECK(seq[0].csf.shape() == Shape{3, 1});
  CHECK(seq[0].covariates.shape() == Shape{3, 4});
  CHECK(contains(error_of([&] { BatchLoader big(ds, 100, 1); }), "train.batch_size"));
}

// ---- checkpoints and the trainer -------------------------------------------------------------------

TEST_CASE("trainer: the same config and seed give bitwise identical losses, on 1 and on 2 threads") {
  const Config c = tiny_config();
  Trainer a(c), b(c);
  for (int i = 0; i < 3; ++i) {
    StepLosses x, y;
    {
      ThreadCount one(1);
      x = a.step();
    }
    {
      ThreadCount two(2);
      y = b.step();
    }
    check_same_losses(x, y);
    CHECK(std::isfinite(x.g_total));
    CHECK(std::isfinite(x.term("t1")));
    CHECK(std::isfinite(x.term("kl")));
    CHECK(std::isfinite(x.term("adv")));
    CHECK(std::isfinite(x.term("d_fake")));
    CHECK(std::isnan(x.term("perceptual")));
  }
  CHECK(same_tensors(a.model().state_dict(), b.model().state_dict()));
  // Every parameter of both optimisers was updated at every step.
  for (const auto& [name, _] : a.model().generator_parameters()) CHECK_MESSAGE(a.generator_optimizer().step_count(name) == 3, name);
  for (const auto& [name, _] : a.model().discriminator_parameters())
    CHECK_MESSAGE(a.discriminator_optimizer()->step_count(name) == 3, name);
  // Another seed trains another model.
  ThreadCount one(1);
  Trainer other(tiny_config({"train.seed=778"}));
  CHECK_FALSE(same_bits(other.step().g_total, Trainer(c).step().g_total));
}

TEST_CASE("trainer: train.lr_conditional_scale gives f and G_P's cross-attention their own learning rate") {
  // proj_out at random init: with model.md's zeroed proj_out, f gets exactly zero gradient at
  // the first step (checked last), so nothing would move to compare.
  const std::string random_out = "model.transformer_zero_init=false";
  Trainer one(tiny_config({random_out}));
  CHECK(one.generator_optimizer().num_groups() == 1);
  Trainer two(tiny_config({random_out, "train.lr_conditional_scale=10"}));
  REQUIRE(two.generator_optimizer().num_groups() == 2);
  CHECK(two.generator_optimizer().options(0).lr == doctest::Approx(1e-4));
  CHECK(two.generator_optimizer().options(1).lr == doctest::Approx(1e-3));
  // Every parameter still steps once per step; Adam's first step moves a weight by about its lr,
  // so f moves ~10× further and the rest exactly as far as with one rate.
  Trainer fresh(tiny_config({random_out})), zeroed(tiny_config()), zeroed_fresh(tiny_config());
  ThreadCount t(1);
  const StepLosses first_one = one.step();
  two.step();
  const StepLosses first_zeroed = zeroed.step();
  // The logged gradient norms show it: zero on the conditional path with model.md's init.
  CHECK(first_zeroed.grad_conditional == 0.0);
  CHECK(first_zeroed.grad_rest > 0.0);
  CHECK(first_one.grad_conditional > 0.0);
  CHECK(first_one.to_json()["grad_conditional"].get<double>() == first_one.grad_conditional);
  for (const auto& [name, _] : two.model().generator_parameters())
    CHECK_MESSAGE(two.generator_optimizer().step_count(name) == 1, name);
  auto find_tensor = [](const NamedTensors& all, const std::string& key) {
    for (const auto& [name, t] : all)
      if (name == key) return t;
    FAIL("no tensor " << key);
    return Tensor();
  };
  auto max_move = [&](Trainer& tr, Trainer& init, const std::string& key) {
    const Tensor before = find_tensor(init.model().state_dict(), key);
    const Tensor after = find_tensor(tr.model().state_dict(), key);
    double m = 0;
    for (int64_t i = 0; i < after.numel(); ++i) m = std::max(m, double(std::fabs(after.data()[i] - before.data()[i])));
    return m;
  };
  CHECK(max_move(one, fresh, "fusion.fc1.weight") > 0);
  CHECK(max_move(two, fresh, "fusion.fc1.weight") > 5 * max_move(one, fresh, "fusion.fc1.weight"));
  CHECK(max_move(two, fresh, "encoder.conv_in.weight") == max_move(one, fresh, "encoder.conv_in.weight"));
  CHECK(max_move(zeroed, zeroed_fresh, "fusion.fc1.weight") == 0);
  CHECK(contains(error_of([] { tiny_config({"train.lr_conditional_scale=0"}); }), "train.lr_conditional_scale"));
}

namespace {
// Steps 1..6 in one trainer, and 1..3, checkpoint, 4..6 in a fresh one: the same bits.
void check_exact_resume(const Config& c) {
  TempDir out;
  const int n = 6;
  std::vector<StepLosses> whole;
  NamedTensors final_weights, final_g_state, final_d_state;
  {
    Trainer t(c);
    for (int i = 0; i < n; ++i) whole.push_back(t.step());
    final_weights = t.model().state_dict();
    final_g_state = t.generator_optimizer().state_dict();
    REQUIRE(t.discriminator_optimizer());
    final_d_state = t.discriminator_optimizer()->state_dict();
    // Copies: the state_dict tensors share storage with a trainer about to be destroyed.
    for (auto* v : {&final_weights, &final_g_state, &final_d_state})
      for (auto& [_, x] : *v) x = x.clone();
  }
  {
    Trainer first(c);
    for (int i = 0; i < n / 2; ++i) check_same_losses(first.step(), whole[i]);
    first.save(out.str());
  }
  Trainer second(c);
  second.resume(out.str());
  CHECK(second.step_count() == n / 2);
  for (int i = n / 2; i < n; ++i) check_same_losses(second.step(), whole[i]);
  CHECK(same_tensors(second.model().state_dict(), final_weights));
  CHECK(same_tensors(second.generator_optimizer().state_dict(), final_g_state));
  CHECK(same_tensors(second.discriminator_optimizer()->state_dict(), final_d_state));
}
}  // namespace

TEST_CASE("trainer: a run interrupted, checkpointed and resumed in a fresh trainer equals an uninterrupted one") {
  ThreadCount one(1);
  check_exact_resume(tiny_config({"train.keep_last=2"}));
}

TEST_CASE("baselines: every model kind trains through the same trainer, lowers its loss and resumes exactly") {
  ThreadCount one(1);
  for (const std::string kind : {"unet", "unet-cond", "pix2pix", "cyclegan", "bmgan", "bpgan"}) {
    CAPTURE(kind);
    check_exact_resume(tiny_config({"model.kind=" + kind, "train.keep_last=2"}));
    Trainer t(tiny_config({"model.kind=" + kind}));
    CHECK(t.model().kind() == kind);
    // CycleGAN never compares G(T1) with the paired PET: its own objective is the cycle.
    const std::string falls = kind == "cyclegan" ? "cycle" : "pet_l1";
    std::vector<double> loss;
    for (int i = 0; i < 30; ++i) {
      const StepLosses s = t.step();
      CHECK(std::isfinite(s.g_total));
      CHECK(std::isfinite(s.term("adv")));  // the adversarial term and the D step run
      CHECK(std::isfinite(s.d_total));
      CHECK(std::isfinite(s.term("pet_l1")));
      CHECK(std::isnan(s.term("kl")));      // Causal PETS's terms do not exist here
      if (kind == "bpgan") CHECK((std::isfinite(s.term("gp")) && std::isfinite(s.term("ssim_loss"))));
      loss.push_back(s.term(falls));
    }
    const double first = (loss[0] + loss[1] + loss[2]) / 3, last = (loss[27] + loss[28] + loss[29]) / 3;
    INFO(falls << " " << first << " → " << last);
    CHECK(last < 0.8 * first);
  }
}

TEST_CASE("baselines: a checkpoint resumes only into its own kind, and loads for inference as that kind") {
  ThreadCount one(1);
  TempDir out;
  {
    Trainer t(tiny_config({"model.kind=unet-cond"}));
    t.step();
    t.save(out.str());
  }
  Trainer other(tiny_config({"model.kind=pix2pix"}));
  const std::string err = error_of([&] { other.resume(out.str()); });
  CHECK(contains(err, "model.kind: checkpoint \"unet-cond\", now \"pix2pix\""));
  Trainer causal(tiny_config());
  CHECK(contains(error_of([&] { causal.resume(out.str()); }), "model.kind"));
  const InferenceBundle b = load_for_inference(out.str());
  CHECK(b.model->kind() == "unet-cond");
  // A second learning rate for a conditional path the kind does not have is refused.
  CHECK(contains(error_of([] { Trainer t(tiny_config({"model.kind=unet", "train.lr_conditional_scale=10"})); }),
                 "has no conditional path"));
  CHECK(b.model_config.kind == "unet-cond");
}

TEST_CASE("trainer: the losses fall on the cohort") {
  ThreadCount one(1);
  Trainer t(tiny_config({"train.lr=1e-3", "train.lr_discriminator=1e-3"}));
  const double before = t.validate().l1;
  std::vector<double> l1, t1;
  for (int i = 0; i < 40; ++i) {
    const StepLosses s = t.step();
    l1.push_back(s.term("pet_l1"));
    t1.push_back(s.term("t1"));
  }
  auto mean = [](const std::vector<double>& v, size_t b, size_t e) {
    double m = 0;
    for (size_t i = b; i < e; ++i) m += v[i];
    return m / static_cast<double>(e - b);
  };
  INFO("PET L1 " << mean(l1, 0, 5) << " → " << mean(l1, 35, 40) << ", T1 " << mean(t1, 0, 5) << " → " << mean(t1, 35, 40)
                    << ", validation L1 " << before << " → " << t.validate().l1);
  CHECK(mean(l1, 35, 40) < 0.7 * mean(l1, 0, 5));
  CHECK(mean(t1, 35, 40) < 0.7 * mean(t1, 0, 5));
  CHECK(t.validate().l1 < 0.7 * before);
}

TEST_CASE("trainer: ablations train without the switched-off parts") {
  ThreadCount one(1);
  Trainer t(tiny_config({"train.t1_reconstruction=false", "train.discriminator=false", "train.eps_pet=false"}));
  const auto& model = dynamic_cast<const models::CausalPETS&>(t.model());
  CHECK(model.t1_decoder == nullptr);
  CHECK(model.discriminator == nullptr);
  CHECK(t.discriminator_optimizer() == nullptr);
  const StepLosses s = t.step();
  CHECK(std::isfinite(s.g_total));
  CHECK(std::isnan(s.term("t1")));
  CHECK(std::isnan(s.term("adv")));
  CHECK(std::isnan(s.d_total));
}

TEST_CASE("checkpoints: atomic files, keep-last-K, best, resolve and inference loading") {
  ThreadCount one(1);
  TempDir out;
  const Config c = tiny_config({"train.keep_last=2"});
  Trainer t(c);
  std::vector<std::string> written;
  for (int i = 0; i < 4; ++i) {
    t.step();
    ValidationResult v;
    v.l1 = i == 1 ? 0.01 : 0.5 + i;  // step 2 is the best
    v.step = t.step_count();
    written.push_back(t.save(out.str(), v));
  }
  const fs::path dir = out.path / "checkpoints";
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) files.insert(e.path().filename().string());
  CHECK(files == std::set<std::string>{"best.json", "best.safetensors", "step-00000003.json", "step-00000003.safetensors",
                                       "step-00000004.json", "step-00000004.safetensors"});  // no temporaries left
  CHECK(resolve_checkpoint(out.str()) == written.back());
  CHECK(resolve_checkpoint(dir.string()) == written.back());
  CHECK(resolve_checkpoint(out.str(), true) == (dir / "best.safetensors").string());
  CHECK(resolve_checkpoint((dir / "step-00000003.json").string()) == (dir / "step-00000003.safetensors").string());

  const LoadedCheckpoint best = read_checkpoint((dir / "best.safetensors").string());
  CHECK(best.meta.state.step == 2);
  CHECK(best.meta.state.best_step == 2);
  CHECK(best.meta.state.best_val_l1 == 0.01);
  const LoadedCheckpoint last = read_checkpoint(written.back());
  CHECK(last.meta.state.step == 4);
  CHECK(last.meta.state.best_step == 2);
  CHECK(last.meta.tracer == "AV45");
  CHECK(config_to_json(last.meta.config) == config_to_json(c));
  CHECK(same_tensors(last.model, t.model().state_dict()));
  // The JSON beside it holds the same state.
  std::ifstream js(dir / "step-00000004.json");
  const json sidecar = json::parse(js);
  CHECK(sidecar == checkpoint_meta_to_json(last.meta));
  CHECK(sidecar["ranges"]["ABETA"][0].get<double>() == t.data().ranges.at("ABETA").min);

  const InferenceBundle inf = load_for_inference(out.str());
  CHECK(inf.path == (dir / "best.safetensors").string());
  CHECK(inf.tracer == "AV45");
  CHECK(inf.model_config.volume == c.model.volume);
  CHECK(same_tensors(inf.model->state_dict(), best.model));
  CHECK_FALSE(inf.model->is_training());

  CHECK(contains(error_of([&] { resolve_checkpoint((out.path / "none").string()); }), "does not exist"));
  TempDir empty;
  CHECK(contains(error_of([&] { resolve_checkpoint(empty.str()); }), "no checkpoint"));
  // Resuming with another model shape is refused, naming the key.
  Trainer wider(tiny_config({"model.fusion_tokens=5"}));
  const std::string e = error_of([&] { wider.resume(out.str()); });
  CHECK(contains(e, "model.fusion_tokens"));
}

TEST_CASE("trainer: run() validates, checkpoints per epoch, logs every step and stops at max_steps") {
  ThreadCount one(1);
  TempDir out;
  Trainer t(tiny_config({"train.keep_last=5"}));
  std::ostringstream progress;
  RunOptions opt;
  opt.out_dir = out.str();
  opt.max_steps = 5;
  opt.progress = false;
  opt.progress_stream = &progress;
  const int64_t per_epoch = batches_per_epoch(static_cast<int64_t>(t.data().train.size()), 2);
  RunOptions two_epochs;
  two_epochs.epochs = 2;
  CHECK(t.total_steps(two_epochs) == 2 * per_epoch);
  CHECK(t.total_steps(opt) == 5);
  t.run(opt);
  CHECK(t.step_count() == 5);
  std::ifstream log(out.path / "train.jsonl");
  std::string line;
  int steps = 0, validations = 0, starts = 0;
  while (std::getline(log, line)) {
    const json j = json::parse(line);
    if (j["type"] == "start") {  // which CPU kernels and how many threads produced these losses
      ++starts;
      CHECK(j["cpu_isa"].get<std::string>() == kernels::cpu::cpu_isa_name(kernels::cpu::cpu_isa()));
      CHECK(j["threads"].get<int>() == 1);
      CHECK(j["backends"]["conv"].get<std::string>() == backend_name("conv"));  // what CUDA tensors would run on
      CHECK(j["backends"].size() == 4);
    } else if (j["type"] == "step") {
      ++steps;
      CHECK(j["step"].get<int64_t>() == steps);
      CHECK(j.contains("pet_l1"));
      CHECK(j.contains("d_real"));
    } else {
      ++validations;
      CHECK(j["l1"].get<double>() > 0);
      CHECK(j["sessions"].get<int64_t>() == 2);
    }
  }
  CHECK(starts == 1);
  CHECK(steps == 5);
  CHECK(validations == 5 / per_epoch + (5 % per_epoch != 0));
  CHECK(fs::exists(out.path / "config.json"));
  CHECK(fs::exists(out.path / "checkpoints" / (step_checkpoint_name(5) + ".safetensors")));
  CHECK(fs::exists(out.path / "checkpoints" / "best.safetensors"));
  CHECK(contains(progress.str(), "validation"));
  CHECK(contains(progress.str(), "step 5/5"));
  // Stopping when the conditional path is on needs SUVR: this cohort has no atlas.
  RunOptions until = opt;
  until.until_conditional = true;
  until.max_steps = 6;
  CHECK(contains(error_of([&] { t.run(until); }), "atlas/regions.json"));
}

TEST_CASE("progress: durations, live and log lines") {
  CHECK(format_duration(45) == "45s");
  CHECK(format_duration(725) == "12m05s");
  CHECK(format_duration(3 * 3600 + 2 * 60 + 10) == "3h02m");
  CHECK(format_duration(-1) == "?");
  std::ostringstream log;
  ProgressLine plain(log, 0, 10, /*live=*/false, /*log_every=*/5);
  for (int i = 1; i <= 10; ++i) plain.update(i, "L1 0.5");
  plain.message("validation");
  const std::string text = log.str();
  CHECK(std::count(text.begin(), text.end(), '\n') == 3);  // steps 5 and 10, the message
  CHECK(contains(text, "step  5/10  L1 0.5"));
  CHECK(text.find('\r') == std::string::npos);
  std::ostringstream tty;
  ProgressLine live(tty, 0, 3, /*live=*/true, 1);
  live.update(1, "x");
  live.message("checkpoint");
  live.finish();
  CHECK(contains(tty.str(), "\r\033[K"));
  CHECK(contains(tty.str(), "checkpoint\n"));
}

// ---- cpets-experiment ----------------------------------------------------------------------------

namespace {
ExperimentOptions tiny_experiment(const std::string& out, int64_t steps) {
  ExperimentOptions o;
  o.cohort = cohort_dir().string();
  o.out = out;
  o.preset = "tiny";
  o.steps = steps;
  o.methods = {"causal-pets", "unet"};
  o.ablation_names = {"no-discriminator"};
  o.overrides = {"train.perceptual=none", "train.batch_size=2", "data.max_val_sessions=2"};
  o.montages = 1;
  o.progress = false;
  return o;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
}  // namespace

TEST_CASE("experiment: every method and ablation trains with one budget, is evaluated and tabled; reruns resume") {
  ThreadCount one(1);
  TempDir out;
  // An interrupted experiment: stopped before the first step, then continued to a budget of 1.
  std::atomic<bool> stop{true};
  ExperimentOptions first = tiny_experiment(out.str(), 1);
  first.stop = &stop;
  CHECK(run_experiment(first).methods.empty());
  CHECK(run_experiment(tiny_experiment(out.str(), 1)).methods.size() == 4);  // 3 runs + mean-PET
  for (const char* run : {"causal-pets", "unet", "causal-pets-no-discriminator"})
    CHECK_MESSAGE(trained_steps((out.path / "runs" / run).string()) == 1, run);

  // A larger budget resumes every run from its checkpoint; the same budget again trains nothing.
  const eval::Report report = run_experiment(tiny_experiment(out.str(), 2));
  const std::string unet_log = read_file(out.path / "runs" / "unet" / "train.jsonl");
  CHECK(contains(unet_log, "\"step\":1,"));
  CHECK(contains(unet_log, "\"step\":2,"));
  // A run folder written before a train key existed (its config.json lacks the key) still matches
  // the plan when the key's default is what the plan asks.
  {
    const fs::path saved = out.path / "runs" / "unet" / "config.json";
    nlohmann::json j = nlohmann::json::parse(read_file(saved));
    REQUIRE(j["train"].erase("lambda_cycle") == 1);
    std::ofstream(saved) << j.dump(2);
  }
  const eval::Report again = run_experiment(tiny_experiment(out.str(), 2));
  CHECK(read_file(out.path / "runs" / "unet" / "train.jsonl") == unet_log);

  REQUIRE(report.tables.size() == 2);
  const auto& t1 = report.tables[0];
  REQUIRE(t1.rows.size() == 3);
  CHECK(t1.rows[0][0] == "Causal PETS");
  CHECK(t1.rows[1][0] == "U-Net w/o condition");
  CHECK(t1.rows[2][0] == "(mean training PET)");
  CHECK(t1.rows[1][5] == "2");  // steps
  std::string notes;
  for (const auto& n : t1.notes) notes += n + "\n";
  CHECK(contains(notes, "Not run in this experiment (--methods): U-Net w/ condition, Pix2Pix, CycleGAN, BMGAN, BPGAN."));
  CHECK(contains(notes, "Not built: the diffusion baselines"));
  CHECK(contains(notes, "BPGAN is our reading of its abstract"));
  const auto& t5 = report.tables[1];
  REQUIRE(t5.rows.size() == 2);
  CHECK(t5.rows[1][0] == "w/o discriminator");
  bool tested = false;
  for (const auto& c : report.comparisons) tested = tested || (c.method_b == "unet" && c.metric == "mae" && c.n >= 2);
  CHECK(tested);
  CHECK(again.tables[0].rows == t1.rows);  // the same runs evaluated again: the same table
  for (const char* file : {"report.html", "metrics.json", "table1.csv", "table5.csv"})
    CHECK_MESSAGE(fs::is_regular_file(out.path / file), file);
  CHECK(contains(read_file(out.path / "report.html"), "Table 1"));
  CHECK(contains(read_file(out.path / "table1.csv"), "unet,U-Net w/o condition,"));

  // The gradient bucket size changes no result: a folder made with another one is reused.
  ExperimentOptions buckets = tiny_experiment(out.str(), 2);
  buckets.overrides.push_back("train.bucket_mb=3");
  CHECK(run_experiment(buckets).tables[0].rows == t1.rows);
  CHECK(read_file(out.path / "runs" / "unet" / "train.jsonl") == unet_log);

  // The same folder with another configuration is refused, naming the key.
  ExperimentOptions changed = tiny_experiment(out.str(), 2);
  changed.overrides.push_back("train.seed=5");
  CHECK(contains(error_of([&] { run_experiment(changed); }), "train.seed"));
  ExperimentOptions unknown = tiny_experiment(out.str(), 2);
  unknown.methods = {"cyclegan2"};
  CHECK(contains(error_of([&] { plan_experiment(unknown); }), "method 'cyclegan2' is unknown"));
}

TEST_CASE("experiment: BPGAN goes through cpets-experiment as any baseline (trained, tabled, t-tested, in the CSV)") {
  ThreadCount one(1);
  TempDir out;
  ExperimentOptions o = tiny_experiment(out.str(), 1);
  o.methods = {"causal-pets", "bpgan"};
  o.ablation_names = {"none"};
  const eval::Report r = run_experiment(o);
  CHECK(trained_steps((out.path / "runs" / "bpgan").string()) == 1);
  CHECK(contains(read_file(out.path / "runs" / "bpgan" / "train.jsonl"), "\"ssim_loss\""));
  REQUIRE(r.tables[0].rows.size() == 3);
  CHECK(r.tables[0].rows[1][0] == "BPGAN");
  bool tested = false;
  for (const auto& c : r.comparisons) tested = tested || (c.method_b == "bpgan" && c.metric == "ssim" && c.n >= 2);
  CHECK(tested);
  CHECK(contains(read_file(out.path / "table1.csv"), "bpgan,BPGAN,"));
}

TEST_CASE("experiment with seeds: a run per seed, each session averaged over the seeds, the spread shown") {
  ThreadCount one(1);
  TempDir out;
  ExperimentOptions o = tiny_experiment(out.str(), 1);
  o.ablation_names = {"none"};
  o.seeds = 2;
  const eval::Report r = run_experiment(o);
  for (const char* run : {"causal-pets", "causal-pets-seed2", "unet", "unet-seed2"})
    CHECK_MESSAGE(trained_steps((out.path / "runs" / run).string()) == 1, run);
  const auto seed_of = [&](const char* run) {
    return nlohmann::json::parse(read_file(out.path / "runs" / run / "config.json"))["train"]["seed"].get<uint64_t>();
  };
  CHECK(seed_of("causal-pets-seed2") == seed_of("causal-pets") + 1);
  CHECK(seed_of("unet-seed2") == seed_of("unet") + 1);

  // Each seed's runs evaluated on their own; the experiment's value per session is their mean.
  ComparisonOptions co;
  co.cohort = o.cohort;
  co.out = (out.path / "check").string();
  co.montages = 0;
  co.mean_pet = false;
  co.quiet = true;
  const auto runs = [&](const std::string& suffix) {
    return std::vector<RunToCompare>{{"causal-pets", (out.path / "runs" / ("causal-pets" + suffix)).string()},
                                     {"unet", (out.path / "runs" / ("unet" + suffix)).string()}};
  };
  const eval::Report a = compare_runs(runs(""), co), b = compare_runs(runs("-seed2"), co);
  REQUIRE(r.methods.size() == 3);  // two methods and the mean training PET
  for (size_t m = 0; m < 2; ++m)
    for (size_t i = 0; i < r.methods[m].sessions.size(); ++i) {
      const double one = a.methods[m].sessions[i].metrics.at("mae"), two = b.methods[m].sessions[i].metrics.at("mae");
      CHECK(r.methods[m].sessions[i].metrics.at("mae") == doctest::Approx((one + two) / 2).epsilon(1e-12));
    }
  CHECK(a.methods[0].sessions[0].metrics.at("mae") != b.methods[0].sessions[0].metrics.at("mae"));  // seeds differ
  // The t-tests are of the averaged sessions.
  for (const auto& c : r.comparisons)
    if (c.method_b == "unet" && c.metric == "mae")
      CHECK(c.test.p == eval::compare_methods(r.methods[0], r.methods[1], "mae").test.p);

  REQUIRE(r.tables.size() == 1);
  CHECK(contains(r.tables[0].rows[0][1], "["));  // the seed spread beside mean ± std
  CHECK(!contains(r.tables[0].rows[2][1], "["));  // none for the mean training PET
  std::string notes, facts;
  for (const auto& n : r.tables[0].notes) notes += n + "\n";
  for (const auto& [k, v] : r.facts) facts += k + ": " + v + "\n";
  CHECK(contains(notes, "2 seeds"));
  CHECK(contains(facts, "seeds: 2 runs per method"));
  CHECK(contains(read_file(out.path / "table1.csv"), "mae_seed_std"));
  ExperimentOptions none = o;
  none.seeds = 0;
  CHECK(contains(error_of([&] { plan_experiment(none); }), "--seeds"));
}

TEST_CASE("experiment with a time budget: each run trains until its minutes are spent, then counts as done") {
  ThreadCount one(1);
  TempDir out;
  ExperimentOptions o = tiny_experiment(out.str(), 0);
  o.ablation_names = {"none"};
  o.minutes = 0.003;  // 0.18 s of steps and validations per run
  const eval::Report r = run_experiment(o);
  REQUIRE(r.tables.size() == 1);
  for (const char* run : {"causal-pets", "unet"}) {
    INFO(run);
    CHECK(trained_steps((out.path / "runs" / run).string()) >= 1);
    // What the run's log counts reached the budget (the step that crossed it is the last).
    double seconds = 0;
    std::istringstream log(read_file(out.path / "runs" / run / "train.jsonl"));
    for (std::string line; std::getline(log, line);) {
      const auto j = nlohmann::json::parse(line);
      if ((j["type"] == "step" || j["type"] == "validation") && j.contains("seconds")) seconds += j["seconds"].get<double>();
    }
    CHECK(seconds >= o.minutes * 60);
  }
  std::string facts;
  for (const auto& [k, v] : r.facts) facts += k + ": " + v + "\n";
  CHECK(contains(facts, "of training per run"));
  // Spent budgets are done: the same command trains nothing more.
  const std::string log = read_file(out.path / "runs" / "unet" / "train.jsonl");
  run_experiment(o);
  CHECK(read_file(out.path / "runs" / "unet" / "train.jsonl") == log);
  // Steps and minutes: whichever comes first.
  TempDir out2;
  ExperimentOptions both = tiny_experiment(out2.str(), 1);
  both.ablation_names = {"none"};
  both.methods = {"unet"};
  both.minutes = 60;
  run_experiment(both);
  CHECK(trained_steps((out2.path / "runs" / "unet").string()) == 1);
  ExperimentOptions neither = tiny_experiment(out2.str(), 0);
  CHECK(contains(error_of([&] { plan_experiment(neither); }), "--minutes"));
}

TEST_CASE("data: data-parallel ranks split every global batch; together they are one loader's batches") {
  DataConfig cfg;
  cfg.cohort = cohort_dir().string();
  const CohortSplits s = open_cohort(cfg);
  const Dataset data(s.train, {16, 16, 16});
  const int64_t ranks = 3, per_rank = 1;
  REQUIRE(data.size() >= ranks * per_rank);
  BatchLoader whole(data, per_rank * ranks, 11, {}, /*prefetch=*/false);
  std::vector<std::unique_ptr<BatchLoader>> shards;
  for (int64_t r = 0; r < ranks; ++r)
    shards.push_back(std::make_unique<BatchLoader>(data, per_rank, 11, LoaderPosition{}, true, RankShard{r, ranks}));
  CHECK(shards[0]->batches_per_epoch() == whole.batches_per_epoch());
  std::set<int64_t> used;
  for (int64_t b = 0; b < 2 * whole.batches_per_epoch(); ++b) {  // two epochs
    const Batch g = whole.next();
    std::vector<int64_t> joined;
    for (auto& shard : shards) {
      const Batch part = shard->next();
      CHECK(part.index == g.index);
      CHECK(part.epoch == g.epoch);
      joined.insert(joined.end(), part.sessions.begin(), part.sessions.end());
    }
    CHECK(joined == g.sessions);
    if (g.epoch == 0) used.insert(joined.begin(), joined.end());
  }
  CHECK(static_cast<int64_t>(used.size()) == whole.batches_per_epoch() * ranks * per_rank);  // each once per epoch
  CHECK_THROWS_AS(BatchLoader(data, per_rank, 11, {}, false, RankShard{3, 3}), std::invalid_argument);
  const std::string e = error_of([&] { BatchLoader(data, data.size(), 11, {}, false, RankShard{0, 2}); });
  CHECK(contains(e, "× 2 ranks"));
}
