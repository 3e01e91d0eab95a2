#include "kernels/cpu/conv3d.h"
#include "kernels/cpu/conv3d_winograd.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/static_count.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

#include <omp.h>

#include "kernels/cpu/simd.h"  // last: the level's target for the rest of the file


namespace cpets::kernels::cpu::CPETS_ISA_NS {
namespace {

// ------------------------------------------------------------------------------------------
// Scratch memory. Fresh pages are slow to first touch, so the large padded copies reuse the
// same buffers call after call (grown, never shrunk until conv3d_release_scratch). Each call
// leases a whole set of buffers from a pool: calls from several threads at once get different
// sets, serial calls keep reusing one. The lease lives on the calling thread; the parallel
// regions inside reach it through a pointer captured beforehand.
struct ScratchBuf {
  float* p = nullptr;
  size_t n = 0;
  ScratchBuf() = default;
  ScratchBuf(const ScratchBuf&) = delete;
  ScratchBuf& operator=(const ScratchBuf&) = delete;
  ~ScratchBuf() { std::free(p); }
  float* get(size_t floats) {
    if (n < floats) {
      std::free(p);
      p = nullptr;
      n = 0;
      // 64-byte aligned so rows that start on a multiple of 16 floats give aligned vector loads.
      const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p) throw std::bad_alloc();
      n = floats;
    }
    return p;
  }
};

constexpr int kScratchSlots = 7;
struct ScratchSet {
  ScratchBuf bufs[kScratchSlots];
  // Per OpenMP thread number of the leasing call's team: the padded-plane rings.
  std::vector<std::vector<float>> rings;
  uint64_t generation = 0;
  // Per OpenMP thread number: the weight gradient's transposed dy chunk.
  std::vector<std::vector<float>> chunks;
  std::vector<float>& ring(int thread) { return rings[size_t(thread)]; }
  std::vector<float>& chunk(int thread) { return chunks[size_t(thread)]; }
};

class ScratchPool {
 public:
  std::unique_ptr<ScratchSet> acquire() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::unique_ptr<ScratchSet> set;
    if (idle_.empty()) {
      set = std::make_unique<ScratchSet>();
    } else {
      set = std::move(idle_.back());
      idle_.pop_back();
    }
    set->generation = generation_;
    return set;
  }
  // A set leased before a release is dropped instead of kept.
  void give_back(std::unique_ptr<ScratchSet> set) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (set->generation == generation_) idle_.push_back(std::move(set));
  }
  void release() {
    std::vector<std::unique_ptr<ScratchSet>> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      dropped.swap(idle_);
      ++generation_;
    }
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<ScratchSet>> idle_;
  uint64_t generation_ = 0;
};

ScratchPool& scratch_pool() {
  static ScratchPool pool;
  return pool;
}

thread_local ScratchSet* t_scratch = nullptr;

// Held by every public entry point for the duration of the call.
class ScratchLease {
 public:
  ScratchLease() {
    if (t_scratch) return;  // already inside a call on this thread
    set_ = scratch_pool().acquire();
    const size_t threads = size_t(std::max(1, omp_get_max_threads()));
    if (set_->rings.size() < threads) set_->rings.resize(threads);
    if (set_->chunks.size() < threads) set_->chunks.resize(threads);
    t_scratch = set_.get();
  }
  ~ScratchLease() {
    if (!set_) return;
    t_scratch = nullptr;
    scratch_pool().give_back(std::move(set_));
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;

 private:
  std::unique_ptr<ScratchSet> set_;
};

// Called on the calling thread, outside parallel regions.
float* scratch(int slot, size_t floats) { return t_scratch->bufs[slot].get(floats); }
ScratchSet* current_scratch() { return t_scratch; }

enum ScratchSlot {
  kPaddedInput = 0,
  kPaddedGrad = 1,
  kPackedWeights = 2,
  kWeightPartials = 3,
  kPackedGrad = 4,
  kPhaseOut = 5,
  kColumns = 6
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Tiny convolutions (finite-difference checks, the smallest U-Net levels) run on the calling
// thread: a parallel region costs more than their work, and far more on a loaded machine.
thread_local bool t_serial = false;
struct SerialIfSmall {
  explicit SerialIfSmall(double flops) : prev(t_serial) { t_serial = flops < 4e6; }
  ~SerialIfSmall() { t_serial = prev; }
  bool prev;
};

// Runs body(task) for every task in [0, n), handed out dynamically: the machine is shared, and
// a thread whose core is busy must not hold up the others. Results stay deterministic because
// the tasks are fixed by the shape alone and each writes only its own outputs.
template <class F>
void run_tasks(int64_t n, F&& body) {
#pragma omp parallel for schedule(dynamic, 1) if (n > 1 && !t_serial)
  for (int64_t t = 0; t < n; ++t) body(t);
}

// body(begin, end) over fixed chunks of `grain` items (static hand-out; for light loops).
// `worth_it` false: on the calling thread (a fork/join costs more than tens of microseconds of
// work, and far more when the other core is busy).
template <class F>
void parallel_chunks(int64_t n, int64_t grain, F&& body, bool worth_it = true) {
  const int64_t chunks = ceil_div(n, grain);
#pragma omp parallel for schedule(static) if (chunks > 1 && worth_it && !t_serial)
  for (int64_t c = 0; c < chunks; ++c) body(c * grain, std::min(n, (c + 1) * grain));
}

// ------------------------------------------------------------------------------------------
// Zero-padded, W-phase-split copy of an NCDHW tensor: layout [B][C][Dp][Hp][sW][Wq], where the
// padded W index pw = q·sW + phase. With this layout output column ow and tap kw read padded
// column ow·sW + kw = (ow + kw/sW)·sW + kw%sW, i.e. phase kw%sW at q = ow + kw/sW: contiguous
// in ow for any stride. What fills it is described by a PadSource (below).
struct Padded {
  float* data = nullptr;
  int64_t channels = 0, Dp = 0, Hp = 0, sW = 1, Wq = 0;
  int64_t row() const { return sW * Wq; }
  int64_t plane() const { return Hp * row(); }
  int64_t chan() const { return Dp * plane(); }
};

// Source index of padded index p on one axis, or −1 where the padded value is zero.
inline int64_t source_index(int64_t p, int64_t pad, int64_t dil, int64_t size) {
  const int64_t q = p - pad;
  if (q < 0 || q % dil != 0) return -1;
  const int64_t s = q / dil;
  return s < size ? s : -1;
}

// What a padded layout is built from: an NCDHW source, its sizes, a dilation (dil − 1 zeros
// between samples) and the number of zeros before the first sample on each axis (negative:
// samples cut off).
struct PadSource {
  const float* src = nullptr;
  int64_t batch = 0;
  int64_t size[3] = {0, 0, 0}, dil[3] = {1, 1, 1}, pad[3] = {0, 0, 0};
  int64_t chan_floats() const { return size[0] * size[1] * size[2]; }
};

// Fills padded plane pd (Hp rows of sW·Wq floats) from one source channel.
void fill_padded_plane(const PadSource& S, const float* src_chan, const Padded& P, int64_t pd, float* dst_plane) {
  const int64_t* size = S.size;
  const int64_t* dil = S.dil;
  const int64_t* pad = S.pad;
  const bool plain_w = dil[2] == 1 && P.sW == 1;
  const int64_t sd = source_index(pd, pad[0], dil[0], size[0]);
  for (int64_t ph = 0; ph < P.Hp; ++ph) {
    float* dst = dst_plane + ph * P.row();
    const int64_t sh = sd < 0 ? -1 : source_index(ph, pad[1], dil[1], size[1]);
    if (sh < 0) {
      std::memset(dst, 0, sizeof(float) * P.row());
      continue;
    }
    const float* s = src_chan + (sd * size[1] + sh) * size[2];
    if (plain_w) {
      // Zeros, then the row, then zeros; the copied span is clipped to both rows.
      const int64_t begin = std::clamp<int64_t>(pad[2], 0, P.Wq);
      const int64_t skip = begin - pad[2];  // source samples cut off on the left
      const int64_t n = std::max<int64_t>(0, std::min<int64_t>(size[2] - skip, P.Wq - begin));
      std::memset(dst, 0, sizeof(float) * begin);
      if (n > 0) std::memcpy(dst + begin, s + skip, sizeof(float) * n);
      std::memset(dst + begin + n, 0, sizeof(float) * (P.Wq - begin - n));
      continue;
    }
    // Strided or dilated: zeros, then each source sample scattered to its phase and slot.
    std::memset(dst, 0, sizeof(float) * P.row());
    for (int64_t w = 0; w < size[2]; ++w) {
      const int64_t pw = pad[2] + w * dil[2];
      if (pw < 0) continue;
      const int64_t q = pw / P.sW;
      if (q >= P.Wq) break;
      dst[(pw - q * P.sW) * P.Wq + q] = s[w];
    }
  }
}

void build_padded(const PadSource& S, Padded& P, int slot) {
  P.data = scratch(slot, size_t(S.batch * P.channels * P.chan()));
  parallel_chunks(S.batch * P.channels * P.Dp, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bc = r / P.Dp, pd = r % P.Dp;
      fill_padded_plane(S, S.src + bc * S.chan_floats(), P, pd, P.data + bc * P.chan() + pd * P.plane());
    }
  });
}

