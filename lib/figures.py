"""analyze.py's figures, from the analysis dict alone: eigenspectra per task, the
uniformity-alignment plane, and per-metric bars with 95% CIs. matplotlib is optional: without it
write_figures returns None and the report says how to get them."""
from pathlib import Path

import numpy as np


def write_figures(r: dict, out: Path) -> list | None:
    """Eigenspectra per task, the uniformity-alignment plane, per-metric bars with CIs -> the
    PNG names; None when matplotlib is missing (it is optional)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names, pools, files = [m["name"] for m in r["models"]], r["config"]["pools"], []
    cell = {(c["task"], c["pool"], c["model"]): c for c in r["cells"]}
    for task in r["tasks"]:
        fig, axes = plt.subplots(1, len(pools), figsize=(4 * len(pools), 3.2), squeeze=False)
        for ax, pool in zip(axes[0], pools):
            for name in names:
                ax.semilogy(np.maximum(cell[task, pool, name]["spectrum"], 1e-12), label=name)
            ax.set(title=f"{task} {pool}", xlabel="component", ylabel="eigenvalue / sum")
        axes[0][0].legend(fontsize=7)
        files.append(save(fig, out / f"spectrum-{task}.png"))
    if any("alignment" in c["metrics"] for c in r["cells"]):
        fig, ax = plt.subplots(figsize=(5, 4))
        for name in names:
            own = [c["metrics"] for c in r["cells"]
                   if c["model"] == name and "alignment" in c["metrics"]]
            ax.scatter([m["alignment"]["value"] for m in own],
                       [m["uniformity"]["value"] for m in own], label=name)
        ax.set(xlabel="alignment (lower: positives closer)", ylabel="uniformity (lower: spread)")
        ax.legend(fontsize=7)
        files.append(save(fig, out / "uniformity-alignment.png"))
    cells = list(dict.fromkeys((c["task"], c["pool"]) for c in r["cells"]))
    width = 0.8 / len(names)
    for metric in [m for m in r["definitions"] if any(m in c["metrics"] for c in r["cells"])]:
        fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(cells)), 3.5))
        for i, name in enumerate(names):
            got = [(j + i * width, m["value"], m["ci"] or [m["value"]] * 2)
                   for j, k in enumerate(cells)
                   if (m := cell[(*k, name)]["metrics"].get(metric)) and m["value"] is not None]
            ax.bar([x for x, _, _ in got], [v for _, v, _ in got], width, label=name, capsize=2,
                   yerr=np.clip([[v - c[0] for _, v, c in got], [c[1] - v for _, v, c in got]],
                                0, None).reshape(2, -1))  # 0, not -1e-7, on a rounded CI
        ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2, [f"{t}\n{p}" for t, p in cells],
                      fontsize=7)
        ax.set(title=metric)
        ax.legend(fontsize=7)
        files.append(save(fig, out / f"bars-{metric}.png"))
    return files


def save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# ----------------------------------------------------------------------------- the study's figures

def paper_figures(logs: dict, curve: dict, analysis: dict | None, groups: dict,
                  out: Path) -> dict | None:
    """make paper's key figures -> {PNG name: what it shows}; None without matplotlib.
    logs: {run: log records}; curve: paper.learning_curve's points; groups: {arm: its runs}."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    files = {}
    colour = {arm: f"C{i}" for i, arm in enumerate(groups)}
    arm_of = {run: arm for arm, runs in groups.items() for run in runs}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for run, log in logs.items():
        for ax, key in zip(axes, ("lam", "loss_jepa", "loss_mlm")):
            if key in log[-1] and (key != "lam" or {"loss_jepa", "loss_mlm"} <= set(log[-1])):
                ax.plot([r["flops"] for r in log], [r[key] for r in log], lw=1,
                        color=colour[arm_of[run]], label=run)
    for ax, title in zip(axes, ("lambda (L_JEPA's share of the loss weights)", "L_JEPA",
                                "L_MLM")):
        ax.set(title=title, xlabel="training FLOPs")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    axes[1].set_yscale("log")  # 1 - cos spans orders of magnitude
    files[save(fig, out / "lambda.png")] = "lambda and both losses against training FLOPs"
    if analysis and analysis["cells"]:
        tasks = list(analysis["tasks"])
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            seed_bars(ax, analysis, groups, colour, "semantic_probe",
                      [(task, p) for p in analysis["config"]["pools"]], lambda k: k[1])
            ax.set(title=f"{task}: probe score (percent)")
        axes[0][0].legend(fontsize=7)
        files[save(fig, out / "probes.png")] = ("probe scores per arm: bar = mean over "
                                                "pre-training seeds, dots = the seeds")
        cells = list(dict.fromkeys((c["task"], c["pool"]) for c in analysis["cells"]))
        fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.7 * len(cells)), 6.4))
        for ax, metric in zip(axes, ("uniformity", "effective_rank")):
            seed_bars(ax, analysis, groups, colour, metric, cells, lambda k: f"{k[0]}\n{k[1]}")
            ax.set(title=f"{metric} (bar: mean over seeds; dots: seeds)")
        axes[0].legend(fontsize=7)
        files[save(fig, out / "geometry.png")] = "uniformity and effective rank per arm"
    if curve:
        tasks = sorted({t for pts in curve.values() for _, _, scores, _ in pts for t in scores})
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.4), squeeze=False)
        randoms = groups.get("random", [])
        for ax, task in zip(axes[0], tasks):
            for run, pts in curve.items():
                ax.plot([tok for _, tok, _, _ in pts], [s.get(task) for _, _, s, _ in pts],
                        "o-", color=colour[arm_of[run]], label=run)
            values = [c["metrics"]["semantic_probe"]["value"] for c in (analysis or {}).get(
                "cells", []) if (c["task"], c["pool"]) == (task, "mean") and c["model"] in randoms]
            if values:
                ax.axhline(np.mean(values), color="grey", ls="--", label="random init (mean)")
            ax.set(title=f"{task}, mean pooling", xlabel="training tokens", ylabel="percent")
            ax.legend(fontsize=7)
        files[save(fig, out / "curve.png")] = "learning curve: probe score against tokens"
    return files


