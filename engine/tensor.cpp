#include "engine/tensor.h"

#include <cstring>
#include <sstream>
#include <stdexcept>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/dispatch.h"

namespace cpets {

Storage::Storage(size_t n, Device dev, bool pin) : numel(n), device(dev) {
  const size_t bytes = n * sizeof(float);
  if (dev.is_cuda()) {
    data = static_cast<float*>(device_alloc(bytes, dev.index));
    return;
  }
  if (pin) data = static_cast<float*>(pinned_host_alloc(bytes));
  pinned = data != nullptr;
  if (!pinned) data = static_cast<float*>(host_alloc(bytes));
}

Storage::~Storage() {
  const size_t bytes = numel * sizeof(float);
  if (device.is_cuda()) device_free(data, bytes, device.index);
  else if (pinned) pinned_host_free(data, bytes, std::move(last_copy));
  else host_free(data, bytes);
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ")";
  return os.str();
}

Shape infer_shape(const Shape& requested, int64_t numel) {
  Shape out = requested;
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      if (infer_at >= 0) throw std::invalid_argument("reshape " + shape_str(requested) + ": more than one -1");
      infer_at = static_cast<int64_t>(i);
    } else if (out[i] < 0) {
      throw std::invalid_argument("reshape " + shape_str(requested) + ": negative size");
    } else {
      known *= out[i];
    }
  }
  if (infer_at >= 0) {
    if (known == 0 || numel % known != 0)
      throw std::invalid_argument("cannot reshape " + std::to_string(numel) + " elements to " + shape_str(requested));
    out[infer_at] = numel / known;
  }
  if (shape_numel(out) != numel)
    throw std::invalid_argument("cannot reshape " + std::to_string(numel) + " elements to " + shape_str(requested));
  return out;
}

// Uninitialised storage for `shape`: the one place tensors get fresh memory.
static Tensor allocate(const Shape& shape, Device device, bool pinned) {
  for (int64_t d : shape)
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)), device, pinned);
  impl->shape = shape;
  return Tensor(std::move(impl));
}

Tensor Tensor::empty(const Shape& shape, Device device) { return allocate(shape, device, /*pinned=*/false); }
Tensor Tensor::empty_pinned(const Shape& shape) { return allocate(shape, Device::cpu(), /*pinned=*/true); }

Tensor Tensor::zeros(const Shape& shape, Device device) { return full(shape, 0.f, device); }
Tensor Tensor::ones(const Shape& shape, Device device) { return full(shape, 1.f, device); }

Tensor Tensor::full(const Shape& shape, float value, Device device) {
  Tensor t = empty(shape, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values, Device device) {
  if (static_cast<int64_t>(values.size()) != shape_numel(shape))
    throw std::invalid_argument("from_vector: " + std::to_string(values.size()) + " values for shape " + shape_str(shape));
  Tensor t = empty(shape, device);
  if (values.empty()) return t;
  if (device.is_cpu()) {
    std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
  } else {
    const DeviceGuard guard(device);
    copy_host_to_device(t.data(), values.data(), values.size() * sizeof(float));
  }
  return t;
}

Tensor Tensor::scalar(float value) { return full({}, value); }

static TensorImpl& need(const std::shared_ptr<TensorImpl>& p) {
  if (!p) throw std::logic_error("use of an undefined Tensor");
  return *p;
}

const Shape& Tensor::shape() const { return need(impl_).shape; }

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n;
  if (d < 0 || d >= n) throw std::out_of_range("dimension " + std::to_string(d) + " out of range for shape " + str());
  return shape()[d];
}

int64_t Tensor::numel() const { return shape_numel(shape()); }
Device Tensor::device() const { return need(impl_).storage->device; }
bool Tensor::is_pinned() const { return need(impl_).storage->pinned; }
float* Tensor::data() {
  Storage& s = *need(impl_).storage;
  if (s.last_copy) {  // an asynchronous copy may still be reading the block: let it finish first
    wait_for_event(s.last_copy);
    s.last_copy.reset();
  }
  return s.data;
}
const float* Tensor::data() const { return need(impl_).storage->data; }

float Tensor::item() const {
  if (numel() != 1) throw std::invalid_argument("item() on a tensor of shape " + str());
  if (device().is_cpu()) return data()[0];
  const DeviceGuard guard(device());
  float v = 0.f;
  copy_device_to_host(&v, data(), sizeof(float));
  return v;
}

std::vector<float> Tensor::to_vector() const {
  if (device().is_cpu()) return std::vector<float>(data(), data() + numel());
  const DeviceGuard guard(device());
  std::vector<float> v(numel());
  copy_device_to_host(v.data(), data(), v.size() * sizeof(float));
  return v;
}

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  if (!is_leaf()) throw std::logic_error("set_requires_grad on a non-leaf tensor; detach() it first");
  impl_->requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const { return need(impl_).grad_fn == nullptr; }

Tensor Tensor::grad() const { return need(impl_).grad ? Tensor(impl_->grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) {
  if (g.defined() && g.shape() != shape())
    throw std::invalid_argument("set_grad: gradient " + g.str() + " for tensor " + str());
  need(impl_).grad = g.impl_ptr();
}

void Tensor::zero_grad() { need(impl_).grad.reset(); }

void Tensor::backward(const Tensor& grad_output) const { run_backward(*this, grad_output); }

const std::shared_ptr<Node>& Tensor::grad_fn() const { return need(impl_).grad_fn; }

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = need(impl_).storage;
  impl->shape = impl_->shape;
  return Tensor(std::move(impl));
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape(), device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::view(const Shape& s) const {
  Tensor t = detach();
  t.impl_->shape = infer_shape(s, numel());
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  if (src.numel() != numel())
    throw std::invalid_argument("copy_from: " + src.str() + " into " + str());
  if (src.data() == data()) return;
  const size_t bytes = numel() * sizeof(float);
  const Device from = src.device(), to = device();
  if (from.is_cpu() && to.is_cpu()) {
    std::memcpy(data(), src.data(), bytes);
    return;
  }
  if (from.is_cuda() && to.is_cuda() && from != to) {
    copy_between_devices(data(), to.index, src.data(), from.index, bytes);
    return;
  }
  const DeviceGuard guard(to.is_cuda() ? to : from);
  if (from.is_cpu()) {
    copy_host_to_device(data(), src.data(), bytes);
    // From page-locked memory the copy is still running: mark the source until it has read it.
    if (Storage& source = *src.impl_->storage; source.pinned) source.last_copy = record_copy_event();
  }
  else if (to.is_cpu()) copy_device_to_host(data(), src.data(), bytes);
  else copy_device_to_device(data(), src.data(), bytes);
}

void Tensor::fill_(float value) { dispatch::fill(device(), data(), numel(), value); }

Tensor Tensor::to(Device target) const {
  if (device() == target) return *this;
  Tensor out = empty(shape(), target);
  out.copy_from(*this);
  return record(out, "to", {*this}, [source = device()](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g.to(source)};
  });
}

Tensor& Tensor::move_to_(Device target) {
  if (!is_leaf()) throw std::logic_error("move_to_ on a non-leaf tensor " + str() + "; use to() for a copy with history");
  if (device() == target) return *this;
  Tensor moved = empty(shape(), target);
  moved.copy_from(*this);
  impl_->storage = moved.impl_->storage;
  if (impl_->grad) {
    Tensor g(impl_->grad);
    impl_->grad = g.to(target).detach().impl_ptr();
  }
  return *this;
}

bool Tensor::same_storage(const Tensor& o) const {
  return impl_ && o.impl_ && impl_->storage == o.impl_->storage;
}

}  // namespace cpets
