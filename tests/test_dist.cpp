// The data-parallel layer in one process: reading the launchers' environments, the TCP
// rendezvous of torchrun-style launches (ranks as threads on the loopback), and the single-process
// communicator. Several ranks over MPI: tests/mpi/test_mpi_data_parallel.cpp.
#include <doctest/doctest.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "dist/communicator.h"
#include "dist/reducer.h"
#include "dist/rendezvous.h"
#include "engine/ops.h"
#include "test_support.h"

using namespace cpets;
using namespace cpets::dist;
using cpets::testing::error_of;

namespace {
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
using Env = std::vector<std::pair<std::string, std::string>>;

// A port unlikely to be taken by another test running at the same time.
int test_port(int k) { return 20000 + (getpid() * 7 + k * 101) % 20000; }
}  // namespace

TEST_CASE("launch: the ranks of mpirun, MPICH, srun and torchrun-style variables") {
  CHECK(detect_launch(Env{}).world == 1);
  CHECK(detect_launch(Env{}).launcher == "single");

  LaunchInfo l = detect_launch(Env{{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "6"},
                                   {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  CHECK(l.launcher == "mpirun");  // mpirun inside a Slurm allocation: mpirun's own variables win
  CHECK(l.rank == 3);
  CHECK(l.world == 6);
  CHECK(l.local_rank == 1);

  l = detect_launch(Env{{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}});
  CHECK(l.launcher == "mpirun");
  CHECK(l.local_rank == 1);  // no local rank given: one node

  l = detect_launch(Env{{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}});
  CHECK(l.launcher == "srun");
  CHECK(l.rank == 5);
  CHECK(l.local_rank == 1);

  l = detect_launch(Env{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node7"},
                        {"MASTER_PORT", "29500"}});
  CHECK(l.launcher == "torchrun");
  CHECK(l.master_addr == "node7");
  CHECK(l.master_port == 29500);

  auto err = [](const Env& e) { return error_of([&] { detect_launch(e); }); };
  CHECK(contains(err({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}),
                 "RANK=2 is not below WORLD_SIZE=2"));
  CHECK(contains(err({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}), "MASTER_ADDR"));
  CHECK(contains(err({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "70000"}}),
                 "MASTER_PORT=\"70000\" is not a TCP port"));
  CHECK(contains(err({{"RANK", "x"}, {"WORLD_SIZE", "2"}}), "RANK=\"x\" is not an integer"));
  CHECK(contains(err({{"SLURM_PROCID", "0"}}), "SLURM_NTASKS is missing while SLURM_PROCID is set"));
  CHECK(contains(err({{"OMPI_COMM_WORLD_SIZE", "0"}, {"OMPI_COMM_WORLD_RANK", "0"}}), "OMPI_COMM_WORLD_SIZE"));
}

TEST_CASE("rendezvous: rank 0's bytes reach every rank over MASTER_ADDR:MASTER_PORT") {
  constexpr int kWorld = 4;
  const std::string blob("id\0with\xff bytes", 15);
  std::vector<std::string> got(kWorld), errors(kWorld);
  std::vector<std::thread> ranks;
  for (int r = kWorld - 1; r >= 0; --r)  // peers first: they wait for rank 0 to listen
    ranks.emplace_back([&, r] {
      LaunchInfo l;
      l.rank = r;
      l.world = kWorld;
      l.launcher = "torchrun";
      l.master_addr = "localhost";
      l.master_port = test_port(0);
      try {
        got[size_t(r)] = rendezvous_broadcast(l, r == 0 ? blob : std::string("not mine"), 20.0);
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto& t : ranks) t.join();
  for (int r = 0; r < kWorld; ++r) {
    CHECK(errors[size_t(r)] == "");
    CHECK(got[size_t(r)] == blob);
  }
}

TEST_CASE("rendezvous: a rank that never comes stops the others within the timeout, named") {
  std::string root_error, peer_error;
  auto launch = [](int rank) {
    LaunchInfo l;
    l.rank = rank;
    l.world = 3;
    l.launcher = "torchrun";
    l.master_addr = "127.0.0.1";
    l.master_port = test_port(1);
    return l;
  };
  std::thread root([&] { root_error = error_of([&] { rendezvous_broadcast(launch(0), "x", 1.5); }); });
  std::thread peer([&] { peer_error = error_of([&] { rendezvous_broadcast(launch(1), "", 1.5); }); });
  root.join();
  peer.join();
  CHECK(contains(root_error, "rank(s) 2 of 3 did not reach rank 0"));
  CHECK(contains(root_error, "CPETS_DIST_TIMEOUT"));
  CHECK(contains(peer_error, "rank(s) 2 of 3 did not reach rank 0"));  // told by rank 0, not left waiting

  // Nobody listening: the peer gives up naming the address.
  LaunchInfo alone = launch(2);
  alone.master_port = test_port(2);
  CHECK(contains(error_of([&] { rendezvous_broadcast(alone, "", 0.5); }), "could not reach rank 0 at 127.0.0.1:"));
}

TEST_CASE("communicator: one process needs no launcher and its collectives change nothing") {
  const auto c = connect(LaunchInfo{});
  CHECK(c->backend() == "single");
  CHECK(c->world() == 1);
  CHECK(c->is_root());
  double v[2] = {1.5, -2};
  c->all_reduce_sum(v, 2, DType::F64);
  CHECK(v[0] == 1.5);
  CHECK(c->sum(3.25) == 3.25);
  CHECK(c->any(true));
  CHECK_FALSE(c->any(false));
  CHECK_NOTHROW(c->require_same("configuration", "anything"));
  // A reducer over one rank leaves the gradients alone and starts no thread.
  Tensor p = Tensor::from_vector({2}, {1, 2}).set_requires_grad(true);
  GradientReducer r(*c, {{"p", p}}, 4);
  r.begin();
  mul(p, p).backward(Tensor::ones({2}));
  r.finish();
  CHECK(p.grad().to_vector() == std::vector<float>{2, 4});
  CHECK(r.stats().steps == 0);

  LaunchInfo two;
  two.world = 2;
  two.launcher = "torchrun";
  two.master_addr = "x";
  two.master_port = 1;
  CHECK(contains(error_of([&] { connect(two); }), "CPU ranks communicate over MPI"));
  CHECK(contains(error_of([&] { connect(two, "single"); }), "started 2 ranks"));
  CHECK(contains(error_of([&] { connect(LaunchInfo{}, "gloo"); }), "not one of auto, single, mpi, nccl"));
  if (!have_nccl()) CHECK(contains(error_of([&] { connect(two, "nccl"); }), "need NCCL"));
}
