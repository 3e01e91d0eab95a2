#include "engine/device.h"

#include "engine/block_cache.h"

#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#if CPETS_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/check.h"
#endif

namespace cpets {

namespace {
constexpr const char* kNoCudaBuild = "this build has no CUDA backend: configure with -DCPETS_CUDA=ON";
}

#if !CPETS_HAVE_CUDA

bool cuda_available(std::string* reason) {
  if (reason) *reason = kNoCudaBuild;
  return false;
}
std::string cuda_device_description() { return kNoCudaBuild; }
void require_cuda(const char* what) { throw std::runtime_error(std::string(what) + ": " + kNoCudaBuild); }
void select_cuda_device(int index) { require_cuda(("cuda:" + std::to_string(index)).c_str()); }
void* device_alloc(size_t) { throw std::runtime_error(std::string("CUDA tensor: ") + kNoCudaBuild); }
void device_free(void*, size_t) {}
MemoryStats device_memory_stats() { return {}; }
void device_reset_peak() {}
void device_release_cache() {}
cudaStream_t cuda_stream() { require_cuda("cuda_stream"); return nullptr; }
void cuda_synchronize() {}
void copy_host_to_device(void*, const void*, size_t) { require_cuda("copy to the device"); }
void copy_device_to_host(void*, const void*, size_t) { require_cuda("copy from the device"); }
void copy_device_to_device(void*, const void*, size_t) { require_cuda("device copy"); }
CudaEvent::CudaEvent() { require_cuda("CudaEvent"); }
CudaEvent::~CudaEvent() = default;
void CudaEvent::record() {}
void CudaEvent::synchronize() const {}
float CudaEvent::elapsed_ms(const CudaEvent&) const { return 0.f; }

#else

namespace {

struct Probe {
  bool ok = false;
  std::string reason;
  std::string description;
};

// Asked once: cudaGetDeviceCount fails cleanly (no throw) without a driver or a GPU.
const Probe& probe() {
  static const Probe p = [] {
    Probe r;
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear it: later calls must not trip over this one
      r.reason = std::string("no usable CUDA device: cudaGetDeviceCount failed with ") + cudaGetErrorName(e) + " (" +
                 cudaGetErrorString(e) + ")";
    } else if (count == 0) {
      r.reason = "no usable CUDA device: the driver reports 0 devices";
    } else {
      cudaDeviceProp prop{};
      if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        cudaGetLastError();
        r.reason = "no usable CUDA device: cudaGetDeviceProperties(0) failed";
      } else {
        r.ok = true;
        r.description = std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) +
                        ", " + std::to_string(prop.multiProcessorCount) + " SMs, " +
                        std::to_string(double(prop.totalGlobalMem) / double(1ull << 30)).substr(0, 5) + " GiB)";
      }
    }
    r.description = r.ok ? r.description : r.reason;
    return r;
  }();
  return p;
}

BlockCache& device_cache() {
  static BlockCache* c = new BlockCache();  // leaked on purpose: tensors may die after main
  return *c;
}

// 512-byte classes below 1 MiB keep every block aligned for vectorised (float4) kernels.
size_t device_size_class(size_t bytes) { return block_size_class(bytes, 512); }

}  // namespace

bool cuda_available(std::string* reason) {
  const Probe& p = probe();
  if (reason) *reason = p.ok ? std::string() : p.reason;
  return p.ok;
}

std::string cuda_device_description() { return probe().description; }

void require_cuda(const char* what) {
  if (!probe().ok) throw std::runtime_error(std::string(what) + ": " + probe().reason);
}

void select_cuda_device(int index) {
  const std::string name = "cuda:" + std::to_string(index);
  require_cuda(name.c_str());
  int count = 0;
  cudaGetDeviceCount(&count);
  if (index < 0 || index >= count)
    throw std::runtime_error(name + ": this machine has " + std::to_string(count) + " GPU(s), cuda:0 … cuda:" +
                             std::to_string(count - 1));
  const cudaError_t e = cudaSetDevice(index);
  if (e != cudaSuccess) throw std::runtime_error(name + ": cudaSetDevice failed: " + cudaGetErrorString(e));
}

void* device_alloc(size_t bytes) {
  require_cuda("CUDA tensor");
  const size_t cls = device_size_class(bytes);
  if (void* p = device_cache().take(cls)) return p;
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, cls);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    device_release_cache();
    e = cudaMalloc(&p, cls);
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    const MemoryStats s = device_memory_stats();
    throw std::runtime_error("device_alloc: cudaMalloc of " + std::to_string(cls) + " bytes failed (" +
                             cudaGetErrorString(e) + "); tensors in use hold " + std::to_string(s.current_bytes) +
                             " bytes, peak " + std::to_string(s.peak_bytes) +
                             "; use a smaller batch or volume, or free tensors you no longer need");
  }
  device_cache().added_from_system(cls);
  return p;
}

void device_free(void* ptr, size_t bytes) {
  if (ptr) device_cache().give_back(ptr, device_size_class(bytes));
}

MemoryStats device_memory_stats() { return device_cache().stats(); }
void device_reset_peak() { device_cache().reset_peak(); }

void device_release_cache() {
  if (!probe().ok) return;
  CPETS_CUDA_CHECK(cudaDeviceSynchronize());  // queued kernels may still use cached blocks
  device_cache().release([](void* p) { CPETS_CUDA_CHECK(cudaFree(p)); });
}

cudaStream_t cuda_stream() {
  static cudaStream_t stream = [] {
    require_cuda("cuda_stream");
    cudaStream_t s = nullptr;
    CPETS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }();
  return stream;
}

void cuda_synchronize() {
  if (probe().ok) CPETS_CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
}

void copy_host_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  // From pageable memory the driver stages the source before returning, so the host may reuse
  // `src` at once; the device side stays ordered on the compute stream.
  CPETS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda_stream()));
}

void copy_device_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CPETS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda_stream()));
  CPETS_CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
}

void copy_device_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  CPETS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream()));
}

CudaEvent::CudaEvent() {
  require_cuda("CudaEvent");
  cudaEvent_t e = nullptr;
  CPETS_CUDA_CHECK(cudaEventCreate(&e));
  event_ = e;
}

CudaEvent::~CudaEvent() {
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));  // no throw from a destructor
}

void CudaEvent::record() { CPETS_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), cuda_stream())); }

void CudaEvent::synchronize() const { CPETS_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_))); }

float CudaEvent::elapsed_ms(const CudaEvent& start) const {
  float ms = 0.f;
  CPETS_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.event_), static_cast<cudaEvent_t>(event_)));
  return ms;
}

#endif

}  // namespace cpets
