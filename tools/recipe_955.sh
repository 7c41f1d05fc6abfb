#!/usr/bin/env bash
# tools/recipe_955.sh - pico on Fashion-MNIST, the longer recipe aimed at 95.5%
# test top-1 (mean of 3 seeds, each run's epoch chosen on 5,000 held-out
# training images, never on the test set). One command on a GPU machine:
#
#   tools/recipe_955.sh [--epochs N] [--seeds "0 1 2"] [--jobs 3] [--out DIR]
#                       [--nala PATH] [--data-dir DIR] [--device cuda|cpu]
#                       [-- more nala train options]
#
# The three seeds train at once on one GPU (pico is small and launch-bound,
# so they share it well). What changes from the README's GPU recipe:
#   --ema 0.999       evaluation (and the chosen weights) use an exponential
#                     moving average of the weights
#   --tta-flip        evaluation averages the logits of each image and its mirror
#   --drop-path 0.1, --erase 0.35   a little more regularisation for a longer run
#   --val 5000        the validation split that chooses the epoch
# The report (README.md: the table, per-run results and the exact commands) and
# every run's folder go into a new results folder (tools/ablate.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
epochs=80 seeds="0 1 2" jobs=3 pass=()
while [ $# -gt 0 ]; do
  case $1 in
    --epochs) epochs=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --out|--nala|--data-dir|--device) pass+=("$1" "$2"); shift 2 ;;
    --) shift; break ;;  # the rest: more nala train options, after the recipe's (the last value wins)
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "recipe_955.sh: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
  esac
done
# The recipe's options; one given again after -- replaces the recipe's value.
recipe=(--batch-size 256 --lr 2e-3 --min-lr 1e-5 --warmup-epochs 3 --weight-decay 0.05 --label-smoothing 0.1
        --drop-path 0.1 --crop-pad 2 --hflip --erase 0.35 --ema 0.999 --tta-flip)
given=" $* "
args=()
i=0
while [ $i -lt ${#recipe[@]} ]; do
  opt=${recipe[$i]} next=${recipe[$((i + 1))]:-}
  n=1; [[ -n $next && $next != --* ]] && n=2
  [[ $given == *" $opt "* ]] || args+=("${recipe[@]:$i:$n}")
  i=$((i + n))
done
exec tools/ablate.sh --kinds nala --seeds "$seeds" --epochs "$epochs" --jobs "$jobs" --val 5000 --recipe none \
  --title "pico on Fashion-MNIST: the 95.5% recipe" "${pass[@]}" -- "${args[@]}" "$@"