// ------------------------------------------------------------------------------------------
// Forward micro-kernel: NCO output channels × NW output vectors (16 consecutive W positions
// each, possibly from different rows) in registers; one broadcast weight per NW FMAs.
constexpr int kMaxNW = kNarrowRegisters ? 6 : 12;
struct FwdArgs {
  const float* x;           // padded input at (b, ci=0, first padded plane of this output plane)
  int64_t pos_off[kMaxNW];  // per output vector: offset of its first tap-0 input in x
  const int64_t* tap_off;   // per tap (kd,kh,kw): offset in x
  int64_t taps, cin, x_chan;
  const float* w;           // packed block: [ci][tap][NCO]
  const float* bias;        // at the block's first channel, or null
  float* out[kMaxNW];       // per output vector, at the block's first channel
  int64_t out_chan;         // output channel stride
  int valid[kMaxNW];        // valid lanes per output vector
  bool accumulate;          // add to the output (a later input-channel block) instead of bias
};

// Kept out of line: inlined into the dispatch switch, the compiler's register allocation over
// the whole function spilled accumulators.
template <class V, int NCO, int NW>
__attribute__((noinline)) void fwd_micro(const FwdArgs& a) {
  V acc[NCO][NW];
  if (a.accumulate) {
    for (int i = 0; i < NCO; ++i)
      for (int j = 0; j < NW; ++j) acc[i][j] = V::load_n(a.out[j] + i * a.out_chan, a.valid[j]);
  } else {
    for (int i = 0; i < NCO; ++i) {
      const V b0 = a.bias ? V::bcast(a.bias[i]) : V::zero();
      for (int j = 0; j < NW; ++j) acc[i][j] = b0;
    }
  }
  const float* xp[NW];
  for (int j = 0; j < NW; ++j) xp[j] = a.x + a.pos_off[j];
  const float* w = a.w;
  for (int64_t ci = 0; ci < a.cin; ++ci) {
    for (int64_t t = 0; t < a.taps; ++t, w += NCO) {
      const int64_t off = a.tap_off[t];
      V xv[NW];
      for (int j = 0; j < NW; ++j) xv[j] = V::load(xp[j] + off);
      for (int i = 0; i < NCO; ++i) {
        const V wb = V::bcast(w[i]);
        for (int j = 0; j < NW; ++j) acc[i][j] = V::fma(wb, xv[j], acc[i][j]);
      }
    }
    for (int j = 0; j < NW; ++j) xp[j] += a.x_chan;
  }
  for (int i = 0; i < NCO; ++i)
    for (int j = 0; j < NW; ++j) {
      float* o = a.out[j] + i * a.out_chan;
      if (a.valid[j] == kLanes) acc[i][j].store(o);
      else acc[i][j].store_n(o, a.valid[j]);
    }
}

// NCO × NW blocks; NW > 4 only with one or two output channels (see choose_fwd_blocking).
template <class V>
void fwd_micro_dispatch(int nco, int nw, const FwdArgs& a) {
  constexpr int kMaxNco = kNarrowRegisters ? 6 : 8, kMaxNwWide = kNarrowRegisters ? 2 : 4;
  with_static_count<kMaxNW>(nw, [&](auto nw_c) {
    constexpr int NW = decltype(nw_c)::value;
    if constexpr (NW <= kMaxNwWide) with_static_count<kMaxNco>(nco, [&](auto c) { fwd_micro<V, decltype(c)::value, NW>(a); });
    else with_static_count<2>(nco, [&](auto c) { fwd_micro<V, decltype(c)::value, NW>(a); });
  });
}

// Register blocking of the forward pass: NW output vectors × NB output channels.
struct FwdBlocking { int nw, nb; };
constexpr int64_t kCinBlock = 16;
// 3 × 8 = 24 accumulators + 3 input vectors + 1 broadcast fit the 32 registers; measured a
// little faster than 4 × 6 on both benchmark shapes. With one or two output channels (the
// heads, 16 → 1) that block would hold 3 or 6 accumulators, too few to cover the FMA latency
// (two units × 4 cycles): 12 × 1 and 8 × 2 instead (3× faster at 16 → 1).
// AVX2 (16 registers, two per F16): 1 × 6 (12 + 2 + 1 registers), 6 × 1 and 2 × 2.
FwdBlocking choose_fwd_blocking(int64_t cout) {
  if (kNarrowRegisters) return cout == 1 ? FwdBlocking{6, 1} : cout == 2 ? FwdBlocking{2, 2} : FwdBlocking{1, 6};
  if (cout == 1) return {12, 1};
  if (cout == 2) return {8, 2};
  return {3, 8};
}

// Packs weights w'(n, m, t) (n output, m input channel of the convolution being run) into
// blocks of `nb` output channels, each [m][t][nb'] where nb' is the block's real width.
template <class Get>
void pack_weights(int64_t cout, int64_t cin, int64_t taps, int64_t nb, float* dst, Get&& get) {
  parallel_chunks(
      ceil_div(cout, nb), 1,
      [&](int64_t b0, int64_t b1) {
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t n0 = blk * nb, width = std::min(nb, cout - n0);
          float* d = dst + n0 * cin * taps;
          for (int64_t m = 0; m < cin; ++m)
            for (int64_t t = 0; t < taps; ++t)
              for (int64_t i = 0; i < width; ++i) *d++ = get(n0 + i, m, t);
        }
      },
      cout * cin * taps >= (int64_t(1) << 17));
}

// The convolution every pass is built on: stride `st` over the padded input X, output (B,
// cout, o[0], o[1], o[2]), weights packed by pack_weights with block width blk.nb.
struct ConvGeom {
  int64_t batch, cin, cout;
  int64_t k[3], st[3], o[3];
};

std::vector<int64_t> tap_offsets(const ConvGeom& g, const Padded& X, int64_t ci_count = 1) {
  std::vector<int64_t> off;
  for (int64_t c = 0; c < ci_count; ++c)
    for (int64_t kd = 0; kd < g.k[0]; ++kd)
      for (int64_t kh = 0; kh < g.k[1]; ++kh)
        for (int64_t kw = 0; kw < g.k[2]; ++kw)
          off.push_back(c * X.chan() + kd * X.plane() + kh * X.row() + (kw % X.sW) * X.Wq + kw / X.sW);
  return off;
}

// Output rows [oh0, oh1) of output plane od of batch item b. x_b: padded input of b with the
// plane od·sD at offset 0 of every channel (x_chan apart); toff: tap offsets from there.
template <class V>
void conv_output_rows(const ConvGeom& g, const Padded& X, const float* x_b, int64_t x_chan, const int64_t* toff,
                      const float* wpk, FwdBlocking blk, const float* bias, float* y, int64_t b, int64_t od,
                      int64_t oh0, int64_t oh1) {
  const int64_t taps = g.k[0] * g.k[1] * g.k[2];
  const int64_t nwv = ceil_div(g.o[2], kLanes);
  const int64_t out_plane = g.o[1] * g.o[2], out_chan = g.o[0] * out_plane;
  FwdArgs a{};
  a.tap_off = toff;
  a.taps = taps;
  a.x_chan = x_chan;
  a.out_chan = out_chan;
  float* y_plane = y + b * g.cout * out_chan + od * out_plane;
  const int64_t positions = (oh1 - oh0) * nwv;
  for (int64_t p0 = 0; p0 < positions; p0 += blk.nw) {
    const int nw = int(std::min<int64_t>(blk.nw, positions - p0));
    for (int j = 0; j < nw; ++j) {
      const int64_t oh = oh0 + (p0 + j) / nwv, wv = (p0 + j) % nwv;
      a.pos_off[j] = oh * g.st[1] * X.row() + wv * kLanes;
      a.valid[j] = int(std::min<int64_t>(kLanes, g.o[2] - wv * kLanes));
      a.out[j] = y_plane + oh * g.o[2] + wv * kLanes;
    }
    float* out0[kMaxNW];
    std::copy(a.out, a.out + kMaxNW, out0);
    // Input channels in blocks of 16: the block's input rows for these output vectors
    // (16·kD·kH rows) stay in L1 while every output-channel block uses them.
    for (int64_t c0 = 0; c0 < g.cin; c0 += kCinBlock) {
      a.cin = std::min(kCinBlock, g.cin - c0);
      a.accumulate = c0 > 0;
      a.x = x_b + c0 * x_chan;
      for (int64_t n0 = 0; n0 < g.cout; n0 += blk.nb) {
        const int nco = int(std::min<int64_t>(blk.nb, g.cout - n0));
        a.w = wpk + n0 * g.cin * taps + c0 * taps * nco;
        a.bias = bias ? bias + n0 : nullptr;
        for (int j = 0; j < nw; ++j) a.out[j] = out0[j] + n0 * out_chan;
        fwd_micro_dispatch<V>(nco, nw, a);
      }
    }
  }
}

