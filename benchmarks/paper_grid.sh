#!/usr/bin/env bash
# The seed paper's other experiments at small scale (docs/paper.md, "The paper's other
# experiments"): every job of the named experiments, spread over CPU cores, one job per core at a
# time (taskset + OMP_NUM_THREADS=1), each in its own run dir under OUT/EXPERIMENT/. A job whose
# summary.json exists is skipped, so rerunning the command resumes the grid; a core takes the
# next job nobody has claimed, so the cores stay busy across experiments. To stop a grid and go
# on later: kill the paper_grid.sh processes, then `pkill -TERM -f sft/train.py`: each training
# checkpoints at its next step and exits 75; the rerun resumes it from there (resume_from=latest),
# and claims left by dead workers are dropped at start. To stop without interrupting anything,
# `touch OUT/STOP`: each core finishes (and keeps) the job it runs and starts no other; the next
# run of the script removes the file. A finished job's small files (config.yaml,
# metrics.jsonl, summary.json, data_report.json; no weights) are copied to KEEP/EXPERIMENT/NAME,
# which the repository holds, so `sft-report` rebuilds docs/paper.md's tables from a clean clone;
# a job kept there is not run again, so a grid longer than one machine's life goes on from a clone.
#   bash benchmarks/paper_grid.sh base lr     # env: SEEDS="0 1" CORES="0 1" OUT=outputs/paper_grid
#                                             #      KEEP=benchmarks/results/paper_grid ('' = none)
#   bash benchmarks/paper_grid.sh list        # every job of every experiment; runs nothing
# Experiments (all on experiment=paper_small: SmolLM2-135M-Instruct, FLAN-CoT, 1 epoch):
#   base      padding vs greedy packing on paper_small's rows (the first 660: all aqua)
#   lr        packing with lr scaled linearly / by sqrt to its samples per step; 512-token packs
#             holding padding's 4 samples per step against padding at the same max_length
#   size      base at 1,320 rows (1,260 trained, 60 held out) instead of 660 (2x: a padded run takes ~38 min here)
#   mix       greedy packing on 900 rows drawn from every source (data.sample), 240 held out,
#             validation loss per source (data.eval_by=source): the grouping/turns reference
#   grouping  mix with packs of one source (together) or mixed sources (apart)
#   turns     mix with single-turn samples combined into 4-exchange conversations, at random
#             or within a source (same_tag)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-"0 1"}
CORES=${CORES:-"0 1"}
OUT=${OUT:-outputs/paper_grid}
KEEP=${KEEP-benchmarks/results/paper_grid}
[ $# -gt 0 ] || { echo "usage: paper_grid.sh EXPERIMENT... | list" >&2; exit 2; }

PAD="collator=padding"
PACK="collator=packing collator.strategy=bfd"
MIX="data.limit=0 data.sample=900 data.sample_seed=0 data.val_fraction=0.27 data.val_max_samples=240 data.eval_by=source"
declare -a JOBS=()
add() { for s in $SEEDS; do JOBS+=("$1/$2-seed$s|$3 seed=$s"); done; }
grid() {
  case $1 in
    base)
      add base padding "$PAD"
      add base packing "$PACK" ;;
    lr)
      add lr packing_linear "$PACK optim.lr_scaling=linear"
      add lr packing_sqrt "$PACK optim.lr_scaling=sqrt"
      add lr padding_512 "$PAD data.max_length=512"
      add lr packing_512_samples4 "$PACK collator.pack_length=512 data.max_length=512 train.micro_batch_size=1 train.batch_by=samples train.step_budget=4" ;;
    size)
      add size padding_1320 "$PAD data.limit=1320"
      add size packing_1320 "$PACK data.limit=1320" ;;
    mix)
      add mix packing "$PACK $MIX" ;;
    grouping)
      add grouping packing_together "$PACK $MIX collator.group_by=source collator.group_mode=together"
      add grouping packing_apart "$PACK $MIX collator.group_by=source collator.group_mode=apart" ;;
    turns)
      add turns packing_combine_random "$PACK $MIX data.combine=random data.combine_turns=4"
      add turns packing_combine_same_tag "$PACK $MIX data.combine=same_tag data.combine_turns=4" ;;
    *) echo "unknown experiment $1 (base lr size mix grouping turns list)" >&2; exit 2 ;;
  esac
}
if [ "$1" = list ]; then
  for e in base lr size mix grouping turns; do grid "$e"; done
  printf '%s\n' "${JOBS[@]}"
  exit 0
fi
for e in "$@"; do grid "$e"; done
mkdir -p "$OUT"
rm -f "$OUT/STOP" # left by an earlier, stopped grid
for claim in "$OUT"/*/*.claim; do # a claim whose worker is gone (a stopped grid)
  [ -d "$claim" ] || continue
  pid=$(cat "$claim/pid" 2>/dev/null || echo 0)
  kill -0 "$pid" 2>/dev/null || rm -rf "$claim"
done

worker() {
  local core=$1 job name overrides dir rc=0
  for job in "${JOBS[@]}"; do
    if [ -f "$OUT/STOP" ]; then
      echo "[core $core] $(date +%H:%M) stopped ($OUT/STOP): no new job started"
      break
    fi
    name=${job%%|*}
    overrides=${job#*|}
    dir="$OUT/$name"
    [ -f "$dir/summary.json" ] && continue
    [ -n "$KEEP" ] && [ -f "$KEEP/$name/summary.json" ] && continue # kept by an earlier session
    mkdir -p "$(dirname "$dir")"
    mkdir "$dir.claim" 2>/dev/null || continue # another core has it
    echo "$BASHPID" >"$dir.claim/pid"
    echo "[core $core] $(date +%H:%M) $name: $overrides"
    # shellcheck disable=SC2086
    if ! OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c "$core" $PY sft/train.py experiment=paper_small \
      $overrides run_name="$(basename "$name")" run_dir="$dir" train.progress=false \
      >"$dir.log" 2>&1; then
      echo "[core $core] $name FAILED (log: $dir.log)" >&2
      rc=1
    elif [ -n "$KEEP" ]; then
      mkdir -p "$KEEP/$name"
      for f in config.yaml metrics.jsonl summary.json data_report.json; do
        [ -f "$dir/$f" ] && cp "$dir/$f" "$KEEP/$name/"
      done
    fi
    rm -rf "$dir.claim"
  done
  return $rc
}
pids=()
for core in $CORES; do
  worker "$core" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
