#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"  // last: the level's target for the rest of the file

namespace cpets::kernels::cpu::CPETS_ISA_NS {
namespace {

// ---- the serial product: packed panels and a register-blocked micro-kernel ----------------------
// C[M×N] += alpha · op(A) · op(B), blocked as in every BLAS since GotoBLAS: a KC-deep slab of
// op(B) is packed into 16-column panels (kept in L2), an MC-row block of op(A) into MR-row panels
// (L1), and the micro-kernel keeps an MR × (NP·16) block of C in registers over the slab. K slabs
// are added to C in order, so the summation order depends on the shape alone.
//
// Register blocks: AVX-512 has 32 registers of 16 floats: 6 rows × 2 panels (12 accumulators, 2
// B vectors, a broadcast). AVX2 has 16 registers of 8: an F16 takes two, so 6 rows × 1 panel (12 +
// 2 + 1). The portable level keeps AVX2's block (plain arrays; the compiler decides).
constexpr int kMR = 6;
constexpr int kNP = kNarrowRegisters || kIsaLevel == 0 ? 1 : 2;
constexpr int64_t kKC = 256;
constexpr int64_t kMC = 16 * kMR;  // 96 rows of op(A): 96 KB packed
constexpr int64_t kNC = 512;       // columns of op(B) per slab: 512 KB packed

// op(B)[k0 .. k0+kc) × [j0 .. j0+nc) into panels [nc/16][kc][16], zeros beyond N.
void pack_b(const float* B, bool trans_b, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nc, int64_t N,
            float* dst) {
  for (int64_t p = 0; p * kLanes < nc; ++p) {
    const int64_t c0 = j0 + p * kLanes, valid = std::clamp<int64_t>(N - c0, 0, kLanes);
    float* panel = dst + p * kc * kLanes;
    if (!trans_b) {
      for (int64_t k = 0; k < kc; ++k) F16::load_n(B + (k0 + k) * ldb + c0, valid).store(panel + k * kLanes);
    } else {  // stored N×K: column c of op(B) is a row of B
      for (int64_t c = 0; c < kLanes; ++c) {
        if (c < valid) {
          const float* src = B + (c0 + c) * ldb + k0;
          for (int64_t k = 0; k < kc; ++k) panel[k * kLanes + c] = src[k];
        } else {
          for (int64_t k = 0; k < kc; ++k) panel[k * kLanes + c] = 0.f;
        }
      }
    }
  }
}

// alpha · op(A)[i0 .. i0+mc) × [k0 .. k0+kc) into panels [mc/MR][kc][MR], zeros beyond M.
void pack_a(const float* A, bool trans_a, int64_t lda, float alpha, int64_t i0, int64_t mc, int64_t M, int64_t k0,
            int64_t kc, float* dst) {
  for (int64_t p = 0; p * kMR < mc; ++p) {
    float* panel = dst + p * kc * kMR;
    for (int r = 0; r < kMR; ++r) {
      const int64_t row = i0 + p * kMR + r;
      if (row >= M) {
        for (int64_t k = 0; k < kc; ++k) panel[k * kMR + r] = 0.f;
      } else if (trans_a) {  // stored K×M: row `row` of op(A) is a column of A
        for (int64_t k = 0; k < kc; ++k) panel[k * kMR + r] = alpha * A[(k0 + k) * lda + row];
      } else {
        const float* src = A + row * lda + k0;
        for (int64_t k = 0; k < kc; ++k) panel[k * kMR + r] = alpha * src[k];
      }
    }
  }
}

// C[rows × cols] += Ap · Bp over kc, rows ≤ MR, cols ≤ NP·16 (the rest of the block is padding).
template <int NP>
void micro(int64_t kc, const float* ap, const float* bp, int64_t b_panel_stride, float* C, int64_t ldc, int64_t rows,
           int64_t cols) {
  F16 acc[kMR][NP];
  for (int r = 0; r < kMR; ++r)
    for (int j = 0; j < NP; ++j) acc[r][j] = F16::zero();
  for (int64_t k = 0; k < kc; ++k) {
    F16 b[NP];
    for (int j = 0; j < NP; ++j) b[j] = F16::load(bp + j * b_panel_stride + k * kLanes);
    for (int r = 0; r < kMR; ++r) {
      const F16 a = F16::bcast(ap[k * kMR + r]);
      for (int j = 0; j < NP; ++j) acc[r][j] = F16::fma(a, b[j], acc[r][j]);
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < NP; ++j) {
      const int64_t n = std::min<int64_t>(kLanes, cols - j * kLanes);
      if (n <= 0) break;
      float* c = C + r * ldc + j * kLanes;
      if (n == kLanes) (F16::load(c) + acc[r][j]).store(c);
      else (F16::load_n(c, n) + acc[r][j]).store_n(c, n);
    }
}

struct PackBuffers {
  std::vector<float> a, b;
};

PackBuffers& pack_buffers() {
  thread_local PackBuffers buffers;  // the serial product runs inside parallel loops: one set per thread
  return buffers;
}

void gemm_accumulate(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc) {
  PackBuffers& buf = pack_buffers();
  const int64_t nc_max = std::min(kNC, (N + kLanes - 1) / kLanes * kLanes);
  const int64_t kc_max = std::min(kKC, K);
  buf.b.resize(size_t(kc_max * nc_max));
  buf.a.resize(size_t(kc_max * kMC));
  constexpr int64_t kBlockCols = kNP * kLanes;
  for (int64_t j0 = 0; j0 < N; j0 += kNC) {
    const int64_t nc = std::min(kNC, N - j0), nc_padded = (nc + kLanes - 1) / kLanes * kLanes;
    for (int64_t k0 = 0; k0 < K; k0 += kKC) {
      const int64_t kc = std::min(kKC, K - k0);
      pack_b(B, trans_b, ldb, k0, kc, j0, nc_padded, N, buf.b.data());
      for (int64_t i0 = 0; i0 < M; i0 += kMC) {
        const int64_t mc = std::min(kMC, M - i0);
        pack_a(A, trans_a, lda, alpha, i0, mc, M, k0, kc, buf.a.data());
        for (int64_t jb = 0; jb < nc; jb += kBlockCols) {
          const float* bp = buf.b.data() + (jb / kLanes) * kc * kLanes;
          const int64_t cols = std::min(kBlockCols, nc - jb);
          for (int64_t ib = 0; ib < mc; ib += kMR) {
            float* c = C + (i0 + ib) * ldc + j0 + jb;
            const float* ap = buf.a.data() + (ib / kMR) * kc * kMR;
            const int64_t rows = std::min<int64_t>(kMR, mc - ib);
            if (cols > kLanes) micro<kNP>(kc, ap, bp, kc * kLanes, c, ldc, rows, cols);
            else micro<1>(kc, ap, bp, kc * kLanes, c, ldc, rows, cols);
          }
        }
      }
    }
  }
}

void scale_matrix(float beta, float* C, int64_t M, int64_t N, int64_t ldc) {
  if (beta == 1.f) return;
  for (int64_t i = 0; i < M; ++i) {
    float* row = C + i * ldc;
    if (beta == 0.f) {
      std::fill(row, row + N, 0.f);
    } else {
      for (int64_t j = 0; j < N; ++j) row[j] *= beta;
    }
  }
}

// Splits the longer side of C into blocks so that each holds at least ~2 MFLOP of work and there
// are at most 64 blocks. Every block packs the whole of the other operand (K × other), so blocks
// are at least 64 long: that packing then costs ≤ 1/64 of the block's multiply-adds (with
// 16-row blocks it dominated dW = gᵀ·x of a 4608-token linear). Depends on the shape only,
// never on the thread count.
int64_t block_length(int64_t len, int64_t other, int64_t K) {
  const double flops = 2.0 * double(len) * double(other) * double(std::max<int64_t>(K, 1));
  int64_t chunks = std::clamp<int64_t>(int64_t(flops / 2e6), 1, 64);
  int64_t block = (len + chunks - 1) / chunks;
  block = (block + 15) / 16 * 16;  // whole micro-panels
  return std::max<int64_t>(block, 64);
}

// Pointer to row `r` of op(A) (trans: column r of the stored matrix).
const float* op_rows(const float* X, bool trans, int64_t r, int64_t ld) { return trans ? X + r : X + r * ld; }

// Reduction-shaped products (K much longer than M and N, e.g. weight gradients summed over every
// voxel): splitting C alone would make each block re-pack the whole of the other operand, so K is
// cut into fixed parts whose partial products are added in part order.
bool split_over_k(int64_t M, int64_t N, int64_t K) { return K >= 8192 && K >= 16 * std::max(M, N); }

}  // namespace

void sgemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  scale_matrix(beta, C, M, N, ldc);
  if (K <= 0 || alpha == 0.f) return;
  gemm_accumulate(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, C, ldc);
}

void sgemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  const bool split_rows = M >= N;
  const int64_t len = split_rows ? M : N;
  const int64_t block = block_length(len, split_rows ? N : M, K);
  const int64_t blocks = (len + block - 1) / block;
  parallel_for_balanced(batch * blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t / blocks, b0 = (t % blocks) * block, n = std::min(block, len - b0);
      const float* Ai = A + i * stride_a;
      const float* Bi = B + i * stride_b;
      float* Ci = C + i * stride_c;
      if (split_rows)
        sgemm_serial(trans_a, trans_b, n, N, K, alpha, op_rows(Ai, trans_a, b0, lda), lda, Bi, ldb, beta,
                     Ci + b0 * ldc, ldc);
      else  // columns b0.. of op(B): rows of the stored B when transposed, columns otherwise
        sgemm_serial(trans_a, trans_b, M, n, K, alpha, Ai, lda, trans_b ? Bi + b0 * ldb : Bi + b0, ldb, beta,
                     Ci + b0, ldc);
    }
  });
}

