#!/usr/bin/env bash
# tools/ablate.sh - compare attention kinds: train every kind with several
# seeds on Fashion-MNIST (pico), holding out training images for validation,
# report the test top-1 of the epoch chosen on validation (mean and standard
# deviation over the seeds), parameters and training speed, and run
# `nala analyze` (query norm against attention entropy) on every run.
#
#   tools/ablate.sh [options] [-- extra nala train options]
#
#   --kinds "K1 K2 ..."  attention kinds (default: every choice of `nala train
#                        --attn`, or "nala" when this build has no --attn)
#   --seeds "0 1 2"      seeds (default 0 1 2)
#   --epochs N           epochs per run (default 100 on cuda, 10 on cpu)
#   --device cuda|cpu    (default: cuda when `nvidia-smi -L` lists a GPU, else cpu)
#   --jobs J             trainings at once (default 1); pico is small and
#                        launch-bound, so several share one GPU well
#   --val N              training images held out for validation (default 5000)
#   --out DIR            the results folder; must not exist (default: a new
#                        results/ablate-<date>-<time>); never overwritten
#   --nala PATH          the nala program (default build/release/nala, then
#                        build/release-nocuda/nala)
#   --data-dir DIR       Fashion-MNIST folder (default: nala's default)
#   --recipe NAME        gpu (the README's GPU recipe, default) or none (only the
#                        extra options after --)
#   --analyze-images N   images for nala analyze (default 64)
#   --title TEXT         the heading of the report
#   --tta-shifts "1 2"   then test-time shifts chosen on validation: each run's
#                        chosen weights evaluated (nala eval, with the runs'
#                        --tta-flip) on the held-out images moved 0 and each
#                        listed number of pixels (--tta-shift); per kind, the
#                        shift with the best mean validation top-1 (the
#                        smallest on a tie) is evaluated on the test set
#                        (tta.csv, and a section of the report)
#   --resume DIR         continue the ablation in DIR (stopped by a crash, a
#                        reboot or a time limit): its finished runs are kept,
#                        every other run continues from its last checkpoint
#                        (`nala train --resume`; from the start if it has none),
#                        then the analyses still missing and the report.
#                        The settings are DIR's own (DIR/ablate.args, the
#                        nala program included); only --jobs and --nala may
#                        be given beside it. Runs given --time-budget cannot
#                        be resumed (their epochs are chosen when they start).
#
# Writes into DIR: README.md (the table and the exact commands), results.csv
# (one row per run), summary.csv (one row per kind), compare_val.svg,
# compare_test.svg and compare_loss.svg (every run's curves, one colour a
# kind: nala plot --compare), runs/<kind>-s<seed>/
# (each run's folder: metrics, curves, best_val.safetensors), logs/, and
# analyze/<kind>-s<seed>/ (entropy_norm.csv, scatter plots, summary), and
# with --tta-shifts tta.csv (kind, seed, shift, split, top-1 in %).
# A bash tool around the nala program; nala itself never runs a shell.
set -uo pipefail

die() { echo "ablate.sh: $*" >&2; exit 2; }