// Whole padded input built beforehand (X.data).
template <class V>
void forward_core(const ConvGeom& g, const Padded& X, const float* wpk, FwdBlocking blk, const float* bias, float* y) {
  const std::vector<int64_t> toff = tap_offsets(g, X);
  // Tasks: (b, od, chunk of output rows); enough of them to balance two or more threads.
  const int64_t slabs = g.batch * g.o[0];
  const int64_t row_chunks = std::min<int64_t>(g.o[1], std::max<int64_t>(1, ceil_div(32, slabs)));
  const int64_t rows_per_chunk = ceil_div(g.o[1], row_chunks);
  run_tasks(slabs * row_chunks, [&](int64_t task) {
    const int64_t slab = task / row_chunks, chunk = task % row_chunks;
    const int64_t b = slab / g.o[0], od = slab % g.o[0];
    const int64_t oh0 = chunk * rows_per_chunk, oh1 = std::min(g.o[1], oh0 + rows_per_chunk);
    if (oh0 >= oh1) return;
    const float* x_b = X.data + b * g.cin * X.chan() + od * g.st[0] * X.plane();
    conv_output_rows<V>(g, X, x_b, X.chan(), toff.data(), wpk, blk, bias, y, b, od, oh0, oh1);
  });
}

// Tasks over runs of output planes, each keeping its own ring of the kD padded input planes it
// needs (all channels) and padding each source plane once as the run advances. Used when
// the ring fits in L2: the padded copy is then written and read in cache, never through memory.
struct WindowPlan { bool use; int64_t runs, per_run; };
WindowPlan plan_window(const ConvGeom& g, const Padded& X) {
  const int64_t ring_bytes = g.cin * g.k[0] * X.plane() * int64_t(sizeof(float));
  const int64_t runs = std::min(g.o[0], ceil_div(12, g.batch));
  const int64_t per_run = ceil_div(g.o[0], runs);
  return {ring_bytes <= (3 << 19) && per_run >= 4, runs, per_run};
}

template <class V>
void forward_windowed(const ConvGeom& g, const Padded& X, const PadSource& S, WindowPlan plan, const float* wpk,
                      FwdBlocking blk, const float* bias, float* y) {
  const int64_t kd_n = g.k[0], x_chan = kd_n * X.plane();
  const std::vector<int64_t> toff0 = tap_offsets(g, X);  // plane kd at kd·plane
  ScratchSet* set = current_scratch();
  run_tasks(g.batch * plan.runs, [&](int64_t task) {
    std::vector<float>& ring = set->ring(omp_get_thread_num());
    const int64_t b = task / plan.runs, run = task % plan.runs;
    const int64_t od0 = run * plan.per_run, od1 = std::min(g.o[0], od0 + plan.per_run);
    if (od0 >= od1) return;
    if (int64_t(ring.size()) < g.cin * x_chan) ring.resize(size_t(g.cin * x_chan));
    std::vector<int64_t> toff(toff0.size());
    const int64_t per_kd = int64_t(toff0.size()) / kd_n;
    int64_t built_end = 0;  // padded planes below this are (or were) in the ring
    for (int64_t od = od0; od < od1; ++od) {
      const int64_t first = od * g.st[0], last = first + kd_n;
      for (int64_t pd = std::max(first, od == od0 ? first : built_end); pd < last; ++pd)
        for (int64_t ci = 0; ci < g.cin; ++ci)
          fill_padded_plane(S, S.src + (b * g.cin + ci) * S.chan_floats(), X, pd,
                            ring.data() + ci * x_chan + (pd % kd_n) * X.plane());
      built_end = last;
      // Plane first + kd lives in ring slot (first + kd) mod kD.
      for (int64_t kd = 0; kd < kd_n; ++kd)
        for (int64_t t = 0; t < per_kd; ++t)
          toff[size_t(kd * per_kd + t)] = toff0[size_t(kd * per_kd + t)] + (((first + kd) % kd_n) - kd) * X.plane();
      conv_output_rows<V>(g, X, ring.data(), x_chan, toff.data(), wpk, blk, bias, y, b, od, 0, g.o[1]);
    }
  });
}

// Pads (in a ring per task when it fits in cache, else all at once) and convolves.
template <class V>
void padded_forward(const ConvGeom& g, Padded& X, const PadSource& S, int slot, const float* wpk, FwdBlocking blk,
                    const float* bias, float* y) {
  const WindowPlan plan = plan_window(g, X);
  if (plan.use) return forward_windowed<V>(g, X, S, plan, wpk, blk, bias, y);
  build_padded(S, X, slot);
  forward_core<V>(g, X, wpk, blk, bias, y);
}

// ------------------------------------------------------------------------------------------
// Weight-gradient micro-kernel: NCO output channels × NT (input channel, tap) pairs, each a
// 16-lane partial sum over output positions, swept over a chunk of output rows.
struct BwdWArgs {
  const float* dy;          // packed dy of the chunk: [position][NCO channels][16 lanes]
  const float* x;           // padded input at (b, ci0, od·sD, oh0·sH, 0)
  const int64_t* pair_off;  // NT offsets in x, one per (ci, tap) pair
  const int64_t* pos_x;     // per output vector of the chunk: its offset in x
  int64_t positions;
  float* acc_out;           // partial sums [channel][pair][16 lanes], acc_chan floats per channel
  int64_t acc_chan;
};

