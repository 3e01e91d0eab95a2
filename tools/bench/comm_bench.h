// `cpets-bench comm` and the data-parallel part of `cpets-bench train`, run under a launcher
// (mpirun -np N cpets-bench …): all-reduce bandwidth over message sizes, and a training step's
// time per rank count with the share of the gradient all-reduce hidden behind the backward pass.
#pragma once
#include <string>

namespace cpets::bench {

struct CommBenchOptions {
  double max_mb = 64;  // largest message
  int repeats = 10;    // timed all-reduces per size (median reported)
};
int run_comm_bench(const CommBenchOptions& opt);

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
