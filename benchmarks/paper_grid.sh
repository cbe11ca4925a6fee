#!/usr/bin/env bash
# The seed paper's other experiments at small scale (docs/paper.md, "The paper's other
# experiments"): every job of one experiment's grid, spread over CPU cores, one job per core at a
# time (taskset + OMP_NUM_THREADS=1), each job in its own run dir under OUT/EXPERIMENT. A job whose
# summary.json exists is skipped, so rerunning the command resumes the grid.
#   bash benchmarks/paper_grid.sh lr          # env: SEEDS="0 1" CORES="0 1" OUT=outputs/paper_grid
# EXPERIMENT: base | lr | grouping | turns | size | list (prints every job, runs nothing).
# The same jobs as one Hydra sweep (sequential): the `sweep` column of docs/paper.md's table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-"0 1"}
CORES=${CORES:-"0 1"}
OUT=${OUT:-outputs/paper_grid}
EXP=${1:?usage: paper_grid.sh base|lr|grouping|turns|size|list}

PAD="collator=padding"
PACK="collator=packing collator.strategy=bfd"
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
    grouping)
      add grouping packing_together "$PACK collator.group_by=source collator.group_mode=together"
      add grouping packing_apart "$PACK collator.group_by=source collator.group_mode=apart" ;;
    turns)
      add turns packing_combine_random "$PACK data.combine=random data.combine_turns=4"
      add turns packing_combine_same_tag "$PACK data.combine=same_tag data.combine_turns=4" ;;
    size)
      add size padding_2400 "$PAD data.limit=2640"
      add size packing_2400 "$PACK data.limit=2640" ;;
    *) echo "unknown experiment $1" >&2; exit 2 ;;
  esac
}
if [ "$EXP" = list ]; then
  for e in base lr grouping turns size; do grid "$e"; done
  printf '%s\n' "${JOBS[@]}"
  exit 0
fi
grid "$EXP"
mkdir -p "$OUT"

worker() {
  local core=$1 job name overrides dir
  for job in "${JOBS[@]}"; do
    name=${job%%|*}
    overrides=${job#*|}
    dir="$OUT/$name"
    [ -f "$dir/summary.json" ] && continue
    mkdir -p "$(dirname "$dir")"
    mkdir "$dir.claim" 2>/dev/null || continue # another core has it
    echo "[core $core] $name: $overrides"
    # shellcheck disable=SC2086
    if ! OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c "$core" $PY sft/train.py experiment=paper_small \
      $overrides run_name="$(basename "$name")" run_dir="$dir" train.progress=false \
      >"$dir.log" 2>&1; then
      echo "[core $core] $name FAILED (log: $dir.log)" >&2
      rc=1
    fi
    rmdir "$dir.claim"
  done
  return ${rc:-0}
}
pids=()
for core in $CORES; do
  worker "$core" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
