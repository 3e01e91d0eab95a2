// cuDNN convolution reference (see conv3d.h). Descriptors are built per call (cheap); the
// algorithm choice and its workspace size are cached per (device, shape, precision).
#include "kernels/cudnn/conv3d.h"

#include <cudnn.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "kernels/cuda/common.cuh"

namespace cpets::kernels::cudnn {
namespace {

constexpr size_t kMaxWorkspace = size_t{1} << 30;

void check(cudnnStatus_t st, const char* call) {
  if (st != CUDNN_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuDNN error in ") + call + ": " + cudnnGetErrorString(st));
}
#define CPETS_CUDNN(call) check((call), #call)

cudnnHandle_t handle(cudaStream_t stream) {
  thread_local std::map<int, cudnnHandle_t> handles;
  int device = 0;
  CPETS_CUDA_CHECK(cudaGetDevice(&device));
  auto it = handles.find(device);
  if (it == handles.end()) {
    cudnnHandle_t h = nullptr;
    CPETS_CUDNN(cudnnCreate(&h));
    it = handles.emplace(device, h).first;
  }
  CPETS_CUDNN(cudnnSetStream(it->second, stream));
  return it->second;
}

cudnnMathType_t math_type(Precision p) {
  if (p == Precision::bf16)
    throw std::invalid_argument("cudnn::conv3d: the cuDNN reference offers fp32 and tf32 only, not bf16");
  return p == Precision::tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
}

// The descriptors of one convolution: x, y, bias (1, Cout, 1, 1, 1), w and the convolution.
struct Descriptors {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;

  Descriptors(const Conv3dShape& s, Precision p) {
    CPETS_CUDNN(cudnnCreateTensorDescriptor(&x));
    CPETS_CUDNN(cudnnCreateTensorDescriptor(&y));
    CPETS_CUDNN(cudnnCreateTensorDescriptor(&bias));
    CPETS_CUDNN(cudnnCreateFilterDescriptor(&w));
    CPETS_CUDNN(cudnnCreateConvolutionDescriptor(&conv));
    set_tensor(x, {s.batch, s.in_channels, s.in[0], s.in[1], s.in[2]});
    set_tensor(y, {s.batch, s.out_channels, s.out_size(0), s.out_size(1), s.out_size(2)});
    set_tensor(bias, {1, s.out_channels, 1, 1, 1});
    const int wdims[5] = {int(s.out_channels), int(s.in_channels), int(s.kernel[0]), int(s.kernel[1]), int(s.kernel[2])};
    CPETS_CUDNN(cudnnSetFilterNdDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 5, wdims));
    const int pad[3] = {int(s.padding[0]), int(s.padding[1]), int(s.padding[2])};
    const int stride[3] = {int(s.stride[0]), int(s.stride[1]), int(s.stride[2])};
    const int dilation[3] = {1, 1, 1};
    CPETS_CUDNN(cudnnSetConvolutionNdDescriptor(conv, 3, pad, stride, dilation, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CPETS_CUDNN(cudnnSetConvolutionMathType(conv, math_type(p)));
  }
  ~Descriptors() {
    cudnnDestroyTensorDescriptor(x);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyTensorDescriptor(bias);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyConvolutionDescriptor(conv);
  }
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;

 private:
  static void set_tensor(cudnnTensorDescriptor_t t, std::initializer_list<int64_t> dims64) {
    int dims[5], strides[5];
    int i = 0;
    for (int64_t d : dims64) dims[i++] = static_cast<int>(d);
    strides[4] = 1;
    for (int a = 3; a >= 0; --a) strides[a] = strides[a + 1] * dims[a + 1];
    CPETS_CUDNN(cudnnSetTensorNdDescriptor(t, CUDNN_DATA_FLOAT, 5, dims, strides));
  }
};

struct Plan {
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  cudnnMathType_t fwd_math{}, bwd_data_math{}, bwd_filter_math{};
  size_t fwd_bytes = 0, bwd_data_bytes = 0, bwd_filter_bytes = 0;
};

// The first heuristic entry that works, is deterministic and fits the workspace limit.
template <class Perf>
const Perf& first_usable(const Perf* perf, int n, const char* pass, const Conv3dShape& s) {
  for (int i = 0; i < n; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC &&
        perf[i].memory <= kMaxWorkspace)
      return perf[i];
  throw std::runtime_error(std::string("cudnn::conv3d: cuDNN offers no deterministic ") + pass +
                           " algorithm within 1 GiB of workspace for " + std::to_string(s.in_channels) + "→" +
                           std::to_string(s.out_channels) + " channels");
}

Plan make_plan(const Conv3dShape& s, Precision p, cudnnHandle_t h) {
  Descriptors d(s, p);
  Plan plan;
  constexpr int kMax = 16;
  int n = 0;
  cudnnConvolutionFwdAlgoPerf_t fwd[kMax];
  CPETS_CUDNN(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.conv, d.y, kMax, &n, fwd));
  const auto& f = first_usable(fwd, n, "forward", s);
  plan.fwd = f.algo;
  plan.fwd_math = f.mathType;
  cudnnConvolutionBwdDataAlgoPerf_t bd[kMax];
  CPETS_CUDNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.conv, d.x, kMax, &n, bd));
  const auto& b = first_usable(bd, n, "backward-data", s);
  plan.bwd_data = b.algo;
  plan.bwd_data_math = b.mathType;
  cudnnConvolutionBwdFilterAlgoPerf_t bf[kMax];
  CPETS_CUDNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.conv, d.w, kMax, &n, bf));
  const auto& w = first_usable(bf, n, "backward-filter", s);
  plan.bwd_filter = w.algo;
  plan.bwd_filter_math = w.mathType;
  // Workspace sizes under the math type each pass will run with (exact: FMA only).
  CPETS_CUDNN(cudnnSetConvolutionMathType(d.conv, p == Precision::tf32 ? plan.fwd_math : CUDNN_FMA_MATH));
  CPETS_CUDNN(cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.conv, d.y, plan.fwd, &plan.fwd_bytes));
  CPETS_CUDNN(cudnnSetConvolutionMathType(d.conv, p == Precision::tf32 ? plan.bwd_data_math : CUDNN_FMA_MATH));
  CPETS_CUDNN(cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.conv, d.x, plan.bwd_data, &plan.bwd_data_bytes));
  CPETS_CUDNN(cudnnSetConvolutionMathType(d.conv, p == Precision::tf32 ? plan.bwd_filter_math : CUDNN_FMA_MATH));
  CPETS_CUDNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.conv, d.w, plan.bwd_filter,
                                                             &plan.bwd_filter_bytes));
  return plan;
}

