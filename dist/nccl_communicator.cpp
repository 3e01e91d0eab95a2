// GPU ranks over NCCL, one process per GPU: the local rank picks the device. Collectives run on a
// communication stream of their own, ordered after the work queued so far on the compute stream
// by an event, and the compute stream waits for them by another: gradient buckets reduce while
// the backward kernels of the next layers run.
//
// Determinism: NCCL_ALGO=Ring and NCCL_PROTO=Simple are set (unless the user set them) before
// the communicator is made, so the reduction order is fixed for a world size and message size.
#include "dist/backends.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if CPETS_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include "dist/rendezvous.h"
#include "engine/device.h"
#endif

namespace cpets::dist {

#if CPETS_HAVE_NCCL
namespace {

void check(ncclResult_t rc, const char* call) {
  if (rc != ncclSuccess) throw std::runtime_error(std::string(call) + " failed: " + ncclGetErrorString(rc));
}
void check(cudaError_t rc, const char* call) {
  if (rc != cudaSuccess) throw std::runtime_error(std::string(call) + " failed: " + cudaGetErrorString(rc));
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::I32: return ncclInt32;
  }
  return ncclFloat32;
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(const LaunchInfo& launch) : rank_(launch.rank), world_(launch.world), local_(launch.local_rank) {
    int devices = 0;
    check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    if (local_ >= devices)
      throw std::runtime_error("rank " + std::to_string(rank_) + " has local rank " + std::to_string(local_) +
                               " but this node has " + std::to_string(devices) +
                               " GPU(s); start at most one rank per GPU on each node");
    select_cuda_device(local_);  // the engine's current GPU too, for this thread and the reducer's
    setenv("NCCL_ALGO", "Ring", /*overwrite=*/0);
    setenv("NCCL_PROTO", "Simple", 0);
    ncclUniqueId id{};
    if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    if (world_ == 1) {
      // One rank: nothing to exchange.
    } else if (launch.launcher == "torchrun" || !kHaveMpi) {
      const std::string blob = rendezvous_broadcast(launch, std::string(reinterpret_cast<const char*>(&id), sizeof id),
                                                    join_timeout_seconds());
      std::memcpy(&id, blob.data(), sizeof id);
    } else {
      bootstrap_ = connect_mpi(launch);  // mpirun/srun: MPI carries the id, and stays for abort()
      bootstrap_->broadcast(&id, sizeof id, 0);
    }
    check(ncclCommInitRank(&comm_, world_, id, rank_), "ncclCommInitRank");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaEventCreateWithFlags(&before_, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaEventCreateWithFlags(&after_, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaMalloc(&scratch_, 64), "cudaMalloc");
  }
  ~NcclCommunicator() override {
    cudaFree(scratch_);
    cudaEventDestroy(before_);
    cudaEventDestroy(after_);
    cudaStreamDestroy(stream_);
    ncclCommDestroy(comm_);
  }
  std::string backend() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int world() const override { return world_; }
  int local_rank() const override { return local_; }
  Device buffer_device() const override { return Device::cuda(local_); }

  void all_reduce_sum(void* data, int64_t count, DType type) override {
    if (!is_device_pointer(data)) return host_collective(data, count * dtype_bytes(type), [&](void* d) {
      all_reduce_sum(d, count, type);
    });
    begin();
    check(ncclAllReduce(data, data, static_cast<size_t>(count), nccl_type(type), ncclSum, comm_, stream_), "ncclAllReduce");
    end();
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    if (!is_device_pointer(data)) return host_collective(data, bytes, [&](void* d) { broadcast(d, bytes, root); });
    begin();
    check(ncclBroadcast(data, data, static_cast<size_t>(bytes), ncclUint8, root, comm_, stream_), "ncclBroadcast");
    end();
  }
  void barrier() override {
    int32_t one = 1;
    all_reduce_sum(&one, 1, DType::I32);
  }
  [[noreturn]] void abort(int exit_code) noexcept override {
    ncclCommAbort(comm_);
    if (bootstrap_) bootstrap_->abort(exit_code);
    std::_Exit(exit_code);
  }

 private:
  static bool is_device_pointer(const void* p) {
    cudaPointerAttributes a{};
    return cudaPointerGetAttributes(&a, p) == cudaSuccess && a.type == cudaMemoryTypeDevice;
  }
  // Small host values (losses, flags, hashes) go through a device scratch buffer.
  template <class F>
  void host_collective(void* host, int64_t bytes, F&& run) {
    void* dev = scratch_;
    if (bytes > 64) check(cudaMalloc(&dev, static_cast<size_t>(bytes)), "cudaMalloc");
    check(cudaMemcpy(dev, host, static_cast<size_t>(bytes), cudaMemcpyHostToDevice), "cudaMemcpy");
    run(dev);
    check(cudaMemcpy(host, dev, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost), "cudaMemcpy");
    if (dev != scratch_) cudaFree(dev);
  }
  // The collective sees everything queued on the compute stream so far; the compute stream
  // sees the collective's result before anything queued after it. end() also waits on the
  // host, so the reducer's thread knows when a bucket is done.
  void begin() {
    check(cudaEventRecord(before_, cuda_stream()), "cudaEventRecord");
    check(cudaStreamWaitEvent(stream_, before_, 0), "cudaStreamWaitEvent");
  }
  void end() {
    check(cudaEventRecord(after_, stream_), "cudaEventRecord");
    check(cudaStreamWaitEvent(cuda_stream(), after_, 0), "cudaStreamWaitEvent");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  int rank_, world_, local_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t before_ = nullptr, after_ = nullptr;
  void* scratch_ = nullptr;
  std::unique_ptr<Communicator> bootstrap_;
};

}  // namespace

std::unique_ptr<Communicator> connect_nccl(const LaunchInfo& launch) { return std::make_unique<NcclCommunicator>(launch); }

#else

std::unique_ptr<Communicator> connect_nccl(const LaunchInfo& launch) {
  throw std::runtime_error("GPU ranks (" + launch.launcher + ", rank " + std::to_string(launch.rank) + " of " +
                           std::to_string(launch.world) +
                           ") need NCCL, which this build lacks: build with CUDA (-DCPETS_CUDA=ON) where NCCL 2 is "
                           "installed (the CUDA toolkit or libnccl-dev), or train on CPU ranks with mpirun");
}

#endif

}  // namespace cpets::dist
