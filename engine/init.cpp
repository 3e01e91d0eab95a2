#include "engine/init.h"

#include <stdexcept>

namespace cpets {

namespace {
void require_weight(const Tensor& w, const char* who) {
  if (!w.defined()) throw std::invalid_argument(std::string(who) + ": undefined tensor");
  if (w.dim() < 2)
    throw std::invalid_argument(std::string(who) + ": fan in/out need a weight of at least 2 dimensions (C_out, C_in, k...), got shape " + w.str());
}
int64_t kernel_volume(const Tensor& w) {
  int64_t v = 1;
  for (int64_t d = 2; d < w.dim(); ++d) v *= w.size(d);
  return v;
}
void require_defined(const Tensor& t, const char* who) {
  if (!t.defined()) throw std::invalid_argument(std::string(who) + ": undefined tensor");
}
// Runs fill(p) on t's values in host memory: t's own for a CPU tensor; for a CUDA tensor a host
// buffer copied over afterwards, so a seed initialises a model identically on either device.
template <class Fill>
void on_host(Tensor& t, Fill&& fill) {
  if (t.device() == Device::cpu()) return fill(t.data());
  Tensor host = Tensor::empty(t.shape());
  fill(host.data());
  t.copy_from(host);
}
}  // namespace

int64_t fan_in(const Tensor& weight) {
  require_weight(weight, "fan_in");
  return weight.size(1) * kernel_volume(weight);
}

int64_t fan_out(const Tensor& weight) {
  require_weight(weight, "fan_out");
  return weight.size(0) * kernel_volume(weight);
}

Tensor& uniform_(Tensor& t, Generator& gen, float lo, float hi) {
  require_defined(t, "uniform_");
  on_host(t, [&](float* p) { gen.fill_uniform(p, t.numel(), lo, hi); });
  return t;
}

Tensor& normal_(Tensor& t, Generator& gen, float mean, float std) {
  require_defined(t, "normal_");
  on_host(t, [&](float* p) { gen.fill_normal(p, t.numel(), mean, std); });
  return t;
}

Tensor& constant_(Tensor& t, float value) {
  require_defined(t, "constant_");
  t.fill_(value);
  return t;
}

Tensor& zeros_(Tensor& t) { return constant_(t, 0.f); }
Tensor& ones_(Tensor& t) { return constant_(t, 1.f); }

Tensor& kaiming_uniform_(Tensor& weight, Generator& gen, double a) {
  const int64_t fan = fan_in(weight);
  if (fan == 0) return weight;  // empty weight: nothing to draw (PyTorch warns and does nothing)
  const double gain = std::sqrt(2.0 / (1.0 + a * a));
  const float bound = float(gain * std::sqrt(3.0 / double(fan)));
  return uniform_(weight, gen, -bound, bound);
}

Tensor& bias_uniform_(Tensor& bias, int64_t fan_in, Generator& gen) {
  if (fan_in <= 0) throw std::invalid_argument("bias_uniform_: fan_in must be positive, got " + std::to_string(fan_in));
  const float bound = float(1.0 / std::sqrt(double(fan_in)));
  return uniform_(bias, gen, -bound, bound);
}

Tensor& xavier_uniform_(Tensor& weight, Generator& gen, double gain) {
  const int64_t fans = fan_in(weight) + fan_out(weight);
  if (fans == 0) return weight;
  const float bound = float(gain * std::sqrt(6.0 / double(fans)));
  return uniform_(weight, gen, -bound, bound);
}

}  // namespace cpets
