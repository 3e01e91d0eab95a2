#!/usr/bin/env bash
# End-to-end check of cpets-train as a user runs it: a few steps of the tiny preset on a phantom
# cohort (checkpoints, log, progress lines), an exact resume from the run folder, --print-model,
# and the exit codes and messages of bad configurations and bad data.
# Usage: train_tools.sh BUILD_DIR
set -uo pipefail
bin=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The tiny preset (16³ centre crop of the phantom's 48×64×48 volumes), no perceptual weights.
tiny=(--set model.preset=tiny --set train.perceptual=none --set data.max_val_sessions=2 --set train.batch_size=2)

"$bin/cpets-phantom" --out "$work/cohort" --subjects 14 --seed 5 --no-progress > /dev/null 2>&1
check "phantom cohort written" test -f "$work/cohort/cohort.csv"

# --- a short run ----------------------------------------------------------------------------------
"$bin/cpets-train" --config "$root/configs/demo.json" "${tiny[@]}" --set data.cohort="$work/cohort" \
  --out "$work/run" --max-steps 6 --no-progress --threads 1 > "$work/run.log" 2>&1
check "train exits 0" test $? -eq 0
check "train writes step checkpoints and the best one" bash -c "ls $work/run/checkpoints/step-00000006.safetensors $work/run/checkpoints/step-00000006.json $work/run/checkpoints/best.safetensors >/dev/null"
check "train writes the resolved config" contains "$work/run/config.json" '"preset": "tiny"'
check "train logs one JSON line per step" test "$(grep -c '"type":"step"' "$work/run/train.jsonl")" -eq 6
check "train logs validations" contains "$work/run/train.jsonl" '"type":"validation"'
check "progress lines name step, losses and rate" bash -c "grep -q 'step 6/6 .*L1 .*steps/s' $work/run.log"
check "no temporary files left" bash -c "! ls $work/run/checkpoints | grep -q tmp"

# --- resume: 3 steps, then 3 more from the run folder, equals the 6-step run -------------------------
"$bin/cpets-train" --config "$root/configs/demo.json" "${tiny[@]}" --set data.cohort="$work/cohort" \
  --out "$work/split" --max-steps 3 --no-progress --threads 1 > /dev/null 2>&1
"$bin/cpets-train" --resume "$work/split" --max-steps 6 --no-progress --threads 1 > "$work/resume.log" 2>&1
check "resume exits 0" test $? -eq 0
check "resume says where it continues" contains "$work/resume.log" "at step 3"
steps() { grep '"type":"step"' "$1" | sed -E 's/"seconds":[^,}]*//'; }
check "resumed losses equal the uninterrupted run's, bit for bit" bash -c "$(declare -f steps); diff <(steps $work/run/train.jsonl) <(steps $work/split/train.jsonl) >/dev/null"
# The tensor bytes of a safetensors file: everything after the 8-byte length and the JSON header.
tensor_bytes() { local n; n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }
check "resumed weights and Adam states equal the uninterrupted run's" bash -c "$(declare -f tensor_bytes); cmp -s <(tensor_bytes $work/run/checkpoints/step-00000006.safetensors) <(tensor_bytes $work/split/checkpoints/step-00000006.safetensors)"

# --- Ctrl-C: a real SIGINT writes a checkpoint, exits 130, and the resumed run equals an uninterrupted one
"$bin/cpets-train" --config "$root/configs/demo.json" "${tiny[@]}" --set data.cohort="$work/cohort" \
  --out "$work/sigint" --max-steps 100000 --no-progress --threads 1 > "$work/sigint.log" 2>&1 &
pid=$!
for _ in $(seq 600); do  # up to 60 s for three logged steps
  [ "$(grep -c '"type":"step"' "$work/sigint/train.jsonl" 2>/dev/null)" -ge 3 ] && break
  sleep 0.1
done
kill -INT $pid
wait $pid
check "SIGINT during training exits 130" test $? -eq 130
check "…says where the checkpoint is and how to continue" contains "$work/sigint.log" "checkpoint written. Continue with: cpets-train --resume"
k=$(grep -c '"type":"step"' "$work/sigint/train.jsonl")
check "…with a checkpoint of the step it stopped at" test -f "$work/sigint/checkpoints/$(printf 'step-%08d' "$k").safetensors"
"$bin/cpets-train" --resume "$work/sigint" --max-steps $((k + 3)) --no-progress --threads 1 > /dev/null 2>&1
"$bin/cpets-train" --config "$root/configs/demo.json" "${tiny[@]}" --set data.cohort="$work/cohort" \
  --out "$work/straight" --max-steps $((k + 3)) --no-progress --threads 1 > /dev/null 2>&1
check "interrupted + resumed losses equal an uninterrupted run's, bit for bit" bash -c "$(declare -f steps); diff <(steps $work/straight/train.jsonl) <(steps $work/sigint/train.jsonl) >/dev/null"

"$bin/cpets-train" --config "$root/configs/demo.json" "${tiny[@]}" --set data.cohort="$work/cohort" \
  --out "$work/run" --max-steps 2 --no-progress > "$work/again.log" 2>&1
check "a fresh run into a used folder exits 2" test $? -eq 2
check "…and says how to resume" contains "$work/again.log" "--resume $work/run"

# --- --print-model --------------------------------------------------------------------------------------
"$bin/cpets-train" --config "$root/configs/demo.json" --print-model > "$work/model.txt" 2>&1
check "--print-model exits 0" test $? -eq 0
check "--print-model lists the networks" bash -c "grep -q 'G_T1 t1_decoder' $work/model.txt && grep -q 'D  discriminator' $work/model.txt"
"$bin/cpets-train" --config "$root/configs/full.json" --set train.perceptual=none --print-model > "$work/full.txt" 2>&1
check "full preset: G_T1 has 1,808,321 parameters" contains "$work/full.txt" "1,808,321"
check "full preset: D has 2,642,753 parameters" contains "$work/full.txt" "2,642,753"

# --- bad configurations: exit 2 and a message naming the key -------------------------------------
expect_config_error() {  # NAME EXPECTED-TEXT ARGS...
  local name=$1 text=$2; shift 2
  "$bin/cpets-train" "$@" --print-config > "$work/err.log" 2>&1
  local rc=$?
  check "$name exits 2" test $rc -eq 2
  check "$name names '$text'" contains "$work/err.log" "$text"
}
expect_config_error "unknown key" "train.lrr" --config "$root/configs/demo.json" --set train.lrr=1e-4
expect_config_error "wrong type" "train.batch_size" --config "$root/configs/demo.json" --set train.batch_size=two
expect_config_error "impossible value" "train.lr" --config "$root/configs/demo.json" --set train.lr=-1
expect_config_error "bad model value" "encoder_groups" --config "$root/configs/demo.json" --set model.encoder_groups=5
expect_config_error "missing perceptual weights" "train.perceptual_weights" --config "$root/configs/full.json"
expect_config_error "missing config file" "nowhere.json" --config "$work/nowhere.json"
echo '{"train": {"lr": 1e-4,}}' > "$work/broken.json"
expect_config_error "malformed JSON" "broken.json" --config "$work/broken.json"

# --- bad data: exit 1 and a message naming the file ---------------------------------------------------
rm "$(ls "$work"/cohort/pet/*/*/av45.nii.gz | head -1)"
"$bin/cpets-train" --config "$root/configs/demo.json" "${tiny[@]}" --set data.cohort="$work/cohort" \
  --out "$work/bad" --max-steps 1 --no-progress > "$work/bad.log" 2>&1
check "missing image exits 1" test $? -eq 1
check "missing image is named" contains "$work/bad.log" "av45.nii.gz"
"$bin/cpets-train" --config "$root/configs/demo.json" --out "$work/bad" --set data.cohort="$work/none" --max-steps 1 > "$work/none.log" 2>&1
check "missing cohort exits 1" test $? -eq 1
check "missing cohort is named" contains "$work/none.log" "$work/none"

finish
