// Helpers shared by the hand-written CUDA kernels of kernels/cuda (and the cuDNN/cuBLAS wrappers
// of kernels/cudnn): error checks that name the failing call, ceiling division, and — in CUDA
// translation units only — the tensor-core instruction wrappers (mma.sync) and operand rounding.
// Kernels know nothing of the engine, so this is kernels' own check, separate from engine/'s.
#pragma once
#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/precision.h"

namespace cpets::kernels::cuda::detail {

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Workspace sizes are rounded up so that consecutive sub-buffers stay 256-byte aligned.
inline size_t align_bytes(size_t n) { return (n + 255) / 256 * 256; }

inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

// An NVTX range for the lifetime of a host entry point, so that Nsight Systems shows every call
// (and the kernels it launched) by name; a few nanoseconds when no tool is attached.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace cpets::kernels::cuda::detail

// Error checks: CPETS_CUDA_CHECK and CPETS_CHECK_LAUNCH come from kernels/cuda/check.h (one
// definition for the engine and the kernels).

#ifdef __CUDACC__
#include <cuda_bf16.h>

namespace cpets::kernels::cuda::detail {

// Rounds an operand to what the tensor cores will see, so that shared-memory tiles hold the
// rounded values and fragment loads are plain loads. fp32_exact leaves it alone.
template <Precision P>
__device__ __forceinline__ float round_operand(float x) {
  if constexpr (P == Precision::tf32) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return __uint_as_float(r);
  } else if constexpr (P == Precision::bf16) {
    return __bfloat162float(__float2bfloat16_rn(x));
  } else {
    return x;
  }
}

// Two floats already representable in BF16 packed into one register (lower index in the low half).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return (__float_as_uint(lo) >> 16) | (__float_as_uint(hi) & 0xffff0000u);
}

// D = A·B + D for one 16×8×8 TF32 tile (fragments as in the PTX ISA, "mma.m16n8k8").
__device__ __forceinline__ void mma_tf32_16x8x8(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// D = A·B + D for one 16×8×16 BF16 tile.
__device__ __forceinline__ void mma_bf16_16x8x16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

}  // namespace cpets::kernels::cuda::detail
#endif
