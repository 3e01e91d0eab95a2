// Counter-based random numbers: Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC'11 — the Random123 algorithm), so a value depends only on (seed, position) and
// the same seed gives the same numbers for any thread count, chunking, rank count or device.
//
// Stream layout (a GPU port must reproduce it exactly). A Generator's stream is a sequence of
// 32-bit words; word p is lane p % 4 of philox4x32_10(counter = {lo32(p/4), hi32(p/4), 0, 0},
// key = {lo32(seed), hi32(seed)}). Uniform value p = (word_p >> 8) · 2⁻²⁴. Normal values p, p+1
// (p even) = r·cos θ, r·sin θ with r = √(−2 ln((word_p + ½)·2⁻³²)), θ = 2π·word_{p+1}·2⁻³², in
// double, then mean + std·z rounded to float. Every request draws values at positions
// offset, offset+1, … and advances offset by the number of values drawn, so two requests of n and
// m values give exactly the values of one request of n + m (for the same distribution). Normals
// pair the lanes of a block, (0,1) and (2,3), through Box–Muller: the normal at position p is
// still a function of (seed, p) alone. The whole state is (seed, offset): store both to resume.
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "engine/tensor.h"

namespace cpets {

using PhiloxCounter = std::array<uint32_t, 4>;  // as kernels::cpu's
using PhiloxKey = std::array<uint32_t, 2>;

// The bijection itself: ten rounds of Philox-4x32 on one 128-bit counter.
PhiloxCounter philox4x32_10(PhiloxCounter counter, PhiloxKey key);

struct GeneratorState {
  uint64_t seed = 0;
  uint64_t offset = 0;  // position of the next value in the stream
  bool operator==(const GeneratorState&) const = default;
};

class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t offset = 0) : state_{seed, offset} {}

  uint64_t seed() const { return state_.seed; }
  uint64_t offset() const { return state_.offset; }
  GeneratorState state() const { return state_; }
  void set_state(const GeneratorState& s) { state_ = s; }
  void manual_seed(uint64_t seed) { state_ = {seed, 0}; }

  // "seed:offset" and back, for checkpoint metadata (safetensors metadata is string → string).
  std::string state_string() const;
  void set_state_string(const std::string& s);

  // Uniform in [0, 1) with 24 random bits (every float k·2⁻²⁴).
  void fill_uniform(float* out, int64_t n);
  // Uniform in [lo, hi).
  void fill_uniform(float* out, int64_t n, float lo, float hi);
  // Normal(mean, std²) by Box–Muller (computed in double, rounded once to float).
  void fill_normal(float* out, int64_t n, float mean = 0.f, float std = 1.f);

 private:
  friend Tensor rand(const Shape&, Generator&, Device);
  friend Tensor randn(const Shape&, Generator&, float, float, Device);
  uint64_t take(int64_t n);  // returns the first position of a request of n values and advances
  GeneratorState state_;
};

// The seed of an independent stream derived from a user seed and a tag (splitmix64 of seed ^ tag),
// so streams sharing one configured seed (initial weights, noise, data order) never draw the
// same Philox words. Tags are 8-character ASCII names, e.g. 0x6e6f697365303030 = "noise000".
uint64_t derive_seed(uint64_t seed, uint64_t tag);

// A process-wide generator for code that has not been handed one (seed it with manual_seed).
Generator& default_generator();

// On the CUDA device the values are generated there (kernels/cuda/rng), the same stream exactly.
Tensor rand(const Shape& shape, Generator& gen, Device device = Device::cpu());  // U[0, 1)
Tensor randn(const Shape& shape, Generator& gen, float mean = 0.f, float std = 1.f,
             Device device = Device::cpu());  // N(mean, std²)

}  // namespace cpets
