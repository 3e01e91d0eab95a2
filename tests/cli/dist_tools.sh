#!/usr/bin/env bash
# End-to-end check of data-parallel cpets-train as a user launches it: two CPU ranks under mpirun
# (one log, one set of checkpoints, the same steps as one process with the global batch), and the
# failures: a rank started with another config, a rank killed mid-run, a torchrun-style launch of
# CPU ranks, contradictory launcher variables.
# Usage: dist_tools.sh BUILD_DIR
set -uo pipefail
bin=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if ! command -v mpirun > /dev/null; then
  echo "skipped: no mpirun (apt-get install openmpi-bin libopenmpi-dev)"
  exit 77
fi
# CI containers run as root; two ranks on a 2-core machine oversubscribe it.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mpi=(mpirun -np 2 --oversubscribe --bind-to none)
tiny=(--config "$root/configs/demo.json" --set model.preset=tiny --set train.perceptual=none --set data.max_val_sessions=2
      --set train.discriminator=false --no-progress --threads 1)

"$bin/cpets-phantom" --out "$work/cohort" --subjects 14 --seed 5 --no-progress > /dev/null 2>&1
tiny+=(--set data.cohort="$work/cohort")

# --- two ranks × batch 1 against one process × batch 2 -------------------------------------------
"${mpi[@]}" "$bin/cpets-train" "${tiny[@]}" --set train.batch_size=1 --out "$work/dp" --max-steps 4 > "$work/dp.log" 2>&1
check "mpirun -np 2 cpets-train exits 0" test $? -eq 0
check "the start line records 2 ranks over MPI" bash -c "grep '\"type\":\"start\"' $work/dp/train.jsonl | grep -q '\"ranks\":2' && grep -q '\"communicator\":\"mpi\"' $work/dp/train.jsonl"
check "one log line per step (rank 0 writes alone)" test "$(grep -c '"type":"step"' "$work/dp/train.jsonl")" -eq 4
check "one 'done' line" test "$(grep -c '^done:' "$work/dp.log")" -eq 1
check "the header names the ranks and the global batch" contains "$work/dp.log" "batches of 1 × 2 ranks = 2 per epoch"
check "the all-reduce figures are reported" bash -c "grep -q 'hidden behind the backward pass' $work/dp.log && grep -q '\"type\":\"data_parallel\"' $work/dp/train.jsonl"
check "a checkpoint is written" test -f "$work/dp/checkpoints/step-00000004.safetensors"
"$bin/cpets-train" "${tiny[@]}" --set train.batch_size=2 --out "$work/one" --max-steps 4 > /dev/null 2>&1
# The logged L1 of each step, to 4 significant digits: the two runs differ by float round-off only.
l1s() { grep '"type":"step"' "$1" | sed -E 's/.*"pet_l1":([^,]*).*/\1/' | xargs printf '%.4g\n'; }
check "the same L1 losses as one process with batch 2" bash -c "$(declare -f l1s); diff <(l1s $work/dp/train.jsonl) <(l1s $work/one/train.jsonl)"

# --- two ranks: 3 steps + resumed 3 equal 6 uninterrupted steps, bit for bit ----------------------
"${mpi[@]}" "$bin/cpets-train" "${tiny[@]}" --set train.batch_size=1 --out "$work/dp6" --max-steps 6 > /dev/null 2>&1
"${mpi[@]}" "$bin/cpets-train" "${tiny[@]}" --set train.batch_size=1 --out "$work/dp3" --max-steps 3 > /dev/null 2>&1
"${mpi[@]}" "$bin/cpets-train" --resume "$work/dp3" --max-steps 6 --no-progress --threads 1 > /dev/null 2>&1
steps() { grep '"type":"step"' "$1" | sed -E 's/"seconds":[^,}]*//'; }
check "2 ranks resumed: the same losses as uninterrupted, bit for bit" bash -c "$(declare -f steps); diff <(steps $work/dp6/train.jsonl) <(steps $work/dp3/train.jsonl) > /dev/null"
tensor_bytes() { local n; n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }
check "… and the same weights and Adam states" bash -c "$(declare -f tensor_bytes); cmp -s <(tensor_bytes $work/dp6/checkpoints/step-00000006.safetensors) <(tensor_bytes $work/dp3/checkpoints/step-00000006.safetensors)"

# --- resume the 2-rank run in one process: the global batch must be kept -------------------------
"$bin/cpets-train" --resume "$work/dp" --max-steps 5 --no-progress --threads 1 > "$work/resume1.log" 2>&1
check "resuming 2 ranks × 1 with 1 rank × 1 exits 2" test $? -eq 2
check "… naming the global batch and the fix" bash -c "grep -q 'global batch 2' $work/resume1.log && grep -q -- '--set train.batch_size=2' $work/resume1.log"
"$bin/cpets-train" --resume "$work/dp" --set train.batch_size=2 --max-steps 5 --no-progress --threads 1 > /dev/null 2>&1
check "with --set train.batch_size=2 it continues" test "$(grep -c '"type":"step"' "$work/dp/train.jsonl")" -eq 5

