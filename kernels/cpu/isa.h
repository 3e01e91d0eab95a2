// Instruction-set levels of the CPU kernels, chosen once at run time.
//
// The hot kernel families (conv3d direct and Winograd, attention, the norms, elementwise, Adam)
// are compiled once per level from one source each (kernels/cpu/simd.h sets the target and
// gives them a 16-float vector type), into the namespaces cpu::portable, cpu::avx2 and
// cpu::avx512; the public functions of kernels/cpu/*.h forward to the active level
// (kernels/cpu/isa_dispatch.cpp). The rest of the build targets the baseline of the
// architecture, so one binary runs on every x86-64 CPU and is fast on each.
//
// The active level is the best the CPU supports, unless the environment variable
// CPETS_CPU_ISA=portable|avx2|avx512 names another (a level the CPU lacks is refused, with the
// reason). Results are bitwise reproducible per level and thread count; different levels round
// differently (vector widths, FMA contraction), within the tolerances of the kernel tests.
#pragma once
#include <string>
#include <vector>

namespace cpets::kernels::cpu {

enum class CpuIsa { portable = 0, avx2 = 1, avx512 = 2 };

// "portable", "avx2" or "avx512".
const char* cpu_isa_name(CpuIsa isa);
// One line for logs: the level, and what chose it (e.g. "avx2 (best of this CPU; no AVX-512F)").
std::string cpu_isa_description();

// Parses a level name; throws std::invalid_argument naming the accepted values otherwise.
CpuIsa parse_cpu_isa(const std::string& name);

// Levels compiled into this build (portable always; avx2 and avx512 on x86-64).
std::vector<CpuIsa> compiled_cpu_isas();

// Whether this build has `isa` and this CPU (and OS) can run it; `why_not` says what is missing.
bool cpu_isa_supported(CpuIsa isa, std::string* why_not = nullptr);

// The best supported level.
CpuIsa best_cpu_isa();

// The level the kernels run at. The first call reads CPETS_CPU_ISA and throws
// std::runtime_error naming the variable, the value and the fix when it is unknown or
// unsupported here.
CpuIsa cpu_isa();

// Switches the level for all later kernel calls (tests, benchmarks); throws
// std::runtime_error with the reason if `isa` is not supported. Not to be called while kernels
// run on other threads.
void set_cpu_isa(CpuIsa isa);

// Sets a level for a scope and restores the previous one.
class ScopedCpuIsa {
 public:
  explicit ScopedCpuIsa(CpuIsa isa) : previous_(cpu_isa()) { set_cpu_isa(isa); }
  ~ScopedCpuIsa() { set_cpu_isa(previous_); }
  ScopedCpuIsa(const ScopedCpuIsa&) = delete;
  ScopedCpuIsa& operator=(const ScopedCpuIsa&) = delete;

 private:
  CpuIsa previous_;
};

}  // namespace cpets::kernels::cpu
