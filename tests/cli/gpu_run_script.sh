#!/usr/bin/env bash
# tools/gpu_run.sh is run once per lent GPU machine, so its failure reporting is checked here with
# stand-in cmake/ctest/nvidia-smi/cpets-bench/compute-sanitizer: a failing configure, build, test
# run, sanitizer or benchmark makes it exit 1 naming the step (after running what it still can),
# success exits 0, a spent time budget exits 2 listing what did not run, and register spills in
# the build log are counted.
# Usage: gpu_run_script.sh BUILD_DIR (unused: the script builds its own tree)
set -uo pipefail
bin=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$work/stubs" "$work/repo"
cat > "$work/stubs/cmake" <<'S'
#!/bin/bash
if [ "$1" = "--build" ]; then
  sleep "${BUILD_SLEEP:-0}"
  mkdir -p "$2"
  printf '#!/bin/bash\necho kernel lab "$@"; exit ${BENCH_RC:-0}\n' > "$2/cpets-bench"; chmod +x "$2/cpets-bench"
  echo "ptxas info    : 0 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads"
  exit "${BUILD_RC:-0}"
fi
exit "${CONF_RC:-0}"
S
printf '#!/bin/bash\necho ctest; exit ${CTEST_RC:-0}\n' > "$work/stubs/ctest"
printf '#!/bin/bash\necho no GPU here; exit 9\n' > "$work/stubs/nvidia-smi"
printf '#!/bin/bash\necho sanitizer "$@"; [ "$2" = "${SAN_FAIL:-none}" ] && exit 1; exit 0\n' > "$work/stubs/compute-sanitizer"
chmod +x "$work/stubs/"*
cp "$root/tools/gpu_run.sh" "$work/repo/"

run() {  # run ENV…: the script's exit status, its output in $work/out.txt
  (cd "$work/repo" && env "$@" PATH="$work/stubs:$PATH" OUT="$work/out" bash gpu_run.sh > "$work/out.txt" 2>&1)
}
run X=0
check "all steps ok exits 0" test $? -eq 0
check "…and says so" contains "$work/out.txt" "all steps ok"
check "…counting the functions with register spills" contains "$work/out.txt" "ptxas functions with spills: 1"
check "…keeping every log" bash -c "ls $work/out/build.log $work/out/ctest_gpu.log $work/out/bench_kernels.log $work/out/bench_train_demo_fp32.log >/dev/null"
for preset in demo full; do
  for precision in fp32 tf32 bf16; do
    check "…with a $preset training step in $precision beside PyTorch's" \
      contains "$work/out/bench_train_${preset}_$precision.log" "train --preset $preset --device cuda --precision $precision"
  done
done
for tool in memcheck racecheck synccheck initcheck; do
  check "…and compute-sanitizer's $tool on the sanitizer binary" \
    contains "$work/out/sanitize_$tool.log" "sanitizer --tool $tool --error-exitcode 1 build-gpu/test_gpu_sanitize"
done
for case in "CONF_RC=1 configure" "BUILD_RC=2 build" "CTEST_RC=8 gpu tests" "BENCH_RC=3 kernel lab" \
            "SAN_FAIL=racecheck compute-sanitizer racecheck"; do
  env_var=${case%% *}
  step=${case#* }
  run "$env_var"
  check "a failing $step exits 1" test $? -eq 1
  check "…and names it" grep -q "^FAILED: .*$step" "$work/out.txt"
done
run CTEST_RC=8
check "a failing test run still runs the kernel lab" contains "$work/out/bench_kernels.log" "kernel lab"
# The time budget (a device call runs 10 minutes at most): steps that no longer fit are listed as
# not run and the script exits 2, never "all steps ok".
run GPU_RUN_BUDGET_S=0
check "no budget left: exit 2" test $? -eq 2
check "…naming what did not run" contains "$work/out.txt" "NOT RUN: configure"
run GPU_RUN_BUDGET_S=21 BUILD_SLEEP=2
check "a budget spent by the build: exit 2" test $? -eq 2
check "…listing the steps after it" contains "$work/out.txt" "NOT RUN: gpu tests compute-sanitizer memcheck training step, demo, fp32"
check "…and not claiming success" bash -c "! grep -q 'all steps ok' $work/out.txt"
finish