template <class V, int NCO, int NT>
__attribute__((noinline)) void bww_micro(const BwdWArgs& a) {
  V acc[NCO][NT];
  for (int i = 0; i < NCO; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = V::zero();
  int64_t off[NT];
  for (int t = 0; t < NT; ++t) off[t] = a.pair_off[t];
  const float* gp = a.dy;
  for (int64_t p = 0; p < a.positions; ++p, gp += NCO * kLanes) {
    const float* xp = a.x + a.pos_x[p];
    // NT input vectors live across the channel loop, one dy vector at a time (registers:
    // NCO·NT accumulators + NT + 1).
    V xv[NT];
    for (int t = 0; t < NT; ++t) xv[t] = V::load(xp + off[t]);
    for (int i = 0; i < NCO; ++i) {
      const V g = V::load(gp + i * kLanes);
      for (int t = 0; t < NT; ++t) acc[i][t] = V::fma(g, xv[t], acc[i][t]);
    }
  }
  for (int i = 0; i < NCO; ++i)
    for (int t = 0; t < NT; ++t) {
      float* p = a.acc_out + i * a.acc_chan + t * kLanes;
      V::add(V::load(p), acc[i][t]).store(p);
    }
}

// NCO × NT blocks; NT > 4 only with one or two output channels (see backward_weight_core).
template <class V>
void bww_micro_dispatch(int nco, int nt, const BwdWArgs& a) {
  constexpr int kMaxNt = kNarrowRegisters ? 6 : 12, kMaxNco = kNarrowRegisters ? 2 : 8;
  with_static_count<kMaxNt>(nt, [&](auto nt_c) {
    constexpr int NT = decltype(nt_c)::value;
    if constexpr (NT <= 4) with_static_count<kMaxNco>(nco, [&](auto c) { bww_micro<V, decltype(c)::value, NT>(a); });
    else with_static_count<2>(nco, [&](auto c) { bww_micro<V, decltype(c)::value, NT>(a); });
  });
}

// Weight gradient for Cout < 16 (the heads, → 1 channel), vectorised along W.
// dw[co][ci][t] = Σ_{b, output positions} dy · x. Tasks are (spatial part, input-channel
// block); each owns its outputs, sums positions in a fixed order and writes its own partial;
// partials of the spatial parts are added in part order. Nothing depends on the thread count.
template <class V>
void backward_weight_core(const ConvGeom& g, const Padded& X, const float* dy, float* dw) {
  const int64_t taps = g.k[0] * g.k[1] * g.k[2];
  const int64_t nwv = ceil_div(g.o[2], kLanes);
  const int64_t out_plane = g.o[1] * g.o[2], out_chan = g.o[0] * out_plane;
  // NCO × NT accumulators: 8 × 3 or 6 × 4; for one or two output channels 1 × 12 and 2 × 8,
  // enough independent sums to cover the FMA latency (3 was latency-bound: 38 GFLOP/s at 16 → 1).
  int nt_max = g.k[2] == 3 ? 3 : 4, nb = nt_max == 3 ? 8 : 6;
  if (g.cout == 1) nt_max = 12, nb = 1;
  else if (g.cout == 2) nt_max = 8, nb = 2;
  // AVX2: (NCO·NT + NT + 1) F16 in 16 registers: 2 × 2, and 1 × 6 for one channel.
  if (kNarrowRegisters) nt_max = g.cout == 1 ? 6 : 2, nb = g.cout == 1 ? 1 : 2;
  const int64_t cib = std::clamp<int64_t>(g.cin / 8, 1, 4);
  const int64_t ci_blocks = ceil_div(g.cin, cib);
  const int64_t slabs = g.batch * g.o[0];
  const int64_t parts = std::clamp<int64_t>(ceil_div(8, ci_blocks), 1, slabs);
  const int64_t rows_per_sweep = std::max<int64_t>(1, 32 / nwv);
  const int64_t dw_size = g.cout * g.cin * taps;
  float* partial = parts > 1 ? scratch(kWeightPartials, size_t(parts * dw_size)) : dw;

  // dy repacked once, per (slab, chunk of rows, block of nb channels), as [position][channel]
  // [16 lanes] with zeros past the row ends: each micro-kernel call then reads one sequential
  // stream, and every (input channel, tap) group reuses it from L1.
  const int64_t chunks = ceil_div(g.o[1], rows_per_sweep);
  const int64_t chunk_floats = rows_per_sweep * nwv * g.cout * kLanes;
  float* dpack = scratch(kPackedGrad, size_t(slabs * chunks * chunk_floats));
  auto packed_chunk = [&](int64_t slab, int64_t chunk) { return dpack + (slab * chunks + chunk) * chunk_floats; };
  run_tasks(slabs * chunks, [&](int64_t task) {
    const int64_t slab = task / chunks, chunk = task % chunks;
    const int64_t b = slab / g.o[0], od = slab % g.o[0], oh0 = chunk * rows_per_sweep;
    const int64_t rows = std::min(rows_per_sweep, g.o[1] - oh0), positions = rows * nwv;
    for (int64_t n0 = 0; n0 < g.cout; n0 += nb) {
      const int64_t nco = std::min<int64_t>(nb, g.cout - n0);
      float* d = packed_chunk(slab, chunk) + n0 * positions * kLanes;
      const float* dy0 = dy + (b * g.cout + n0) * out_chan + od * out_plane + oh0 * g.o[2];
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t v = 0; v < nwv; ++v) {
          const int64_t lanes = std::min<int64_t>(kLanes, g.o[2] - v * kLanes);
          for (int64_t i = 0; i < nco; ++i, d += kLanes) {
            const float* src = dy0 + i * out_chan + r * g.o[2] + v * kLanes;
            for (int64_t l = 0; l < kLanes; ++l) d[l] = l < lanes ? src[l] : 0.f;
          }
        }
    }
  });

  run_tasks(parts * ci_blocks, [&](int64_t task) {
    thread_local std::vector<float> accbuf;
    thread_local std::vector<int64_t> pos_x;
    {
      const int64_t part = task / ci_blocks, blk = task % ci_blocks;
      const int64_t ci0 = blk * cib, ncis = std::min(cib, g.cin - ci0);
      const int64_t pairs = ncis * taps;
      const std::vector<int64_t> poff = tap_offsets(g, X, ncis);
      // Partial vectors: [co][pair][16].
      const int64_t acc_chan = pairs * kLanes;
      if (int64_t(accbuf.size()) < g.cout * acc_chan) accbuf.resize(size_t(g.cout * acc_chan));
      std::fill(accbuf.begin(), accbuf.begin() + g.cout * acc_chan, 0.f);
      BwdWArgs a{};
      a.acc_chan = acc_chan;
      const int64_t s0 = part * slabs / parts, s1 = (part + 1) * slabs / parts;
      for (int64_t slab = s0; slab < s1; ++slab) {
        const int64_t b = slab / g.o[0], od = slab % g.o[0];
        for (int64_t oh0 = 0; oh0 < g.o[1]; oh0 += rows_per_sweep) {
          const int64_t rows = std::min(rows_per_sweep, g.o[1] - oh0);
          const int64_t positions = rows * nwv;
          pos_x.resize(size_t(positions));
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t v = 0; v < nwv; ++v) pos_x[size_t(r * nwv + v)] = r * g.st[1] * X.row() + v * kLanes;
          a.pos_x = pos_x.data();
          a.positions = positions;
          a.x = X.data + (b * g.cin + ci0) * X.chan() + od * g.st[0] * X.plane() + oh0 * g.st[1] * X.row();
          for (int64_t n0 = 0; n0 < g.cout; n0 += nb) {
            const int nco = int(std::min<int64_t>(nb, g.cout - n0));
            a.dy = packed_chunk(slab, oh0 / rows_per_sweep) + n0 * positions * kLanes;
            for (int64_t p0 = 0; p0 < pairs; p0 += nt_max) {
              const int nt = int(std::min<int64_t>(nt_max, pairs - p0));
              a.pair_off = poff.data() + p0;
              a.acc_out = accbuf.data() + n0 * acc_chan + p0 * kLanes;
              bww_micro_dispatch<V>(nco, nt, a);
            }
          }
        }
      }
      // Lanes summed in lane order into this task's slice of its part's partial.
      float* dst = partial + part * dw_size;
      for (int64_t co = 0; co < g.cout; ++co)
        for (int64_t p = 0; p < pairs; ++p) {
          const float* v = accbuf.data() + co * acc_chan + p * kLanes;
          float s = 0;
          for (int l = 0; l < kLanes; ++l) s += v[l];
          dst[(co * g.cin + ci0) * taps + p] = s;
        }
    }
  });
  if (parts > 1)
    parallel_chunks(dw_size, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        float s = partial[i];
        for (int64_t p = 1; p < parts; ++p) s += partial[p * dw_size + i];
        dw[i] = s;
      }
    });
}

// ------------------------------------------------------------------------------------------
// Weight gradient with vectors over output channels (used when Cout ≥ 16): dy is transposed
// per chunk to [voxel][channel], and each voxel contributes dy(16·NCOV channels) × broadcast
// x(pair) to NCOV × NP accumulators. Unlike the W-vectorised kernel above, no load straddles
// a cache line and nothing needs a horizontal sum at the end.
struct BwdWTArgs {
  const float* dyt;         // transposed dy of the chunk at its first channel vector: [voxel][cp]
  int64_t cp;               // floats per voxel in dyt (Cout rounded up to 16)
  const float* x;           // padded input at (b, ci0, od·sD, oh0·sH, 0)
  const int64_t* pair_off;  // NP offsets in x (padded with dummies to a multiple of NP)
  int64_t rows, cols;       // output rows of the chunk, output voxels per row (oW)
  int64_t x_row_step;       // padded offset between consecutive output rows
  float* acc_out;           // [pair][cp] partial sums, at this group's first pair and channel
};

