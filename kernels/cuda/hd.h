// CPETS_HD marks functions the CUDA kernels and the host share: `__host__ __device__` under nvcc,
// plain inline C++ otherwise, so CPU tests run exactly the code the kernels run.
#pragma once

#if defined(__CUDACC__)
#define CPETS_HD __host__ __device__ __forceinline__
#else
#define CPETS_HD inline
#endif
