#!/usr/bin/env bash
# tools/demo.sh - the main job: install what is missing, build, train pico
# on Fashion-MNIST on the CPU for as long as a time budget allows, report the
# test accuracy, and classify a few test images with the trained weights.
#
#   tools/demo.sh                           the whole script within BUDGET
#   BUDGET=540 THREADS=$(nproc) tools/demo.sh   (defaults shown)
#   EPOCHS=2 tools/demo.sh                  a fixed number of epochs instead
#
# BUDGET is the wall-clock seconds for the whole script, packages and build
# included (540: nine minutes, a minute's margin under ten). What the
# packages and the build leave, less TAIL seconds (30) for reading the data,
# the evaluation and the predictions, goes to training: `nala train
# --time-budget` times the first steps and one evaluation batch and trains
# the whole epochs that fit, with the learning-rate schedule fitted to them
# (at most MAX_EPOCHS, 40). A faster machine trains more epochs; a slower
# one fewer, and still ends in time.
#
# Every demo run trains into a new folder, runs/demo-pico-fashion-mnist-
# <date>-<time>, printed first; an earlier run is never deleted. OUT=DIR
# names the folder instead (nala train refuses one that holds a run).
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-540}
TAIL=${TAIL:-30}
MAX_EPOCHS=${MAX_EPOCHS:-40}
EPOCHS=${EPOCHS:-}
THREADS=${THREADS:-$(nproc)}
if [ -z "${OUT:-}" ]; then
  OUT=runs/demo-pico-fashion-mnist-$(date +%Y%m%d-%H%M%S)
  n=2; base=$OUT
  while [ -e "$OUT" ]; do OUT=$base-$n; n=$((n + 1)); done
fi
echo "demo: this run's folder is $OUT"

tools/deps.sh build data
make -j"$(nproc)" CUDA=0 build/release-nocuda/nala   # the CPU is all the demo needs
NALA=build/release-nocuda/nala

if [ -n "$EPOCHS" ]; then
  schedule=(--epochs "$EPOCHS")
else
  left=$((BUDGET - SECONDS - TAIL))
  [ "$left" -ge 1 ] || left=1  # no time left: nala train still trains one epoch
  echo "demo: ${SECONDS} s so far; ${left} s of the ${BUDGET} s budget go to training"
  schedule=(--epochs "$MAX_EPOCHS" --time-budget "$left")
fi
$NALA train --model pico --data fashion-mnist "${schedule[@]}" --batch-size 128 \
  --lr 2e-3 --min-lr 1e-4 --warmup-epochs 0.3 --weight-decay 0.05 --label-smoothing 0.1 \
  --threads "$THREADS" --seed 0 --log-every 50 --out "$OUT"

$NALA eval --model pico --weights "$OUT/best.safetensors" --data fashion-mnist --threads "$THREADS"

$NALA sample --data fashion-mnist --count 5 --out "$OUT/samples"
$NALA predict --model pico --weights "$OUT/best.safetensors" "$OUT"/samples/*.png
echo "demo: done in ${SECONDS} s"
