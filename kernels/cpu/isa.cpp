#include "kernels/cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace cpets::kernels::cpu {
namespace {

// Set by CMakeLists.txt: whether the avx2 and avx512 copies of the kernels are built.
#if CPETS_X86_LEVELS
constexpr bool kX86 = true;
#else
constexpr bool kX86 = false;
#endif

// Empty when the CPU has everything the level is compiled for, else the first missing feature.
// __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV).
std::string missing_feature(CpuIsa isa) {
  if (isa == CpuIsa::portable) return "";
#if CPETS_X86_LEVELS
  __builtin_cpu_init();
  struct Need {
    bool have;
    const char* name;
  };
  const Need avx2[] = {{bool(__builtin_cpu_supports("avx2")), "AVX2"},
                       {bool(__builtin_cpu_supports("fma")), "FMA"},
                       {bool(__builtin_cpu_supports("f16c")), "F16C"},
                       {bool(__builtin_cpu_supports("bmi2")), "BMI2"}};
  const Need avx512[] = {{bool(__builtin_cpu_supports("avx512f")), "AVX-512F"},
                         {bool(__builtin_cpu_supports("avx512bw")), "AVX-512BW"},
                         {bool(__builtin_cpu_supports("avx512dq")), "AVX-512DQ"},
                         {bool(__builtin_cpu_supports("avx512vl")), "AVX-512VL"}};
  for (const Need& n : avx2)
    if (!n.have) return n.name;
  if (isa == CpuIsa::avx512)
    for (const Need& n : avx512)
      if (!n.have) return n.name;
  return "";
#else
  return "an x86-64 build";
#endif
}

std::atomic<int> g_active{-1};
std::once_flag g_init;
std::string g_reason;  // what chose the level at start-up, for cpu_isa_description()

CpuIsa from_environment() {
  const char* env = std::getenv("CPETS_CPU_ISA");
  const CpuIsa best = best_cpu_isa();
  if (!env || !*env) {
    g_reason = "best of this CPU";
    if (best != CpuIsa::avx512) {
      std::string why;
      cpu_isa_supported(CpuIsa(int(best) + 1), &why);
      g_reason += "; " + why;
    }
    return best;
  }
  CpuIsa isa;
  try {
    isa = parse_cpu_isa(env);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(std::string("CPETS_CPU_ISA: ") + e.what());
  }
  std::string why;
  if (!cpu_isa_supported(isa, &why))
    throw std::runtime_error(std::string("CPETS_CPU_ISA=") + env + ": " + why + "; unset it to use the best level (" +
                             cpu_isa_name(best) + ") or name one this CPU supports");
  g_reason = "CPETS_CPU_ISA";
  return isa;
}

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::portable: return "portable";
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::avx512: return "avx512";
  }
  return "?";
}

CpuIsa parse_cpu_isa(const std::string& name) {
  for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx2, CpuIsa::avx512})
    if (name == cpu_isa_name(isa)) return isa;
  throw std::invalid_argument("unknown CPU instruction-set level '" + name + "'; use portable, avx2 or avx512");
}

std::vector<CpuIsa> compiled_cpu_isas() {
  if (kX86) return {CpuIsa::portable, CpuIsa::avx2, CpuIsa::avx512};
  return {CpuIsa::portable};
}

bool cpu_isa_supported(CpuIsa isa, std::string* why_not) {
  const std::string missing = missing_feature(isa);
  if (missing.empty()) return true;
  if (why_not) *why_not = std::string(cpu_isa_name(isa)) + " needs " + missing + (kX86 ? ", which this CPU lacks" : "");
  return false;
}

CpuIsa best_cpu_isa() {
  for (CpuIsa isa : {CpuIsa::avx512, CpuIsa::avx2})
    if (cpu_isa_supported(isa)) return isa;
  return CpuIsa::portable;
}

CpuIsa cpu_isa() {
  const int active = g_active.load(std::memory_order_acquire);
  if (active >= 0) return CpuIsa(active);
  std::call_once(g_init, [] {
    if (g_active.load() < 0) g_active.store(int(from_environment()), std::memory_order_release);
  });
  return CpuIsa(g_active.load(std::memory_order_acquire));
}

void set_cpu_isa(CpuIsa isa) {
  std::string why;
  if (!cpu_isa_supported(isa, &why)) throw std::runtime_error("set_cpu_isa: " + why);
  cpu_isa();  // settle start-up first, so a later first call cannot overwrite this choice
  g_reason = "set by the program";
  g_active.store(int(isa), std::memory_order_release);
}

std::string cpu_isa_description() {
  const CpuIsa isa = cpu_isa();
  return std::string(cpu_isa_name(isa)) + " (" + g_reason + ")";
}

}  // namespace cpets::kernels::cpu
