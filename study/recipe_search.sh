#!/usr/bin/env bash
# The recipe search of issue 11: MLM-only candidates at 5e13 training FLOPs (the new tiny budget
# of make paper; a third of the old one), seed 0, enwiki, train.py's defaults otherwise (compiled,
# deterministic). Selection signals (train side only): study/recipe_search.py's validation MLM loss and
# probe.py's held-out-train score (SST-2, STS-B; mean pooling). Run from the repository root:
#   DATA_DIR=../shared/data bash study/recipe_search.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
BUDGET=5e13
declare -A FLAGS=(
  [d128-bert-s64]="--d_model=128 --n_layers=4 --n_heads=4 --pred_dim=64 --tokenizer=bert-base-uncased --lr=2e-3 --batch_size=128 --seq_len=64"
  [d128-wp8k-s64]="--d_model=128 --n_layers=4 --n_heads=4 --pred_dim=64 --tokenizer=wordpiece-8192 --lr=2e-3 --batch_size=128 --seq_len=64"
  [d128-wp8k-s64-lr4e-3]="--d_model=128 --n_layers=4 --n_heads=4 --pred_dim=64 --tokenizer=wordpiece-8192 --lr=4e-3 --batch_size=128 --seq_len=64"
)
for name in ${NAMES:-d128-wp8k-s64 d128-bert-s64 d128-wp8k-s64-lr4e-3}; do
  run=out/search/$name
  if [ ! -f "$run/done" ]; then
    start=$(date +%s)
    $PY train.py --mode=mlm --preset=tiny --corpus=enwiki --max_flops=$BUDGET --out=$run \
        ${FLAGS[$name]} $( [ -f "$run/ckpt.pt" ] && echo --resume ) 2>&1 | tail -n 5
    echo $(( $(date +%s) - start )) > "$run/done"
  fi
  $PY -m study.recipe_search --run=$run --flags="${FLAGS[$name]}" --out=results/recipe-search/$name.json
done
$PY -m study.recipe_search --table=results/recipe-search
