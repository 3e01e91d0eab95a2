// The CUDA device from the engine's side: availability, the caching device allocator, the one
// compute stream, events, and host↔device copies. Everything here exists in every build; in a
// build without CUDA (or on a machine without a GPU) `cuda_available()` is false with the reason,
// and anything that would touch the device throws that reason.
//
// Streams: all device work of the engine — kernels, copies, allocator reuse — is ordered on one
// compute stream. That is what makes the allocator safe without events: a freed block can be
// handed to the next tensor at once, because any kernel that uses it is queued behind the
// kernels that used the previous tensor. Code that launches on another stream must synchronise
// with `cuda_stream()` before handing memory back.
#pragma once
#include <cstddef>
#include <string>

#include "engine/allocator.h"
#include "kernels/cuda/stream.h"

namespace cpets {

// True when this build has the CUDA backend and a device can be used. Never throws; `reason`
// (if given) says why not, e.g. "this build has no CUDA backend: configure with -DCPETS_CUDA=ON"
// or the driver's error.
bool cuda_available(std::string* reason = nullptr);
// Throws std::runtime_error naming the reason when !cuda_available(); `what` names the caller.
void require_cuda(const char* what);
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)" or the reason there is none.
std::string cuda_device_description();
// Makes GPU `index` this process's device (one process per GPU: a data-parallel rank picks its
// local rank). Call it before any CUDA work: the compute stream and the allocator's blocks belong
// to the device current when they are made. Throws naming the index and the GPU count.
void select_cuda_device(int index);

constexpr bool kHaveCuda =
#if CPETS_HAVE_CUDA
    true;
#else
    false;
#endif

// ---- caching device allocator ----------------------------------------------------------------
// Size classes as the host allocator's (64-byte steps below 1 MiB, then 1/8-power-of-two steps),
// free lists per class; cudaMalloc only when a class has no free block (and, out of memory, once
// more after returning the whole cache to the driver). In a training loop every step reuses the
// previous step's blocks, so cudaMalloc/cudaFree are not called at all after the first step.
void* device_alloc(size_t bytes);  // 256-byte aligned; throws with the sizes on out-of-memory
void device_free(void* ptr, size_t bytes);  // never throws: the block goes on its free list
MemoryStats device_memory_stats();
void device_reset_peak();
void device_release_cache();  // synchronises, then cudaFree's every cached block

// ---- stream, copies, events -------------------------------------------------------------------
cudaStream_t cuda_stream();  // the compute stream (created on first use)
void cuda_synchronize();     // waits for everything queued on the compute stream
// Copies on the compute stream. Device→host waits for the copy (the host reads the result next).
void copy_host_to_device(void* dst, const void* src, size_t bytes);
void copy_device_to_host(void* dst, const void* src, size_t bytes);
void copy_device_to_device(void* dst, const void* src, size_t bytes);

// A CUDA event on the compute stream, for timing (elapsed_ms) and for waiting on a point.
class CudaEvent {
 public:
  CudaEvent();
  ~CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  void record();                                 // on the compute stream
  void synchronize() const;                      // host waits until the event has happened
  float elapsed_ms(const CudaEvent& start) const;  // time from `start` to this event

 private:
  void* event_ = nullptr;  // cudaEvent_t
};

}  // namespace cpets
