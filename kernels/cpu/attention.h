// Fused multi-head scaled dot-product attention on raw row-major buffers (flash-attention style).
//
// q is (B, Nq, C), k and v are (B, Nk, C); head h owns channels [h·d, (h+1)·d), d = C / heads,
// and scores are scaled by 1/sqrt(d). The Nq×Nk score matrix is never formed: the forward walks
// key blocks with an online softmax and keeps only a query-block × key-block tile per thread,
// saving the per-row logsumexp; the backward recomputes score tiles from it. Heads of more than
// 16 channels: one pass over (batch, head, query part) that computes each score tile once and
// from it dQ, dK and dV (five n²d products, as flash-attention-2, but with each task owning its
// dQ rows and a dK/dV partial instead of atomics). Heads of ≤ 16 channels take
// register-resident kernels with 16 queries (keys in the dK/dV pass) in the vector lanes, in a
// dQ pass and a dK/dV pass. The work split depends on the shapes only, so results are bitwise
// identical for any thread count. Memory beyond inputs and outputs: the logsumexp (B·heads·Nq), the caller-provided scratch
// below (O(N·C)), and a thread-local tile of attention_tile_floats() floats per thread.
#pragma once
#include <cstdint>

namespace cpets::kernels::cpu {

struct AttentionShape {
  int64_t batch = 0, nq = 0, nk = 0, channels = 0, heads = 1;
  int64_t head_dim() const { return channels / heads; }
};

// Floats of scratch attention_forward needs (O(B·Nk·C): a per-head transposed copy of k).
int64_t attention_forward_scratch_floats(const AttentionShape& s);

// out (B, Nq, C); lse (B, heads, Nq) = log Σ_j exp(score_ij), natural log, for the backward.
void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                       float* lse, float* scratch);

// Floats of scratch attention_backward needs (O(B·heads·Nq + B·(Nq + Nk)·C)).
int64_t attention_backward_scratch_floats(const AttentionShape& s);

// Gradients for dout = ∂L/∂out. dq may be null (not needed); dk and dv come out of the same
// tiles and are both given or both null. `out` and `lse` are the forward's results.
void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv, float* scratch);

// Thread-local tile floats each working thread holds (reused across calls): depends on the head
// dimension only, never on the sequence lengths.
int64_t attention_tile_floats(const AttentionShape& s);

}  // namespace cpets::kernels::cpu
