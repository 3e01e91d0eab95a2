// cpets-train: trains Causal PETS on a cohort folder (docs/model.md §5).
//   cpets-train --config configs/demo.json --set data.cohort=out/demo/cohort --out out/demo/run
//   cpets-train --resume out/demo/run                  continue exactly where the run stopped
//   cpets-train --config configs/full.json --print-model
//   mpirun -np 4 cpets-train --config … --out …          data-parallel over 4 ranks (also srun,
//                                                        or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT)
// Exit codes: 0 done, 1 runtime failure (data, files), 2 bad configuration or command line.
#include <CLI/CLI.hpp>

#include "cli_main.h"
#include <omp.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"

namespace {

using namespace cpets;
using namespace cpets::train;
namespace fs = std::filesystem;

struct Args {
  std::string config, out, resume;
  std::vector<std::string> sets;
  int64_t max_steps = 0, epochs = 0, threads = 0;
  bool no_progress = false, print_model = false, print_config = false, until_conditional = false;
  std::string comm = "auto", device;
};

std::atomic<bool> g_stop{false};
extern "C" void on_interrupt(int) { g_stop = true; }

Config resolve_config(const Args& a) {
  std::vector<std::string> sets = a.sets;
  if (a.threads > 0) sets.push_back("train.threads=" + std::to_string(a.threads));
  if (!a.device.empty()) sets.push_back("train.device=" + a.device);
  if (!a.config.empty()) return load_config(a.config, sets);
  if (!a.resume.empty()) {
    // Without --config a resumed run keeps the checkpoint's own configuration (plus --set).
    const LoadedCheckpoint ck = read_checkpoint(resolve_checkpoint(a.resume));
    nlohmann::json doc = config_to_json(ck.meta.config);
    for (const auto& s : sets) apply_override(doc, s);
    return config_from_json(doc);
  }
  return make_config("full", sets);
}

// The run folder a --resume path belongs to: DIR, DIR/checkpoints → DIR; a file → its run folder.
std::string run_folder_of(const std::string& resume) {
  fs::path p = fs::absolute(resume);
  if (fs::is_regular_file(p)) p = p.parent_path();
  if (p.filename() == "checkpoints") p = p.parent_path();
  return p.string();
}

int run(const Args& a, std::shared_ptr<dist::Communicator>& comm) {
  if (a.threads > 0) omp_set_num_threads(static_cast<int>(a.threads));
  Config config = resolve_config(a);
  // Absolute paths in the saved config, so `--resume` works from any working directory.
  if (!config.data.cohort.empty()) config.data.cohort = fs::absolute(config.data.cohort).lexically_normal().string();
  if (!config.train.perceptual_weights.empty())
    config.train.perceptual_weights = fs::absolute(config.train.perceptual_weights).lexically_normal().string();
  if (a.print_config) {
    std::cout << config_to_json(config).dump(2) << "\n";
    return 0;
  }
  if (a.print_model) {
    Generator init(config.train.seed);
    const auto model = models::make_model(config.model, init);
    std::cout << config.model.kind << ", preset \"" << config.model.preset << "\", tracer " << config.data.tracer << ", volume "
              << config.model.volume[0] << "×" << config.model.volume[1] << "×" << config.model.volume[2]
              << "\nparameters:\n"
              << describe_parameters(*model);
    return 0;
  }
  comm = dist::connect(dist::detect_launch(), a.comm, parse_device(config.train.device).device);
  const bool root = comm->is_root();
  Trainer trainer(config, std::nullopt, comm);
  if (!a.resume.empty()) {
    trainer.resume(a.resume);
    if (root) std::cerr << "resumed from " << resolve_checkpoint(a.resume) << " at step " << trainer.step_count() << "\n";
  }
  RunOptions opt;
  opt.out_dir = !a.out.empty() ? a.out : !a.resume.empty() ? run_folder_of(a.resume) : "out/train";
  opt.max_steps = a.max_steps;
  if (a.epochs > 0) opt.epochs = a.epochs;
  opt.progress = !a.no_progress && isatty(STDERR_FILENO);
  opt.stop = &g_stop;
  opt.until_conditional = a.until_conditional;
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  trainer.run(opt);
  if (!root) return g_stop ? 130 : 0;
  if (g_stop) {
    std::cerr << "interrupted at step " << trainer.step_count() << "; checkpoint written. Continue with: cpets-train --resume "
              << opt.out_dir << "\n";
    return 130;
  }
  if (a.until_conditional)
    std::cerr << (trainer.conditional_on() ? "the conditional path is on after "
                                           : "the conditional path is NOT yet on after ")
              << trainer.step_count() << " steps" << (trainer.conditional_on() ? "" : " (the budget, --max-steps)")
              << "\n";
  std::cerr << "done: " << trainer.step_count() << " steps; checkpoints in " << (fs::path(opt.out_dir) / "checkpoints").string()
            << ", log " << (fs::path(opt.out_dir) / "train.jsonl").string() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cpets-train: train Causal PETS (docs/model.md §5) on a cohort folder"};
  Args a;
  app.add_option("--config", a.config, "JSON config (configs/demo.json, configs/full.json)");
  app.add_option("--set", a.sets, "override one key, e.g. --set train.lr=2e-4 --set data.cohort=DIR (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--out", a.out, "run folder: checkpoints/, train.jsonl, config.json (default out/train, or the resumed run's)");
  app.add_option("--resume", a.resume, "continue a run exactly: its folder or a checkpoint file");
  app.add_option("--max-steps", a.max_steps, "stop after this many steps in total (counting resumed ones)")->check(CLI::NonNegativeNumber);
  app.add_option("--epochs", a.epochs, "number of epochs (overrides train.epochs)")->check(CLI::PositiveNumber);
  app.add_option("--threads", a.threads, "OpenMP threads (overrides train.threads)")->check(CLI::NonNegativeNumber);
  app.add_option("--device", a.device,
                 "where to train: cpu, cuda or cuda:N (overrides train.device; with several ranks cuda means each "
                 "rank's local GPU)");
  app.add_flag("--until-conditional", a.until_conditional,
               "stop at the first validation where the tabular inputs reach the image: SUVR error below the mean "
               "training PET's, r ≥ 0.8, CSF interventions tracking the phantom's truth (needs an atlas)");
  app.add_flag("--no-progress", a.no_progress, "plain progress lines for log files instead of a live line");
  app.add_flag("--print-model", a.print_model, "print the parameter counts of each network and exit");
  app.add_flag("--print-config", a.print_config, "print the resolved configuration (every key) and exit");
  app.add_option("--comm", a.comm,
                 "data-parallel communicator when launched as several ranks (mpirun, srun, RANK/WORLD_SIZE): auto, "
                 "mpi (CPU ranks), nccl (GPU ranks)")
      ->check(CLI::IsMember({"auto", "mpi", "nccl"}));
  std::shared_ptr<dist::Communicator> comm;
  return tools::run_main<ConfigError>(app, argc, argv, [&] {
    try {
      return run(a, comm);
    } catch (const std::exception& e) {
      if (!comm || comm->world() == 1) throw;
      // One rank failed: say which, then end every rank (the others may be waiting on it).
      std::cerr << "error (rank " << comm->rank() << " of " << comm->world() << "): " << e.what()
                << "\ncpets-train: stopping every rank\n" << std::flush;
      comm->abort(dynamic_cast<const ConfigError*>(&e) ? 2 : 1);
    }
    return 1;  // not reached: abort() ends the process
  });
}
