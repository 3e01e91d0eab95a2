#!/usr/bin/env bash
# End-to-end check of the inference tools as a user runs them: cpets-phantom writes a small
# cohort, cpets-train makes a (barely trained) checkpoint of a small model on the demo grid,
# cpets-infer synthesises one subject and a split with an intervention, cpets-eval compares the
# methods and writes its report; bad input fails with the documented exit codes and a message.
# Usage: infer_tools.sh BUILD_DIR
set -uo pipefail
bin=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run() {  # run LOG CMD... : runs, keeps stdout+stderr in LOG, returns the exit code
  local log=$1; shift
  "$@" > "$log" 2>&1
}

"$bin/cpets-phantom" --out "$work/cohort" --subjects 12 --seed 7 --do apoe4=2 --no-progress > /dev/null 2>&1
check "phantom cohort written" test -f "$work/cohort/cohort.csv" -a -f "$work/cohort/atlas/regions.json"

# A small network on the demo grid (48×64×48), two steps: enough for a real checkpoint.
run "$work/train.log" "$bin/cpets-train" --config "$(dirname "$0")/../../configs/demo.json" \
  --set data.cohort="$work/cohort" --set model.preset=tiny --set 'model.volume=[48,64,48]' \
  --set train.validate_every=0 --out "$work/run" --max-steps 2 --no-progress
check "cpets-train makes a checkpoint" bash -c "ls $work/run/checkpoints/*.safetensors > /dev/null"
if [ $fails -gt 0 ]; then cat "$work/train.log"; echo "$fails failed"; exit 1; fi

t1=$(ls "$work"/cohort/t1/*/*/t1.nii.gz | head -1)

# ---- cpets-infer, one subject ----
run "$work/one.log" "$bin/cpets-infer" --checkpoint "$work/run" --t1 "$t1" --age 74 --sex 1 --apoe4 1 \
  --education 16 --abeta 812 --out "$work/one" --do apoe4=0 --atlas "$work/cohort"
check "infer one subject exits 0" test $? -eq 0
check "infer writes the synthetic PET, counterfactual, difference and montage" \
  test -f "$work/one/pet_syn.nii.gz" -a -f "$work/one/do_apoe4=0/pet_syn.nii.gz" -a -f "$work/one/do_apoe4=0/diff.nii.gz" -a -f "$work/one/montage.png"
"$bin/cpets-data" inspect "$t1" "$work/one/pet_syn.nii.gz" > "$work/inspect.log" 2>&1
check "the synthetic PET is on the T1's grid (shape, voxel size, orientation)" \
  bash -c "[ \$(awk 'NR>1 {print \$2, \$3, \$5}' $work/inspect.log | sort -u | wc -l) -eq 1 ] && grep -q '48×64×48  ' $work/inspect.log"
check "infer prints the SUVR of the factual and the counterfactual" contains "$work/one.log" "do(apoe4=0)"

# ---- cpets-infer, a split ----
run "$work/split.log" "$bin/cpets-infer" --checkpoint "$work/run" --cohort "$work/cohort" --split test \
  --out "$work/split" --do apoe4=2 --no-montage
check "infer a split exits 0" test $? -eq 0
check "infer a split writes an index" test -f "$work/split/index.csv"
check "every indexed output exists" bash -c "tail -n +2 $work/split/index.csv | cut -d, -f4 | xargs -n1 test -f"
check "infer a split summarises the intervention per ROI" contains "$work/split.log" "ΔSUVR"
check "... next to the phantom's true effect of the same intervention" contains "$work/split.log" "true ΔSUVR"

# ---- cpets-infer, bad input ----
run "$work/bad1.log" "$bin/cpets-infer" --checkpoint "$work/run" --t1 "$t1" --age 74 --sex 1 --apoe4 1 --out "$work/x"
check "a missing tabular value exits 2" test $? -eq 2
check "... and names it" contains "$work/bad1.log" "--education"
run "$work/bad2.log" "$bin/cpets-infer" --checkpoint "$work/run" --t1 "$t1" --age 74 --sex 1 --apoe4 1 \
  --education 16 --abeta 812 --out "$work/x" --do iq=3
check "an unknown --do variable exits 2 and lists the known ones" bash -c "[ $? -eq 2 ] && grep -q 'known: age' $work/bad2.log"
run "$work/bad3.log" "$bin/cpets-infer" --checkpoint "$work/run" --t1 "$t1" --age 74 --sex 1 --apoe4 1 \
  --education 16 --abeta 812 --out "$work/x" --do tau=300
