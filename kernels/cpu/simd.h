// The vector type of the multi-level CPU kernels, and the instruction-set target of the file
// that includes it (kernels/cpu/isa.h explains the scheme).
//
// Include it LAST, after every other header: it switches the compiler's target to the level
// being built (CPETS_ISA_LEVEL 0 portable, 1 AVX2+FMA, 2 AVX-512) for the rest of the file. So
// the standard library and the project's other headers stay compiled for the baseline (their
// inline functions and templates are shared between the levels' objects, and the linker keeps
// one copy of each: it must run everywhere), while everything after this point — the kernels,
// their lambdas and OpenMP bodies, the small inline helpers they inline — uses the level's
// instructions. Everything defined after it must live in namespace
// cpets::kernels::cpu::CPETS_ISA_NS (the level's name), so the levels' symbols never collide.
//
// F16 is 16 floats: one zmm register (AVX-512), two ymm registers (AVX2) or a plain array the
// compiler may vectorise (portable). The kernels keep one data layout (16-float rows and channel
// blocks) on every level; only their register blocking differs (kNarrowRegisters).
#pragma once

#ifndef CPETS_ISA_LEVEL
#error "kernels/cpu/simd.h: compile with CPETS_ISA_LEVEL (0, 1 or 2) and CPETS_ISA_NS (CMakeLists.txt does)"
#endif

#include <cstdint>
#include <cstring>

#if CPETS_ISA_LEVEL >= 1
#include <immintrin.h>
#if defined(__clang__)
#error "kernels/cpu/simd.h: the AVX2/AVX-512 levels are written for GCC's target pragmas"
#endif
#if CPETS_ISA_LEVEL == 1
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,movbe")
#else
// 512-bit vectors for the auto-vectorised loops too (GCC's tuning would pick 256 bits).
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,movbe,avx512f,avx512cd,avx512bw,avx512dq,avx512vl,prefer-vector-width=512")
#endif
#endif

