// `cpets-bench comm`, run under a launcher (mpirun -np N cpets-bench comm): all-reduce bandwidth
// over message sizes, beside one rank's memcpy of the same bytes.
#pragma once
#include <memory>

#include "dist/communicator.h"

namespace cpets::bench {

// This process's communicator when a launcher started several ranks; otherwise throws saying
// how to launch `cpets-bench <what>`.
std::unique_ptr<dist::Communicator> connect_ranks_or_explain(const char* what);

struct CommBenchOptions {
  double max_mb = 64;  // largest message
  int repeats = 10;    // timed all-reduces per size (median reported)
};
int run_comm_bench(const CommBenchOptions& opt);

}  // namespace cpets::bench
