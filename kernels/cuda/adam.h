// Fused multi-tensor Adam: one launch updates every parameter of the model (hundreds of tensors),
// instead of one launch per tensor. The per-element update is cpu::adam_step's, with the same
// explicit fmas and correctly rounded sqrt/div, so it gives the CPU's bits exactly.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/cpu/adam.h"
#include "kernels/cuda/stream.h"

namespace cpets::kernels::cuda {

using cpu::AdamScalars;
using cpu::AdamTensor;

// The workspace holds the tensor list on the device.
size_t adam_workspace_bytes(size_t tensors);
void adam_multi_tensor(const std::vector<AdamTensor>& tensors, Workspace ws, cudaStream_t stream);

}  // namespace cpets::kernels::cuda
