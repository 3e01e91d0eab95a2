#include "kernels/cpu/rng.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace cpets::kernels::cpu {

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
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
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

void philox_uniform(uint64_t seed, uint64_t start, float* out, int64_t n) {
  for_each_block(seed, start, n, [out](int64_t i, const PhiloxCounter& w, unsigned lb, unsigned le) {
    for (unsigned lane = lb; lane < le; ++lane) out[i + lane - lb] = word_to_unit_float(w[lane]);
  });
}

void philox_uniform_range(uint64_t seed, uint64_t start, float* out, int64_t n, float lo, float hi) {
  const float width = hi - lo;
  for_each_block(seed, start, n, [=](int64_t i, const PhiloxCounter& w, unsigned lb, unsigned le) {
    for (unsigned lane = lb; lane < le; ++lane) {
      float v = lo + width * word_to_unit_float(w[lane]);
      if (v >= hi && hi > lo) v = std::nextafter(hi, lo);  // rounding must not reach the open end
      out[i + lane - lb] = v;
    }
  });
}

void philox_normal(uint64_t seed, uint64_t start, float* out, int64_t n, float mean, float std) {
  for_each_block(seed, start, n, [=](int64_t i, const PhiloxCounter& w, unsigned lb, unsigned le) {
    double z[4];
    for (unsigned pair = lb / 2; pair <= (le - 1) / 2; ++pair) box_muller(w[2 * pair], w[2 * pair + 1], z[2 * pair], z[2 * pair + 1]);
    for (unsigned lane = lb; lane < le; ++lane) out[i + lane - lb] = float(double(mean) + double(std) * z[lane]);
  });
}

}  // namespace cpets::kernels::cpu
