#include "engine/backend.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace cpets {
namespace {

struct Family {
  const char* name;
  const char* env;
  std::vector<std::string> choices;  // index = enum value
};

const std::vector<Family>& families() {
  static const std::vector<Family> f = {
      {"conv", "CPETS_CONV_BACKEND", {"cuda", "cudnn"}},
      {"gemm", "CPETS_GEMM_BACKEND", {"cuda", "cublas"}},
      {"attention", "CPETS_ATTENTION_BACKEND", {"cuda", "cublas"}},
      {"precision", "CPETS_PRECISION", {"fp32", "tf32", "bf16"}},
  };
  return f;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

size_t family_index(const std::string& family) {
  for (size_t i = 0; i < families().size(); ++i)
    if (family == families()[i].name) return i;
  throw std::invalid_argument("unknown backend family '" + family + "'; valid: conv, gemm, attention, precision");
}

int choice_index(size_t fi, const std::string& backend, const std::string& source) {
  const Family& f = families()[fi];
  for (size_t i = 0; i < f.choices.size(); ++i)
    if (backend == f.choices[i]) return int(i);
  throw std::invalid_argument(source + ": unknown " + f.name + " backend '" + backend + "'; valid: " + join(f.choices));
}

// One slot per family; -1 until first read, then the environment's choice or 0 (ours).
std::atomic<int> g_choice[4] = {-1, -1, -1, -1};

int current(size_t fi) {
  int v = g_choice[fi].load();
  if (v >= 0) return v;
  const Family& f = families()[fi];
  const char* env = std::getenv(f.env);
  v = (env && *env) ? choice_index(fi, env, std::string("environment variable ") + f.env) : 0;
  int expected = -1;
  g_choice[fi].compare_exchange_strong(expected, v);
  return g_choice[fi].load();
}

}  // namespace

ConvBackend conv_backend() { return ConvBackend(current(0)); }
GemmBackend gemm_backend() { return GemmBackend(current(1)); }
AttentionBackend attention_backend() { return AttentionBackend(current(2)); }
MathPrecision math_precision() { return MathPrecision(current(3)); }
void set_conv_backend(ConvBackend b) { g_choice[0] = int(b); }
void set_gemm_backend(GemmBackend b) { g_choice[1] = int(b); }
void set_attention_backend(AttentionBackend b) { g_choice[2] = int(b); }
void set_math_precision(MathPrecision p) { g_choice[3] = int(p); }

void set_backend(const std::string& family, const std::string& backend) {
  const size_t fi = family_index(family);
  g_choice[fi] = choice_index(fi, backend, "set_backend");
}

std::string backend_name(const std::string& family) {
  const size_t fi = family_index(family);
  return families()[fi].choices[current(fi)];
}

std::vector<std::string> backend_choices(const std::string& family) { return families()[family_index(family)].choices; }

}  // namespace cpets