namespace {

void sgemm_split_k(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int64_t parts = std::min<int64_t>(16, K / 4096);
  const int64_t part_len = ((K + parts - 1) / parts + 255) / 256 * 256;
  std::vector<float> partial(size_t(parts * M * N));
  parallel_for_balanced(parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t k0 = std::min(K, p * part_len), kn = std::min(part_len, K - k0);
      const float* Ak = trans_a ? A + k0 * lda : A + k0;  // columns k0.. of op(A)
      const float* Bk = trans_b ? B + k0 : B + k0 * ldb;  // rows k0.. of op(B)
      sgemm_serial(trans_a, trans_b, M, N, kn, 1.f, Ak, lda, Bk, ldb, 0.f, partial.data() + p * M * N, N);
    }
  });
  parallel_for(M, std::max<int64_t>(1, 16384 / N), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < N; ++j) {
        float s = 0.f;
        for (int64_t p = 0; p < parts; ++p) s += partial[(p * M + i) * N + j];  // fixed order
        float& c = C[i * ldc + j];
        c = beta == 0.f ? alpha * s : alpha * s + beta * c;
      }
  });
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M > 0 && N > 0 && split_over_k(M, N, K))
    sgemm_split_k(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    sgemm_batched(trans_a, trans_b, 1, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0);
}

}  // namespace cpets::kernels::cpu::CPETS_ISA_NS