namespace cpets::kernels::cpu::CPETS_ISA_NS {

constexpr int kIsaLevel = CPETS_ISA_LEVEL;
constexpr int kLanes = 16;
// The register blocks of the micro-kernels follow from this one fact. AVX-512 has 32 vector
// registers of 16 floats; AVX2 has 16 of 8, so an F16 takes two and a block of accumulators, its
// operands and a broadcast must fit in 16 (e.g. 6 × 1 F16: 12 + 2 + 1). The portable level keeps
// the AVX-512 blocks (plain arrays: the compiler decides).
constexpr bool kNarrowRegisters = CPETS_ISA_LEVEL == 1;

// Lanes [first, first + 16) ∩ [0, size) of a 16-lane window starting at `first`, as bits.
inline uint32_t window_bits(int64_t first, int64_t size) {
  uint32_t m = 0;
  for (int l = 0; l < kLanes; ++l)
    if (first + l >= 0 && first + l < size) m |= 1u << l;
  return m;
}
inline uint32_t prefix_bits(int64_t n) { return n >= kLanes ? 0xFFFFu : n <= 0 ? 0u : (1u << n) - 1u; }

#if CPETS_ISA_LEVEL == 2
// ------------------------------------------------------------------------------------------ AVX-512
struct F16 {
  __m512 v;
  using Mask = __mmask16;
  static Mask mask(int64_t n) { return Mask(prefix_bits(n)); }
  static Mask mask_bits(uint32_t bits) { return Mask(bits); }
  static F16 zero() { return {_mm512_setzero_ps()}; }
  static F16 bcast(float a) { return {_mm512_set1_ps(a)}; }
  // (p[0], p[1]) repeated over the 8 lane pairs: one 64-bit broadcast load.
  static F16 bcast2(const float* p) {
    double d;
    std::memcpy(&d, p, sizeof d);
    return {_mm512_castpd_ps(_mm512_set1_pd(d))};
  }
  static F16 load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static F16 load_n(const float* p, int64_t n) { return {_mm512_maskz_loadu_ps(mask(n), p)}; }
  static F16 load_m(const float* p, Mask m) { return {_mm512_maskz_loadu_ps(m, p)}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  void store_n(float* p, int64_t n) const { _mm512_mask_storeu_ps(p, mask(n), v); }
  void store_m(float* p, Mask m) const { _mm512_mask_storeu_ps(p, m, v); }
  static F16 fma(F16 a, F16 b, F16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }    // a·b + c
  static F16 fnma(F16 a, F16 b, F16 c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }  // c − a·b
  static F16 fms(F16 a, F16 b, F16 c) { return {_mm512_fmsub_ps(a.v, b.v, c.v)}; }    // a·b − c
  static F16 add(F16 a, F16 b) { return {_mm512_add_ps(a.v, b.v)}; }
  static F16 sub(F16 a, F16 b) { return {_mm512_sub_ps(a.v, b.v)}; }
  static F16 mul(F16 a, F16 b) { return {_mm512_mul_ps(a.v, b.v)}; }
  static F16 div(F16 a, F16 b) { return {_mm512_div_ps(a.v, b.v)}; }
  static F16 max(F16 a, F16 b) { return {_mm512_max_ps(a.v, b.v)}; }
  static F16 min(F16 a, F16 b) { return {_mm512_min_ps(a.v, b.v)}; }
  // Lanes where m is set: a, else b.
  static F16 select(Mask m, F16 a, F16 b) { return {_mm512_mask_blend_ps(m, b.v, a.v)}; }
  // Round to the nearest integer (ties to even) and p·2^n for integral n in [−126, 127].
  static F16 round(F16 a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  static F16 scale_pow2(F16 p, F16 n) { return {_mm512_scalef_ps(p.v, n.v)}; }
  // base[lane_off[l]] for the lanes in m, 0 elsewhere (lane_off: 16 int32, 64-byte aligned).
  static F16 gather_m(const float* base, const int32_t* lane_off, Mask m) {
    return {_mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_load_si512(lane_off), base, 4)};
  }
};
// Free functions, not hidden friends: GCC does not apply the target pragma to those.
inline F16 operator+(F16 a, F16 b) { return F16::add(a, b); }
inline F16 operator-(F16 a, F16 b) { return F16::sub(a, b); }
inline F16 operator*(F16 a, F16 b) { return F16::mul(a, b); }
inline F16 operator/(F16 a, F16 b) { return F16::div(a, b); }

// Lanes in a fixed tree: i + (i + 8), then + 4, + 2, + 1 (the same order on every level).
inline float reduce_add(F16 a) {
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(a.v), _mm512_extractf32x8_ps(a.v, 1));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
inline float reduce_max(F16 a) { return _mm512_reduce_max_ps(a.v); }

// In-register transpose of a 16 × 16 block: r[i] lane j ↔ r[j] lane i.
inline void transpose16(F16* r) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i].v, r[2 * i + 1].v);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i].v, r[2 * i + 1].v);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]),
                  c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i + 0].v = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1].v = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2].v = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3].v = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j].v, r[8 * i + j + 4].v, 0x88);
      t[8 * i + j + 4] = _mm512_shuffle_f32x4(r[8 * i + j].v, r[8 * i + j + 4].v, 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j].v = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8].v = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
  }
}

// The even and odd elements of the 32 floats a ‖ b, and the same shifted by one element (lane
// 15 of those two is unspecified): the four taps of a W-direction F(2, 3) Winograd window.
inline void deinterleave4(F16 a, F16 b, F16& even, F16& odd, F16& even1, F16& odd1) {
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512i ie1 = _mm512_setr_epi32(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 0);
  const __m512i io1 = _mm512_setr_epi32(3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 1);
  even.v = _mm512_permutex2var_ps(a.v, ie, b.v);
  odd.v = _mm512_permutex2var_ps(a.v, io, b.v);
  even1.v = _mm512_permutex2var_ps(a.v, ie1, b.v);
  odd1.v = _mm512_permutex2var_ps(a.v, io1, b.v);
}