# --- a rank with another configuration ------------------------------------------------------------
mpirun --oversubscribe --bind-to none -np 1 "$bin/cpets-train" "${tiny[@]}" --set train.batch_size=1 --out "$work/mismatch" --max-steps 2 \
  : -np 1 "$bin/cpets-train" "${tiny[@]}" --set train.batch_size=1 --set train.seed=99 --out "$work/mismatch" --max-steps 2 \
  > "$work/mismatch.log" 2>&1
check "ranks with different configs fail" test $? -ne 0
check "… every rank says which rank differs" test "$(grep -c 'rank(s) 1 of 2 differ from rank 0 in their configuration' "$work/mismatch.log")" -ge 1
check "… and no checkpoint is written" test ! -e "$work/mismatch/checkpoints"

# --- a rank killed mid-run: the other stops within a bounded time ----------------------------------
"${mpi[@]}" "$bin/cpets-train" "${tiny[@]}" --set train.batch_size=1 --set train.checkpoint_every_steps=1 \
  --out "$work/killed" --max-steps 100000 > "$work/killed.log" 2>&1 &
launcher=$!
victim=""
for _ in $(seq 300); do  # rank 1's process, once it has trained a few steps
  if [ -f "$work/killed/train.jsonl" ] && [ "$(grep -c '"type":"step"' "$work/killed/train.jsonl")" -ge 3 ]; then
    for pid in $(pgrep -f "cpets-train.*$work/killed"); do
      tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && victim=$pid
    done
    break
  fi
  sleep 0.2
done
check "rank 1 found running" test -n "$victim"
[ -n "$victim" ] && kill -9 "$victim"
stopped=0
for _ in $(seq 60); do
  if ! kill -0 "$launcher" 2> /dev/null; then stopped=1; break; fi
  sleep 1
done
[ "$stopped" = 1 ] || kill -9 "$launcher" 2> /dev/null
wait "$launcher"
rc=$?
check "after rank 1 is killed the job ends within 60 s" test "$stopped" = 1
check "… with a failure exit code ($rc)" test "$rc" -ne 0
check "… and no half-written checkpoint" bash -c "! ls $work/killed/checkpoints | grep -q tmp"
pkill -9 -f "cpets-train.*$work/killed" 2> /dev/null

# --- Ctrl-C to mpirun: it forwards SIGINT, the ranks agree on the step, rank 0 checkpoints -------
"${mpi[@]}" "$bin/cpets-train" "${tiny[@]}" --set train.batch_size=1 --out "$work/sigint" --epochs 100000 \
  > "$work/sigint.log" 2>&1 &
launcher=$!
for _ in $(seq 300); do
  [ -f "$work/sigint/train.jsonl" ] && [ "$(grep -c '"type":"step"' "$work/sigint/train.jsonl")" -ge 3 ] && break
  sleep 0.2
done
kill -INT "$launcher"
wait "$launcher"
check "after Ctrl-C the job says where it stopped" contains "$work/sigint.log" "checkpoint written. Continue with: cpets-train --resume"
stopped_at=$(sed -nE 's/.*interrupted at step ([0-9]+);.*/\1/p' "$work/sigint.log" | head -1)
check "… and wrote that step's checkpoint (step ${stopped_at:-?})" test -f "$work/sigint/checkpoints/step-$(printf %08d "${stopped_at:-0}").safetensors"
check "… with one log line per step up to it" test "$(grep -c '"type":"step"' "$work/sigint/train.jsonl")" -eq "${stopped_at:-0}"
"${mpi[@]}" "$bin/cpets-train" --resume "$work/sigint" --epochs 100000 --max-steps $((${stopped_at:-0} + 2)) --no-progress \
  --threads 1 > /dev/null 2>&1
check "the run resumes under mpirun" test "$(grep -c '"type":"step"' "$work/sigint/train.jsonl")" -eq $((${stopped_at:-0} + 2))

# --- launches that cannot work say why ---------------------------------------------------------------
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 "$bin/cpets-train" "${tiny[@]}" --out "$work/torchrun" \
  --max-steps 1 > "$work/torchrun.log" 2>&1
check "a torchrun-style launch of CPU ranks exits 1" test $? -eq 1
check "… saying to use mpirun" contains "$work/torchrun.log" "CPU ranks communicate over MPI"
RANK=3 WORLD_SIZE=2 "$bin/cpets-train" "${tiny[@]}" --out "$work/badrank" --max-steps 1 > "$work/badrank.log" 2>&1
check "RANK ≥ WORLD_SIZE is refused naming both" contains "$work/badrank.log" "RANK=3 is not below WORLD_SIZE=2"
finish
