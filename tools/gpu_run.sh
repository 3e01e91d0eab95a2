#!/usr/bin/env bash
# On a lent GPU machine (the `device` tool; see docs/architecture.md "Running on a lent GPU
# machine"): unpack the carried .deb build dependencies, build with CUDA, run the gpu-labelled
# tests, compute-sanitizer's four tools, the kernel lab and training steps on the GPU beside
# PyTorch's in fp32, tf32 and bf16, and leave every output in $OUT (or ./gpu-out).
#   tools/gpu_run.sh            # from the repository root, with .deps/ carried along
# Device time is scarce, so everything happens in one call and every step's log is kept even
# when a later step fails.
set -u
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_run.log") 2>&1

nvidia-smi || true
DEPS=/opt/deps
if [ -d .deps ]; then
  mkdir -p "$DEPS"
  for f in .deps/*.deb; do dpkg -x "$f" "$DEPS"; done
fi
# cuDNN: the toolkit's, else the one inside PyTorch's nvidia/cudnn package.
CUDNN_ROOT=""
if [ ! -f /usr/local/cuda/include/cudnn.h ]; then
  CUDNN_ROOT=$(/usr/bin/python3 -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))' 2>/dev/null ||
               python3 -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))' 2>/dev/null || true)
fi
echo "cuDNN root: ${CUDNN_ROOT:-toolkit}"

# Each step's exit status counts: the script exits 1 when any step failed (build, configure,
# tests, benchmark), after running the rest, so one call still brings back every log.
failed=()
step() {  # step NAME LOG COMMAND...: the command's whole output goes to LOG, its tail to the screen
  local name=$1 log=$2; shift 2
  echo "== $name"
  "$@" > "$log" 2>&1
  local rc=$?
  tail -25 "$log"
  if [ $rc -ne 0 ]; then echo "== $name FAILED (exit $rc; full log $log)"; failed+=("$name"); else echo "== $name ok"; fi
  return $rc
}

BUILD=build-gpu
export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu:${CUDNN_ROOT:+$CUDNN_ROOT/lib:}${LD_LIBRARY_PATH:-}"
if step configure "$OUT/configure.log" cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCPETS_CUDA=ON \
     -DCPETS_CUDA_ARCHS=90 -DCMAKE_PREFIX_PATH="$DEPS/usr" -DCPETS_CUDNN_ROOT="$CUDNN_ROOT" \
     -DCMAKE_INCLUDE_PATH="$DEPS/usr/include" -DCMAKE_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu" &&
   step build "$OUT/build.log" cmake --build "$BUILD" -j"$(nproc)"; then
  # Register spills in our kernels (ptxas -v output of the build): reported, not fatal.
  grep -B3 -E "[1-9][0-9]* bytes spill (stores|loads)" "$OUT/build.log" > "$OUT/spills.log" || true
  echo "ptxas functions with spills: $(grep -cE '[1-9][0-9]* bytes spill stores' "$OUT/spills.log")"
  step "gpu tests" "$OUT/ctest_gpu.log" bash -c "cd '$BUILD' && ctest -L gpu --output-on-failure"
  # compute-sanitizer on the small binary made for it (every conv3d/GEMM pass and precision with
  # tail tiles and split K, attention with a split pass, norms, reductions): each tool's findings
  # fail the step. Skipped with a note where the sanitizer is not installed.
  if command -v compute-sanitizer > /dev/null || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
    SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    for tool in memcheck racecheck synccheck initcheck; do
      step "compute-sanitizer $tool" "$OUT/sanitize_$tool.log" \
        timeout 240 "$SAN" --tool "$tool" --error-exitcode 1 "$BUILD/test_gpu_sanitize"
    done
  else
    echo "== compute-sanitizer not found: the sanitizer steps did not run"
  fi
  step "kernel lab" "$OUT/bench_kernels.log" "$BUILD/cpets-bench" kernels
  # Whole training steps on the GPU beside PyTorch's on the same GPU, in each precision (PyTorch:
  # TF32 off / on, bf16 autocast): the demo preset, then the full one (96×128×96, batch 2).
  for precision in fp32 tf32 bf16; do
    step "training step, demo, $precision" "$OUT/bench_train_demo_$precision.log" \
      timeout 150 "$BUILD/cpets-bench" train --preset demo --device cuda --precision "$precision" --rounds 1 --steps 5 --warmup 2
    step "training step, full, $precision" "$OUT/bench_train_full_$precision.log" \
      timeout 200 "$BUILD/cpets-bench" train --preset full --device cuda --precision "$precision" --rounds 1 --steps 3 --warmup 1
  done
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all steps ok"
