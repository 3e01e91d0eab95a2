#include "engine/rng.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "engine/device.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/rng.h"

namespace cpets {

namespace {

constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;    // round multipliers
constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;  // key schedule increments
constexpr int64_t kGrain = 1 << 14;                             // values per parallel chunk (multiple of 4)

inline PhiloxCounter philox_round(const PhiloxCounter& c, const PhiloxKey& k) {
  const uint64_t p0 = uint64_t(kMul0) * c[0];
  const uint64_t p1 = uint64_t(kMul1) * c[2];
  const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
  const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
  return {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
}

// The block of four words at stream block index `block` (positions 4·block … 4·block+3).
inline PhiloxCounter stream_block(uint64_t seed, uint64_t block) {
  return philox4x32_10({uint32_t(block), uint32_t(block >> 32), 0u, 0u}, {uint32_t(seed), uint32_t(seed >> 32)});
}

// 24 high bits → a float in [0, 1); every value is exact.
inline float word_to_unit_float(uint32_t w) { return float(w >> 8) * (1.0f / 16777216.0f); }

// Box–Muller on one pair of words; u1 ∈ (0, 1) so the logarithm is finite.
inline void box_muller(uint32_t a, uint32_t b, double& z0, double& z1) {
  constexpr double kTwoPow32 = 4294967296.0;
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  const double u1 = (double(a) + 0.5) / kTwoPow32;
  const double theta = kTwoPi * (double(b) / kTwoPow32);
  const double r = std::sqrt(-2.0 * std::log(u1));
  z0 = r * std::cos(theta);
  z1 = r * std::sin(theta);
}

// Calls emit(i, words, lane_begin, lane_end) once per Philox block touched by outputs [0, n):
// lanes [lane_begin, lane_end) of the block at stream positions start + i … go to outputs i ….
// Chunks are fixed (kGrain) and each value depends only on its position, so the result is the
// same for every thread count.
template <class Emit>
void for_each_block(uint64_t seed, uint64_t start, int64_t n, Emit&& emit) {
  kernels::cpu::parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    int64_t i = b;
    while (i < e) {
      const uint64_t pos = start + uint64_t(i);
      const unsigned lane_begin = unsigned(pos & 3u);
      const unsigned lane_end = unsigned(std::min<int64_t>(4, int64_t(lane_begin) + (e - i)));
      emit(i, stream_block(seed, pos >> 2), lane_begin, lane_end);
      i += lane_end - lane_begin;
    }
  });
}

}  // namespace

PhiloxCounter philox4x32_10(PhiloxCounter counter, PhiloxKey key) {
  counter = philox_round(counter, key);
  for (int r = 1; r < 10; ++r) {
    key[0] += kWeyl0;
    key[1] += kWeyl1;
    counter = philox_round(counter, key);
  }
  return counter;
}

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

void Generator::fill_uniform(float* out, int64_t n) {
  const uint64_t start = take(n);
  for_each_block(state_.seed, start, n, [out](int64_t i, const PhiloxCounter& w, unsigned lb, unsigned le) {
    for (unsigned lane = lb; lane < le; ++lane) out[i + lane - lb] = word_to_unit_float(w[lane]);
  });
}

void Generator::fill_uniform(float* out, int64_t n, float lo, float hi) {
  if (!(lo <= hi)) throw std::invalid_argument("fill_uniform: need lo <= hi, got [" + std::to_string(lo) + ", " + std::to_string(hi) + ")");
  const uint64_t start = take(n);
  const float width = hi - lo;
  for_each_block(state_.seed, start, n, [=](int64_t i, const PhiloxCounter& w, unsigned lb, unsigned le) {
    for (unsigned lane = lb; lane < le; ++lane) {
      float v = lo + width * word_to_unit_float(w[lane]);
      if (v >= hi && hi > lo) v = std::nextafter(hi, lo);  // rounding must not reach the open end
      out[i + lane - lb] = v;
    }
  });
}

void Generator::fill_normal(float* out, int64_t n, float mean, float std) {
  if (!(std >= 0.f)) throw std::invalid_argument("fill_normal: std must be >= 0, got " + std::to_string(std));
  const uint64_t start = take(n);
  for_each_block(state_.seed, start, n, [=](int64_t i, const PhiloxCounter& w, unsigned lb, unsigned le) {
    double z[4];
    for (unsigned pair = lb / 2; pair <= (le - 1) / 2; ++pair) box_muller(w[2 * pair], w[2 * pair + 1], z[2 * pair], z[2 * pair + 1]);
    for (unsigned lane = lb; lane < le; ++lane) out[i + lane - lb] = float(double(mean) + double(std) * z[lane]);
  });
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
  if constexpr (kHaveCuda) {
    if (device == Device::CUDA) {
      const uint64_t start = gen.take(t.numel());
      kernels::cuda::philox_uniform(gen.seed(), start, t.data(), t.numel(), cuda_stream());
      return t;
    }
  }
  gen.fill_uniform(t.data(), t.numel());
  return t;
}

Tensor randn(const Shape& shape, Generator& gen, float mean, float std, Device device) {
  Tensor t = Tensor::empty(shape, device);
  if constexpr (kHaveCuda) {
    if (device == Device::CUDA) {
      if (!(std >= 0.f)) throw std::invalid_argument("randn: std must be >= 0, got " + std::to_string(std));
      const uint64_t start = gen.take(t.numel());
      kernels::cuda::philox_normal(gen.seed(), start, t.data(), t.numel(), mean, std, cuda_stream());
      return t;
    }
  }
  gen.fill_normal(t.data(), t.numel(), mean, std);
  return t;
}

}  // namespace cpets
