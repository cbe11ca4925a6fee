#!/usr/bin/env bash
# The seed paper's comparison at small scale (docs/paper.md): padding vs random packing vs greedy
# packing on FLAN-CoT with SmolLM2-135M on CPU, over SEEDS, then benchmarks and the report.
#   bash benchmarks/paper_small.sh   # env: SEEDS="0 1" LIMIT=30 TASKS=... OUT=outputs/paper_small
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-"0 1"}
LIMIT=${LIMIT:-30}
OUT=${OUT:-outputs/paper_small}
TASKS=${TASKS:-gsm8k,bbh_boolean_expressions,bbh_sports_understanding}
EVAL_ARGS=${EVAL_ARGS:---max-gen-toks 192}
declare -A SETTINGS=(
  [padding]="collator=padding"
  [random_packing]="collator=packing collator.strategy=random_concat"
  [greedy_packing]="collator=packing collator.strategy=bfd"
)
runs=()
for seed in $SEEDS; do
  for name in padding random_packing greedy_packing; do
    dir="$OUT/$name-seed$seed"
    if [ ! -f "$dir/summary.json" ]; then
      $PY sft/train.py experiment=paper_small ${SETTINGS[$name]} seed=$seed run_name=$name-seed$seed \
        run_dir="$dir" train.progress=false
    fi
    if [ ! -f "$dir/eval/summary.json" ]; then
      $PY -m sft.eval.cli "$dir" --tasks "$TASKS" --limit "$LIMIT" $EVAL_ARGS
    fi
    runs+=("$dir")
  done
done
$PY -m sft.report.cli "${runs[@]}" --out "$OUT/report"
echo "report: $OUT/report/report.md"
