#!/bin/bash
# second part: resume the recipe's runs on the same warm machine (MPS restarted: the killed clients left it refusing new ones), TTA chosen on validation, results packed into $OUT
set -x
ls /tmp/b/nala results/r955 || { echo "MACHINE WAS NOT WARM: results/r955 is gone"; exit 3; }
pgrep -fa /tmp/b/nala
nvidia-cuda-mps-control -d; sleep 1
date
timeout 480 tools/recipe_955.sh --resume results/r955
echo "resume rc=$?"
date
for f in results/r955/runs/*/metrics.csv; do echo "$f"; tail -n 1 "$f" | cut -d, -f1,7,9,10,12; done
cat results/r955/README.md | head -12
timeout 75 bash .gpu/tta.sh results/r955/runs 2>&1 | tee results/r955/tta.txt
date
(cd results && find r955 -type f ! -name '*.safetensors' -size -4M -print0 | tar --null -T - -czf $OUT/r955_small.tgz)
(cd results && find r955 -name 'best_val.safetensors' -print0 | tar --null -T - -cf $OUT/r955_best_val.tar)
echo quit | nvidia-cuda-mps-control
