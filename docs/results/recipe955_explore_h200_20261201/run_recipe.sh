#!/bin/bash
O=${OUT:-/tmp/o}; mkdir -p $O
t0=$SECONDS
mkdir -p /tmp/b && tar xzf .gpu/bin.tgz -C /tmp/b; B=/tmp/b
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
nvidia-cuda-mps-control -d; sleep 1
timeout 540 tools/recipe_955.sh --nala $B/nala --data-dir third_party_headers/fashion-mnist --out /tmp/r955 > $O/recipe.log 2>&1; echo "recipe rc=$? at $((SECONDS-t0)) s"
echo quit | nvidia-cuda-mps-control
tail -20 $O/recipe.log
cat /tmp/r955/README.md | head -30
tar czf $O/r955.tgz --exclude='*.safetensors' --exclude='checkpoint*' -C /tmp r955
