"""Compare a fresh 1-seed study (its out/) with the committed 3-seed study: the seed-0 weights
(against the study's local out/, checkpoints are not committed) and every probe result both have
(against results/tiny-cpu/out). python compare.py FRESH_OUT STUDY_OUT"""
import json
import sys
from pathlib import Path

import torch

fresh, study = Path(sys.argv[1]), Path(sys.argv[2])
committed = Path(__file__).resolve().parents[1] / "out"
for run in ("hybrid-tiny", "mlm-tiny"):
    for name in ("ckpt.pt", "ckpt-f0.25.pt", "ckpt-f0.5.pt"):
        a, b = (torch.load(p / "paper" / run / name, map_location="cpu", weights_only=True)["model"]
                for p in (fresh, study))
        print(f"{run}/{name}: {sum(not torch.equal(a[k], b[k]) for k in a)} of {len(a)} tensors differ")
same = total = 0
for path in sorted(fresh.rglob("*.json")):
    rel = path.relative_to(fresh)
    if "analysis" in rel.parts or rel.name == "config.json" or not (committed / rel).exists():
        continue
    a, b = json.loads(path.read_text()), json.loads((committed / rel).read_text())
    total += 1
    same += a["metrics"] == b["metrics"] and a["predictions"]["sha256"] == b["predictions"]["sha256"]
print(f"probe results in both: {total}; identical metrics and prediction hashes: {same}")