kinds="" seeds="0 1 2" epochs="" device="" jobs=1 val=5000 out="" nala="" data_dir="" recipe=gpu
an_images=64 title="Attention kinds on Fashion-MNIST (pico)" tta_shifts=""
extra=() resume="" resume_jobs="" resume_nala=""
parse() {
  while [ $# -gt 0 ]; do
    case $1 in
      --kinds) kinds=$2; shift 2 ;;
      --seeds) seeds=$2; shift 2 ;;
      --epochs) epochs=$2; shift 2 ;;
      --device) device=$2; shift 2 ;;
      --jobs) jobs=$2; shift 2 ;;
      --val) val=$2; shift 2 ;;
      --out) out=$2; shift 2 ;;
      --nala) nala=$2; shift 2 ;;
      --data-dir) data_dir=$2; shift 2 ;;
      --recipe) recipe=$2; shift 2 ;;
      --analyze-images) an_images=$2; shift 2 ;;
      --title) title=$2; shift 2 ;;
      --tta-shifts) tta_shifts=$2; shift 2 ;;
      --) shift; extra=("$@"); break ;;
      -h|--help) sed -n '2,51p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) die "unknown option '$1' (--help lists them)" ;;
    esac
  done
}
# --resume DIR: the settings come from DIR/ablate.args (written below when DIR
# was made), then --jobs and --nala of this command.
for a in "$@"; do [ "$a" = -- ] && break; [ "$a" = --resume ] && resume=1; done
if [ -n "$resume" ]; then
  resume=""
  while [ $# -gt 0 ]; do
    case $1 in
      --resume) resume=${2:-}; shift 2 || die "--resume needs a folder" ;;
      --jobs) resume_jobs=${2:-}; shift 2 || die "--jobs needs a number" ;;
      --nala) resume_nala=${2:-}; shift 2 || die "--nala needs a path" ;;
      -h|--help) parse --help ;;
      *) die "--resume DIR continues DIR with its own settings: only --jobs and --nala may be given beside it, not '$1'" ;;
    esac
  done
  [ -n "$resume" ] || die "--resume needs a folder"
  [ -f "$resume/ablate.args" ] || die "$resume/ablate.args: no such file: $resume was not made by tools/ablate.sh, or by one without --resume, and cannot be resumed"
  mapfile -d '' -t saved <"$resume/ablate.args" || die "$resume/ablate.args: cannot read it"
  [ "${#saved[@]}" -gt 0 ] || die "$resume/ablate.args: empty"
  parse "${saved[@]}"
  out=$resume  # where the folder is now (it may have moved since)
  [ -n "$resume_jobs" ] && jobs=$resume_jobs
  [ -n "$resume_nala" ] && nala=$resume_nala
  for a in "${extra[@]}"; do
    [ "$a" = --time-budget ] && die "$resume: its runs were given --time-budget, which chooses a run's epochs when it starts; nala train cannot resume such a run. Start a new ablation with --epochs instead"
  done
else
  parse "$@"
fi

if [ -z "$nala" ]; then
  for c in build/release/nala build/release-nocuda/nala; do [ -x "$c" ] && { nala=$c; break; }; done
fi
[ -n "$nala" ] && [ -x "$nala" ] || die "no nala program${nala:+ at $nala} (build it, or give --nala PATH)"
case $nala in /*) ;; *) nala=$(cd "$(dirname "$nala")" && pwd)/$(basename "$nala") ;; esac  # kept for --resume
if [ -z "$device" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then device=cuda; else device=cpu; fi
fi
case $device in cuda|cpu) ;; *) die "--device cuda or cpu, not '$device'" ;; esac
[ -n "$epochs" ] || { [ "$device" = cuda ] && epochs=100 || epochs=10; }
for n in "$epochs" "$jobs" "$val" "$an_images"; do
  [[ $n =~ ^[0-9]+$ ]] || die "'$n' is not a whole number"
done
[ "$jobs" -ge 1 ] && [ "$epochs" -ge 1 ] || die "--jobs and --epochs must be at least 1"
for s in $seeds; do [[ $s =~ ^[0-9]+$ ]] || die "seed '$s' is not a whole number"; done
for s in $tta_shifts; do [[ $s =~ ^[0-9]+$ ]] && [ "$s" -ge 1 ] || die "--tta-shifts: '$s' is not a whole number of pixels from 1 on"; done
tta_shifts=$(printf '%s\n' $tta_shifts | sort -n -u | xargs)  # ascending: a tie goes to the smaller shift

# The kinds: the choices `nala train --help` lists for --attn.
has_attn=0
attn_line=$("$nala" train --help 2>/dev/null | grep -E '^ +--attn ' || true)
if [ -n "$attn_line" ]; then
  has_attn=1
  all_kinds=$(sed -E 's/.*\{([^}]*)\}.*/\1/' <<<"$attn_line" | tr '|' ' ')
else
  all_kinds=nala
fi
[ -n "$kinds" ] || kinds=$all_kinds
for k in $kinds; do
  grep -qw -- "$k" <<<"$all_kinds" || die "kind '$k' is not one of this nala's: $all_kinds"
done

case $recipe in
  gpu) recipe_args=(--batch-size 256 --lr 2e-3 --min-lr 1e-5 --warmup-epochs 3 --weight-decay 0.05
                    --label-smoothing 0.1 --drop-path 0.05 --crop-pad 2 --hflip --erase 0.25) ;;
  none) recipe_args=() ;;
  *) die "--recipe gpu or none, not '$recipe'" ;;