#elif CPETS_ISA_LEVEL == 1
// ------------------------------------------------------------------------------------------ AVX2
struct F16 {
  __m256 lo, hi;  // lanes 0–7, 8–15
  struct Mask {
    __m256i lo, hi;
  };
  static Mask mask_bits(uint32_t bits) {
    const __m256i b = _mm256_set1_epi32(int(bits));
    const __m256i lo_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i hi_bit = _mm256_setr_epi32(256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
    return {_mm256_cmpeq_epi32(_mm256_and_si256(b, lo_bit), lo_bit), _mm256_cmpeq_epi32(_mm256_and_si256(b, hi_bit), hi_bit)};
  }
  static Mask mask(int64_t n) {
    const int k = n >= kLanes ? kLanes : n <= 0 ? 0 : int(n);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return {_mm256_cmpgt_epi32(_mm256_set1_epi32(k), lane), _mm256_cmpgt_epi32(_mm256_set1_epi32(k - 8), lane)};
  }
  static F16 zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static F16 bcast(float a) {
    const __m256 v = _mm256_set1_ps(a);
    return {v, v};
  }
  static F16 bcast2(const float* p) {
    double d;
    std::memcpy(&d, p, sizeof d);
    const __m256 v = _mm256_castpd_ps(_mm256_set1_pd(d));
    return {v, v};
  }
  static F16 load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static F16 load_m(const float* p, Mask m) { return {_mm256_maskload_ps(p, m.lo), _mm256_maskload_ps(p + 8, m.hi)}; }
  static F16 load_n(const float* p, int64_t n) {
    if (n >= kLanes) return load(p);
    return load_m(p, mask(n));
  }
  void store(float* p) const {
    _mm256_storeu_ps(p, lo);
    _mm256_storeu_ps(p + 8, hi);
  }
  void store_m(float* p, Mask m) const {
    _mm256_maskstore_ps(p, m.lo, lo);
    _mm256_maskstore_ps(p + 8, m.hi, hi);
  }
  void store_n(float* p, int64_t n) const {
    if (n >= kLanes) return store(p);
    store_m(p, mask(n));
  }
  static F16 fma(F16 a, F16 b, F16 c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
  static F16 fnma(F16 a, F16 b, F16 c) { return {_mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi)}; }
  static F16 fms(F16 a, F16 b, F16 c) { return {_mm256_fmsub_ps(a.lo, b.lo, c.lo), _mm256_fmsub_ps(a.hi, b.hi, c.hi)}; }
  static F16 add(F16 a, F16 b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static F16 sub(F16 a, F16 b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
  static F16 mul(F16 a, F16 b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
  static F16 div(F16 a, F16 b) { return {_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)}; }
  static F16 max(F16 a, F16 b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
  static F16 min(F16 a, F16 b) { return {_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi)}; }
  static F16 select(Mask m, F16 a, F16 b) {
    return {_mm256_blendv_ps(b.lo, a.lo, _mm256_castsi256_ps(m.lo)), _mm256_blendv_ps(b.hi, a.hi, _mm256_castsi256_ps(m.hi))};
  }
  static F16 round(F16 a) {
    constexpr int kMode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    return {_mm256_round_ps(a.lo, kMode), _mm256_round_ps(a.hi, kMode)};
  }
  // p·2^n through the exponent bits of 2^n: as scalef for integral n in [−126, 127]; n is
  // clamped to [−127, 128], whose 2^n reads as 0 and ∞ (scalef would give a denormal p·2^n).
  static F16 scale_pow2(F16 p, F16 n) {
    auto pow2 = [](__m256 e) {
      e = _mm256_min_ps(_mm256_max_ps(e, _mm256_set1_ps(-127.f)), _mm256_set1_ps(128.f));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(e), _mm256_set1_epi32(127)), 23));
    };
    return {_mm256_mul_ps(p.lo, pow2(n.lo)), _mm256_mul_ps(p.hi, pow2(n.hi))};
  }
  static F16 gather_m(const float* base, const int32_t* lane_off, Mask m) {
    const __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(lane_off));
    const __m256i hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(lane_off + 8));
    return {_mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, lo, _mm256_castsi256_ps(m.lo), 4),
            _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, hi, _mm256_castsi256_ps(m.hi), 4)};
  }
};
// Free functions, not hidden friends: GCC does not apply the target pragma to those.
inline F16 operator+(F16 a, F16 b) { return F16::add(a, b); }
inline F16 operator-(F16 a, F16 b) { return F16::sub(a, b); }
inline F16 operator*(F16 a, F16 b) { return F16::mul(a, b); }
inline F16 operator/(F16 a, F16 b) { return F16::div(a, b); }

inline float reduce_add(F16 a) {
  const __m256 s8 = _mm256_add_ps(a.lo, a.hi);
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
inline float reduce_max(F16 a) {
  const __m256 s8 = _mm256_max_ps(a.lo, a.hi);
  const __m128 s4 = _mm_max_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_max_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_max_ss(s2, _mm_movehdup_ps(s2)));
}

// 8 × 8 transpose of ymm registers, in place.
inline void transpose8(__m256* r) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// 16 × 16 as four 8 × 8 blocks: [A B; C D]ᵀ = [Aᵀ Cᵀ; Bᵀ Dᵀ].
inline void transpose16(F16* r) {
  __m256 a[8], b[8], c[8], d[8];
  for (int i = 0; i < 8; ++i) {
    a[i] = r[i].lo;
    b[i] = r[i].hi;
    c[i] = r[8 + i].lo;
    d[i] = r[8 + i].hi;
  }
  transpose8(a);
  transpose8(b);
  transpose8(c);
  transpose8(d);
  for (int i = 0; i < 8; ++i) {
    r[i] = {a[i], c[i]};
    r[8 + i] = {b[i], d[i]};
  }
}

