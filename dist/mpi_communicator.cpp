// CPU ranks over MPI. MPI is initialised with MPI_THREAD_SERIALIZED: the gradient reducer calls
// collectives from its own thread while the main thread computes, and the two never call MPI at
// the same time (the trainer waits for the reducer before its own collectives).
#include "dist/backends.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#if CPETS_HAVE_MPI
#include <mpi.h>
#endif

namespace cpets::dist {

#if CPETS_HAVE_MPI
namespace {

void check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw std::runtime_error(std::string(call) + " failed: " + std::string(text, static_cast<size_t>(len)));
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I32: return MPI_INT32_T;
  }
  return MPI_FLOAT;
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const LaunchInfo& launch) : local_rank_(launch.local_rank) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
      owns_ = true;
      if (provided < MPI_THREAD_SERIALIZED)
        throw std::runtime_error("this MPI library offers thread level " + std::to_string(provided) +
                                 ", below MPI_THREAD_SERIALIZED, which the overlapped gradient reduction needs; use an "
                                 "MPI built with thread support (Debian's OpenMPI has it)");
    }
    // Errors come back as codes (and become exceptions naming the call) instead of aborting.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
    if (world_ != launch.world || rank_ != launch.rank)
      throw std::runtime_error("MPI says rank " + std::to_string(rank_) + " of " + std::to_string(world_) + " but the " +
                               launch.launcher + " environment says rank " + std::to_string(launch.rank) + " of " +
                               std::to_string(launch.world) +
                               "; is this binary linked against another MPI than the launcher's (mpirun --version)?");
  }
  ~MpiCommunicator() override {
    if (owns_) MPI_Finalize();
  }
  std::string backend() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int world() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  Device buffer_device() const override { return Device::cpu(); }

  void all_reduce_sum(void* data, int64_t count, DType type) override {
    // MPI counts are int: large buffers go in pieces (same bits: the sum is elementwise).
    constexpr int64_t kMaxCount = int64_t(1) << 30;
    char* p = static_cast<char*>(data);
    for (int64_t done = 0; done < count; done += kMaxCount) {
      const int n = static_cast<int>(std::min(kMaxCount, count - done));
      check(MPI_Allreduce(MPI_IN_PLACE, p + done * dtype_bytes(type), n, mpi_type(type), MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce");
    }
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    constexpr int64_t kMax = int64_t(1) << 30;
    char* p = static_cast<char*>(data);
    for (int64_t done = 0; done < bytes; done += kMax)
      check(MPI_Bcast(p + done, static_cast<int>(std::min(kMax, bytes - done)), MPI_BYTE, root, MPI_COMM_WORLD),
            "MPI_Bcast");
  }
  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }
  [[noreturn]] void abort(int exit_code) noexcept override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  int rank_ = 0, world_ = 1, local_rank_ = 0;
  bool owns_ = false;
};

}  // namespace

std::unique_ptr<Communicator> connect_mpi(const LaunchInfo& launch) { return std::make_unique<MpiCommunicator>(launch); }

#else

std::unique_ptr<Communicator> connect_mpi(const LaunchInfo& launch) {
  throw std::runtime_error("started by " + launch.launcher + " as rank " + std::to_string(launch.rank) + " of " +
                           std::to_string(launch.world) +
                           ", but this build has no MPI: install libopenmpi-dev (tools/cpets.sh install does) and "
                           "rebuild, or configure with -DCPETS_MPI=ON to make a missing MPI an error");
}

#endif

}  // namespace cpets::dist
