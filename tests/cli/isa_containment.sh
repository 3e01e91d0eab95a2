#!/usr/bin/env bash
# One binary must run on every x86-64 CPU: AVX-512 instructions may appear only in the
# functions of the avx512 kernel level, AVX/AVX2 ones only in the avx2 and avx512 levels
# (kernels/cpu/simd.h). Forcing CPETS_CPU_ISA=avx2 on an AVX-512 machine cannot catch a leak
# (say a template or inline function the linker took from an AVX-512 object and that
# baseline code calls): it would run fine here and die with SIGILL on an AVX2-only CPU. So
# this reads the machine code of the linked programs instead.
# Usage: isa_containment.sh BUILD_DIR [CPETS_NATIVE]
set -euo pipefail
build=${1:?usage: isa_containment.sh BUILD_DIR [CPETS_NATIVE]}
case "${2:-OFF}" in
  ON|on|1|TRUE|true|YES|yes)
    echo "skipped: configured with -DCPETS_NATIVE=ON, so everything is compiled for this CPU only (not portable by request)"
    exit 77 ;;
esac

case "$(uname -m)" in
  x86_64|amd64) ;;
  *) echo "skipped: not an x86-64 build ($(uname -m)): only the portable level is compiled"; exit 77 ;;
esac
command -v objdump >/dev/null || { echo "skipped: objdump missing (apt-get install binutils)"; exit 77; }

status=0
for exe in cpets-train cpets-infer cpets-bench test_conv; do
  bin="$build/$exe"
  [[ -x "$bin" ]] || { echo "FAIL: $bin is missing: build the project first"; exit 1; }
  # Per function: does it touch zmm, mask or upper-16 vector registers or use an AVX-512-only
  # instruction (AVX-512), or any v-prefixed (VEX/EVEX-encoded) instruction (AVX, AVX2, FMA)? Names are demangled, so a level's functions, lambdas and
  # OpenMP bodies all carry "::avx512::" or "::avx2::".
  report=$(objdump -d --no-show-raw-insn -C "$bin" | awk '
    /^[0-9a-f]+ <.*>:$/ { fn = $0; next }
    /%zmm|%k[1-7]\b|%[xy]mm(1[6-9]|2[0-9]|3[01])\b/ { wide[fn] = 1 }
    /\tv(pternlog|perm[it]2|compress|expand|scalef|rndscale|getexp|getmant|fixupimm|rcp14|rsqrt14|align[dq]|pmov[dq][bw]|pmovqd)/ { wide[fn] = 1 }
    /\tv[a-z]/ { vex[fn] = 1 }
    END {
      n512 = 0; n2 = 0
      for (f in wide) { n512++; if (f !~ /::avx512::/) print "AVX-512 outside the avx512 level: " f }
      for (f in vex) { n2++; if (f !~ /::avx512::|::avx2::/) print "AVX outside the avx2/avx512 levels: " f }
      print "#counts " n512 " " n2
    }')
  leaks=$(grep -v '^#counts' <<<"$report" || true)
  read -r _ n512 n2 < <(grep '^#counts' <<<"$report")
  if [[ -n "$leaks" ]]; then
    echo "FAIL: $exe would die with SIGILL on a CPU without these instructions:"
    echo "$leaks" | head -20
    status=1
  elif (( n512 == 0 || n2 == 0 )); then
    # Nothing found at all means this check reads nothing (say the disassembly format changed).
    echo "FAIL: $exe: found no AVX-512 ($n512) or AVX2 ($n2) functions, yet the build compiles those levels"
    status=1
  else
    echo "ok: $exe: $n512 functions with AVX-512 and $n2 with AVX/AVX2, all inside their level"
  fi
done
exit $status