// PAIRED: each column is two neighbouring voxels, lanes (channel i, voxel parity) at 2i + par,
// so a 64-bit broadcast of the two x values feeds 8 channels × 2 voxels per FMA (used when
// there is a single channel vector: twice the work per broadcast).
template <class V, int NCOV, int NP, bool PAIRED>
__attribute__((noinline)) void bwwt_micro(const BwdWTArgs& a) {
  V acc[NCOV][NP];
  for (int j = 0; j < NCOV; ++j)
    for (int k = 0; k < NP; ++k) acc[j][k] = V::zero();
  int64_t off[NP];
  for (int k = 0; k < NP; ++k) off[k] = a.pair_off[k];
  const float* gp = a.dyt;
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* xr = a.x + r * a.x_row_step;
    for (int64_t c = 0; c < a.cols; ++c, gp += a.cp) {
      V gv[NCOV];
      for (int j = 0; j < NCOV; ++j) gv[j] = V::load(gp + j * kLanes);
      for (int k = 0; k < NP; ++k) {
        const V xb = PAIRED ? V::bcast2(xr + off[k] + 2 * c) : V::bcast(xr[off[k] + c]);
        for (int j = 0; j < NCOV; ++j) acc[j][k] = V::fma(gv[j], xb, acc[j][k]);
      }
    }
  }
  for (int k = 0; k < NP; ++k)
    for (int j = 0; j < NCOV; ++j) {
      float* p = a.acc_out + k * a.cp + j * kLanes;
      V::add(V::load(p), acc[j][k]).store(p);
    }
}

// Pairs per micro-kernel call for NCOV channel vectors: NCOV·NP ≤ 24 accumulators; on AVX2
// (NCOV·NP + NCOV) F16 and one broadcast in 16 registers, at most 2 channel vectors per call.
constexpr int bwwt_np(int ncov) {
  if (kNarrowRegisters) return ncov == 1 ? 6 : 2;
  return ncov == 1 ? 16 : ncov == 2 ? 12 : ncov == 3 ? 8 : 6;
}
constexpr int kMaxNcov = kNarrowRegisters ? 2 : 4;

template <class V>
void bwwt_dispatch(int ncov, bool paired, const BwdWTArgs& a) {
  if (paired) return bwwt_micro<V, 2, bwwt_np(2), true>(a);
  with_static_count<kMaxNcov>(ncov, [&](auto c) { bwwt_micro<V, decltype(c)::value, bwwt_np(decltype(c)::value), false>(a); });
}

#if CPETS_ISA_LEVEL == 2
// The paired layout of 8 channels × 16 voxels: rows[i] (channel i, 16 voxels = 8 voxel pairs)
// become 8 columns of (channel, pair) at dst + m·cp. An 8 × 8 transpose of 64-bit pairs.
inline void transpose_pairs_8x16(const float* row0, int64_t row_stride, float* dst, int64_t cp) {
  // Two-source permutes only (GCC 12's unpack/shuffle intrinsics warn about their own
  // undefined values). Index bit 3 picks the second source.
  auto mix = [](__m512d x, __m512d y, long i0, long i1, long i2, long i3, long i4, long i5, long i6, long i7) {
    return _mm512_permutex2var_pd(x, _mm512_set_epi64(i7, i6, i5, i4, i3, i2, i1, i0), y);
  };
  __m512d r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm512_castps_pd(_mm512_loadu_ps(row0 + i * row_stride));
  __m512d t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = mix(r[2 * i], r[2 * i + 1], 0, 8, 2, 10, 4, 12, 6, 14);      // pairs 0,2,4,6 of rows 2i, 2i+1
    t[2 * i + 1] = mix(r[2 * i], r[2 * i + 1], 1, 9, 3, 11, 5, 13, 7, 15);  // pairs 1,3,5,7
  }
  for (int odd = 0; odd < 2; ++odd) {
    const __m512d a = mix(t[odd], t[2 + odd], 0, 1, 2, 3, 8, 9, 10, 11), b = mix(t[odd], t[2 + odd], 4, 5, 6, 7, 12, 13, 14, 15);
    const __m512d c = mix(t[4 + odd], t[6 + odd], 0, 1, 2, 3, 8, 9, 10, 11),
                  d = mix(t[4 + odd], t[6 + odd], 4, 5, 6, 7, 12, 13, 14, 15);
    _mm512_storeu_ps(dst + (0 + odd) * cp, _mm512_castpd_ps(mix(a, c, 0, 1, 4, 5, 8, 9, 12, 13)));
    _mm512_storeu_ps(dst + (2 + odd) * cp, _mm512_castpd_ps(mix(a, c, 2, 3, 6, 7, 10, 11, 14, 15)));
    _mm512_storeu_ps(dst + (4 + odd) * cp, _mm512_castpd_ps(mix(b, d, 0, 1, 4, 5, 8, 9, 12, 13)));
    _mm512_storeu_ps(dst + (6 + odd) * cp, _mm512_castpd_ps(mix(b, d, 2, 3, 6, 7, 10, 11, 14, 15)));
  }
}
#endif

