#!/usr/bin/env bash
# tools/demo.sh - the main job: install what is missing, build, train pico
# on Fashion-MNIST on the CPU with a short schedule, report the test
# accuracy, and classify a few test images with the trained weights.
#
#   EPOCHS=2 THREADS=$(nproc) tools/demo.sh        (defaults shown)
#
# Every demo run trains into a new folder, runs/demo-pico-fashion-mnist-
# <date>-<time>, printed first; an earlier run is never deleted. OUT=DIR
# names the folder instead (nala train refuses one that holds a run).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-2}
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

$NALA train --model pico --data fashion-mnist --epochs "$EPOCHS" --batch-size 128 \
  --lr 2e-3 --min-lr 1e-4 --warmup-epochs 0.3 --weight-decay 0.05 --label-smoothing 0.1 \
  --threads "$THREADS" --seed 0 --log-every 50 --out "$OUT"

$NALA eval --model pico --weights "$OUT/best.safetensors" --data fashion-mnist --threads "$THREADS"

$NALA sample --data fashion-mnist --count 5 --out "$OUT/samples"
$NALA predict --model pico --weights "$OUT/best.safetensors" "$OUT"/samples/*.png
