#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time from committed seeds (read-only; new inputs go to a
# scratch corpus) and prints what it did. Usage: run_fuzzer.sh FUZZER SECONDS SEED_DIR...
# Exit 0: no crash, leak, timeout or sanitizer report; otherwise libFuzzer's status, with the
# crashing input kept next to the scratch corpus (its path is printed).
set -uo pipefail
fuzzer=$1 seconds=$2
shift 2
work=$(mktemp -d "${TMPDIR:-/tmp}/cpets_fuzz.XXXXXX")
mkdir -p "$work/corpus" "$work/artifacts"
"$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$work/corpus" "$@" > "$work/log" 2>&1
status=$?
grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)" "$work/log" | tail -4
cov=$(grep -Eo "cov: [0-9]+ ft: [0-9]+" "$work/log" | tail -1)
echo "$(basename "$fuzzer"): ${seconds} s, ${cov:-no coverage line}, corpus $(ls "$work/corpus" | wc -l) new inputs"
if [ $status -ne 0 ]; then
  tail -40 "$work/log"
  echo "FAILED: $(basename "$fuzzer") (status $status); reproducer: $(ls "$work"/artifacts/* 2>/dev/null | head -1)"
  exit $status
fi
rm -rf "$work"