def seed_bars(ax, analysis: dict, groups: dict, colour: dict, metric: str, keys: list, label):
    """One bar per arm per cell (task, pool): the mean over the arm's runs, a dot per run."""
    width = 0.8 / len(groups)
    for i, (arm, runs) in enumerate(groups.items()):
        xs, means = [], []
        for j, key in enumerate(keys):
            values = [c["metrics"][metric]["value"] for c in analysis["cells"]
                      if (c["task"], c["pool"]) == key and c["model"] in runs
                      and c["metrics"].get(metric, {}).get("value") is not None]
            if values:
                xs.append(j + i * width)
                means.append(np.mean(values))
                ax.scatter([j + i * width] * len(values), values, s=8, color="k", zorder=3)
        ax.bar(xs, means, width, color=colour[arm], label=arm)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [label(k) for k in keys], fontsize=7)


def curve_figure(points: list[dict], metrics, out: Path) -> dict | None:
    """make curve's figure: each metric of each task against training FLOPs, an arm's mean over
    its seeds with +- sd bars and a dot per seed; the random inits' mean (dashed) and spread
    (band) -> {PNG name: what it shows}; None without matplotlib or points."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not points:
        return None
    tasks = list(points[0]["metrics"])
    arms = list(dict.fromkeys(p["arm"] for p in points if p["arm"] != "random"))
    fig, axes = plt.subplots(len(tasks), len(metrics), figsize=(3.4 * len(metrics),
                                                                2.9 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        for ax, metric in zip(row, metrics):
            for i, arm in enumerate(arms):
                pts = sorted((p for p in points if p["arm"] == arm), key=lambda p: p["flops"])
                s = [p["metrics"][task][metric] for p in pts]
                x = [p["flops"] for p in pts]
                ax.errorbar(x, [v["mean"] for v in s], [v["sd"] or 0 for v in s], fmt="o-",
                            color=f"C{i}", ms=3, capsize=2, label=arm)
                for xi, v in zip(x, s):
                    ax.scatter([xi] * len(v["values"]), v["values"], s=5, color=f"C{i}",
                               alpha=0.5)
            rand = next((p["metrics"][task][metric] for p in points if p["arm"] == "random"),
                        None)
            if rand:
                ax.axhline(rand["mean"], color="grey", ls="--", lw=1, label="random init")
                ax.axhspan(min(rand["values"]), max(rand["values"]), color="grey", alpha=0.15)
            ax.set_title(f"{task}: {metric}", fontsize=9)
            ax.set_xlabel("training FLOPs", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    return {save(fig, out / "curve.png"): "probe score and geometry against training FLOPs: "
                                          "mean +- sd over seeds, dots = seeds; dashed and band: "
                                          "the random inits' mean and range"}