inline void deinterleave4(F16 a, F16 b, F16& even, F16& odd, F16& even1, F16& odd1) {
  // Within 128-bit lanes, then the 64-bit quarters put in order: (0, 2, 1, 3).
  auto evens = [](__m256 x, __m256 y) { return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x, y, 0x88)), 0xD8)); };
  auto odds = [](__m256 x, __m256 y) { return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x, y, 0xDD)), 0xD8)); };
  even = {evens(a.lo, a.hi), evens(b.lo, b.hi)};
  odd = {odds(a.lo, a.hi), odds(b.lo, b.hi)};
  // Shifted by one element: lanes 0–14 of even1 are lanes 1–15 of even (lane 15: anything).
  const __m256i next = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
  auto shift1 = [&](F16 v) {
    const __m256 lo = _mm256_permutevar8x32_ps(v.lo, next), hi = _mm256_permutevar8x32_ps(v.hi, next);
    return F16{_mm256_blend_ps(lo, hi, 0x80), hi};
  };
  even1 = shift1(even);
  odd1 = shift1(odd);
}

#else
// ------------------------------------------------------------------------------------------ portable
struct F16 {
  float v[kLanes];
  using Mask = uint32_t;  // lane bits
  static Mask mask(int64_t n) { return prefix_bits(n); }
  static Mask mask_bits(uint32_t bits) { return bits; }
  static F16 zero() { return bcast(0.f); }
  static F16 bcast(float a) {
    F16 r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = a;
    return r;
  }
  static F16 bcast2(const float* p) {
    F16 r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = p[i & 1];
    return r;
  }
  static F16 load(const float* p) {
    F16 r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = p[i];
    return r;
  }
  static F16 load_m(const float* p, Mask m) {
    F16 r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = (m >> i) & 1u ? p[i] : 0.f;
    return r;
  }
  static F16 load_n(const float* p, int64_t n) { return load_m(p, mask(n)); }
  void store(float* p) const {
    for (int i = 0; i < kLanes; ++i) p[i] = v[i];
  }
  void store_m(float* p, Mask m) const {
    for (int i = 0; i < kLanes; ++i)
      if ((m >> i) & 1u) p[i] = v[i];
  }
  void store_n(float* p, int64_t n) const { store_m(p, mask(n)); }
  template <class Op>
  static F16 map(const F16& a, const F16& b, Op op) {
    F16 r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = op(a.v[i], b.v[i]);
    return r;
  }
  static F16 fma(const F16& a, const F16& b, const F16& c) { return add(mul(a, b), c); }
  static F16 fnma(const F16& a, const F16& b, const F16& c) { return sub(c, mul(a, b)); }
  static F16 fms(const F16& a, const F16& b, const F16& c) { return sub(mul(a, b), c); }
  static F16 add(const F16& a, const F16& b) { return map(a, b, [](float x, float y) { return x + y; }); }
  static F16 sub(const F16& a, const F16& b) { return map(a, b, [](float x, float y) { return x - y; }); }
  static F16 mul(const F16& a, const F16& b) { return map(a, b, [](float x, float y) { return x * y; }); }
  static F16 div(const F16& a, const F16& b) { return map(a, b, [](float x, float y) { return x / y; }); }
  static F16 max(const F16& a, const F16& b) { return map(a, b, [](float x, float y) { return x > y ? x : y; }); }
  static F16 min(const F16& a, const F16& b) { return map(a, b, [](float x, float y) { return x < y ? x : y; }); }
  static F16 select(Mask m, const F16& a, const F16& b) {
    F16 r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = (m >> i) & 1u ? a.v[i] : b.v[i];
    return r;
  }
  static F16 round(const F16& a) {
    F16 r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = __builtin_nearbyintf(a.v[i]);
    return r;
  }
  static F16 scale_pow2(const F16& p, const F16& n) {
    F16 r;
    for (int i = 0; i < kLanes; ++i) {
      const float e = n.v[i] < -127.f ? -127.f : n.v[i] > 128.f ? 128.f : n.v[i];  // as the AVX2 level
      const int32_t bits = (int32_t(e) + 127) << 23;
      float s;
      std::memcpy(&s, &bits, sizeof s);
      r.v[i] = p.v[i] * s;
    }
    return r;
  }
  static F16 gather_m(const float* base, const int32_t* lane_off, Mask m) {
    F16 r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = (m >> i) & 1u ? base[lane_off[i]] : 0.f;
    return r;
  }
};
// Free functions, not hidden friends: GCC does not apply the target pragma to those.
inline F16 operator+(const F16& a, const F16& b) { return F16::add(a, b); }
inline F16 operator-(const F16& a, const F16& b) { return F16::sub(a, b); }
inline F16 operator*(const F16& a, const F16& b) { return F16::mul(a, b); }
inline F16 operator/(const F16& a, const F16& b) { return F16::div(a, b); }

