// Tensor: float32, contiguous, N-d, on a device, sharing a Storage with its views.
// Autograd state (requires_grad, grad, grad_fn) lives on the TensorImpl; see autograd.h.
// CUDA tensors (engine/device.h) hold device memory: data() is then a device pointer, for
// kernels only; item(), to_vector(), copy_from() and to() copy across as needed.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cpets {

using Shape = std::vector<int64_t>;

enum class DeviceKind : uint8_t { CPU, CUDA };

// Where a tensor lives: the CPU, or the GPU with ordinal `index` (CUDA's device number, as
// nvidia-smi lists them unless CUDA_VISIBLE_DEVICES reorders). Written "cpu" and "cuda:1".
struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int index = 0;  // 0 for the CPU

  static constexpr Device cpu() { return {}; }
  static constexpr Device cuda(int index = 0) { return {DeviceKind::CUDA, index}; }
  // "cpu", "cuda" (= cuda:0) or "cuda:N"; std::invalid_argument naming the forms otherwise.
  // Whether GPU N exists is checked where it is first used (DeviceGuard).
  static Device parse(const std::string& text);

  bool is_cpu() const { return kind == DeviceKind::CPU; }
  bool is_cuda() const { return kind == DeviceKind::CUDA; }
  std::string str() const;  // "cpu", "cuda:0", "cuda:1"
  friend bool operator==(const Device&, const Device&) = default;
};

// A block of float32 memory from the device's caching allocator; returned there on destruction.
// Host storage may be page-locked (`pinned`): copies from it to a GPU then run asynchronously,
// and `last_copy` marks the latest one, so that the block is neither written (Tensor::data())
// nor reused (engine/device.h) before that copy has read it.
struct Storage {
  Storage(size_t numel, Device device, bool pinned = false);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  float* data = nullptr;
  size_t numel = 0;
  Device device;
  bool pinned = false;
  std::shared_ptr<void> last_copy;  // pinned only: event of the last asynchronous copy out of it
};

struct Node;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;           // accumulated gradient (leaves only)
  std::shared_ptr<Node> grad_fn;              // producer of a non-leaf tensor
  std::weak_ptr<Node> grad_accumulator;       // leaf's accumulation node, made on demand
  std::function<void()> post_accumulate_hook;  // leaves: runs once a backward pass has finished `grad`
};

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Factories. `empty` memory is uninitialised (recycled from the allocator).
  static Tensor empty(const Shape& shape, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, Device device = Device::cpu());
  static Tensor full(const Shape& shape, float value, Device device = Device::cpu());
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values, Device device = Device::cpu());
  static Tensor scalar(float value);
  // Host memory that is page-locked when a GPU is usable, so that copies to the GPU run
  // asynchronously (the batches of a GPU run); ordinary host memory otherwise (is_pinned() says).
  // Writing through data() waits for copies out of it that are still running.
  static Tensor empty_pinned(const Shape& shape);
  bool is_pinned() const;

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  Device device() const;
  float* data();
  const float* data() const;
  float item() const;  // requires numel() == 1; from a CUDA tensor, waits for it and copies
  std::vector<float> to_vector() const;  // host copy, from either device
  std::string str() const { return shape_str(shape()); }

  // Autograd.
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on);  // leaves only
  bool is_leaf() const;
  Tensor grad() const;                 // undefined until a backward reached it
  void set_grad(const Tensor& g);
  void zero_grad();                    // drops the gradient
  void backward(const Tensor& grad_output = Tensor()) const;
  const std::shared_ptr<Node>& grad_fn() const;

  Tensor detach() const;  // same storage, no history: save outputs in backward closures this way
  Tensor clone() const;   // deep copy, no history
  Tensor view(const Shape& shape) const;  // same storage, no history; one dimension may be -1
  void copy_from(const Tensor& src);      // same numel, any devices; no history
  void fill_(float value);

  // A copy on `device` (this tensor itself when it is already there), as PyTorch's .to(): the
  // copy is differentiable, its gradient goes back to this tensor's device. Between two GPUs
  // the copy goes directly (peer access) or through the host, as the driver can.
  Tensor to(Device device) const;
  Tensor to(const std::string& device) const { return to(Device::parse(device)); }  // "cuda:1"
  // Moves this tensor's own storage to `device` in place — same TensorImpl, so modules keep
  // their registered parameters — together with its gradient. Leaves only (no history).
  Tensor& move_to_(Device device);

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same_storage(const Tensor& o) const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Resolves a -1 entry and checks the element count; errors name both shapes.
Shape infer_shape(const Shape& requested, int64_t numel);

}  // namespace cpets
