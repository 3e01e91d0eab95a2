#include "dist/communicator.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>

#include "dist/backends.h"

extern char** environ;

namespace cpets::dist {
namespace {

using Environment = std::vector<std::pair<std::string, std::string>>;

std::optional<std::string> lookup(const Environment& env, const std::string& name) {
  for (const auto& [k, v] : env)
    if (k == name) return v;
  return std::nullopt;
}

int parse_int(const std::string& name, const std::string& value, int lo) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v < lo || v > 1 << 20)
    throw std::runtime_error("environment variable " + name + "=\"" + value + "\" is not an integer ≥ " +
                             std::to_string(lo) + "; unset it or fix the launch script");
  return static_cast<int>(v);
}

// One launcher's variables: rank and size must both be there; the local rank may be missing.
std::optional<LaunchInfo> read_launcher(const Environment& env, const char* launcher, const char* rank_var,
                                        const char* size_var, const char* local_var) {
  const auto rank = lookup(env, rank_var), size = lookup(env, size_var);
  if (!rank && !size) return std::nullopt;
  if (!rank || !size)
    throw std::runtime_error(std::string("environment: ") + (rank ? size_var : rank_var) + " is missing while " +
                             (rank ? rank_var : size_var) + " is set (" + launcher +
                             "-style launch); set both, or neither for one process");
  LaunchInfo info;
  info.launcher = launcher;
  info.rank = parse_int(rank_var, *rank, 0);
  info.world = parse_int(size_var, *size, 1);
  if (info.rank >= info.world)
    throw std::runtime_error(std::string("environment: ") + rank_var + "=" + *rank + " is not below " + size_var + "=" +
                             *size + "; fix the launch script");
  if (const auto local = lookup(env, local_var)) info.local_rank = parse_int(local_var, *local, 0);
  else info.local_rank = info.rank;  // one node
  return info;
}

class SingleCommunicator final : public Communicator {
 public:
  std::string backend() const override { return "single"; }
  int rank() const override { return 0; }
  int world() const override { return 1; }
  int local_rank() const override { return 0; }
  Device buffer_device() const override { return Device::cpu(); }
  void all_reduce_sum(void*, int64_t, DType) override {}
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) noexcept override { std::exit(exit_code); }
};

}  // namespace

LaunchInfo detect_launch(const Environment& env) {
  // A launcher's own variables first: mpirun inside a Slurm allocation sets both kinds.
  std::optional<LaunchInfo> info = read_launcher(env, "mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                                                 "OMPI_COMM_WORLD_LOCAL_RANK");
  if (!info) info = read_launcher(env, "mpirun", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID");
  if (!info) info = read_launcher(env, "srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID");
  if (!info) {
    info = read_launcher(env, "torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK");
    if (info && info->world > 1) {
      const auto addr = lookup(env, "MASTER_ADDR"), port = lookup(env, "MASTER_PORT");
      if (!addr || addr->empty() || !port)
        throw std::runtime_error("environment: RANK and WORLD_SIZE are set (torchrun-style launch) but " +
                                 std::string(!addr || addr->empty() ? "MASTER_ADDR" : "MASTER_PORT") +
                                 " is not; set MASTER_ADDR to rank 0's host and MASTER_PORT to a free TCP port");
      info->master_addr = *addr;
      info->master_port = parse_int("MASTER_PORT", *port, 1);
      if (info->master_port > 65535)
        throw std::runtime_error("environment variable MASTER_PORT=\"" + *port + "\" is not a TCP port (1–65535)");
    }
  }
  return info.value_or(LaunchInfo{});
}

LaunchInfo detect_launch() {
  Environment env;
  for (char** e = environ; e && *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq) env.emplace_back(std::string(*e, static_cast<size_t>(eq - *e)), std::string(eq + 1));
  }
  return detect_launch(env);
}

int64_t dtype_bytes(DType t) { return t == DType::F64 ? 8 : 4; }

double Communicator::sum(double value) {
  all_reduce_sum(&value, 1, DType::F64);
  return value;
}

bool Communicator::any(bool flag) {
  int32_t v = flag ? 1 : 0;
  all_reduce_sum(&v, 1, DType::I32);
  return v > 0;
}

void Communicator::require_same(const std::string& what, const std::string& text, const std::string& fix) {
  if (world() == 1) return;
  // FNV-1a of the text, compared with rank 0's; every rank learns which ranks differ.
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
  uint64_t root_hash = hash;
  broadcast(&root_hash, sizeof root_hash, 0);
  std::vector<int32_t> differs(static_cast<size_t>(world()), 0);
  differs[static_cast<size_t>(rank())] = hash != root_hash;
  all_reduce_sum(differs.data(), world(), DType::I32);
  std::string list;
  for (int r = 0; r < world(); ++r)
    if (differs[static_cast<size_t>(r)]) list += (list.empty() ? "" : ", ") + std::to_string(r);
  if (!list.empty())
    throw std::runtime_error("rank(s) " + list + " of " + std::to_string(world()) + " differ from rank 0 in their " + what +
                             (fix.empty() ? "" : "; " + fix));
}

std::unique_ptr<Communicator> make_single() { return std::make_unique<SingleCommunicator>(); }

bool have_mpi() { return kHaveMpi; }
bool have_nccl() { return kHaveNccl; }

std::unique_ptr<Communicator> connect(const LaunchInfo& launch, const std::string& backend, Device device) {
  if (backend != "auto" && backend != "mpi" && backend != "nccl" && backend != "single")
    throw std::invalid_argument("communicator backend \"" + backend + "\" is not one of auto, single, mpi, nccl");
  if (backend == "single" || (backend == "auto" && launch.world == 1)) {
    if (launch.world > 1)
      throw std::invalid_argument("communicator backend \"single\" was asked for, but the launcher (" + launch.launcher +
                                  ") started " + std::to_string(launch.world) + " ranks");
    return make_single();
  }
  const bool nccl = backend == "nccl" || (backend == "auto" && device.is_cuda());
  if (nccl) return connect_nccl(launch);
  if (launch.launcher == "torchrun")
    throw std::runtime_error("a torchrun-style launch (RANK/WORLD_SIZE/MASTER_ADDR) of " + std::to_string(launch.world) +
                             " CPU ranks: CPU ranks communicate over MPI, whose processes only an MPI launcher can start; "
                             "launch with `mpirun -np " + std::to_string(launch.world) +
                             " cpets-train …` (or srun), or train on GPUs (NCCL)");
  return connect_mpi(launch);
}

}  // namespace cpets::dist
