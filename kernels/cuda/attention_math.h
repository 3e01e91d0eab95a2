// Shared math of the flash-attention kernels (kernels/cuda/attention.cu) as __host__ __device__
// functions, so CI (no GPU) tests what the kernels run: the work split, the online-softmax step
// and the merge of the partial softmax states that the lanes of one query hold.
//
// Scores are kept in the log2 domain (q pre-scaled by log2(e)/sqrt(d)) so that every
// exponential is one exp2; lse is converted back to the natural log when written.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/cuda/hd.h"

namespace cpets::kernels::cuda::attn {

constexpr int kRowsPerBlock = 32;   // queries (forward, dQ) or keys (dK/dV) per thread block
constexpr int kLanesPerRow = 4;     // threads sharing one row; lane s takes tile entries s, s+4, …
constexpr int kThreads = kRowsPerBlock * kLanesPerRow;
constexpr int kTile = 64;           // keys (forward, dQ) or queries (dK/dV) staged per step
constexpr int kPerLane = kTile / kLanesPerRow;
constexpr int kTargetBlocks = 528;  // as conv3d: ~4 blocks per SM on an H100, a constant
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Padded head dimension the kernels are instantiated for (8, 16, 32, 64), or 0 if too large.
CPETS_HD int padded_head_dim(int64_t d) { return d <= 8 ? 8 : d <= 16 ? 16 : d <= 32 ? 32 : d <= 64 ? 64 : 0; }

// Split of the dK/dV pass over query chunks when there are too few key tiles to fill the GPU
// (cross-attention to a handful of tokens). Depends on the shape only.
struct QuerySplit {
  int splits, chunk;
};
CPETS_HD QuerySplit plan_query_split(int64_t batch, int64_t heads, int64_t nq, int64_t nk) {
  int64_t blocks = batch * heads * ((nk + kRowsPerBlock - 1) / kRowsPerBlock);
  int64_t q_tiles = (nq + kTile - 1) / kTile;
  int64_t want = (kTargetBlocks + blocks - 1) / blocks;
  if (want > q_tiles) want = q_tiles;
  if (want > 64) want = 64;
  if (want < 1) want = 1;
  int64_t chunk = ((q_tiles + want - 1) / want) * kTile;
  return {static_cast<int>((nq + chunk - 1) / chunk), static_cast<int>(chunk)};
}

// Online softmax state of one lane: running max m (log2 domain), running sum l of exp2(s − m).
// Folding in a tile whose largest score is tile_max returns the factor by which l and the output
// accumulator must be rescaled (0 when nothing was seen before: m = −∞).
CPETS_HD float online_rescale(float& m, float tile_max) {
  float m_new = m > tile_max ? m : tile_max;
  if (m_new == -INFINITY) return 1.f;  // nothing seen yet at all: keep the zeros
  float alpha = exp2f(m - m_new);
  m = m_new;
  return alpha;
}

// Weight of a lane's partial (m, l, o) when merged into the row's overall max m_all.
CPETS_HD float merge_weight(float m, float m_all) { return m == -INFINITY ? 0.f : exp2f(m - m_all); }

}  // namespace cpets::kernels::cuda::attn
