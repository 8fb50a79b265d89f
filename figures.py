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
