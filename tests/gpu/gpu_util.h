// Small helpers for the GPU tests: a device buffer, copies, random data, error measures.
#pragma once
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace cpets::gpu_test {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// A device allocation of n floats (or bytes via bytes()), freed on scope exit.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t floats) { resize_bytes(floats * sizeof(float)); }
  static DeviceBuffer bytes(size_t n) {
    DeviceBuffer b;
    b.resize_bytes(n);
    return b;
  }
  static DeviceBuffer from(const std::vector<float>& host) {
    DeviceBuffer b(host.size());
    check(cudaMemcpy(b.ptr_, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
    return b;
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  float* f() const { return static_cast<float*>(ptr_); }
  void* get() const { return ptr_; }
  size_t size_bytes() const { return bytes_; }
  std::vector<float> download() const {
    std::vector<float> h(bytes_ / sizeof(float));
    check(cudaDeviceSynchronize(), "kernel execution");
    check(cudaMemcpy(h.data(), ptr_, h.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return h;
  }
  void fill_nan() { check(cudaMemset(ptr_, 0xff, bytes_), "cudaMemset"); }

 private:
  void resize_bytes(size_t n) {
    bytes_ = n;
    if (n) check(cudaMalloc(&ptr_, n), "cudaMalloc");
  }
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

inline std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(gen);
  return v;
}

inline std::vector<float> absolute(std::vector<float> v) {
  for (auto& x : v) x = std::fabs(x);
  return v;
}

// Largest |got − want| / scale (scale: Σ|a·b| of each output, so the measure is the error per
// unit of the terms summed) and the root mean square of the same ratio.
struct ErrorStats {
  double max = 0, rms = 0;
};
inline ErrorStats relative_error(const std::vector<float>& got, const std::vector<float>& want,
                                 const std::vector<float>& scale) {
  ErrorStats e;
  double sq = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double r = std::fabs(double(got[i]) - want[i]) / (double(scale[i]) + 1e-30);
    if (std::isnan(r)) r = INFINITY;  // an unwritten or broken output must fail every bound
    e.max = std::max(e.max, r);
    sq += r * r;
  }
  e.rms = std::sqrt(sq / std::max<size_t>(1, got.size()));
  return e;
}

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](float x, float y) {
           return std::memcmp(&x, &y, sizeof x) == 0;
         });
}

}  // namespace cpets::gpu_test
