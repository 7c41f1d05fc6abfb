#!/bin/bash
# test-time shifts chosen on validation: for each shift, each seed's chosen weights on the 5,000 held-out images; the best mean on them, then the test set
R=$1; D=third_party_headers/fashion-mnist
ev() { /tmp/b/nala eval --device cuda --weights $R/nala-s$1/best_val.safetensors --data-dir $D --batch-size 1000 --tta-flip "${@:2}" | grep -E '^loss'; }
best=0; bestacc=0
for s in 0 1 2 3; do
  sh=(); [ $s -gt 0 ] && sh=(--tta-shift $s)
  for seed in 0 1 2; do ev $seed "${sh[@]}" --val 5000 > /tmp/tta_val_${s}_$seed.txt & done; wait
  m=$(cat /tmp/tta_val_${s}_*.txt | sed 's/.*top-1 \([0-9.]*\)%.*/\1/' | awk '{t+=$1} END{printf "%.3f", t/NR}')
  echo "shift $s validation: $(cat /tmp/tta_val_${s}_*.txt | tr '\n' ' ') mean $m"
  if awk "BEGIN{exit !($m > $bestacc)}"; then best=$s; bestacc=$m; fi
done
echo "chosen on validation: shift $best ($bestacc)"
for s in 0 $best; do
  sh=(); [ $s -gt 0 ] && sh=(--tta-shift $s)
  for seed in 0 1 2; do echo "shift $s seed $seed test: $(ev $seed "${sh[@]}")"; done
  [ $best = 0 ] && break
done
