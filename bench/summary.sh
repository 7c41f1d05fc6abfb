#!/usr/bin/env bash
# bench/summary.sh LOG TITLE FIELD - the side-by-side table of a
# bench_pico / torch_pico_cpu.py log (lines "nala|torch MODEL MODE ...
# FIELD=value"): every round's value per library and mode, the median, and
# the ratio of the medians in nala's favour (img/s: nala / torch; a time
# such as ms_median: torch / nala). Markdown, for the README.
set -euo pipefail
log=$1 title=$2 field=$3
awk -v title="$title" -v field="$field" '
  function median(s,   a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  ($1 == "nala" || $1 == "torch") {
    mode = $3
    for (i = 4; i <= NF; i++) if (index($i, field "=") == 1) {
      v = substr($i, length(field) + 2)
      key = $1 SUBSEP mode
      vals[key] = vals[key] (vals[key] == "" ? "" : " ") v
      if (!(mode in seen)) { seen[mode] = 1; modes[++nm] = mode }
    }
  }
  END {
    time = field ~ /^ms/
    printf "\n| %s | nala | PyTorch | %s |\n|---|---|---|---|\n", title, time ? "nala faster by" : "ratio"
    for (m = 1; m <= nm; m++) {
      md = modes[m]; a = median(vals["nala" SUBSEP md]); b = median(vals["torch" SUBSEP md])
      r = (a > 0 && b > 0) ? (time ? b / a : a / b) : 0
      na = vals["nala" SUBSEP md]; nb = vals["torch" SUBSEP md]; gsub(/ /, " / ", na); gsub(/ /, " / ", nb)
      printf "| %s %s (rounds) | %s | %s | |\n", md, field, na, nb
      printf "| %s, median | **%s** | %s | %s |\n", md, a, b, r ? sprintf("%.2fx", r) : "-"
    }
  }' "$log"