inline float reduce_add(const F16& a) {
  float s[8];
  for (int i = 0; i < 8; ++i) s[i] = a.v[i] + a.v[i + 8];
  for (int i = 0; i < 4; ++i) s[i] += s[i + 4];
  for (int i = 0; i < 2; ++i) s[i] += s[i + 2];
  return s[0] + s[1];
}
inline float reduce_max(const F16& a) {
  float m = a.v[0];
  for (int i = 1; i < kLanes; ++i) m = a.v[i] > m ? a.v[i] : m;
  return m;
}

inline void transpose16(F16* r) {
  for (int i = 0; i < kLanes; ++i)
    for (int j = i + 1; j < kLanes; ++j) {
      const float t = r[i].v[j];
      r[i].v[j] = r[j].v[i];
      r[j].v[i] = t;
    }
}

inline void deinterleave4(const F16& a, const F16& b, F16& even, F16& odd, F16& even1, F16& odd1) {
  float x[2 * kLanes + 2] = {};
  a.store(x);
  b.store(x + kLanes);
  for (int i = 0; i < kLanes; ++i) {
    even.v[i] = x[2 * i];
    odd.v[i] = x[2 * i + 1];
    even1.v[i] = x[2 * i + 2];
    odd1.v[i] = x[2 * i + 3];
  }
}
#endif

inline void store(float* p, const F16& v) { v.store(p); }
inline void store_m(float* p, F16::Mask m, const F16& v) { v.store_m(p, m); }

// exp(x) for the softmax loops: x clamped to [−87, 88], n = round(x/ln2), r = x − n·ln2 (two-part
// ln2), degree-6 Taylor polynomial, times 2^n. The same steps on every level.
inline F16 exp16(F16 x) {
  x = F16::min(F16::max(x, F16::bcast(-87.f)), F16::bcast(88.f));
  const F16 n = F16::round(x * F16::bcast(1.44269504088896341f));
  F16 r = F16::fnma(n, F16::bcast(0.693145751953125f), x);
  r = F16::fnma(n, F16::bcast(1.42860682030941723e-6f), r);
  F16 p = F16::bcast(1.f / 720.f);
  p = F16::fma(p, r, F16::bcast(1.f / 120.f));
  p = F16::fma(p, r, F16::bcast(1.f / 24.f));
  p = F16::fma(p, r, F16::bcast(1.f / 6.f));
  p = F16::fma(p, r, F16::bcast(0.5f));
  p = F16::fma(p, r, F16::bcast(1.f));
  p = F16::fma(p, r, F16::bcast(1.f));
  return F16::scale_pow2(p, n);
}

// 2^f for |f| ≤ 1/2: a degree-5 polynomial fitted for relative error (7.5e-8 in exact
// arithmetic, ~2.3e-7 evaluated in float, like a degree-6 Taylor series).
inline F16 exp2_poly(F16 f) {
  F16 p = F16::bcast(1.3276466634124517e-3f);
  p = F16::fma(p, f, F16::bcast(9.675540961325169e-3f));
  p = F16::fma(p, f, F16::bcast(5.550713464617729e-2f));
  p = F16::fma(p, f, F16::bcast(0.24022120237350464f));
  p = F16::fma(p, f, F16::bcast(0.6931469440460205f));
  return F16::fma(p, f, F16::bcast(1.0000001192092896f));
}

// 2^x for finite x: n = round(x) (ties to even), 2^(x−n)·2^n; 0 where 2^n underflows (x < −126.5)
// and ∞ where it overflows. The attention softmax's exponential (its scores are in log2 units):
// one FMA and the clamps fewer than exp16. (An AVX2 version that rounds with the 1.5·2^23 shifter
// instead of round + scale_pow2 saves 3 µops per 8 lanes but measured no faster.)
inline F16 exp2_16(F16 x) {
  const F16 n = F16::round(x);
  return F16::scale_pow2(exp2_poly(F16::sub(x, n)), n);
}

}  // namespace cpets::kernels::cpu::CPETS_ISA_NS
