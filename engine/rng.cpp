#include "engine/rng.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "engine/device.h"
#include "engine/dispatch.h"
#include "kernels/cpu/rng.h"

namespace cpets {

PhiloxCounter philox4x32_10(PhiloxCounter counter, PhiloxKey key) { return kernels::cpu::philox4x32_10(counter, key); }

uint64_t Generator::take(int64_t n) {
  if (n < 0) throw std::invalid_argument("Generator: negative number of values requested (" + std::to_string(n) + ")");
  const uint64_t start = state_.offset;
  if (uint64_t(n) > std::numeric_limits<uint64_t>::max() - start)
    throw std::overflow_error("Generator: offset would overflow 2^64; reseed the generator");
  state_.offset += uint64_t(n);
  return start;
}

std::string Generator::state_string() const {
  return std::to_string(state_.seed) + ":" + std::to_string(state_.offset);
}

void Generator::set_state_string(const std::string& s) {
  const auto colon = s.find(':');
  auto parse = [&](const std::string& part) -> uint64_t {
    if (part.empty() || part.find_first_not_of("0123456789") != std::string::npos)
      throw std::invalid_argument("Generator state '" + s + "' is not of the form <seed>:<offset> (decimal integers)");
    try {
      return std::stoull(part);
    } catch (const std::exception&) {
      throw std::invalid_argument("Generator state '" + s + "': number out of range for 64 bits");
    }
  };
  if (colon == std::string::npos)
    throw std::invalid_argument("Generator state '" + s + "' is not of the form <seed>:<offset>");
  state_ = {parse(s.substr(0, colon)), parse(s.substr(colon + 1))};
}

void Generator::fill_uniform(float* out, int64_t n) { kernels::cpu::philox_uniform(state_.seed, take(n), out, n); }

void Generator::fill_uniform(float* out, int64_t n, float lo, float hi) {
  if (!(lo <= hi)) throw std::invalid_argument("fill_uniform: need lo <= hi, got [" + std::to_string(lo) + ", " + std::to_string(hi) + ")");
  kernels::cpu::philox_uniform_range(state_.seed, take(n), out, n, lo, hi);
}

void Generator::fill_normal(float* out, int64_t n, float mean, float std) {
  if (!(std >= 0.f)) throw std::invalid_argument("fill_normal: std must be >= 0, got " + std::to_string(std));
  kernels::cpu::philox_normal(state_.seed, take(n), out, n, mean, std);
}

uint64_t derive_seed(uint64_t seed, uint64_t tag) {
  uint64_t z = seed ^ tag;
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

Tensor rand(const Shape& shape, Generator& gen, Device device) {
  Tensor t = Tensor::empty(shape, device);
  const uint64_t start = gen.take(t.numel());
  dispatch::philox_uniform(device, gen.seed(), start, t.data(), t.numel());
  return t;
}

Tensor randn(const Shape& shape, Generator& gen, float mean, float std, Device device) {
  if (!(std >= 0.f)) throw std::invalid_argument("randn: std must be >= 0, got " + std::to_string(std));
  Tensor t = Tensor::empty(shape, device);
  const uint64_t start = gen.take(t.numel());
  dispatch::philox_normal(device, gen.seed(), start, t.data(), t.numel(), mean, std);
  return t;
}

}  // namespace cpets