esac

# The results folder: new, made with one mkdir (never an earlier one); when
# resuming, the one given.
if [ -n "$resume" ]; then
  [ -d "$out/runs" ] && [ -d "$out/logs" ] && [ -d "$out/analyze" ] || die "$out: no runs/, logs/ or analyze/ folder"
else
  if [ -z "$out" ]; then
    base=results/ablate-$(date -u +%Y%m%d-%H%M%S)
    mkdir -p results || die "cannot make results/"
    out=$base; i=2
    until mkdir "$out" 2>/dev/null; do out=$base-$i; i=$((i + 1)); [ $i -lt 100 ] || die "cannot make $base-N"; done
  else
    [ -e "$out" ] && die "$out exists: the results of an earlier run are never overwritten; give a new --out"
    mkdir -p "$(dirname "$out")" && mkdir "$out" || die "cannot make $out"
  fi
  mkdir "$out/runs" "$out/logs" "$out/analyze"
  # The settings, for --resume (one argument per NUL-terminated field).
  args=(--kinds "$kinds" --seeds "$seeds" --epochs "$epochs" --device "$device" --jobs "$jobs" --val "$val"
        --recipe "$recipe" --analyze-images "$an_images" --title "$title" --out "$out" --nala "$nala")
  [ -n "$data_dir" ] && args+=(--data-dir "$data_dir")
  [ -n "$tta_shifts" ] && args+=(--tta-shifts "$tta_shifts")
  printf '%s\0' "${args[@]}" -- "${extra[@]}" >"$out/ablate.args" || die "cannot write $out/ablate.args"
fi

cores=$(nproc 2>/dev/null || echo 2)
threads=$(( cores / jobs )); [ "$threads" -ge 1 ] || threads=1
workers=$(( threads > 4 ? 4 : threads ))
data_args=(--data fashion-mnist)
[ -n "$data_dir" ] && data_args+=(--data-dir "$data_dir")

echo "ablate.sh: kinds [$kinds], seeds [$seeds], $epochs epochs on $device, $jobs at once ($threads threads each)," \
     "validation $val images; results in $out; $nala${resume:+; resuming}"

train_cmd() {  # kind seed [new|resume|restart] -> the command line of one run
  local k=$1 s=$2 how=${3:-new} run=$out/runs/$1-s$2
  local cmd=("$nala" train --device "$device" --model pico "${data_args[@]}" --epochs "$epochs" --seed "$s"
             --val "$val" --threads "$threads" --workers "$workers" --log-every 1000 "${recipe_args[@]}")
  [ "$has_attn" = 1 ] && cmd+=(--attn "$k")
  cmd+=("${extra[@]}")
  case $how in
    resume) cmd+=(--resume "$run") ;;              # from its last checkpoint, the same arguments
    restart) cmd+=(--overwrite --out "$run") ;;    # stopped before its first checkpoint
    *) cmd+=(--out "$run") ;;
  esac
  printf '%q ' "${cmd[@]}"
}

# What a run needs (--resume): nothing when its log says it is done, the
# rest of its epochs when it has a checkpoint, a fresh start otherwise.
run_state() {  # kind seed
  local log=$out/logs/$1-s$2.log run=$out/runs/$1-s$2
  if [ -z "$resume" ]; then echo new
  elif grep -qE '^done in' "$log" 2>/dev/null; then echo done
  elif [ -f "$run/checkpoint.safetensors" ]; then echo resume
  elif [ -e "$run" ]; then echo restart
  else echo new
  fi
}

# The runs, at most $jobs at once. A run's log only grows (a resumed run
# appends to it).
running=0 failed=0 trained=" "
for k in $kinds; do
  for s in $seeds; do
    how=$(run_state "$k" "$s")
    if [ "$how" = done ]; then echo "  $k seed $s: finished earlier"; continue; fi
    trained+="$k-s$s "
    if [ "$running" -ge "$jobs" ]; then wait -n || failed=$((failed + 1)); running=$((running - 1)); fi
    cmd=$(train_cmd "$k" "$s" "$how")
    echo "$cmd" >>"$out/commands.txt"
    ( eval "$cmd" >>"$out/logs/$k-s$s.log" 2>&1; rc=$?
      echo "  $k seed $s: $(grep -E '^done' "$out/logs/$k-s$s.log" | tail -1) (exit $rc)"; exit $rc ) &
    running=$((running + 1))
  done
