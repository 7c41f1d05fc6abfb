#!/bin/bash
# first part of the recipe's 3-seed run (results/r955 stays on the warm machine)
set -x
mkdir -p /tmp/b && tar xzf .gpu/bin.tgz -C /tmp/b
nvidia-cuda-mps-control -d
date
timeout 548 tools/recipe_955.sh --epochs 120 --nala /tmp/b/nala --data-dir third_party_headers/fashion-mnist --out results/r955
echo "recipe rc=$?"
pkill -f /tmp/b/nala; sleep 1; pgrep -fa /tmp/b/nala
echo quit | nvidia-cuda-mps-control
date
for f in results/r955/runs/*/metrics.csv; do echo "$f"; tail -n 1 "$f" | cut -d, -f1,7,9,10,12; done