const Plan& plan_for(const Conv3dShape& s, Precision p, cudnnHandle_t h) {
  static std::mutex mu;
  static std::map<std::string, Plan> plans;
  int device = 0;
  CPETS_CUDA_CHECK(cudaGetDevice(&device));
  std::string key = std::to_string(device) + "|" + std::to_string(static_cast<int>(p));
  for (int64_t v : {s.batch, s.in_channels, s.out_channels}) key += "|" + std::to_string(v);
  for (int a = 0; a < 3; ++a)
    for (int64_t v : {s.in[a], s.kernel[a], s.stride[a], s.padding[a]}) key += "|" + std::to_string(v);
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(s, p, h)).first;
  return it->second;
}

void check_shape(const Conv3dShape& s, const char* who) {
  bool ok = s.batch > 0 && s.in_channels > 0 && s.out_channels > 0;
  for (int a = 0; a < 3; ++a)
    ok = ok && s.in[a] > 0 && s.kernel[a] > 0 && s.stride[a] > 0 && s.padding[a] >= 0 && s.out_size(a) >= 1;
  if (!ok)
    throw std::invalid_argument(std::string("cudnn::") + who +
                                ": sizes, channels, kernel and stride must be positive, padding non-negative and the "
                                "kernel no larger than the padded input");
}

void check_workspace(size_t have, size_t need, const char* who) {
  if (have < need)
    throw std::invalid_argument(std::string("cudnn::") + who + ": workspace of " + std::to_string(have) +
                                " bytes is too small; cuDNN's algorithm needs " + std::to_string(need));
}

const char* fwd_name(cudnnConvolutionFwdAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM: return "IMPLICIT_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM: return "IMPLICIT_PRECOMP_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_GEMM: return "GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_DIRECT: return "DIRECT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT: return "FFT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING: return "FFT_TILING";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD: return "WINOGRAD";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED: return "WINOGRAD_NONFUSED";
    default: return "?";
  }
}
const char* bwd_data_name(cudnnConvolutionBwdDataAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_0: return "ALGO_0";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_1: return "ALGO_1";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT: return "FFT";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING: return "FFT_TILING";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD: return "WINOGRAD";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED: return "WINOGRAD_NONFUSED";
    default: return "?";
  }
}
const char* bwd_filter_name(cudnnConvolutionBwdFilterAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0: return "ALGO_0";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1: return "ALGO_1";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT: return "FFT";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3: return "ALGO_3";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED: return "WINOGRAD_NONFUSED";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING: return "FFT_TILING";
    default: return "?";
  }
}
const char* math_name(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_DEFAULT_MATH: return "default";
    case CUDNN_TENSOR_OP_MATH: return "tensor-op";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "tensor-op-conv";
    case CUDNN_FMA_MATH: return "fma";
    default: return "?";
  }
}

}  // namespace

