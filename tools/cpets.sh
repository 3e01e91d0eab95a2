#!/usr/bin/env bash
# cpets — one entry point for a newcomer:
#   tools/cpets.sh demo    install what is missing, build, train on the phantom cohort until the CSF signal reaches the image, evaluate (--long: until it beats the mean PET)
#   tools/cpets.sh test    install what is missing, build, run every test
#   tools/cpets.sh build | install | bench [args…]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${CPETS_BUILD_DIR:-$root/build}
jobs=${CPETS_JOBS:-$(nproc)}

# Debian packages the build, the tests and the phantom generator need.
packages=(cmake g++ make pkg-config libeigen3-dev libnifti2-dev nifti-bin doctest-dev nlohmann-json3-dev
          libcli11-dev libpng-dev zlib1g-dev libboost-math-dev mricron-data libopenmpi-dev openmpi-bin)

# The fuzzers (tests/fuzz) are a second, clang-built tree: libFuzzer, ASan and UBSan.
fuzz_packages=(clang libclang-rt-dev libomp-dev)

# Only for `bench`: the baseline measured in the same run is PyTorch 2.x from PyPI (oneDNN
# convolutions, fused attention) in a virtual environment made once; CPETS_TORCH_PYTHON names
# another Python with torch instead. Debian's PyTorch 1.13 is the fallback where PyPI is out of
# reach (the bench output names it as such).
bench_packages=(python3-venv python3-pip libopenblas0-openmp)
torch_venv=${CPETS_TORCH_VENV:-$HOME/.cache/cpets/torch-venv}

torch_baseline() {
  [ -n "${CPETS_TORCH_PYTHON:-}" ] && return 0
  [ -x "$torch_venv/bin/python" ] && "$torch_venv/bin/python" -c "import torch" 2>/dev/null && return 0
  echo "cpets: installing PyTorch 2.x from PyPI into $torch_venv (once; a few GB)"
  if python3 -m venv "$torch_venv" && "$torch_venv/bin/pip" install -q torch numpy; then return 0; fi
  echo "cpets: pip install torch failed; falling back to Debian's python3-torch (PyTorch 1.13)"
  rm -rf "$torch_venv"
  install python3-torch python3-numpy
}

install() {
  local missing=()
  for p in "${packages[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "cpets: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

configure_and_build() {
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release ${CPETS_CMAKE_ARGS:-}
  cmake --build "$build" -j "$jobs"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  install) install ;;
  build) install; configure_and_build ;;
  test)
    install "${fuzz_packages[@]}"
    configure_and_build
    (cd "$build" && ctest --output-on-failure -j "$jobs" "$@")
    # The input parsers under libFuzzer + ASan/UBSan, CPETS_FUZZ_SECONDS (30) each, from the
    # committed seeds; CPETS_FUZZ=0 skips them.
    if [ "${CPETS_FUZZ:-1}" != 0 ]; then
      fuzz_build=${CPETS_FUZZ_BUILD:-$root/build-fuzz}
      CXX=clang++ CC=clang cmake -S "$root" -B "$fuzz_build" -DCPETS_FUZZ=ON -DCPETS_CUDA=OFF \
        -DCPETS_FUZZ_SECONDS="${CPETS_FUZZ_SECONDS:-30}" > /dev/null
      cmake --build "$fuzz_build" -j "$jobs"
      (cd "$fuzz_build" && ctest --output-on-failure -V -L fuzz | grep -E "fuzz_[a-z]+: |FAILED|tests passed|tests failed")
    fi
    ;;
  bench)
    install "${bench_packages[@]}"
    torch_baseline
    configure_and_build
    "$build/cpets-bench" "$@"
    ;;
  demo)
    # The vertical slice: phantom cohort → training until the tabular inputs reach the image →
    # synthesised PET → metrics against the untrained model, the mean training PET and the
    # tabular reference → counterfactuals against the phantom's truth. `demo --long` then keeps
    # training (in chunks of CPETS_DEMO_CHUNK steps) until the synthetic PET also beats the mean
    # image on MAE and SSIM on the test split.
    long=0
    if [ "${1:-}" = "--long" ]; then long=1; shift; fi
    install
    configure_and_build
    out=${CPETS_DEMO_DIR:-$root/out/demo}
    budget=${CPETS_DEMO_STEPS:-1500}
    subjects=${CPETS_DEMO_SUBJECTS:-400}
    bin=$build
    mkdir -p "$out"
    start=$(date +%s)
    echo "== 1/4 phantom cohort ($subjects subjects, AV45, three counterfactual worlds) -> $out/cohort"
    "$bin/cpets-phantom" --out "$out/cohort" --subjects "$subjects" --seed 1 --do apoe4-1 --do 'apoe4-1,abeta*1' \
      --do 'abeta*0.5' --montage --no-progress "$@"
    "$bin/cpets-data" pair "$out/cohort/cohort.csv" --out "$out/cohort/paired.csv" | sed -n '2,3p'
    echo "== 2/4 training the demo preset until the conditional path is on (budget $budget steps) -> $out/run"
    rm -rf "$out/run" "$out/eval" "$out/infer"
    "$bin/cpets-train" --config "$root/configs/demo.json" --set data.cohort="$out/cohort" --out "$out/run" \
      --max-steps "$budget" --until-conditional
    steps=$(grep '"type":"step"' "$out/run/train.jsonl" | tail -n 1 | sed 's/.*"step":\([0-9]*\).*/\1/')
    evaluate() {
      "$bin/cpets-eval" --checkpoint "$out/run" --cohort "$out/cohort" --out "$out/eval" --untrained --quiet
    }
    echo "== 3/4 held-out test split: trained vs untrained vs the mean training PET; counterfactuals vs the truth"
    evaluate
    if [ "$long" = 1 ]; then
      chunk=${CPETS_DEMO_CHUNK:-300}
      max=${CPETS_DEMO_MAX_STEPS:-6000}
      steps=${steps:-$budget}
      until grep -Eq '"beats_mean_pet_on_mae_and_ssim": "?true' "$out/eval/metrics.json"; do
        [ "$steps" -ge "$max" ] && { echo "demo --long: still not better than the mean PET after $steps steps"; break; }
        steps=$((steps + chunk))
        echo "== --long: training on to step $steps ($(( ($(date +%s) - start) / 60 )) min so far)"
        "$bin/cpets-train" --resume "$out/run" --max-steps "$steps" --no-progress | tail -n 3
        evaluate
      done
    fi
    echo "== 4/4 counterfactual PET: do(APOE4 - 1) and do(ABETA x 0.5) for the test split, beside the phantom's truth"
    "$bin/cpets-infer" --checkpoint "$out/run" --cohort "$out/cohort" --split test --do apoe4-1 --do 'abeta*0.5' \
      --out "$out/infer" | sed -n '/^intervention effects/,$p'
    echo "demo: done in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
    echo "   report:          $out/eval/report.html (metrics, counterfactual table, training curves)"
    echo "   montages:        $out/eval/montage/ (real | synthetic | error), $out/cohort/montage/"
    echo "   counterfactuals: $out/infer/"
    echo "   training:        $out/run/train.jsonl, $out/run/curves.html"
    ;;
  *)
    sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    [ "$cmd" = help ] || exit 2
    ;;
esac
