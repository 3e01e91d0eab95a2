// Internals shared by the phantom's source files: counter-based random numbers (so every voxel's
// noise is a pure function of (key, index), independent of thread count) and the anatomy maps.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "io/phantom.h"

namespace cpets::io::phantom {

inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser: a bijective avalanche mix
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
inline uint64_t hash_combine(uint64_t a, uint64_t b) { return mix64(a ^ mix64(b + 0x632be59bd9b4e019ULL)); }
inline double to_unit(uint64_t x) { return (double(x >> 11) + 0.5) * (1.0 / 9007199254740992.0); }  // (0,1)

// A small sequential generator for per-subject draws.
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(mix64(seed)) {}
  uint64_t next() { return mix64(state += 0x9e3779b97f4a7c15ULL); }
  double uniform() { return to_unit(next()); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal() {  // Box–Muller, one value per call (no cached state to get out of step)
    const double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  double normal(double mean, double sd) { return mean + sd * normal(); }
};

// Standard normal for voxel `i` of stream `key`.
inline float voxel_normal(uint64_t key, uint64_t i) {
  const double u1 = to_unit(hash_combine(key, 2 * i)), u2 = to_unit(hash_combine(key, 2 * i + 1));
  return float(std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

// Channels of the interleaved working-grid maps (one 64-byte row per working voxel).
enum Channel : int {
  kT1 = 0,      // template T1 intensity (Colin27 units: GM ≈ 85, WM ≈ 110)
  kGmCtx,       // cerebral cortical GM fraction (AAL 1–90 except 71–78)
  kGmCb,        // cerebellar GM fraction (AAL 91–116)
  kGmSub,       // deep GM fraction (AAL 71–78)
  kWm,          // white matter fraction
  kCsf,         // CSF fraction inside the brain
  kBrain,       // brain-mask fraction
  kOuter,       // pial-side weight e ∈ [0, 1] used by cortical thinning
  kAmyW,        // Σ cortical GM · AV45 regional weight
  kTau1,        // cortical GM in Braak-like stage 1 (medial temporal)
  kTau2,        // stage 2 (inferior/lateral temporal, fusiform)
  kTau3,        // stage 3 (association neocortex)
  kStriatum,    // putamen + pallidum fraction (AV1451 off-target)
  kDispX,       // unit ventricle-enlargement displacement field (mm per mm of growth)
  kDispY,
  kDispZ,
  kChannels
};

struct Anatomy {
  std::array<int64_t, 3> shape{};  // working grid (D, H, W), axis aligned
  double voxel_mm = 2;
  std::array<double, 3> origin{};  // world of voxel (0,0,0), (x, y, z)
  std::vector<float> maps;         // shape · kChannels, channel fastest
  Volume labels_1mm;               // the label volume the maps came from (for the atlas output)
  std::array<double, 3> brain_centre{0, -17, 9};
};

}  // namespace cpets::io::phantom
