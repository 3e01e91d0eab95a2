#!/usr/bin/env bash
# End-to-end check of cpets-classify as a user runs it: a phantom cohort with converters, a
# one-step synthesis run, two diagnosis tasks × two classifiers on the tiny preset, the tables on
# stdout and in report.html / metrics.json / CSV, a second run that trains nothing, and the exit
# codes and messages of bad command lines and bad inputs.
# Usage: classify_tools.sh BUILD_DIR
set -uo pipefail
bin=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$bin/cpets-phantom" --out "$work/cohort" --subjects 72 --seed 3 --no-progress > /dev/null 2>&1
check "phantom cohort has the progression columns" contains "$work/cohort/cohort.csv" "DX_36m,Conversion_date"
"$bin/cpets-train" --config "$root/configs/demo.json" --set model.preset=tiny --set train.perceptual=none \
  --set data.max_val_sessions=2 --set train.batch_size=2 --set data.cohort="$work/cohort" \
  --out "$work/run" --max-steps 1 --no-progress --threads 1 > /dev/null 2>&1
check "a one-step synthesis run" test -f "$work/run/checkpoints/step-00000001.safetensors"

args=(--cohort "$work/cohort" --preset tiny --seeds 2 --steps 2 --batch-size 2 --threads 1 --no-progress)
"$bin/cpets-classify" "${args[@]}" --out "$work/study" --task pmci-vs-smci,ad-vs-cn --inputs pet,tab \
  --synthetic causal-pets="$work/run" > "$work/study.log" 2>&1
check "classify exits 0" test $? -eq 0
check "stdout shows Table 2 with the synthetic row" bash -c "grep -A2 '^Table 2' $work/study.log | grep -q 'synthetic PET: causal-pets'"
check "stdout shows Table 7" contains "$work/study.log" "Table 7: AD vs CN"
check "stdout shows Table 3 with the tabular row" bash -c "grep -A2 '^Table 3' $work/study.log | grep -q 'tabular'"
check "report, metrics and CSV files written" bash -c "ls $work/study/report.html $work/study/metrics.json $work/study/table2.csv $work/study/table3.csv $work/study/table7.csv >/dev/null"
check "table2.csv has a header and two rows" test "$(wc -l < "$work/study/table2.csv")" -eq 3
check "report.html has ROC curves" contains "$work/study/report.html" "ROC curves"
check "a folder per classifier" test -f "$work/study/ad-vs-cn/pet/seed-778/checkpoint.safetensors"
check "…but none for the tabular logistic regression (nothing to train)" test ! -e "$work/study/ad-vs-cn/tab"
"$bin/cpets-classify" "${args[@]}" --out "$work/study" --task pmci-vs-smci,ad-vs-cn --inputs pet,tab \
  --synthetic causal-pets="$work/run" > "$work/again.log" 2>&1
check "a second run exits 0" test $? -eq 0
check "…and trains nothing" bash -c "! grep -q 'step 1/2' $work/again.log"
check "…with the same tables" bash -c "diff <(grep -A3 '^Table' $work/study.log) <(grep -A3 '^Table' $work/again.log) >/dev/null"

expect_exit() {  # NAME CODE EXPECTED-TEXT ARGS...
  local name=$1 code=$2 text=$3; shift 3
  "$bin/cpets-classify" "$@" > "$work/err.log" 2>&1
  local rc=$?
  check "$name exits $code" test $rc -eq "$code"
  check "$name says: $text" contains "$work/err.log" "$text"
}
expect_exit "unknown input" 2 "'ct' is not an input" "${args[@]}" --out "$work/e1" --inputs pet+ct
expect_exit "unknown task" 2 "use pmci-vs-smci or ad-vs-cn" "${args[@]}" --out "$work/e2" --task mci
expect_exit "--synthetic without a name" 2 "write NAME=RUN_FOLDER" "${args[@]}" --out "$work/e3" --synthetic "$work/run"
expect_exit "bad class weights" 2 "give two" "${args[@]}" --out "$work/e4" --class-weights 1,2,3
expect_exit "a missing cohort" 1 "$work/nowhere" --cohort "$work/nowhere" --out "$work/e5" --preset tiny
expect_exit "other split seed than the synthesis run" 1 "--split-seed 100" "${args[@]}" --out "$work/e6" \
  --split-seed 7 --synthetic causal-pets="$work/run"
expect_exit "an experiment folder without runs" 1 "no trained method" "${args[@]}" --out "$work/e7" --experiment "$work"
finish