done
while [ "$running" -gt 0 ]; do wait -n || failed=$((failed + 1)); running=$((running - 1)); done

# analyze on every run's chosen weights (CPU or GPU, a few seconds each). When
# resuming, a run that did not train now keeps a finished analysis; an
# analysis of earlier weights (its run trained on) or one cut short is moved
# aside to analyze/<run>.earlier-N (kept, never replaced), and made again.
for k in $kinds; do
  for s in $seeds; do
    w=$out/runs/$k-s$s/best_val.safetensors a=$out/analyze/$k-s$s
    [ -f "$w" ] || continue
    [[ $trained != *" $k-s$s "* ]] && [ -f "$a/summary.md" ] && continue  # summary.md: analyze's last file
    if [ -e "$a" ]; then
      i=1; while [ -e "$a.earlier-$i" ]; do i=$((i + 1)); done
      mv "$a" "$a.earlier-$i" || die "cannot move $a aside"
      echo "  $k seed $s: its earlier analysis is now $a.earlier-$i"
    fi
    an=("$nala" analyze --weights "$w" "${data_args[@]}" --images "$an_images" --device "$device" --out "$a")
    printf '%q ' "${an[@]}" >>"$out/commands.txt"; echo >>"$out/commands.txt"
    if ! "${an[@]}" >>"$out/logs/analyze-$k-s$s.log" 2>&1; then
      echo "  analyze $k seed $s failed: see $out/logs/analyze-$k-s$s.log"
      failed=$((failed + 1))
    fi
  done
done

# --tta-shifts: each run's chosen weights on the held-out images, moved 0 and
# each listed number of pixels (with the runs' own --tta-flip, --precision and
# --eval-subset); per kind the shift best on validation (mean over the seeds,
# the smallest on a tie) is then evaluated on the test set. Made anew each time.
tta_section=""
if [ -n "$tta_shifts" ]; then
  ev_opts=() sub=() i=0 limit="" tta_rows=""
  while [ $i -lt ${#extra[@]} ]; do
    case ${extra[$i]} in
      --tta-flip) ev_opts+=(--tta-flip) ;;
      --precision) ev_opts+=(--precision "${extra[$((i + 1))]}") ;;
      --eval-subset) limit=${extra[$((i + 1))]} ;;
      --subset) sub=(--subset "${extra[$((i + 1))]}") ;;  # the held-out images came out of those
    esac
    i=$((i + 1))
  done
  tta_eval() {  # weights shift split -> top-1 in %, the command in commands.txt
    local cmd=("$nala" eval --device "$device" --weights "$1" "${data_args[@]}" --threads "$cores" "${ev_opts[@]}")
    [ "$2" -gt 0 ] && cmd+=(--tta-shift "$2")
    if [ "$3" = val ]; then cmd+=(--val "$val" "${sub[@]}"); elif [ -n "$limit" ]; then cmd+=(--limit "$limit"); fi
    printf '%q ' "${cmd[@]}" >>"$out/commands.txt"; echo >>"$out/commands.txt"
    "${cmd[@]}" 2>>"$out/logs/tta.log" | tee -a "$out/logs/tta.log" | sed -nE 's/^loss [0-9.]+ +top-1 ([0-9.]+)%.*/\1/p'
  }
  tta_runs() {  # kind shift split: every seed's chosen weights, a row of tta.csv each
    local s w t
    for s in $seeds; do
      w=$out/runs/$1-s$s/best_val.safetensors
      [ -f "$w" ] || continue
      t=$(tta_eval "$w" "$2" "$3")
      if [ -n "$t" ]; then echo "$1,$s,$2,$3,$t" >>"$out/tta.csv"
      else echo "  $1 seed $s: the $3 evaluation with shift $2 failed: see $out/logs/tta.log"; failed=$((failed + 1)); fi
    done
  }
  echo "kind,seed,shift,split,top1" >"$out/tta.csv"
  tta_section="Test-time shifts chosen on validation (\`--tta-shifts \"$tta_shifts\"\`): each run's chosen weights on the $val held-out images, each moved $(sed -E 's/ +/, /g' <<<"0 $tta_shifts") px (\`nala eval --tta-shift\`, beside ${ev_opts[*]:-no other augmentation}); the shift with the best mean validation top-1 is evaluated on the test set ([tta.csv](tta.csv)):
