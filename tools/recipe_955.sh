#!/usr/bin/env bash
# tools/recipe_955.sh - pico on Fashion-MNIST, the longer recipe aimed at 95.5%
# test top-1 (mean of 3 seeds, each run's epoch chosen on 5,000 held-out
# training images, never on the test set). One command on a GPU machine:
#
#   tools/recipe_955.sh [--epochs N] [--seeds "0 1 2"] [--jobs 3] [--out DIR]
#                       [--nala PATH] [--data-dir DIR] [--device cuda|cpu] [--val N]
#                       [--tta-shifts "1 2 3"] [-- more nala train options]
#   tools/recipe_955.sh --resume DIR [--jobs J] [--nala PATH]   (continue a run stopped early)
#
# The three seeds train at once on one GPU (pico is small and launch-bound,
# so they share it well). What changes from the README's GPU recipe:
#   --img-size 56     the 28x28 images upsampled to 56x56 (stb_image_resize): the same
#                     model and parameters, four times the tokens per stage
#   --crop-pad 4      the random crop's padding, scaled with the image
#   --batch-size 512 --lr 3e-3 --warmup-epochs 5   fewer, larger steps: at
#                     this size a step is launch-bound, so an epoch is faster
#   --ema 0.999       evaluation (and the chosen weights) use an exponential
#                     moving average of the weights
#   --tta-flip        evaluation averages the logits of each image and its mirror
#   --drop-path 0.15, --erase 0.5   more regularisation for the larger input
#   --val 5000        the validation split that chooses the epoch (--val N: another size)
#   120 epochs        (--epochs)
# Then test-time shifts chosen on validation (tools/ablate.sh --tta-shifts):
# each seed's chosen weights are evaluated on the held-out images moved 0, 1,
# 2 and 3 pixels (with the flip), and the shift with the best mean validation
# top-1 on the test set (--tta-shifts "": none).
# The report (README.md: the table, per-run results and the exact commands) and
# every run's folder go into a new results folder (tools/ablate.sh).
set -uo pipefail
# --resume DIR [--jobs J] [--nala PATH]: continue a recipe run stopped early,
# with its own settings (tools/ablate.sh --resume; DIR as given, from here).
for a in "$@"; do [ "$a" = -- ] && break; [ "$a" = --resume ] && exec "$(dirname "$0")/ablate.sh" "$@"; done
cd "$(dirname "$0")/.."
epochs=120 seeds="0 1 2" jobs=3 shifts="1 2 3" pass=()
while [ $# -gt 0 ]; do
  case $1 in
    --epochs) epochs=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --tta-shifts) shifts=$2; shift 2 ;;
    --out|--nala|--data-dir|--device|--val) pass+=("$1" "$2"); shift 2 ;;
    --) shift; break ;;  # the rest: more nala train options, after the recipe's (the last value wins)
    -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "recipe_955.sh: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
  esac
done
# The recipe's options; one given again after -- replaces the recipe's value.
recipe=(--img-size 56 --batch-size 512 --lr 3e-3 --min-lr 1e-5 --warmup-epochs 5 --weight-decay 0.05
        --label-smoothing 0.1 --drop-path 0.15 --crop-pad 4 --hflip --erase 0.5 --ema 0.999 --tta-flip)
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
  ${shifts:+--tta-shifts "$shifts"} \
  --title "pico on Fashion-MNIST: the 95.5% recipe" "${pass[@]}" -- "${args[@]}" "$@"
