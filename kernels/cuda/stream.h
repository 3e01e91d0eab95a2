// The CUDA stream type for the kernel headers, without the CUDA headers: every kernels/cuda/*.h
// declaring launchers must also compile in builds without the CUDA toolkit (the engine calls
// them only inside `if constexpr (kHaveCuda)`), so it names the stream through CUDA's own opaque
// struct. The typedef is the one driver_types.h makes; repeating it is legal C++.
#pragma once
#include <cstddef>
#include <cstdint>

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace cpets::kernels::cuda {

// Scratch memory a launcher needs (partial sums of a multi-block reduction, ...). The caller
// allocates it from the caching device allocator; `*_workspace_bytes` says how much.
struct Workspace {
  void* ptr = nullptr;
  size_t bytes = 0;
};

}  // namespace cpets::kernels::cuda
