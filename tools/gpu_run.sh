#!/usr/bin/env bash
# On a lent GPU machine (the `device` tool; see docs/architecture.md "Running on a lent GPU
# machine"): unpack the carried .deb build dependencies, build with CUDA, run the gpu-labelled
# tests and the kernel lab, and leave every output in $OUT (or ./gpu-out).
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

BUILD=build-gpu
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCPETS_CUDA=ON -DCPETS_CUDA_ARCHS=90 \
  -DCMAKE_PREFIX_PATH="$DEPS/usr" -DCPETS_CUDNN_ROOT="$CUDNN_ROOT" \
  -DCMAKE_INCLUDE_PATH="$DEPS/usr/include" -DCMAKE_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu" \
  2>&1 | tail -20
export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu:${CUDNN_ROOT:+$CUDNN_ROOT/lib:}${LD_LIBRARY_PATH:-}"
cmake --build "$BUILD" -j"$(nproc)" 2>&1 | grep -E "error|warning|registers|spill|Built target" > "$OUT/build.log"
tail -5 "$OUT/build.log"
(cd "$BUILD" && ctest -L gpu --output-on-failure 2>&1 | tee "$OUT/ctest_gpu.log" | tail -40)
[ -x "$BUILD/cpets-bench" ] && "$BUILD/cpets-bench" kernels 2>&1 | tee "$OUT/bench_kernels.log" | tail -60
exit 0
