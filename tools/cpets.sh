#!/usr/bin/env bash
# cpets — one entry point for a newcomer:
#   tools/cpets.sh demo    install what is missing, build, run the main job on the phantom cohort
#   tools/cpets.sh test    install what is missing, build, run every test
#   tools/cpets.sh build | install | bench [args…]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${CPETS_BUILD_DIR:-$root/build}
jobs=${CPETS_JOBS:-$(nproc)}

# Debian packages the build, the tests and the phantom generator need.
packages=(cmake g++ make pkg-config libeigen3-dev libnifti2-dev nifti-bin doctest-dev nlohmann-json3-dev
          libcli11-dev libpng-dev zlib1g-dev mricron-data)

# Only for `bench`: PyTorch (oneDNN convs) and OpenBLAS, to measure the baseline in the same run.
bench_packages=(python3-torch python3-numpy libopenblas0-openmp)

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
    install
    configure_and_build
    cd "$build"
    ctest --output-on-failure -j "$jobs" "$@"
    ;;
  bench)
    install "${bench_packages[@]}"
    configure_and_build
    "$build/cpets-bench" "$@"
    ;;
  demo)
    install
    configure_and_build
    out=${CPETS_DEMO_DIR:-$root/out/demo}
    mkdir -p "$out"
    echo "== phantom cohort -> $out/cohort"
    "$build/cpets-phantom" --out "$out/cohort" --subjects 24 --seed 1 --montage "$@"
    echo "   montages (T1 and PET slices): $out/cohort/montage/"
    echo "== data check"
    "$build/cpets-data" pair "$out/cohort/cohort.csv" --out "$out/cohort/paired.csv"
    echo "== op benchmark (the training demo arrives with the model issue)"
    echo "   (PyTorch's figures appear beside ours when python3-torch is installed; tools/cpets.sh bench ops installs it)"
    "$build/cpets-bench" ops --quick
    ;;
  *)
    sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    [ "$cmd" = help ] || exit 2
    ;;
esac