// Tasks are fixed spatial parts (slabs of output planes), each summing into its own partial of
// the whole weight gradient; the partials are then added in part order. Inside a part every
// chunk of transposed dy is swept by all (input channel, tap) groups while it sits in L1, so dy
// is read from memory once (not once per input-channel block).
template <class V>
// ring: pad the input per part into a ring of kD planes (S is the source) instead of X.data.
void backward_weight_transposed(const ConvGeom& g, const Padded& X, const PadSource* ring_src, const float* dy,
                                float* dw, float* db) {
  const int64_t taps = g.k[0] * g.k[1] * g.k[2];
  const int64_t out_plane = g.o[1] * g.o[2], out_chan = g.o[0] * out_plane;
  const int64_t cp0 = ceil_div(g.cout, kLanes) * kLanes;
  // One channel vector: columns of voxel pairs, 32 floats each (see bwwt_micro).
  const bool paired = cp0 == kLanes;
  const int64_t cp = paired ? 2 * kLanes : cp0, cvecs = cp / kLanes;
  const int64_t cols = paired ? ceil_div(g.o[2], 2) : g.o[2];
  const int64_t slabs = g.batch * g.o[0];
  const int64_t parts = std::min<int64_t>(slabs, 8);
  // Chunks of whole rows, about 32 KB of transposed dy (L1).
  const int64_t rows_per_chunk = std::clamp<int64_t>(8192 / cp / cols, 1, g.o[1]);
  const int64_t chunks = ceil_div(g.o[1], rows_per_chunk);
  const int64_t chunk_floats = rows_per_chunk * cols * cp;
  const int64_t dw_size = g.cout * g.cin * taps;
  const int64_t pairs = g.cin * taps;
  const int np_max = bwwt_np(1);
  const int64_t pairs_padded = ceil_div(pairs, np_max) * np_max + np_max;
  // Per part: a [pair][cp] accumulator (dummy pairs at the end soak up the padded groups).
  float* acc_all = scratch(kWeightPartials, size_t(parts * pairs_padded * cp));

  // dy transposed chunk by chunk, just before its use (it then sits in L1): a [voxel][cp]
  // block, zeros in the padded channels. The same pass sums each channel of the chunk for the
  // bias gradient (in double, per chunk; chunks are added in order afterwards).
  std::vector<double> chunk_sums(db ? size_t(slabs * chunks * g.cout) : 0);
  auto transpose_chunk = [&](int64_t slab, int64_t chunk, float* d) {
    const int64_t b = slab / g.o[0], od = slab % g.o[0], oh0 = chunk * rows_per_chunk;
    const int64_t rows = std::min(rows_per_chunk, g.o[1] - oh0), voxels = rows * g.o[2];
    const float* src = dy + b * g.cout * out_chan + od * out_plane + oh0 * g.o[2];
#if CPETS_ISA_LEVEL == 2
    if (paired && g.cout == kLanes && g.o[2] % kLanes == 0) {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t cb = 0; cb < 2; ++cb)
          for (int64_t w0 = 0; w0 < g.o[2]; w0 += kLanes)
            transpose_pairs_8x16(src + cb * 8 * out_chan + r * g.o[2] + w0, out_chan,
                                 d + (r * cols + w0 / 2) * cp + cb * kLanes, cp);
    } else
#endif
    if (paired) {
      // Lane (c % 8)·2 + parity of vector c / 8 in column m holds voxel 2m + parity.
      if (g.cout < kLanes || g.o[2] % 2) std::fill(d, d + rows * cols * cp, 0.f);
      const int64_t even = g.o[2] / 2;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < g.cout; ++c) {
          const float* row = src + c * out_chan + r * g.o[2];
          float* col = d + r * cols * cp + (c / 8) * kLanes + (c % 8) * 2;
          for (int64_t m = 0; m < even; ++m) {
            col[m * cp] = row[2 * m];
            col[m * cp + 1] = row[2 * m + 1];
          }
          if (even < cols) col[even * cp] = row[2 * even];
        }
    } else {
      for (int64_t v = 0; v < voxels; ++v) {
        for (int64_t c = 0; c < g.cout; ++c) d[v * cp + c] = src[c * out_chan + v];
        for (int64_t c = g.cout; c < cp; ++c) d[v * cp + c] = 0.f;
      }
    }
    if (db) {
      // Lanes of 16 voxels per channel (the chunk's rows, contiguous), then in double.
      for (int64_t c = 0; c < g.cout; ++c) {
        const float* p = src + c * out_chan;
        float lanes[kLanes] = {};
        int64_t v = 0;
        for (; v + kLanes <= voxels; v += kLanes)
          for (int l = 0; l < kLanes; ++l) lanes[l] += p[v + l];
        double sum = 0;
        for (int l = 0; l < kLanes; ++l) sum += lanes[l];
        for (; v < voxels; ++v) sum += p[v];
        chunk_sums[size_t((slab * chunks + chunk) * g.cout + c)] = sum;
      }
    }
  };


  const std::vector<int64_t> poff0 = tap_offsets(g, X, g.cin);
  const int64_t kd_n = g.k[0], ring_chan = kd_n * X.plane(), per_kd = taps / kd_n;
  ScratchSet* set = current_scratch();
  run_tasks(parts, [&](int64_t part) {
    std::vector<float>& ring = set->ring(omp_get_thread_num());
    std::vector<float>& chunk_buf = set->chunk(omp_get_thread_num());
    if (int64_t(chunk_buf.size()) < chunk_floats + kLanes) chunk_buf.resize(size_t(chunk_floats + kLanes));
    // 64-byte aligned start: every dy vector load of the micro-kernel is then aligned.
    float* dyt = chunk_buf.data() + (kLanes - (reinterpret_cast<uintptr_t>(chunk_buf.data()) / sizeof(float)) % kLanes) % kLanes;
    float* acc = acc_all + part * pairs_padded * cp;
    std::fill(acc, acc + pairs_padded * cp, 0.f);
    std::vector<int64_t> poff(poff0);
    poff.resize(size_t(pairs_padded), 0);  // dummies read x[0]
    if (ring_src && int64_t(ring.size()) < g.cin * ring_chan) ring.resize(size_t(g.cin * ring_chan));
    BwdWTArgs a{};
    a.cp = cp;
    a.cols = cols;
    a.x_row_step = g.st[1] * X.row();
    const int64_t s0 = part * slabs / parts, s1 = (part + 1) * slabs / parts;
    int64_t ring_b = -1, built_end = 0;
    for (int64_t slab = s0; slab < s1; ++slab) {
      const int64_t b = slab / g.o[0], od = slab % g.o[0];
      const float* x_slab = nullptr;
      if (ring_src) {
        // Pad the planes this output plane needs that the ring does not hold yet (all of them
        // at the part's start or a new batch item), then point the pair offsets at their slots.
        const int64_t first = od * g.st[0], last = first + kd_n;
        for (int64_t pd = ring_b == b ? std::max(first, built_end) : first; pd < last; ++pd)
          for (int64_t ci = 0; ci < g.cin; ++ci)
            fill_padded_plane(*ring_src, ring_src->src + (b * g.cin + ci) * ring_src->chan_floats(), X, pd,
                              ring.data() + ci * ring_chan + (pd % kd_n) * X.plane());
        ring_b = b;
        built_end = last;
        for (int64_t ci = 0; ci < g.cin; ++ci)
          for (int64_t kd = 0; kd < kd_n; ++kd)
            for (int64_t t = 0; t < per_kd; ++t) {
              const size_t i = size_t((ci * kd_n + kd) * per_kd + t);
              poff[i] = poff0[i] - ci * X.chan() + ci * ring_chan + (((first + kd) % kd_n) - kd) * X.plane();
            }
        x_slab = ring.data();
      } else {
        x_slab = X.data + b * g.cin * X.chan() + od * g.st[0] * X.plane();
      }
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t oh0 = chunk * rows_per_chunk;
        a.rows = std::min(rows_per_chunk, g.o[1] - oh0);
        a.x = x_slab + oh0 * g.st[1] * X.row();
        transpose_chunk(slab, chunk, dyt);
        for (int64_t j0 = 0; j0 < cvecs; j0 += kMaxNcov) {
          const int ncov = int(std::min<int64_t>(kMaxNcov, cvecs - j0));
          const int np = bwwt_np(ncov);
          a.dyt = dyt + j0 * kLanes;
          for (int64_t p0 = 0; p0 < pairs; p0 += np) {
            a.pair_off = poff.data() + p0;
            a.acc_out = acc + p0 * cp + j0 * kLanes;
            bwwt_dispatch<V>(ncov, paired, a);
          }
        }
      }
    }
  });
  if (db)
    for (int64_t c = 0; c < g.cout; ++c) {
      double sum = 0;
      for (int64_t t = 0; t < slabs * chunks; ++t) sum += chunk_sums[size_t(t * g.cout + c)];
      db[c] = float(sum);
    }
  parallel_chunks(dw_size, 1024, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t co = i / pairs, p = i % pairs;
      // Paired columns: the two voxel parities of a channel are added first.
      const int64_t lane = paired ? (co / 8) * kLanes + (co % 8) * 2 : co;
      auto value = [&](int64_t part) {
        const float* v = acc_all + (part * pairs_padded + p) * cp + lane;
        return paired ? v[0] + v[1] : v[0];
      };
      float s = value(0);
      for (int64_t part = 1; part < parts; ++part) s += value(part);
      dw[i] = s;
    }
  }, dw_size * parts >= (int64_t(1) << 18));
}

// Σ over batch and positions of dy, per output channel: 16 float lanes over each channel's
// row, lanes then rows added in double, all in a fixed order.
void bias_gradient(const float* dy, int64_t batch, int64_t cout, int64_t voxels, float* db) {
  parallel_chunks(cout, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double total = 0;
      for (int64_t b = 0; b < batch; ++b) {
        const float* p = dy + (b * cout + c) * voxels;
        for (int64_t i0 = 0; i0 < voxels; i0 += 4096) {
          const int64_t i1 = std::min(voxels, i0 + 4096);
          float lanes[kLanes] = {};
          int64_t i = i0;
          for (; i + kLanes <= i1; i += kLanes)
            for (int l = 0; l < kLanes; ++l) lanes[l] += p[i + l];
          double s = 0;
          for (int l = 0; l < kLanes; ++l) s += lanes[l];
          for (; i < i1; ++i) s += p[i];
          total += s;
        }
      }
      db[c] = float(total);
    }
  });
}

// ------------------------------------------------------------------------------------------
// The three passes, for one vector type.
Padded padded_layout(int64_t channels, const int64_t extent[3], int64_t sW, int64_t out_w, int64_t kW) {
  Padded P;
  P.channels = channels;
  P.Dp = extent[0];
  P.Hp = extent[1];
  P.sW = sW;
  // Every output vector (rounded up to 16 lanes) plus the widest tap shift must stay inside.
  // A multiple of 16 floats, so that tap kw = 0 of every output vector is an aligned load.
  P.Wq = std::max(ceil_div(out_w, kLanes) * kLanes + (kW - 1) / sW, ceil_div(extent[2], sW));
  P.Wq = ceil_div(P.Wq, kLanes) * kLanes;
  return P;
}

ConvGeom forward_geom(const Conv3dShape& s) {
  ConvGeom g{};
  g.batch = s.batch;
  g.cin = s.in_channels;
  g.cout = s.out_channels;
  for (int a = 0; a < 3; ++a) {
    g.k[a] = s.kernel[a];
    g.st[a] = s.stride[a];
    g.o[a] = s.out_size(a);
  }
  return g;
}

Padded input_layout(const ConvGeom& g) {
  int64_t extent[3];
  for (int a = 0; a < 3; ++a) extent[a] = (g.o[a] - 1) * g.st[a] + g.k[a];
  return padded_layout(g.cin, extent, g.st[2], g.o[2], g.k[2]);
}

PadSource input_source(const Conv3dShape& s, const float* x) {
  PadSource S;
  S.src = x;
  S.batch = s.batch;
  for (int a = 0; a < 3; ++a) {
    S.size[a] = s.in[a];
    S.pad[a] = s.padding[a];
  }
  return S;
}


template <class V>
void forward_impl(const Conv3dShape& s, const float* x, const float* w, const float* bias, float* y) {
  const ConvGeom g = forward_geom(s);
  Padded X = input_layout(g);
  const FwdBlocking blk = choose_fwd_blocking(g.cout);
  const int64_t taps = s.taps();
  float* wpk = scratch(kPackedWeights, size_t(g.cout * g.cin * taps));
  pack_weights(g.cout, g.cin, taps, blk.nb, wpk,
               [&](int64_t n, int64_t m, int64_t t) { return w[(n * g.cin + m) * taps + t]; });
  padded_forward<V>(g, X, input_source(s, x), kPaddedInput, wpk, blk, bias, y);
}