size_t conv3d_forward_workspace_bytes(const Conv3dShape& s, Precision p) {
  check_shape(s, "conv3d_forward_workspace_bytes");
  return plan_for(s, p, handle(nullptr)).fwd_bytes;
}

void conv3d_forward(const Conv3dShape& s, Precision p, const float* x, const float* w, const float* bias, float* y,
                    void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  cuda::detail::NvtxRange nvtx("cudnn::conv3d_forward");
  check_shape(s, "conv3d_forward");
  cudnnHandle_t h = handle(stream);
  const Plan& plan = plan_for(s, p, h);
  check_workspace(workspace_bytes, plan.fwd_bytes, "conv3d_forward");
  Descriptors d(s, p);
  CPETS_CUDNN(cudnnSetConvolutionMathType(d.conv, p == Precision::tf32 ? plan.fwd_math : CUDNN_FMA_MATH));
  const float one = 1.f, zero = 0.f;
  CPETS_CUDNN(cudnnConvolutionForward(h, &one, d.x, x, d.w, w, d.conv, plan.fwd, workspace, plan.fwd_bytes, &zero, d.y, y));
  if (bias) CPETS_CUDNN(cudnnAddTensor(h, &one, d.bias, bias, &one, d.y, y));
}

size_t conv3d_backward_data_workspace_bytes(const Conv3dShape& s, Precision p) {
  check_shape(s, "conv3d_backward_data_workspace_bytes");
  return plan_for(s, p, handle(nullptr)).bwd_data_bytes;
}

void conv3d_backward_data(const Conv3dShape& s, Precision p, const float* dy, const float* w, float* dx,
                          void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  cuda::detail::NvtxRange nvtx("cudnn::conv3d_backward_data");
  check_shape(s, "conv3d_backward_data");
  cudnnHandle_t h = handle(stream);
  const Plan& plan = plan_for(s, p, h);
  check_workspace(workspace_bytes, plan.bwd_data_bytes, "conv3d_backward_data");
  Descriptors d(s, p);
  CPETS_CUDNN(cudnnSetConvolutionMathType(d.conv, p == Precision::tf32 ? plan.bwd_data_math : CUDNN_FMA_MATH));
  const float one = 1.f, zero = 0.f;
  CPETS_CUDNN(cudnnConvolutionBackwardData(h, &one, d.w, w, d.y, dy, d.conv, plan.bwd_data, workspace,
                                           plan.bwd_data_bytes, &zero, d.x, dx));
}

size_t conv3d_backward_weight_workspace_bytes(const Conv3dShape& s, Precision p) {
  check_shape(s, "conv3d_backward_weight_workspace_bytes");
  return plan_for(s, p, handle(nullptr)).bwd_filter_bytes;
}

void conv3d_backward_weight(const Conv3dShape& s, Precision p, const float* x, const float* dy, float* dw,
                            float* dbias, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  cuda::detail::NvtxRange nvtx("cudnn::conv3d_backward_weight");
  check_shape(s, "conv3d_backward_weight");
  cudnnHandle_t h = handle(stream);
  const Plan& plan = plan_for(s, p, h);
  check_workspace(workspace_bytes, plan.bwd_filter_bytes, "conv3d_backward_weight");
  Descriptors d(s, p);
  const float one = 1.f, zero = 0.f;
  if (dbias) CPETS_CUDNN(cudnnConvolutionBackwardBias(h, &one, d.y, dy, &zero, d.bias, dbias));
  if (!dw) return;
  CPETS_CUDNN(cudnnSetConvolutionMathType(d.conv, p == Precision::tf32 ? plan.bwd_filter_math : CUDNN_FMA_MATH));
  CPETS_CUDNN(cudnnConvolutionBackwardFilter(h, &one, d.x, x, d.y, dy, d.conv, plan.bwd_filter, workspace,
                                             plan.bwd_filter_bytes, &zero, d.w, dw));
}

std::string conv3d_cudnn_algorithms(const Conv3dShape& s, Precision p) {
  check_shape(s, "conv3d_cudnn_algorithms");
  const Plan& plan = plan_for(s, p, handle(nullptr));
  return std::string("fwd=") + fwd_name(plan.fwd) + "/" + math_name(plan.fwd_math) +
         " bwd_data=" + bwd_data_name(plan.bwd_data) + "/" + math_name(plan.bwd_data_math) +
         " bwd_filter=" + bwd_filter_name(plan.bwd_filter) + "/" + math_name(plan.bwd_filter_math);
}

}  // namespace cpets::kernels::cudnn
