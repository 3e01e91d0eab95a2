// Attention, linear and raw GEMM at the model's shapes (full preset: 12×16×12 = 2,304 latent
// tokens, 128 channels in 4 heads of 32; cross-attention to 8 context tokens).
//
// FLOP convention (same as the flash-attention papers): forward = 4·B·Nq·Nk·C (Q·Kᵀ and P·V,
// 2 flops per multiply-add), backward = 2.5 × forward (five Nq×Nk×d products: dV, dP, dQ, dK and
// the score recompute; our backward actually runs seven — S and dP are recomputed in both the
// dQ and the dK/dV passes — which we do not count). forward+backward = 3.5 × forward. Softmax
// exponentials are not counted.
#include <random>
#include <sstream>

#include "bench/bench.h"
#include "engine/autograd.h"
#include "engine/ops_attention.h"
#include "engine/ops_linalg.h"
#include "kernels/cpu/gemm.h"

using namespace cpets;

namespace {

using bench::median_backward_seconds;
using bench::random_input;

void bench_attention(const bench::Context& ctx, std::vector<bench::Result>& out, int64_t B, int64_t Nq, int64_t Nk,
                     int64_t C, int64_t heads, const std::string& key_suffix) {
  Tensor q = random_input({B, Nq, C}, 1).set_requires_grad(true);
  Tensor k = random_input({B, Nk, C}, 2).set_requires_grad(true);
  Tensor v = random_input({B, Nk, C}, 3).set_requires_grad(true);
  Tensor g = random_input({B, Nq, C}, 4);
  const double fwd_flops = 4.0 * B * Nq * Nk * C;
  std::ostringstream shape_text;  // e.g. 2x2304x128h4, or 2x2304x8x128h4 for cross-attention
  shape_text << B << 'x' << Nq;
  if (Nq != Nk) shape_text << 'x' << Nk;
  shape_text << 'x' << C << 'h' << heads;
  const std::string shape = shape_text.str();
  const std::string kind = Nq == Nk ? "attention" : "cross-attention";
  double fwd;
  {
    NoGradGuard ng;
    fwd = bench::median_seconds([&] { attention(q, k, v, heads); }, ctx.repeats);
  }
  out.push_back({kind + " fwd " + shape, fwd, fwd_flops, 0, key_suffix.empty() ? "" : "attention_fwd_" + key_suffix});
  const double both = bench::median_seconds(
      [&] {
        q.zero_grad(); k.zero_grad(); v.zero_grad();
        attention(q, k, v, heads).backward(g);
      },
      ctx.repeats);
  out.push_back({kind + " fwd+bwd " + shape, both, 3.5 * fwd_flops, 0,
                 key_suffix.empty() ? "" : "attention_fwdbwd_" + key_suffix});
}

}  // namespace

CPETS_BENCH("ops", "attention") {
  bench_attention(ctx, out, 2, 2304, 2304, 128, 4, "2x2304x128h4");
  bench_attention(ctx, out, 2, 2304, 8, 128, 4, "");  // cross-attention to the context tokens
  if (!ctx.quick) bench_attention(ctx, out, 2, 216, 216, 64, 8, "");  // demo preset
}

// Thin heads: the PET generator G_P (full: 64 channels in 8 heads of 8; demo: 32 in 4 of 8) and
// the demo encoder (32 channels in 2 heads of 16), with their cross-attention to the context.
CPETS_BENCH("ops", "attention_thin_heads") {
  bench_attention(ctx, out, 2, 2304, 2304, 64, 8, "");
  bench_attention(ctx, out, 2, 2304, 8, 64, 8, "");
  bench_attention(ctx, out, 2, 216, 216, 32, 4, "");
  bench_attention(ctx, out, 2, 216, 4, 32, 4, "");
  bench_attention(ctx, out, 2, 216, 216, 32, 2, "");
  if (!ctx.quick) bench_attention(ctx, out, 2, 2304, 2304, 64, 4, "");  // d = 16 at the full token count
}

CPETS_BENCH("ops", "linear") {
  const int64_t rows = 2 * 2304, in = 128, outf = 1024;
  Tensor x = random_input({rows, in}, 5).set_requires_grad(true);
  Tensor w = random_input({outf, in}, 6).set_requires_grad(true);
  Tensor b = random_input({outf}, 7).set_requires_grad(true);
  Tensor g = random_input({rows, outf}, 8);
  const double flops = 2.0 * rows * in * outf;
  double fwd;
  {
    NoGradGuard ng;
    fwd = bench::median_seconds([&] { linear(x, w, b); }, ctx.repeats);
  }
  out.push_back({"linear fwd (4608 tokens, 128->1024) +bias", fwd, flops, 0, ""});
  const double both = bench::median_seconds(
      [&] {
        x.zero_grad(); w.zero_grad(); b.zero_grad();
        linear(x, w, b).backward(g);
      },
      ctx.repeats);
  out.push_back({"linear fwd+bwd (4608 tokens, 128->1024) +bias", both, 3 * flops, 0, ""});
}

CPETS_BENCH("ops", "sgemm") {
  // The q/k/v projection of the full preset: (2·2304 tokens × 128) · (128 × 384).
  const int64_t M = 4608, K = 128, N = 384;
  Tensor a = random_input({M, K}, 9), bm = random_input({K, N}, 10), c = Tensor::empty({M, N});
  const double s = bench::median_seconds(
      [&] { kernels::cpu::sgemm(false, false, M, N, K, 1.f, a.data(), K, bm.data(), N, 0.f, c.data(), N); },
      ctx.repeats * 4);
  out.push_back({"sgemm 4608x384x128 (M x N x K)", s, 2.0 * M * N * K, 0, ""});
}
