// `cpets-bench train`: the time of one training step of a preset and model.kind (model.md §5's
// step order on a random batch), a per-op breakdown, peak memory, and PyTorch's time for the same
// model, Causal PETS or a baseline (tools/torch_model.py --bench --kind), measured in the same run.
#pragma once
#include <string>

namespace cpets::bench {

struct TrainBenchOptions {
  std::string preset = "demo";
  std::string kind = "causal-pets";  // model.kind: Causal PETS or a baseline
  int batch = 2;
  int steps = 5;     // timed steps (median reported)
  int warmup = 2;    // untimed steps first (allocator warm-up, first-touch of pages)
  int top = 15;      // ops listed in the breakdown
  bool infer = true; // also time the inference of one volume
  std::string torch; // JSON file from tools/torch_model.py --bench, "none", or "" to run it
  int rounds = 3;    // our steps and PyTorch's alternately (bench::Rounds)
  std::string device = "cpu";  // train.device's forms: cpu, cuda, cuda:N (PyTorch runs there too)
  std::string precision = "fp32";  // train.precision on the GPU; PyTorch: TF32 on/off or bf16 autocast
};

int run_train_bench(const TrainBenchOptions& opt);

// `cpets-bench train --ranks` under a launcher (mpirun -np N): a step's time and samples/s on N
// data-parallel ranks against rank 0 alone in the same run, with the gradient all-reduce
// overlapped with the backward pass and not, and the share of it hidden.
struct DataParallelBenchOptions {
  std::string preset = "demo";
  int batch = 1;  // per rank
  int steps = 3;
  int warmup = 1;
  double bucket_mb = 1;  // configs/demo.json's (its 6 MB of gradients in 6 buckets); full.json: 25
};
// Launched as one process it says how to launch it.
int run_data_parallel_bench(const DataParallelBenchOptions& opt);



}  // namespace cpets::bench
