#include "bench/comm_bench.h"

#include "bench/bench.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "dist/communicator.h"
#include "engine/ops.h"

namespace cpets::bench {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

std::unique_ptr<dist::Communicator> connect_ranks_or_explain(const char* what) {
  const dist::LaunchInfo launch = dist::detect_launch();
  if (launch.world < 2)
    throw std::runtime_error(std::string("cpets-bench ") + what +
                             " measures several ranks: launch it with mpirun -np N (or srun, or the torchrun-style "
                             "variables for GPU ranks), e.g. mpirun -np 2 --oversubscribe cpets-bench " + what);
  return dist::connect(launch);
}

int run_comm_bench(const CommBenchOptions& opt) {
  const auto comm = connect_ranks_or_explain("comm");
  const int n = comm->world();
  const Device d = comm->buffer_device();
  if (comm->is_root())
    std::printf("cpets-bench comm — all-reduce (sum, float32) over %d ranks, %s; median of %d\n"
                "busbw = algbw × 2(n−1)/n (nccl-tests' definition); baseline: one rank's memcpy of the same bytes\n\n"
                "%12s %12s %12s %12s %14s %10s\n",
                n, comm->backend().c_str(), opt.repeats, "bytes", "time us", "algbw GB/s", "busbw GB/s", "memcpy GB/s",
                "busbw/cpy");
  for (int64_t bytes = 4096; bytes <= static_cast<int64_t>(opt.max_mb * (1 << 20)); bytes *= 4) {
    const int64_t count = bytes / 4;
    Tensor buf = Tensor::full({count}, 1.f, d);
    comm->all_reduce_sum(buf.data(), count, dist::DType::F32);  // warm-up (connections, pages)
    std::vector<double> times;
    for (int r = 0; r < opt.repeats; ++r) {
      comm->barrier();
      const auto t0 = Clock::now();
      comm->all_reduce_sum(buf.data(), count, dist::DType::F32);
      times.push_back(comm->sum(seconds_since(t0)) / n);  // the ranks' mean
    }
    // The baseline in the same run: copying the same bytes once on this rank.
    std::vector<float> a(static_cast<size_t>(count), 1.f), b(static_cast<size_t>(count));
    const double copy_s = median_seconds([&] { std::memcpy(b.data(), a.data(), static_cast<size_t>(bytes)); }, opt.repeats);
    const double t = median(times), algbw = bytes / t / 1e9, busbw = algbw * 2.0 * (n - 1) / n;
    const double copy_bw = bytes / copy_s / 1e9;
    if (comm->is_root())
      std::printf("%12lld %12.1f %12.3f %12.3f %14.3f %9.2fx\n", static_cast<long long>(bytes), t * 1e6, algbw, busbw,
                  copy_bw, busbw / copy_bw);
  }
  return 0;
}

}  // namespace cpets::bench