// Input gradient of a strided convolution, one output phase at a time. With i + p = q·s + r
// (0 ≤ r < s per axis), only taps t = r + j·s reach input i, from dy[q − j]: every phase r is
// a stride-1 convolution of dy with the sub-kernel w[r + j·s] reversed (J_r = ⌈(k − r)/s⌉
// taps), written to a compact buffer and then scattered to dx[q·s + r − p]. No multiplication
// by the zeros a dilated dy would hold.
template <class V>
void backward_data_phases(const Conv3dShape& s, const float* dy, const float* w, float* dx) {
  const ConvGeom fg = forward_geom(s);
  const int64_t cin0 = s.in_channels, cout0 = s.out_channels, taps0 = s.taps();
  const int64_t in_chan = s.in_voxels();
  for (int64_t rd = 0; rd < s.stride[0]; ++rd)
    for (int64_t rh = 0; rh < s.stride[1]; ++rh)
      for (int64_t rw = 0; rw < s.stride[2]; ++rw) {
        const int64_t r[3] = {rd, rh, rw};
        int64_t J[3], qmin[3], n[3];
        bool empty = false, no_taps = false;
        for (int a = 0; a < 3; ++a) {
          J[a] = r[a] < s.kernel[a] ? ceil_div(s.kernel[a] - r[a], s.stride[a]) : 0;
          // Inputs i = q·s + r − p inside [0, in): q from ⌈(p − r)/s⌉ to ⌊(in − 1 + p − r)/s⌋.
          const int64_t lo = s.padding[a] - r[a], hi = s.in[a] - 1 + s.padding[a] - r[a];
          qmin[a] = lo <= 0 ? -((-lo) / s.stride[a]) : ceil_div(lo, s.stride[a]);
          const int64_t qmax = hi >= 0 ? hi / s.stride[a] : -ceil_div(-hi, s.stride[a]);
          n[a] = qmax - qmin[a] + 1;
          empty |= n[a] <= 0;
          no_taps |= J[a] == 0;
        }
        if (empty) continue;
        const int64_t nvox = n[0] * n[1] * n[2];
        float* phase = scratch(kPhaseOut, size_t(s.batch * cin0 * nvox));
        if (no_taps) {
          std::fill(phase, phase + s.batch * cin0 * nvox, 0.f);
        } else {
          ConvGeom g{};
          g.batch = s.batch;
          g.cin = cout0;
          g.cout = cin0;
          int64_t extent[3];
          PadSource S;
          S.src = dy;
          S.batch = s.batch;
          for (int a = 0; a < 3; ++a) {
            g.k[a] = J[a];
            g.st[a] = 1;
            g.o[a] = n[a];
            extent[a] = n[a] + J[a] - 1;
            S.size[a] = fg.o[a];
            S.pad[a] = (J[a] - 1) - qmin[a];  // padded index P ↔ dy index P + qmin − (J − 1)
          }
          Padded G = padded_layout(g.cin, extent, 1, g.o[2], g.k[2]);
          const FwdBlocking blk = choose_fwd_blocking(g.cout);
          const int64_t taps = J[0] * J[1] * J[2];
          float* wpk = scratch(kPackedWeights, size_t(g.cout * g.cin * taps));
          pack_weights(g.cout, g.cin, taps, blk.nb, wpk, [&](int64_t nn, int64_t m, int64_t t) {
            // Sub-kernel tap j' (per axis) is original tap r + (J − 1 − j')·s.
            const int64_t j2 = t % J[2], j1 = (t / J[2]) % J[1], j0 = t / (J[1] * J[2]);
            const int64_t t0 = r[0] + (J[0] - 1 - j0) * s.stride[0], t1 = r[1] + (J[1] - 1 - j1) * s.stride[1],
                          t2 = r[2] + (J[2] - 1 - j2) * s.stride[2];
            return w[(m * cin0 + nn) * taps0 + (t0 * s.kernel[1] + t1) * s.kernel[2] + t2];
          });
          padded_forward<V>(g, G, S, kPaddedGrad, wpk, blk, nullptr, phase);
        }
        // Scatter: dx[b, c, q·s + r − p] = phase[b, c, q − qmin].
        parallel_chunks(s.batch * cin0 * n[0] * n[1], 16, [&](int64_t r0, int64_t r1) {
          for (int64_t row = r0; row < r1; ++row) {
            const int64_t bc = row / (n[0] * n[1]), qd = (row / n[1]) % n[0], qh = row % n[1];
            const int64_t d = (qd + qmin[0]) * s.stride[0] + r[0] - s.padding[0];
            const int64_t h = (qh + qmin[1]) * s.stride[1] + r[1] - s.padding[1];
            const float* src = phase + row * n[2];
            float* dst = dx + bc * in_chan + (d * s.in[1] + h) * s.in[2];
            for (int64_t qw = 0; qw < n[2]; ++qw)
              dst[(qw + qmin[2]) * s.stride[2] + r[2] - s.padding[2]] = src[qw];
          }
        });
      }
}

// The input gradient is a stride-1 convolution of dy — dilated by the stride and padded by
// k−1−p — with the weights transposed (Cin ↔ Cout) and flipped in all three axes (strided
// convolutions go phase by phase instead, above).
template <class V>
void backward_data_impl(const Conv3dShape& s, const float* dy, const float* w, float* dx) {
  if (s.stride[0] > 1 || s.stride[1] > 1 || s.stride[2] > 1) return backward_data_phases<V>(s, dy, w, dx);
  const ConvGeom fg = forward_geom(s);
  ConvGeom g{};
  g.batch = s.batch;
  g.cin = s.out_channels;
  g.cout = s.in_channels;
  int64_t extent[3], pad[3];
  for (int a = 0; a < 3; ++a) {
    g.k[a] = s.kernel[a];
    g.st[a] = 1;
    g.o[a] = s.in[a];
    extent[a] = s.in[a] + s.kernel[a] - 1;
    pad[a] = s.kernel[a] - 1 - s.padding[a];
  }
  Padded G = padded_layout(g.cin, extent, 1, g.o[2], g.k[2]);
  PadSource S;
  S.src = dy;
  S.batch = g.batch;
  for (int a = 0; a < 3; ++a) {
    S.size[a] = fg.o[a];
    S.dil[a] = s.stride[a];
    S.pad[a] = pad[a];
  }
  const FwdBlocking blk = choose_fwd_blocking(g.cout);
  const int64_t taps = s.taps();
  float* wpk = scratch(kPackedWeights, size_t(g.cout * g.cin * taps));
  const int64_t cin0 = s.in_channels;
  pack_weights(g.cout, g.cin, taps, blk.nb, wpk,
               [&](int64_t n, int64_t m, int64_t t) { return w[(m * cin0 + n) * taps + (taps - 1 - t)]; });
  padded_forward<V>(g, G, S, kPaddedGrad, wpk, blk, nullptr, dx);
}

// Returns whether it also computed the bias gradient (the channel-vectorised kernel does, in
// its pass over dy).
template <class V>
bool backward_weight_impl(const Conv3dShape& s, const float* x, const float* dy, float* dw, float* db) {
  const ConvGeom g = forward_geom(s);
  Padded X = input_layout(g);
  const PadSource S = input_source(s, x);
  // Channel vectors need at least 16 output channels to be worth it; the head layers (→ 1
  // channel) use the W-vectorised kernel.
  if (g.cout >= kLanes) {
    // A ring of padded planes per part when it fits in L2 (parts hold several planes each).
    const bool ring = g.cin * g.k[0] * X.plane() * int64_t(sizeof(float)) <= (3 << 19) &&
                      g.batch * g.o[0] >= 4 * std::min<int64_t>(g.batch * g.o[0], 8);
    if (!ring) build_padded(S, X, kPaddedInput);
    backward_weight_transposed<V>(g, X, ring ? &S : nullptr, dy, dw, db);
    return db != nullptr;
  }
  build_padded(S, X, kPaddedInput);
  backward_weight_core<V>(g, X, dy, dw);
  return false;
}

// ---- small outputs: im2col + GEMM (kernels/cpu/conv3d.h says when) --------------------------
// Row r = ci·taps + t of the columns of batch item b holds, for every output voxel, the input
// value tap t of channel ci reads there (0 in the padding): the convolution is then
// y_b (Cout × V) = W (Cout × Cin·taps) · col_b, the input gradient dcol_b = Wᵀ · dy_b scattered
// back (col2im), the weight gradient Σ_b dy_b · col_bᵀ, each a GEMM of kernels/cpu/gemm.h
// (deterministic for any thread count), batch items in order.

