#!/usr/bin/env bash
# End-to-end check of the data tools as a user runs them: cpets-phantom writes a cohort (with and
# without injected faults), cpets-data pairs and inspects it, and bad input fails loudly.
# Usage: data_tools.sh BUILD_DIR
set -uo pipefail
bin=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$bin/cpets-phantom" --out "$work/clean" --subjects 12 --seed 7 --tracer both --no-progress > "$work/phantom.log" 2>&1
check "phantom exits 0" test $? -eq 0
check "phantom writes the ADNI-like layout" test -f "$work/clean/cohort.csv" -a -f "$work/clean/truth.csv" -a -f "$work/clean/atlas/labels.nii.gz" -a -f "$work/clean/atlas/regions.json"
check "phantom writes both tracers" bash -c "ls $work/clean/pet/*/*/av45.nii.gz >/dev/null && ls $work/clean/pet/*/*/av1451.nii.gz >/dev/null"

"$bin/cpets-data" pair "$work/clean/cohort.csv" --out "$work/clean/paired.csv" --check-images > "$work/pair.log" 2>&1
check "pair exits 0 on a clean cohort" test $? -eq 0
check "pair writes the paired table with a split column" bash -c "head -1 $work/clean/paired.csv | grep -q ',split$'"
check "pair writes split.json with training ranges" contains "$work/clean/split.json" '"ABETA"'
check "pair reports the 6-month rule" contains "$work/pair.log" "rejected by the 6-month rule"
check "pair --check-images says how many sessions it read" contains "$work/pair.log" "sessions read: all readable"

mkdir -p "$work/tableonly" && cp "$work/clean/cohort.csv" "$work/tableonly/"
"$bin/cpets-data" pair "$work/tableonly/cohort.csv" --out "$work/tableonly/paired.csv" --check-images > "$work/noimg.log" 2>&1
check "--check-images fails when no image exists" test $? -eq 1
check "... and says where it looked" contains "$work/noimg.log" "has its T1 and PET under"

"$bin/cpets-data" inspect "$work"/clean/t1/*/*/t1.nii.gz > "$work/inspect.log" 2>&1
check "inspect exits 0 on good volumes" test $? -eq 0
check "inspect prints shape and affine source" contains "$work/inspect.log" "48×64×48"

"$bin/cpets-phantom" --out "$work/faulty" --subjects 12 --seed 7 --faults missing_csf,bad_date,truncated_image,not_nifti,wrong_grid,nan_voxel --no-progress > /dev/null 2>&1
"$bin/cpets-data" pair "$work/faulty/cohort.csv" --out "$work/faulty/paired.csv" > "$work/fail.log" 2>&1
check "pair fails on missing/unparseable values by default" test $? -ne 0
check "the failure names the file and the column" bash -c "grep -q 'cohort.csv:[0-9]*: ' $work/fail.log"
"$bin/cpets-data" pair "$work/faulty/cohort.csv" --out "$work/faulty/paired.csv" --on-missing skip > "$work/skip.log" 2>&1
check "pair --on-missing skip goes on" test $? -eq 0
check "skipping warns" contains "$work/skip.log" "warning: skipping"

faulty_images=$(grep -E 'truncated_image|not_nifti|nan_voxel' "$work/faulty/faults.csv" | grep -oE '(t1|pet)/[^,]*\.nii(\.gz)?' | sed "s|^|$work/faulty/|")
"$bin/cpets-data" inspect $faulty_images > "$work/bad_inspect.log" 2>&1
check "inspect exits 1 on malformed volumes" test $? -eq 1
check "inspect names the malformed file" bash -c "grep -q FAILED $work/bad_inspect.log"

# One exit-code contract for every tool: 0 done, 1 failure (data, files), 2 usage.
"$bin/cpets-phantom" --out "$work/x" --do apoe4=7 > "$work/usage.log" 2>&1
check "phantom: a bad --do is a usage error (2)" test $? -eq 2
check "... named" contains "$work/usage.log" "error: --do 'apoe4=7'"
"$bin/cpets-phantom" --bogus > /dev/null 2>&1
check "phantom: an unknown flag exits 2" test $? -eq 2
"$bin/cpets-data" pair --bogus > /dev/null 2>&1
check "data: an unknown flag exits 2" test $? -eq 2
"$bin/cpets-data" pair "$work/absent.csv" --out "$work/p.csv" > "$work/absent.log" 2>&1
check "data: a missing table exits 1" test $? -eq 1
check "... naming it" contains "$work/absent.log" "absent.csv"
# prepare: the demo-grid (3 mm) phantom put on a 1.5 mm grid, then refused as a second output.
"$bin/cpets-data" prepare "$work/clean" --out "$work/prepared" --voxel-mm 1.5 --shape 24,32,24 > "$work/prepare.log" 2>&1
check "prepare exits 0" test $? -eq 0
check "prepare says what it resampled" contains "$work/prepare.log" "3 mm RAS 48×64×48 → 1.5 mm RAS 24×32×24"
check "prepare copies the tables" cmp -s "$work/clean/cohort.csv" "$work/prepared/cohort.csv"
"$bin/cpets-data" inspect "$work/prepared/atlas/labels.nii.gz" > "$work/prepared_inspect.log" 2>&1
check "prepared volumes are valid NIfTI" test $? -eq 0
"$bin/cpets-data" prepare "$work/clean" --out "$work/prepared" > "$work/prepare2.log" 2>&1
check "prepare into a non-empty folder exits 1" test $? -eq 1
check "... saying why" contains "$work/prepare2.log" "not empty"
"$bin/cpets-data" prepare "$work/clean" --out "$work/p3" --voxel-mm -1 > /dev/null 2>&1
check "prepare: a negative voxel size is a usage error (2)" test $? -eq 2

"$bin/cpets-bench" ops --torch "$work/absent.json" --filter no_case_has_this_name > "$work/bench.log" 2>&1
check "bench: a bad --torch file exits 1 with a message (no terminate)" test $? -eq 1
check "... naming it" contains "$work/bench.log" "absent.json"
"$bin/cpets-bench" nope > /dev/null 2>&1
check "bench: an unknown subcommand exits 2" test $? -eq 2
"$bin/cpets-bench" train --preset tiny --device gpu --torch none > "$work/bench_dev.log" 2>&1
check "bench train: a bad --device exits 2 (a usage error)" test $? -eq 2
check "... naming the option and the accepted forms" contains "$work/bench_dev.log" "--device gpu (train.device): use cpu, cuda or cuda:N"
"$bin/cpets-bench" train --preset tiny --precision bf16 --torch none > "$work/bench_prec.log" 2>&1
check "bench train: --precision bf16 on the CPU exits 2" test $? -eq 2
check "... saying the CPU computes in fp32 and how to go on" contains "$work/bench_prec.log" "--device cuda"
"$bin/cpets-bench" train --preset tiny --precision fp16 --torch none > "$work/bench_prec2.log" 2>&1
check "bench train: an unknown --precision exits 2" test $? -eq 2
"$bin/cpets-bench" train --preset tiny --device cuda --torch none > "$work/bench_cuda.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then  # a CPU-only build, or a CUDA build on a machine without a usable GPU
  check "bench train --device cuda without a usable GPU exits 2" test $rc -eq 2
  check "... naming the device and why" contains "$work/bench_cuda.log" "cuda:0: "
  check "... and the way out" contains "$work/bench_cuda.log" "--device cpu"
else
  echo "note: a GPU is usable here; the --device cuda refusal was not exercised"
fi

finish
