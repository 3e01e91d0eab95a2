// Data-parallel ranks: who this process is and how it talks to the others. The layer sits between
// train/ and engine/: the engine never knows that ranks exist; train/ asks for one Communicator
// and gives it to the gradient reducer (dist/reducer.h).
//
// Implementations (one interface, chosen at start-up):
//   single — one process: every collective is a no-op (no copies, no threads).
//   mpi    — CPU ranks over MPI (OpenMPI or MPICH), launched by mpirun / srun.
//   nccl   — GPU ranks over NCCL, one process per GPU; the NCCL unique id travels over MPI when
//            the job was launched by mpirun/srun, or over the MASTER_ADDR:MASTER_PORT rendezvous
//            (dist/rendezvous.h) for torchrun-style launches.
// Collectives are blocking and must be called by every rank in the same order with the same
// sizes; the reducer calls them from its own thread, never at the same time as the main thread.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace cpets::dist {

// Who this process is, read from the launcher's environment.
struct LaunchInfo {
  int rank = 0, world = 1, local_rank = 0;
  std::string launcher = "single";  // "single" | "mpirun" | "srun" | "torchrun"
  std::string master_addr;          // torchrun-style launches only
  int master_port = 0;
};

// OpenMPI (OMPI_COMM_WORLD_*), MPICH/Hydra (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID), Slurm
// (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) and torchrun-style variables (RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR, MASTER_PORT), in that order; none of them: one process. Variables that
// contradict each other or are out of range throw naming the variable and its value.
LaunchInfo detect_launch();
LaunchInfo detect_launch(const std::vector<std::pair<std::string, std::string>>& environment);  // for tests

enum class DType { F32, F64, I32 };
int64_t dtype_bytes(DType t);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string backend() const = 0;  // "single" | "mpi" | "nccl"
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual int local_rank() const = 0;
  // Where the buffers of the collectives live: the host (single, mpi) or this rank's GPU (nccl).
  virtual Device buffer_device() const = 0;

  // In place: data[i] ← Σ over ranks of data[i]. For a fixed world size and count the result
  // is the same bits run to run (the MPI standard's advice for reductions; NCCL with its
  // algorithm and protocol pinned, see nccl_communicator.cpp).
  virtual void all_reduce_sum(void* data, int64_t count, DType type) = 0;
  // In place: root's bytes everywhere.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job now (after an error on this one, which the caller has printed).
  [[noreturn]] virtual void abort(int exit_code) noexcept = 0;

  bool is_root() const { return rank() == 0; }
  // Host-side helpers on top of the collectives (every rank must call them together).
  double sum(double value);
  bool any(bool flag);
  // Whether every rank passed the same text (a config, a checkpoint name); otherwise throws on
  // every rank: "rank(s) R of N differ from rank 0 in their <what>; <fix>".
  void require_same(const std::string& what, const std::string& text, const std::string& fix = "");
};

// The single-process communicator (world 1).
std::unique_ptr<Communicator> make_single();

// The communicator for this process: `backend` "auto" picks single for one process, nccl for a
// CUDA training device, mpi otherwise; "mpi"/"nccl" insist. Throws naming the launcher and the
// fix when the backend was not built (e.g. mpirun of a binary built without MPI) or cannot join.
std::unique_ptr<Communicator> connect(const LaunchInfo& launch, const std::string& backend = "auto",
                                      Device device = Device::cpu());

// Whether this build has the implementations (CMake found MPI; CUDA and NCCL).
bool have_mpi();
bool have_nccl();

}  // namespace cpets::dist