check "intervening on a CSF input the tracer's model lacks exits 2" bash -c "[ $? -eq 2 ] && grep -q 'not an input' $work/bad3.log"
run "$work/dev1.log" "$bin/cpets-infer" --checkpoint "$work/run" --t1 "$t1" --age 74 --sex 1 --apoe4 1 \
  --education 16 --abeta 812 --out "$work/x" --device gpu
check "--device gpu exits 2 naming the accepted forms" bash -c "[ $? -eq 2 ] && grep -q 'cpu, cuda or cuda:N' $work/dev1.log"
if ! nvidia-smi -L > /dev/null 2>&1; then
  run "$work/dev2.log" "$bin/cpets-infer" --checkpoint "$work/run" --t1 "$t1" --age 74 --sex 1 --apoe4 1 \
    --education 16 --abeta 812 --out "$work/x" --device cuda
  check "--device cuda without a GPU exits 2 saying why and naming --device cpu" \
    bash -c "[ $? -eq 2 ] && grep -Eq 'no CUDA backend|no usable CUDA device' $work/dev2.log && grep -q -- '--device cpu' $work/dev2.log"
fi
run "$work/bad4.log" "$bin/cpets-infer" --checkpoint "$work/nothere" --t1 "$t1" --age 74 --sex 1 --apoe4 1 \
  --education 16 --abeta 812 --out "$work/x"
check "a missing checkpoint exits 1 and names the path" bash -c "[ $? -eq 1 ] && grep -q nothere $work/bad4.log"
run "$work/bad5.log" "$bin/cpets-infer" --checkpoint "$work/run" --t1 "$work/cohort/cohort.csv" --age 74 --sex 1 \
  --apoe4 1 --education 16 --abeta 812 --out "$work/x"
check "a T1 that is not NIfTI exits 1 and names the file" bash -c "[ $? -eq 1 ] && grep -q 'cohort.csv' $work/bad5.log"
run "$work/bad6.log" "$bin/cpets-infer" --checkpoint "$work/run" --out "$work/x"
check "neither --t1 nor --cohort exits 2" test $? -eq 2
run "$work/bad7.log" "$bin/cpets-infer" --checkpoint "$work/run" --t1 "$t1" --age 74 --sex 1 --apoe4 3 \
  --education 16 --abeta 812 --out "$work/x"
check "APOE4 = 3 exits 2" test $? -eq 2

# ---- cpets-eval ----
run "$work/eval.log" "$bin/cpets-eval" --checkpoint "$work/run" --cohort "$work/cohort" --out "$work/eval" \
  --untrained --montages 1 --quiet --pad-ms-ssim
check "eval exits 0" test $? -eq 0
check "eval writes report.html, metrics.json and a montage" \
  bash -c "test -f $work/eval/report.html -a -f $work/eval/metrics.json && ls $work/eval/montage/*.png > /dev/null"
check "eval prints all three methods" bash -c "grep -q trained $work/eval.log && grep -q untrained $work/eval.log && grep -q mean-PET $work/eval.log"
check "eval prints the paired t-tests against mean-PET" contains "$work/eval.log" "trained vs mean-PET"
check "the HTML holds the table, plots and montage" \
  bash -c "grep -q 'MS-SSIM' $work/eval/report.html && grep -q '<svg' $work/eval/report.html && grep -q 'montage/' $work/eval/report.html"
check "metrics.json holds comparisons" contains "$work/eval/metrics.json" '"comparisons"'
check "--pad-ms-ssim gives MS-SSIM on the small demo grid" contains "$work/eval/metrics.json" '"ms_ssim_s05"'
run "$work/eval2.log" "$bin/cpets-eval" --checkpoint "$work/run" --cohort "$work/cohort" --out "$work/eval2" \
  --no-mean-pet --montages 0 --quiet
check "without padding, MS-SSIM is left out on the demo grid and the note says why" \
  bash -c "! grep -q '\"ms_ssim' $work/eval2/metrics.json && grep -q 'MS-SSIM σ0.5 (window 5): not computed' $work/eval2.log"
run "$work/bad8.log" "$bin/cpets-eval" --checkpoint "$work/run" --cohort "$work/cohort" --out "$work/x" --split nope
check "eval with a bad split exits 2" test $? -eq 2
run "$work/bad9.log" "$bin/cpets-eval" --checkpoint "$work/run" --cohort "$work/nocohort" --out "$work/x"
check "eval on a missing cohort exits 1 and names it" bash -c "[ $? -eq 1 ] && grep -q nocohort $work/bad9.log"

finish
