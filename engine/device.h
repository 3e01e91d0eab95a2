// The CUDA devices from the engine's side: availability, the current device and its guard, a
// caching allocator and a compute stream per GPU, events, and copies. Everything here exists in
// every build; in a build without CUDA (or on a machine without a GPU) `cuda_available()` is
// false with the reason, and anything that would touch a device throws that reason.
//
// Devices: each thread has a current GPU (cuda:0, or what select_cuda_device chose for the
// process). Ops make their tensors' GPU current with a DeviceGuard (engine/dispatch.cpp does it
// for every CUDA branch), so kernels, cuBLAS/cuDNN handles and workspaces land on the GPU that
// holds the data; an op whose inputs are on two devices is refused naming both.
//
// Streams: all engine work on one GPU — kernels, copies, allocator reuse — is ordered on that
// GPU's compute stream. That is what makes the allocator safe without events: a freed block can
// be handed to the next tensor at once, because any kernel that uses it is queued behind the
// kernels that used the previous tensor. Code that launches on another stream must synchronise
// with `cuda_stream()` before handing memory back; copies between GPUs synchronise both sides.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "engine/allocator.h"
#include "engine/tensor.h"
#include "kernels/cuda/stream.h"

namespace cpets {

// True when this build has the CUDA backend and a device can be used. Never throws; `reason`
// (if given) says why not, e.g. "this build has no CUDA backend: configure with -DCPETS_CUDA=ON"
// or the driver's error.
bool cuda_available(std::string* reason = nullptr);
// Throws std::runtime_error naming the reason when !cuda_available(); `what` names the caller.
void require_cuda(const char* what);
// How many GPUs the driver reports (0 without one, or in a build without CUDA).
int cuda_device_count();
// "cuda:0: NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)", or the reason there is none.
std::string cuda_device_description(int index = 0);
// Throws std::runtime_error unless GPU `index` exists: "cuda:3: this machine has 2 GPU(s),
// cuda:0 … cuda:1" (or the reason there is no GPU at all); `what` names the caller.
void require_cuda_device(int index, const char* what);
// Makes GPU `index` current for this thread and the default of threads started later (one
// process per GPU: a data-parallel rank picks its local rank). Throws as require_cuda_device.
void select_cuda_device(int index);
// This thread's current GPU.
int current_cuda_device();

// Makes `device`'s GPU current on this thread while it lives (nothing for the CPU, or when it
// already is); the previous one is current again afterwards. Throws if that GPU does not exist.
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;  // -1: nothing to restore
};

constexpr bool kHaveCuda =
#if CPETS_HAVE_CUDA
    true;
#else
    false;
#endif

// ---- caching device allocator, one per GPU ---------------------------------------------------
// Size classes as the host allocator's (64-byte steps below 1 MiB, then 1/8-power-of-two steps),
// free lists per class; cudaMalloc only when a class has no free block (and, out of memory, once
// more after returning the whole cache to the driver). In a training loop every step reuses the
// previous step's blocks, so cudaMalloc/cudaFree are not called at all after the first step.
void* device_alloc(size_t bytes, int device);  // 256-byte aligned; throws with the sizes on out-of-memory
void device_free(void* ptr, size_t bytes, int device);  // never throws: the block goes on its free list
MemoryStats device_memory_stats(int device);
void device_reset_peak(int device);
void device_release_cache();  // every GPU: synchronises, then cudaFree's every cached block

// ---- page-locked host memory, for asynchronous copies to a GPU -----------------------------------
// Blocks from cudaHostAlloc (portable: every GPU may read them), cached like the others. A copy
// from such a block to a GPU is truly asynchronous — the host goes on at once — so a block comes
// back with the event of the last copy that reads it (see record_copy_event) and is handed out
// again only once that event has happened.
void* pinned_host_alloc(size_t bytes);  // null when no GPU is usable: the caller uses host_alloc
void pinned_host_free(void* ptr, size_t bytes, std::shared_ptr<void> last_copy);
MemoryStats pinned_host_memory_stats();
// An event recorded now on the current GPU's compute stream (a completion marker for the work
// queued so far); wait_for_event blocks the host until it has happened.
std::shared_ptr<void> record_copy_event();
void wait_for_event(const std::shared_ptr<void>& event);

// ---- streams, copies, events ------------------------------------------------------------------
cudaStream_t cuda_stream();  // the current GPU's compute stream (created on first use)
void cuda_synchronize();     // waits for everything queued on every GPU's compute stream
// Copies on the current GPU's compute stream. Device→host waits for the copy (the host reads the
// result next).
void copy_host_to_device(void* dst, const void* src, size_t bytes);
void copy_device_to_host(void* dst, const void* src, size_t bytes);
void copy_device_to_device(void* dst, const void* src, size_t bytes);
// From GPU `src_device` to GPU `dst_device`: waits for the source's queued work, copies on the
// destination's stream (directly where the GPUs have peer access, else staged by the driver),
// and waits for the copy, so either block may be reused at once.
void copy_between_devices(void* dst, int dst_device, const void* src, int src_device, size_t bytes);

// A CUDA event on the compute stream of the GPU current at construction, for timing (elapsed_ms)
// and for waiting on a point.
class CudaEvent {
 public:
  CudaEvent();
  ~CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  void record();                                 // on its GPU's compute stream
  void synchronize() const;                      // host waits until the event has happened
  float elapsed_ms(const CudaEvent& start) const;  // time from `start` to this event

 private:
  void* event_ = nullptr;  // cudaEvent_t
  int device_ = 0;
};

}  // namespace cpets