"
  for k in $kinds; do
    best="" bestm="" row="| $k |"
    for sh in 0 $tta_shifts; do
      tta_runs "$k" "$sh" val
      m=$(awk -F, -v k="$k" -v sh="$sh" '$1 == k && $3 == sh && $4 == "val" { t += $5; n++ } END { if (n) printf "%.3f", t / n }' "$out/tta.csv")
      row+=" ${m:--} |"
      if [ -n "$m" ] && { [ -z "$bestm" ] || awk -v a="$m" -v b="$bestm" 'BEGIN { exit !(a > b) }'; }; then best=$sh bestm=$m; fi
    done
    [ -n "$best" ] || continue
    tta_runs "$k" "$best" test
    tm=$(awk -F, -v k="$k" '$1 == k && $4 == "test" { t[++n] = $5; m += $5 } END {
           if (!n) exit; m /= n; for (i = 1; i <= n; i++) sd += (t[i] - m) ^ 2; sd = n > 1 ? sqrt(sd / (n - 1)) : 0
           printf "%.2f ± %.2f", m, sd }' "$out/tta.csv")
    tta_rows+="$row $best | ${tm:+**$tm**} |
"
    echo "  $k: test-time shift of $best px chosen on validation ($bestm%); test top-1 ${tm:-?}%"
  done
  head="| kind |" sep="|---|"
  for sh in 0 $tta_shifts; do head+=" validation, $sh px |"; sep+="---|"; done
  tta_section+="
$head chosen | test top-1 (%) |
$sep---|---|
$tta_rows"
fi

# One row per run: kind, seed, parameters, chosen epoch, validation and test
# top-1 of that epoch, mean img/s over the epochs, Spearman per layer.
echo "kind,seed,parameters,epochs,chosen_epoch,val_top1,test_top1,images_per_second,spearman_by_layer" >"$out/results.csv"
for k in $kinds; do
  for s in $seeds; do
    log=$out/logs/$k-s$s.log
    line=$(grep -E 'chosen on validation' "$log" 2>/dev/null | tail -1)
    [ -n "$line" ] || { echo "  $k seed $s: no result (see $log)"; continue; }
    ep=$(sed -E 's/.*epoch ([0-9]+) \(validation.*/\1/' <<<"$line")
    vt=$(sed -E 's/.*validation top-1 ([0-9.]+)\).*/\1/' <<<"$line")
    tt=$(sed -E 's/.*test top-1 ([0-9.]+).*/\1/' <<<"$line")
    params=$(grep -oE '[0-9]+ parameters' "$log" | head -1 | cut -d' ' -f1)
    ips=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "images_per_second") c = i; next }
                   c { s += $c; n++ } END { if (n) printf "%.0f", s / n }' "$out/runs/$k-s$s/metrics.csv")
    sp=$(awk -F, 'NR > 1 { printf "%s%s", (NR > 2 ? " " : ""), $10 }' "$out/analyze/$k-s$s/summary.csv" 2>/dev/null)
    # the epochs the run trained (a --time-budget after -- may choose fewer than --epochs)
    ran=$(awk 'END { print NR - 1 }' "$out/runs/$k-s$s/metrics.csv")
    echo "$k,$s,$params,$ran,$ep,$vt,$tt,$ips,$sp" >>"$out/results.csv"
  done
done

