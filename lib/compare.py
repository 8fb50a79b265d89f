"""Comparing two sides (groups of runs) metric by metric: the difference with its CI and test
(stats.group_difference), the multiple-comparison adjustment over a pair's tests, and per metric
how consistent the differences are. analyze.py builds its comparisons from these; numbers are
rounded here for the JSON."""
import numpy as np

from lib import stats


def num(v, digits: int = 6):
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


def num_p(p):
    return None if p is None else float(f"{p:.4g}")  # significant digits: a p can be 1e-12


def rounded(ci: list | None) -> list | None:
    return None if ci is None else [num(v) for v in ci]


def compare(cfg, pair: dict, point: dict, boots: dict, examples: dict | None) -> dict:
    """One metric of one cell, side a - side b (stats.group_difference), rounded for the JSON.
    point: {run: value}, boots: {run: (B,) values on the shared resamples}, examples: {run: (n,)
    per-example values} for a metric that is a mean over examples, else None."""
    sides = (pair["a"], pair["b"])
    d = stats.group_difference(tuple([point[n] for n in s] for s in sides),
                           tuple([boots[n] for n in s] for s in sides),
                           examples and tuple([examples[n] for n in s] for s in sides),
                           cfg.permutations, [cfg.seed, 5])
    return dict(pair=pair["label"], a_mean=num(d["a_mean"]), b_mean=num(d["b_mean"]),
                a_sd=num(d["a_sd"]), b_sd=num(d["b_sd"]), diff=num(d["diff"]),
                ci=rounded(d["ci"]), test=d["test"], p=num_p(d["p"]),
                test_examples=d["test_examples"], p_examples=num_p(d["p_examples"]),
                ci_examples=rounded(d["ci_examples"]), p_seeds=num_p(d["p_seeds"]))


def adjust(comparisons: list, pairs: list, correction: str):
    """Adjusted p (p_adj) of every comparison, one family per pair: every test it counts."""
    for pair in pairs:
        family = [c for c in comparisons if c["pair"] == pair["label"] and c["p"] is not None]
        for c, q in zip(family, stats.ADJUST[correction]([c["p"] for c in family])):
            c["p_adj"] = num_p(q)
        pair.update(family=len(family), tests=sorted({c["test"] for c in family}))


def consistency(comparisons: list, pair: str, metrics, alpha: float) -> dict:
    """Per metric: cells, sign counts, raw and adjusted significant counts; consistent = the
    adjusted p is < alpha in every cell, all in one direction (None when there is no test)."""
    out = {}
    for metric in metrics:
        cs = [c for c in comparisons if c["pair"] == pair and c["metric"] == metric
              and c["diff"] is not None]
        if not cs:
            continue
        tested = [c for c in cs if c["p"] is not None]
        sig = [c for c in tested if c["p_adj"] < alpha]
        out[metric] = dict(
            cells=len(cs), a_greater=sum(c["diff"] > 0 for c in cs),
            b_greater=sum(c["diff"] < 0 for c in cs),
            raw_significant=sum(c["p"] < alpha for c in tested) if tested else None,
            significant=len(sig) if tested else None,
            significant_a_greater=sum(c["diff"] > 0 for c in sig) if tested else None,
            consistent=(len(sig) == len(cs) and len({c["diff"] > 0 for c in sig}) == 1)
            if tested else None)
    return out


def pair_summary(cfg, pair: dict, alpha: float) -> dict:
    """What a pair's p-values can say: the unit of its test, and the smallest p it can reach."""
    seeds = min(len(pair["a"]), len(pair["b"]))
    unit = ("runs: Welch's t-test over seeds, a claim about the methods" if seeds >= 2 else
            "dev examples: a claim about these checkpoints, not about the methods (that needs "
            "at least 2 runs, seeds, per side)")
    return dict(pair, unit=unit, correction=cfg.correction, alpha=alpha,
                threshold=alpha / max(pair["family"], 1) if cfg.correction == "holm" else None,
                smallest_p_sign_flip=1 / (1 + cfg.permutations))
