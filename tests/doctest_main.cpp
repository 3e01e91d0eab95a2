// doctest's main, plus the instruction-set level: ctest runs the kernel tests once per level with
// CPETS_CPU_ISA set (CMakeLists.txt); a level this CPU lacks is reported as skipped (exit 77),
// with the reason, and never fails.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/cpu/isa.h"

int main(int argc, char** argv) {
  namespace kc = cpets::kernels::cpu;
  if (const char* env = std::getenv("CPETS_CPU_ISA"); env && *env) {
    std::string why;
    try {
      if (!kc::cpu_isa_supported(kc::parse_cpu_isa(env), &why)) {
        std::printf("SKIPPED: %s: %s\n", env, why.c_str());
        return 77;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "CPETS_CPU_ISA: %s\n", e.what());
      return 2;
    }
  }
  std::printf("CPU kernels: %s\n", kc::cpu_isa_description().c_str());
  doctest::Context context(argc, argv);
  return context.run();
}
