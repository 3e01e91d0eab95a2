#include "engine/device.h"

#include "engine/block_cache.h"

#include <atomic>
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
int cuda_device_count() { return 0; }
std::string cuda_device_description(int) { return kNoCudaBuild; }
void require_cuda(const char* what) { throw std::runtime_error(std::string(what) + ": " + kNoCudaBuild); }
void require_cuda_device(int index, const char* what) {
  throw std::runtime_error(std::string(what) + ": cuda:" + std::to_string(index) + ": " + kNoCudaBuild);
}
void select_cuda_device(int index) { require_cuda_device(index, "select_cuda_device"); }
int current_cuda_device() { return 0; }
DeviceGuard::DeviceGuard(Device device) {
  if (device.is_cuda()) require_cuda_device(device.index, "DeviceGuard");
}
DeviceGuard::~DeviceGuard() = default;
void* device_alloc(size_t, int device) {
  require_cuda_device(device, "CUDA tensor");
  return nullptr;
}
void device_free(void*, size_t, int) {}
MemoryStats device_memory_stats(int) { return {}; }
void device_reset_peak(int) {}
void device_release_cache() {}
cudaStream_t cuda_stream() { require_cuda("cuda_stream"); return nullptr; }
void cuda_synchronize() {}
void copy_host_to_device(void*, const void*, size_t) { require_cuda("copy to the device"); }
void copy_device_to_host(void*, const void*, size_t) { require_cuda("copy from the device"); }
void copy_device_to_device(void*, const void*, size_t) { require_cuda("device copy"); }
void copy_between_devices(void*, int, const void*, int, size_t) { require_cuda("copy between devices"); }
void* pinned_host_alloc(size_t) { return nullptr; }
void pinned_host_free(void*, size_t, std::shared_ptr<void>) {}
MemoryStats pinned_host_memory_stats() { return {}; }
std::shared_ptr<void> record_copy_event() { return nullptr; }
void wait_for_event(const std::shared_ptr<void>&) {}
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
  std::vector<std::string> descriptions;  // per GPU
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
      return r;
    }
    if (count == 0) {
      r.reason = "no usable CUDA device: the driver reports 0 devices";
      return r;
    }
    for (int i = 0; i < count; ++i) {
      cudaDeviceProp prop{};
      if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
        cudaGetLastError();
        r.reason = "no usable CUDA device: cudaGetDeviceProperties(" + std::to_string(i) + ") failed";
        r.descriptions.clear();
        return r;
      }
      r.descriptions.push_back(std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
                               std::to_string(prop.minor) + ", " + std::to_string(prop.multiProcessorCount) +
                               " SMs, " +
                               std::to_string(double(prop.totalGlobalMem) / double(1ull << 30)).substr(0, 5) + " GiB)");
    }
    r.ok = true;
    return r;
  }();
  return p;
}

// What each GPU has of the engine's: its block cache and its compute stream, made on first use.
struct PerDevice {
  BlockCache cache;
  std::once_flag stream_once;
  std::atomic<cudaStream_t> stream{nullptr};  // read without the once_flag by cuda_synchronize
};

PerDevice& per_device(int index) {
  // Leaked on purpose: tensors may die after main. Sized once, after the probe.
  static std::vector<PerDevice>* all = new std::vector<PerDevice>(probe().descriptions.size());
  return (*all)[size_t(index)];
}

// The GPU that new threads start on: cuda:0 unless select_cuda_device chose another.
std::atomic<int> default_device{0};
thread_local int current_device = -1;  // -1: not yet set on this thread (then the default)

// 512-byte classes below 1 MiB keep every block aligned for vectorised (float4) kernels.
size_t device_size_class(size_t bytes) { return block_size_class(bytes, 512); }

void set_current(int index) {
  const cudaError_t e = cudaSetDevice(index);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("cuda:" + std::to_string(index) + ": cudaSetDevice failed: " + cudaGetErrorString(e));
  }
  current_device = index;
}

}  // namespace

bool cuda_available(std::string* reason) {
  const Probe& p = probe();
  if (reason) *reason = p.ok ? std::string() : p.reason;
  return p.ok;
}

int cuda_device_count() { return probe().ok ? int(probe().descriptions.size()) : 0; }

std::string cuda_device_description(int index) {
  const Probe& p = probe();
  if (!p.ok) return p.reason;
  if (index < 0 || index >= int(p.descriptions.size())) return "cuda:" + std::to_string(index) + ": no such GPU";
  return "cuda:" + std::to_string(index) + ": " + p.descriptions[size_t(index)];
}

void require_cuda(const char* what) {
  if (!probe().ok) throw std::runtime_error(std::string(what) + ": " + probe().reason);
}

void require_cuda_device(int index, const char* what) {
  const int count = cuda_device_count();
  if (index >= 0 && index < count) return;  // every op passes here: no strings on this path
  const std::string name = std::string(what) + ": cuda:" + std::to_string(index) + ": ";
  if (!probe().ok) throw std::runtime_error(name + probe().reason);
  throw std::runtime_error(name + "this machine has " + std::to_string(count) + " GPU(s), cuda:0" +
                           (count > 1 ? " … cuda:" + std::to_string(count - 1) : std::string()));
}

void select_cuda_device(int index) {
  require_cuda_device(index, "select_cuda_device");
  set_current(index);
  default_device = index;
}

int current_cuda_device() {
  if (current_device < 0) {
    const int d = default_device.load();
    if (probe().ok) set_current(d);
    else current_device = d;
  }
  return current_device;
}

DeviceGuard::DeviceGuard(Device device) {
  if (!device.is_cuda()) return;
  require_cuda_device(device.index, "DeviceGuard");
  const int now = current_cuda_device();
  if (device.index == now) return;
  set_current(device.index);
  previous_ = now;
}

