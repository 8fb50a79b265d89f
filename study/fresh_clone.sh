#!/bin/bash
# A 1-seed `make paper` from a fresh clone, given the study's tokenizer, then compare with the
# committed study. Run from the repository root: bash results/tiny-cpu/fresh-1seed/run.sh FOLDER
# with DATA_DIR (the mirror) set and out/paper/hybrid-tiny/ckpt.pt being the study's seed-0 run.
set -euo pipefail
D=$(mkdir -p "$1" && cd "$1" && pwd); repo=$(pwd); mirror=$(cd "$DATA_DIR" && pwd)
mkdir -p "$D/data/tokens/enwiki/wordpiece-8192"
for x in glue corpus tokenizers; do ln -s "$mirror/$x" "$D/data/$x"; done
.venv/bin/python -c "import sys, torch; sys.stdout.write(torch.load('out/paper/hybrid-tiny/ckpt.pt',
    map_location='cpu', weights_only=True)['tokenizer'])" \
    > "$D/data/tokens/enwiki/wordpiece-8192/tokenizer.json"
git clone -q "$repo" "$D/p"
cd "$D/p"
make .venv/.paper-installed > "$D/venv.txt" 2>&1
DATA_DIR="$D/data" TORCHINDUCTOR_CACHE_DIR="$D/inductor" /usr/bin/time -v make paper CORPUS=enwiki \
    > "$D/paper-stdout.txt" 2> "$D/paper-stderr.txt"
cd "$repo" && .venv/bin/python results/tiny-cpu/fresh-1seed/compare.py "$D/p/out" out
