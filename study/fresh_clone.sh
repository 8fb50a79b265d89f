#!/usr/bin/env bash
# Same seed, same bits, from a fresh clone: clone this repository into FOLDER, make a DATA_DIR that
# links the offline mirror's GLUE, corpus and bert vocab (no prepared tokens, no vocabulary placed
# by hand: the tiny preset's enwiki vocabulary comes from vocab/), a fresh venv and Inductor cache,
# run `make paper CORPUS=enwiki` (1 seed), then compare its out/ with the committed study REF
# (study/fresh_clone_compare.py: weights hashes, losses, configs, every probe result).
# The clone checks out COMMIT: by default the one REF's hybrid run recorded (the bits are
# promised for the same code; a later commit may compute in another order, e.g. the CPU attention
# of 9985bfe); HEAD to run the current code.
# From the repository root, with DATA_DIR the mirror:
#   DATA_DIR=../shared/data bash study/fresh_clone.sh "$(mktemp -d)" [results/tiny-cpu-1seed] [COMMIT]
# Without REF (or before it is committed) it only runs the study. ~30 min on a 2-core CPU.
set -euo pipefail
D=$(mkdir -p "$1" && cd "$1" && pwd)
REF=${2:-results/tiny-cpu-1seed}
repo=$(pwd)
mirror=$(cd "${DATA_DIR:?set DATA_DIR to the offline mirror (../shared/data)}" && pwd)
mkdir -p "$D/data"
for x in glue corpus tokenizers; do ln -s "$mirror/$x" "$D/data/$x"; done
conf="$REF/out/paper/hybrid-tiny/config.json"
COMMIT=${3:-$( [ -f "$conf" ] && python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["git"])' "$conf" || echo HEAD)}
git clone -q "$repo" "$D/p"
cd "$D/p"
git checkout -q "$COMMIT"
git log -1 --format='commit %H %cd' > "$D/commit.txt"
make .venv/.paper-installed > "$D/venv.txt" 2>&1
DATA_DIR="$D/data" TORCHINDUCTOR_CACHE_DIR="$D/inductor" /usr/bin/time -v make paper CORPUS=enwiki \
    > "$D/paper-stdout.txt" 2> "$D/paper-stderr.txt"
cd "$repo"
if [ -d "$REF/out" ]; then
  .venv/bin/python -m study.fresh_clone_compare "$D/p/out" "$REF/out" | tee "$D/compare-output.txt"
else
  echo "no committed study at $REF/out: nothing to compare; the new study is in $D/p/out"
fi
