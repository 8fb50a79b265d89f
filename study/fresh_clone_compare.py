"""Same seed, same bits: compare the out/ folder of a study made in a fresh clone with a committed
one, file by file. Runs: the last log line (weights_sha256, the losses, the step, the FLOPs) and
config.json's resolved config and vocabulary; probe results: every metric and the hash of the
per-example predictions. Prints one line per kind and exits 1 if anything differs.

    python -m study.fresh_clone_compare FRESH_OUT COMMITTED_OUT
"""
import json
import sys
from pathlib import Path

RUN_KEYS = ("step", "flops", "tokens", "loss", "loss_mlm", "loss_jepa", "lam", "weights_sha256")


def last_record(log: Path) -> dict:
    return json.loads(log.read_text().splitlines()[-1])


def compare(fresh: Path, committed: Path) -> list[str]:
    """'what: differs (...)' for every difference; the counts of what was compared last."""
    problems, runs, probes = [], 0, 0
    for log in sorted(committed.rglob("log.jsonl")):
        rel, other = log.relative_to(committed), fresh / log.relative_to(committed)
        if not other.exists():
            problems.append(f"{rel}: missing in the fresh study")
            continue
        runs += 1
        a, b = last_record(log), last_record(other)
        if diff := [k for k in RUN_KEYS if a.get(k) != b.get(k)]:
            problems.append(f"{rel}: last line differs in {', '.join(diff)}")
        ca, cb = (json.loads((p.parent / "config.json").read_text()) for p in (log, other))
        for key in ("config", "tokenizer_sha256"):
            if ca[key] != cb[key]:
                problems.append(f"{rel.parent / 'config.json'}: {key} differs")
    for path in sorted(committed.rglob("*.json")):
        rel = path.relative_to(committed)
        r = json.loads(path.read_text())
        if not isinstance(r, dict) or "metrics" not in r or "predictions" not in r:
            continue  # not a probe result
        if not (fresh / rel).exists():
            problems.append(f"{rel}: missing in the fresh study")
            continue
        probes += 1
        f = json.loads((fresh / rel).read_text())
        if f["metrics"] != r["metrics"] or f["predictions"]["sha256"] != r["predictions"]["sha256"]:
            problems.append(f"{rel}: metrics or per-example predictions differ")
    return problems + [f"compared: {runs} runs, {probes} probe results"]


def main(argv) -> int:
    if len(argv) != 2:
        print("usage: python -m study.fresh_clone_compare FRESH_OUT COMMITTED_OUT", file=sys.stderr)
        return 2
    fresh, committed = map(Path, argv)
    if not committed.is_dir() or not fresh.is_dir():
        print(f"error: {committed if not committed.is_dir() else fresh} is not a folder",
              file=sys.stderr)
        return 2
    lines = compare(fresh, committed)
    print("\n".join(lines))
    print("same bits: yes" if len(lines) == 1 else f"same bits: no ({len(lines) - 1} differences)")
    return 0 if len(lines) == 1 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