// Calls f(row, t, d, h, w) → visits, for tap t, the input position each output voxel reads.
struct ColumnGeometry {
  const Conv3dShape& s;
  int64_t o[3];
  explicit ColumnGeometry(const Conv3dShape& shape) : s(shape) {
    for (int a = 0; a < 3; ++a) o[a] = s.out_size(a);
  }
  int64_t voxels() const { return o[0] * o[1] * o[2]; }
  // Input index along axis a for output index q and tap k, or −1 in the padding.
  int64_t source(int a, int64_t q, int64_t k) const {
    const int64_t i = q * s.stride[a] + k - s.padding[a];
    return i >= 0 && i < s.in[a] ? i : -1;
  }
};

void im2col(const ColumnGeometry& g, const float* x_b, float* col) {
  const Conv3dShape& s = g.s;
  const int64_t taps = s.taps(), V = g.voxels(), in_chan = s.in_voxels();
  parallel_chunks(s.in_channels * taps, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t ci = r / taps, t = r % taps;
      const int64_t kd = t / (s.kernel[1] * s.kernel[2]), kh = (t / s.kernel[2]) % s.kernel[1], kw = t % s.kernel[2];
      const float* xc = x_b + ci * in_chan;
      float* dst = col + r * V;
      for (int64_t od = 0; od < g.o[0]; ++od) {
        const int64_t d = g.source(0, od, kd);
        for (int64_t oh = 0; oh < g.o[1]; ++oh, dst += g.o[2]) {
          const int64_t h = g.source(1, oh, kh);
          for (int64_t ow = 0; ow < g.o[2]; ++ow) {
            const int64_t w = g.source(2, ow, kw);
            dst[ow] = d >= 0 && h >= 0 && w >= 0 ? xc[(d * s.in[1] + h) * s.in[2] + w] : 0.f;
          }
        }
      }
    }
  });
}

// dx_b = col2im(dcol): per input channel, its taps added in tap order (one thread per channel).
void col2im(const ColumnGeometry& g, const float* col, float* dx_b) {
  const Conv3dShape& s = g.s;
  const int64_t taps = s.taps(), V = g.voxels(), in_chan = s.in_voxels();
  parallel_chunks(s.in_channels, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ci = c0; ci < c1; ++ci) {
      float* dxc = dx_b + ci * in_chan;
      std::fill(dxc, dxc + in_chan, 0.f);
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t kd = t / (s.kernel[1] * s.kernel[2]), kh = (t / s.kernel[2]) % s.kernel[1], kw = t % s.kernel[2];
        const float* src = col + (ci * taps + t) * V;
        for (int64_t od = 0; od < g.o[0]; ++od) {
          const int64_t d = g.source(0, od, kd);
          for (int64_t oh = 0; oh < g.o[1]; ++oh, src += g.o[2]) {
            const int64_t h = g.source(1, oh, kh);
            if (d < 0 || h < 0) continue;
            for (int64_t ow = 0; ow < g.o[2]; ++ow) {
              const int64_t w = g.source(2, ow, kw);
              if (w >= 0) dxc[(d * s.in[1] + h) * s.in[2] + w] += src[ow];
            }
          }
        }
      }
    }
  });
}

void im2col_forward(const Conv3dShape& s, const float* x, const float* w, const float* bias, float* y) {
  const ColumnGeometry g(s);
  const int64_t K = s.in_channels * s.taps(), V = g.voxels(), cout = s.out_channels;
  float* col = scratch(kColumns, size_t(K * V));
  for (int64_t b = 0; b < s.batch; ++b) {
    float* yb = y + b * cout * V;
    im2col(g, x + b * s.in_channels * s.in_voxels(), col);
    if (bias)
      for (int64_t c = 0; c < cout; ++c) std::fill(yb + c * V, yb + (c + 1) * V, bias[c]);
    ::cpets::kernels::cpu::sgemm(false, false, cout, V, K, 1.f, w, K, col, V, bias ? 1.f : 0.f, yb, V);
  }
}

void im2col_backward_data(const Conv3dShape& s, const float* dy, const float* w, float* dx) {
  const ColumnGeometry g(s);
  const int64_t K = s.in_channels * s.taps(), V = g.voxels(), cout = s.out_channels;
  float* col = scratch(kColumns, size_t(K * V));
  for (int64_t b = 0; b < s.batch; ++b) {
    ::cpets::kernels::cpu::sgemm(true, false, K, V, cout, 1.f, w, K, dy + b * cout * V, V, 0.f, col, V);
    col2im(g, col, dx + b * s.in_channels * s.in_voxels());
  }
}

// Each batch item's product is formed on its own and the items are added in order, as the
// data-parallel all-reduce adds the ranks' gradients: a batch split over ranks then sums the
// same terms the same way as one process (accumulating item 1 inside item 0's GEMM would not).
void im2col_backward_weight(const Conv3dShape& s, const float* x, const float* dy, float* dw) {
  const ColumnGeometry g(s);
  const int64_t K = s.in_channels * s.taps(), V = g.voxels(), cout = s.out_channels;
  float* col = scratch(kColumns, size_t(K * V));
  float* item = s.batch > 1 ? scratch(kWeightPartials, size_t(cout * K)) : dw;
  for (int64_t b = 0; b < s.batch; ++b) {
    im2col(g, x + b * s.in_channels * s.in_voxels(), col);
    float* out = b == 0 ? dw : item;
    ::cpets::kernels::cpu::sgemm(false, true, cout, K, V, 1.f, dy + b * cout * V, V, col, V, 0.f, out, K);
    if (b > 0)
      parallel_chunks(cout * K, 4096, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) dw[i] += item[i];
      });
  }
}

}  // namespace

void conv3d_release_level_scratch() { scratch_pool().release(); }

static double pass_flops(const Conv3dShape& s) {
  return 2.0 * double(s.batch) * double(s.out_channels) * double(s.in_channels) * double(s.taps()) * double(s.out_voxels());
}

// 3×3×3, stride 1, pad 1 with ≥ 16 channels each way: Winograd for all three passes (kernels/cpu/conv3d_winograd.h,
// 2–3× fewer multiplications), unless switched off (CPETS_CONV_WINOGRAD=0).
static bool route_winograd(const Conv3dShape& s, int64_t cin, int64_t cout) {
  return conv3d_winograd_enabled() && conv3d_winograd_worthwhile(s, cin, cout);
}

static bool route_im2col(const Conv3dShape& s) { return conv3d_im2col_enabled() && conv3d_im2col_worthwhile(s); }

void conv3d_forward(const Conv3dShape& s, const float* x, const float* w, const float* bias, float* y) {
  if (route_winograd(s, s.in_channels, s.out_channels)) return conv3d_winograd_forward(s, x, w, bias, y);
  ScratchLease lease;
  SerialIfSmall serial(pass_flops(s));
  if (route_im2col(s)) return im2col_forward(s, x, w, bias, y);
  forward_impl<F16>(s, x, w, bias, y);
}

void conv3d_backward_data(const Conv3dShape& s, const float* dy, const float* w, float* dx) {
  if (route_winograd(s, s.out_channels, s.in_channels)) return conv3d_winograd_backward_data(s, dy, w, dx);
  ScratchLease lease;
  SerialIfSmall serial(pass_flops(s));
  if (route_im2col(s)) return im2col_backward_data(s, dy, w, dx);
  backward_data_impl<F16>(s, dy, w, dx);
}

void conv3d_backward_weight(const Conv3dShape& s, const float* x, const float* dy, float* dw, float* dbias) {
  if (dw && route_winograd(s, s.in_channels, s.out_channels)) {
    conv3d_winograd_backward_weight(s, x, dy, dw);
    if (dbias) bias_gradient(dy, s.batch, s.out_channels, s.out_voxels(), dbias);
    return;
  }
  ScratchLease lease;
  SerialIfSmall serial(pass_flops(s));
  bool bias_done = false;
  if (dw && route_im2col(s)) im2col_backward_weight(s, x, dy, dw);
  else if (dw) bias_done = backward_weight_impl<F16>(s, x, dy, dw, dbias);
  if (dbias && !bias_done) bias_gradient(dy, s.batch, s.out_channels, s.out_voxels(), dbias);
}

}  // namespace cpets::kernels::cpu::CPETS_ISA_NS