DeviceGuard::~DeviceGuard() {
  if (previous_ < 0) return;
  if (cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();  // no throw from a destructor
  current_device = previous_;
}

void* device_alloc(size_t bytes, int device) {
  require_cuda_device(device, "CUDA tensor");
  const DeviceGuard guard(Device::cuda(device));  // cudaMalloc allocates on the current GPU
  BlockCache& cache = per_device(device).cache;
  const size_t cls = device_size_class(bytes);
  if (void* p = cache.take(cls)) return p;
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, cls);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    device_release_cache();
    e = cudaMalloc(&p, cls);
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    const MemoryStats s = cache.stats();
    throw std::runtime_error("device_alloc: cudaMalloc of " + std::to_string(cls) + " bytes on cuda:" +
                             std::to_string(device) + " failed (" + cudaGetErrorString(e) +
                             "); tensors in use there hold " + std::to_string(s.current_bytes) + " bytes, peak " +
                             std::to_string(s.peak_bytes) +
                             "; use a smaller batch or volume, or free tensors you no longer need");
  }
  cache.added_from_system(cls);
  return p;
}

void device_free(void* ptr, size_t bytes, int device) {
  if (ptr) per_device(device).cache.give_back(ptr, device_size_class(bytes));
}

MemoryStats device_memory_stats(int device) {
  if (device < 0 || device >= cuda_device_count()) return {};
  return per_device(device).cache.stats();
}

void device_reset_peak(int device) {
  if (device >= 0 && device < cuda_device_count()) per_device(device).cache.reset_peak();
}

void device_release_cache() {
  for (int d = 0; d < cuda_device_count(); ++d) {
    const DeviceGuard guard(Device::cuda(d));
    CPETS_CUDA_CHECK(cudaDeviceSynchronize());  // queued kernels may still use cached blocks
    per_device(d).cache.release([](void* p) { CPETS_CUDA_CHECK(cudaFree(p)); });
  }
}

cudaStream_t cuda_stream() {
  require_cuda("cuda_stream");
  const int d = current_cuda_device();
  PerDevice& pd = per_device(d);
  std::call_once(pd.stream_once, [&pd] {  // on the current GPU, which is d
    cudaStream_t s = nullptr;
    CPETS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    pd.stream = s;
  });
  return pd.stream;
}

void cuda_synchronize() {
  if (!probe().ok) return;
  for (int d = 0; d < cuda_device_count(); ++d)
    if (cudaStream_t s = per_device(d).stream) CPETS_CUDA_CHECK(cudaStreamSynchronize(s));
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

void copy_between_devices(void* dst, int dst_device, const void* src, int src_device, size_t bytes) {
  if (bytes == 0) return;
  {
    const DeviceGuard on_source(Device::cuda(src_device));
    cuda_synchronize();  // the source's producers have finished
  }
  const DeviceGuard on_destination(Device::cuda(dst_device));
  CPETS_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, bytes, cuda_stream()));
  // The source block is ordered on its own GPU's stream, not this one: until the copy is done, a
  // kernel there could get the block from the cache and overwrite it.
  cuda_synchronize();
}

static BlockCache& pinned_cache() {
  static BlockCache* c = new BlockCache();  // leaked on purpose, as the device caches
  return *c;
}

void* pinned_host_alloc(size_t bytes) {
  if (!probe().ok) return nullptr;
  const size_t cls = block_size_class(bytes, 64);
  if (void* p = pinned_cache().take(cls)) return p;
  void* p = nullptr;
  if (cudaHostAlloc(&p, cls, cudaHostAllocPortable) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;  // page-locked memory is a limited resource: ordinary memory still works
  }
  pinned_cache().added_from_system(cls);
  return p;
}

void pinned_host_free(void* ptr, size_t bytes, std::shared_ptr<void> last_copy) {
  if (!ptr) return;
  const size_t cls = block_size_class(bytes, 64);
  if (!last_copy) {
    pinned_cache().give_back(ptr, cls);
    return;
  }
  pinned_cache().give_back_when(ptr, cls, [event = std::move(last_copy)] {
    const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(event.get()));
    if (e == cudaErrorNotReady) return false;
    cudaGetLastError();  // any other error: the copy is over (and was reported where it ran)
    return true;
  });
}

MemoryStats pinned_host_memory_stats() { return pinned_cache().stats(); }

std::shared_ptr<void> record_copy_event() {
  cudaEvent_t e = nullptr;
  CPETS_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  std::shared_ptr<void> event(e, [](void* p) { cudaEventDestroy(static_cast<cudaEvent_t>(p)); });
  CPETS_CUDA_CHECK(cudaEventRecord(e, cuda_stream()));
  return event;
}

void wait_for_event(const std::shared_ptr<void>& event) {
  if (event) CPETS_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event.get())));
}

CudaEvent::CudaEvent() : device_(current_cuda_device()) {
  require_cuda("CudaEvent");
  cudaEvent_t e = nullptr;
  CPETS_CUDA_CHECK(cudaEventCreate(&e));
  event_ = e;
}

CudaEvent::~CudaEvent() {
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));  // no throw from a destructor
}

void CudaEvent::record() {
  const DeviceGuard guard(Device::cuda(device_));
  CPETS_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), cuda_stream()));
}

void CudaEvent::synchronize() const { CPETS_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_))); }

float CudaEvent::elapsed_ms(const CudaEvent& start) const {
  float ms = 0.f;
  CPETS_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.event_), static_cast<cudaEvent_t>(event_)));
  return ms;
}

#endif

}  // namespace cpets
