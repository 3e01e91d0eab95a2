// Error checks for every CUDA runtime / cuBLAS / cuDNN call: the exception names the library,
// the call as written, the file and line, and the library's own message.
//   CPETS_CUDA_CHECK(cudaMemcpyAsync(...));
//   kernel<<<grid, block, 0, stream>>>(...); CPETS_CHECK_LAUNCH("kernel");
//   CPETS_CUBLAS_CHECK(cublasSgemm(...));   (include <cublas_v2.h> first)
//   CPETS_CUDNN_CHECK(cudnnConvolutionForward(...));   (include <cudnn.h> first)
#pragma once
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace cpets::kernels::cuda {

[[noreturn]] inline void throw_error(const char* library, const char* call, const char* file, int line, int code,
                                     const char* message) {
  throw std::runtime_error(std::string(library) + " error " + std::to_string(code) + " (" + (message ? message : "?") +
                           ") in " + call + " at " + file + ":" + std::to_string(line));
}

}  // namespace cpets::kernels::cuda

#define CPETS_CUDA_CHECK(call)                                                                                   \
  do {                                                                                                           \
    const cudaError_t cpets_err_ = (call);                                                                       \
    if (cpets_err_ != cudaSuccess)                                                                               \
      ::cpets::kernels::cuda::throw_error("CUDA", #call, __FILE__, __LINE__, int(cpets_err_),                    \
                                          cudaGetErrorString(cpets_err_));                                       \
  } while (0)

// After a <<<...>>> launch: a bad configuration (too many threads, too much shared memory) is
// reported here, named by `kernel_name`; faults inside the kernel surface at the next sync.
#define CPETS_CHECK_LAUNCH(kernel_name)                                                                          \
  do {                                                                                                           \
    const cudaError_t cpets_err_ = cudaGetLastError();                                                           \
    if (cpets_err_ != cudaSuccess)                                                                               \
      ::cpets::kernels::cuda::throw_error("CUDA", "launch of " kernel_name, __FILE__, __LINE__, int(cpets_err_), \
                                          cudaGetErrorString(cpets_err_));                                       \
  } while (0)

#define CPETS_CUBLAS_CHECK(call)                                                                                 \
  do {                                                                                                           \
    const cublasStatus_t cpets_st_ = (call);                                                                     \
    if (cpets_st_ != CUBLAS_STATUS_SUCCESS)                                                                      \
      ::cpets::kernels::cuda::throw_error("cuBLAS", #call, __FILE__, __LINE__, int(cpets_st_),                   \
                                          cublasGetStatusString(cpets_st_));                                     \
  } while (0)

#define CPETS_CUDNN_CHECK(call)                                                                                  \
  do {                                                                                                           \
    const cudnnStatus_t cpets_st_ = (call);                                                                      \
    if (cpets_st_ != CUDNN_STATUS_SUCCESS)                                                                       \
      ::cpets::kernels::cuda::throw_error("cuDNN", #call, __FILE__, __LINE__, int(cpets_st_),                    \
                                          cudnnGetErrorString(cpets_st_));                                       \
  } while (0)
