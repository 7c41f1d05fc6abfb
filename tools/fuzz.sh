#!/usr/bin/env bash
# tools/fuzz.sh - run every libFuzzer target for SECONDS (default 60) each.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]     targets: safetensors idx cifar image cli
#   FUZZ_SEED=0 tools/fuzz.sh ...            a random seed (default 1: CI runs repeat)
#   FUZZ_JOBS=1 tools/fuzz.sh ...            one target at a time (default: one a core)
#
# Builds the targets (make fuzz: clang++ with -fsanitize=fuzzer,address,undefined),
# replays the committed crash regressions (tests/fuzz/regressions/<target>/,
# in one process, every fresh allocation filled with 0xFF by ASan, so an input
# that reads memory nobody wrote fails the same way every time instead of
# depending on what earlier inputs left on the heap),
# then fuzzes each target from a temporary copy of its seed corpus
# (tests/fuzz/corpus/<target>/, left unmodified). A crash, a sanitizer
# report, a leak or an input slower than 30 s fails the run: the input is
# kept in build/fuzz/artifacts/<target>/ and the script exits with 1.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(safetensors idx cifar image cli)

make -s fuzz CUDA=0 -j"${JOBS:-$(nproc)}"

work=$(mktemp -d /tmp/nala_fuzz_XXXXXX)
trap 'rm -rf "$work"' EXIT
# One target: replay its regressions, then fuzz it. The report goes to
# $work/$t.report; the exit status says whether it failed.
fuzz_one() {
  local t=$1 bin=build/fuzz/fuzz_$1 art=build/fuzz/artifacts/$1
  mkdir -p "$art"
  local regs=(tests/fuzz/regressions/$t/*)
  if [ -e "${regs[0]}" ]; then
    echo "== $t: replaying ${#regs[@]} regression input(s)"
    if ! ASAN_OPTIONS="malloc_fill_byte=255:max_malloc_fill_size=1048576${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
         "$bin" -runs=1 "${regs[@]}" > "$work/$t.replay.log" 2>&1; then
      tail -30 "$work/$t.replay.log"
      echo "fuzz.sh: $t FAILED on a regression input"
      return 1
    fi
  fi
  mkdir -p "$work/$t"
  cp tests/fuzz/corpus/$t/* "$work/$t/"
  echo "== $t: fuzzing for ${SECONDS_EACH} s"
  if TMPDIR="$work" "$bin" "$work/$t" -seed="${FUZZ_SEED:-1}" -max_total_time="$SECONDS_EACH" -timeout=30 -rss_limit_mb=2560 \
       -artifact_prefix="$art/" -print_final_stats=1 > "$work/$t.log" 2>&1; then
    grep -E "^stat::number_of_executed_runs|^#[0-9]+.*DONE" "$work/$t.log" | tail -2 || true
    echo "   corpus grew from $(ls tests/fuzz/corpus/$t | wc -l) to $(ls "$work/$t" | wc -l) inputs"
  else
    tail -40 "$work/$t.log"
    echo "fuzz.sh: $t FAILED; the input is in $art/"
    return 1
  fi
}
for t in "${TARGETS[@]}"; do
  [ -x "build/fuzz/fuzz_$t" ] || { echo "fuzz.sh: no target '$t' (build/fuzz/fuzz_$t)"; exit 2; }
done
# The targets run FUZZ_JOBS at a time (default: one a core; a libFuzzer
# process uses one), each for SECONDS_EACH; the reports print in order.
jobs_max=${FUZZ_JOBS:-$(nproc)}
declare -A pid_of
running=0
for t in "${TARGETS[@]}"; do
  if [ "$running" -ge "$jobs_max" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  ( fuzz_one "$t" > "$work/$t.report" 2>&1 ) &
  pid_of[$t]=$!
  running=$((running + 1))
done
failed=()
for t in "${TARGETS[@]}"; do
  if ! wait "${pid_of[$t]}"; then failed+=("$t"); fi
  cat "$work/$t.report"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failures: ${failed[*]}"
  exit 1
fi
echo "fuzz.sh: no crash in ${#TARGETS[@]} target(s), ${SECONDS_EACH} s each"