# Mean and sample standard deviation per kind.
awk -F, 'NR > 1 {
    k = $1; n[k]++; p[k] = $3; t[k, n[k]] = $7 * 100; v[k] += $6 * 100; ips[k] += $8
    ns = split($9, a, " "); for (i = 1; i <= ns; i++) sp[k, i] += a[i]; nl[k] = ns
    if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
  }
  END {
    print "kind,runs,parameters,test_top1_mean,test_top1_std,val_top1_mean,images_per_second,spearman_by_layer"
    for (j = 1; j <= nk; j++) {
      k = order[j]; m = 0; for (i = 1; i <= n[k]; i++) m += t[k, i]; m /= n[k]
      sd = 0; for (i = 1; i <= n[k]; i++) sd += (t[k, i] - m) ^ 2; sd = n[k] > 1 ? sqrt(sd / (n[k] - 1)) : 0
      s = ""; for (i = 1; i <= nl[k]; i++) s = s sprintf("%s%.2f", i > 1 ? " " : "", sp[k, i] / n[k])
      printf "%s,%d,%s,%.2f,%.2f,%.2f,%.0f,%s\n", k, n[k], p[k], m, sd, v[k] / n[k], ips[k] / n[k], s
    }
  }' "$out/results.csv" >"$out/summary.csv"

# Every run's curves on one chart each (validation, test, train loss), one
# colour a kind, from the fifth of the epochs on (the first epochs' low
# accuracies would flatten the rest).
plots=""
metric_files=()
for k in $kinds; do for s in $seeds; do
  f=$out/runs/$k-s$s/metrics.csv
  [ -f "$f" ] && metric_files+=("$f")
done; done
from=$(( epochs / 5 )); [ "$from" -ge 1 ] || from=1
if [ "${#metric_files[@]}" -gt 0 ] && "$nala" plot --help 2>/dev/null | grep -q -- '--compare'; then
  if "$nala" plot --compare --group-seeds --from-epoch "$from" --out "$out" "${metric_files[@]}" >"$out/logs/plot.log" 2>&1; then
    plots="Curves of every run (one colour a kind, from epoch $from): [validation top-1](compare_val.svg), [test top-1](compare_test.svg), [train loss](compare_loss.svg)."
  else
    echo "  the comparison plots failed: see $out/logs/plot.log"
  fi
fi

# The report.
{
  echo "# $title"
  echo
  ran=$(awk -F, 'NR > 1 { if (!lo || $4 < lo) lo = $4; if ($4 > hi) hi = $4 } END { print (lo == hi ? lo : lo "-" hi) }' "$out/results.csv")
  echo "$(date -u +%Y-%m-%d), $(uname -n), device $device, $ran epochs (--epochs $epochs), seeds [$seeds], $val training images held out for validation;"
  echo "test top-1 of the epoch chosen on validation (best_val.safetensors), mean ± sample standard deviation over the seeds."
  echo "Spearman: rank correlation of query norm and attention entropy per attention layer (nala analyze, $an_images test images; negative = larger norms attend more sharply), mean over the seeds."
  echo
  echo "| kind | parameters | test top-1 (%) | runs | validation top-1 (%) | img/s (train, per run) | Spearman by layer |"
  echo "|---|---|---|---|---|---|---|"
  awk -F, 'NR > 1 { printf "| %s | %s | **%.2f ± %.2f** | %s | %.2f | %s | %s |\n", $1, $3, $4, $5, $2, $6, $7, $8 }' "$out/summary.csv"
  echo
  echo "Per run: [results.csv](results.csv). Scatter plots: analyze/<kind>-s<seed>/entropy_norm.svg."
  [ -n "$plots" ] && echo && echo "$plots"
  [ -n "$tta_section" ] && echo && printf '%s' "$tta_section"
  echo
  echo "Commands (run from the repository root):"
  echo
  echo '    tools/ablate.sh' "$(printf '%q ' --kinds "$kinds" --seeds "$seeds" --epochs "$epochs" --device "$device" --jobs "$jobs" --val "$val" --recipe "$recipe" ${tta_shifts:+--tta-shifts "$tta_shifts"})" "${extra[@]:+-- ${extra[*]}}"
  echo
  sed 's/^/    /' "$out/commands.txt"
} >"$out/README.md"

echo
cat "$out/summary.csv" | column -t -s, 2>/dev/null || cat "$out/summary.csv"
echo "report: $out/README.md"
[ "$failed" -eq 0 ] || { echo "ablate.sh: $failed run(s) or analyses failed: see $out/logs/ (tools/ablate.sh --resume $out continues what did not finish)" >&2; exit 1; }
