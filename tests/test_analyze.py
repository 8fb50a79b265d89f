"""The analysis' invariants: closed forms of every metric, weighted sets = repeated examples, the
report is generated from analysis.json only, the same inputs give a bit-identical analysis.json,
and the lexical probe never sees the dev subset."""
import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
import scipy.stats
from probe_fixtures import bert_random_like, save_checkpoint, write_glue

import analyze
import lib.download
from lib import compare, figures, markdown, stats

# ----------------------------------------------------------------------------- closed forms


def test_uniformity_of_orthonormal_vectors_is_exactly_minus_4():
    # distinct pairs only: ||z_i - z_j||^2 = 2 for every pair, log exp(-2 * 2) = -4
    assert stats.uniformity(np.eye(16))[0] == pytest.approx(-4.0, abs=1e-12)


def test_uniformity_of_identical_vectors_is_0_and_their_anisotropy_is_1():
    x = np.tile([[0.3, -1.0, 2.0]], (6, 1))
    assert stats.uniformity(x)[0] == pytest.approx(0.0, abs=1e-12)
    assert stats.anisotropy(x)[0] == pytest.approx(1.0, abs=1e-12)


def test_uniformity_and_anisotropy_ignore_the_norm_of_the_vectors():
    x = np.random.default_rng(0).normal(size=(30, 5))
    scaled = x * np.arange(1, 31)[:, None]
    assert stats.uniformity(scaled)[0] == pytest.approx(stats.uniformity(x)[0])
    assert stats.anisotropy(scaled)[0] == pytest.approx(stats.anisotropy(x)[0])


def test_effective_rank_of_identity_is_d_and_of_a_rank_one_set_is_1():
    d = 12
    balanced = stats.spectral(np.vstack([np.eye(d), -np.eye(d)]))  # centred already: sv all equal
    assert balanced["effective_rank"][0] == pytest.approx(d)
    assert balanced["spectral_entropy"][0] == pytest.approx(1.0)
    assert stats.spectral(np.eye(d))["rankme"][0] == pytest.approx(d)  # RankMe: raw, uncentred
    line = np.arange(1.0, 8.0)[:, None] * np.array([[1.0, -2.0, 0.5, 3.0]])
    assert stats.spectral(line)["effective_rank"][0] == pytest.approx(1.0, abs=1e-9)
    assert stats.spectral(line)["rankme"][0] == pytest.approx(1.0, abs=1e-9)


def test_spectral_entropy_of_isotropic_data_is_about_1():
    x = np.random.default_rng(0).normal(size=(20000, 8)) + 5.0  # the offset is centred away
    assert stats.spectral(x)["spectral_entropy"][0] == pytest.approx(1.0, abs=2e-3)


def test_alignment_of_identical_pairs_is_0_and_of_opposite_pairs_is_4():
    u = np.random.default_rng(0).normal(size=(10, 4))
    assert stats.alignment(u, u)[0] == pytest.approx(0.0, abs=1e-12)
    assert stats.alignment(u, -u)[0] == pytest.approx(4.0)  # squared distance, no further power
    positive = np.arange(10) < 5
    mixed = np.vstack([u[:5], -u[5:]])
    assert stats.alignment(u, mixed, positive)[0] == pytest.approx(0.0, abs=1e-12)


def test_class_separation_of_two_hand_computed_clusters():
    # class 0 = {e1, e2}, class 1 = {-e1, -e2}: intra sqrt2; inter (2 + sqrt2 + sqrt2 + 2) / 4
    x = np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1]])
    ratio = stats.class_separation(x, np.array([0, 0, 1, 1]))[0]
    assert ratio == pytest.approx(np.sqrt(2) / (1 + np.sqrt(2) / 2))


def test_auc_counts_ties_as_half_and_matches_the_rank_formula():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(300, 3)), 1)  # many ties
    Y = rng.random((300, 3)) < 0.3
    ranks = np.argsort(np.argsort(scores, 0), 0)  # for the tie-free check below
    assert stats.auc(scores[:, :1] * 0, Y[:, :1])[0] == pytest.approx(0.5)  # constant score
    assert stats.auc(ranks.astype(float), ranks > 150)[0] == pytest.approx(1.0)
    from scipy.stats import rankdata
    want = [(rankdata(scores[:, k])[Y[:, k]].sum() - Y[:, k].sum() * (Y[:, k].sum() + 1) / 2)
            / (Y[:, k].sum() * (~Y[:, k]).sum()) for k in range(3)]
    assert stats.auc(scores, Y)[0] == pytest.approx(np.mean(want))


def test_a_weighted_set_equals_its_examples_repeated():
    """Bootstrap counts as weights = the resample itself (pairs of distinct examples only)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 6)), rng.integers(0, 2, 40)
    scores, Y = rng.normal(size=(40, 4)), rng.random((40, 4)) < 0.4
    w = rng.integers(1, 4, 40).astype(float)
    rep = np.repeat(np.arange(40), w.astype(int))
    for metric in ("spectral_entropy", "effective_rank", "rankme"):
        assert stats.spectral(x, w[None])[metric][0] == pytest.approx(
            stats.spectral(x[rep])[metric][0])
    assert stats.auc(scores, Y, w[None])[0] == pytest.approx(stats.auc(scores[rep], Y[rep])[0])
    assert stats.micro_f1(scores > 0, Y, w[None])[0] == pytest.approx(
        stats.micro_f1(scores[rep] > 0, Y[rep])[0])
    # a repeated example pairs with its copies in the resample, but weights never pair i with i
    assert stats.anisotropy(x, np.ones((1, 40)))[0] == pytest.approx(stats.anisotropy(x)[0])
    same = stats.class_separation(x, y, np.ones((1, 40)))[0]
    assert same == pytest.approx(stats.class_separation(x, y)[0])


# ----------------------------------------------------------------------------- report


def fake_analysis() -> dict:
    metrics = {m: dict(value=0.1 + i / 7, ci=[i / 9, 0.5 + i / 11]) for i, m in
               enumerate(analyze.METRICS)}
    cells = [dict(task="sst2", pool=p, model=m, metrics={k: dict(value=v["value"] + j + 0.01 * q,
                                                                 ci=v["ci"])
                                                         for k, v in metrics.items()},
                  probe=dict(file=f"{m}/probe/sst2-{p}.json"), spectrum=[0.5, 0.5])
             for j, m in enumerate(("hyb", "mlm", "random-tiny")) for q, p in enumerate(("mean",
                                                                                        "max"))]
    pair = dict(label="hyb vs mlm", a=["hyb"], b=["mlm"])
    comps = [dict(pair=pair["label"], task="sst2", pool=p, metric=k, a_mean=0.2 + i / 23,
                  b_mean=1.2 + i / 29, a_sd=None, b_sd=None, diff=-1 - i / 13,
                  ci=[-2 - i / 17, -i / 19], test="bootstrap", test_examples="bootstrap",
                  p_examples=0.0005 + i / 1000, p_seeds=None, p=0.0005 + i / 1000)
             for q, p in enumerate(("mean", "max")) for i, k in enumerate(analyze.METRICS)]
    cfg = analyze.AnalyzeConfig(permutations=999)
    compare.adjust(comps, [pair], "holm")  # sets the pair's family and tests
    base = dict(metric="acc", value=51.2345, ci=[47.1, 55.3], file="out/baselines/probe/x.json")
    return dict(config=dict(pools=["mean", "max"]), definitions=analyze.DEFINITIONS,
                statistics=analyze.STATISTICS, tests=analyze.TESTS,
                pairs=[compare.pair_summary(cfg, pair, analyze.ALPHA)],
                models=[dict(name=n, method=mo, ckpt=f"{n}/ckpt.pt", d=8, probe_dir=f"{n}/probe")
                        for n, mo in (("hyb", "hybrid"), ("mlm", "mlm"),
                                      ("random-tiny", "random"))],
                tasks=dict(sst2=dict(split="dev", n=20, n_dev=30, lexical_tokens=["a"],
                                     lexical_majority_f1=0.4321)),
                skipped=dict(mnli="no data"), baselines=dict(sst2=dict(
                    majority=base, bow=dict(base, value=77.7777, ci=[70.01, 80.02]))),
                cells=cells, comparisons=comps,
                consistency={pair["label"]: compare.consistency(comps, pair["label"],
                                                                analyze.METRICS, analyze.ALPHA)})


def numbers(obj):
    """Every float in a JSON tree, except the spectra (they are plotted, not tabulated)."""
    if isinstance(obj, dict):
        return [v for k, x in obj.items() if k != "spectrum" for v in numbers(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in numbers(x)]
    return [obj] if isinstance(obj, float) else []


def test_report_shows_every_number_of_the_json_and_types_none():
    r = fake_analysis()
    md = markdown.analysis_report(r, None)
    shown = set(re.findall(r"-?\d+\.\d{3}", md)) | set(re.findall(r"\d\.\de-\d\d", md))
    # one run per side: the sides' means are the models' own values, shown as those
    not_shown = ("p", "p_adj", "p_examples", "p_seeds", "a_mean", "b_mean")
    values = numbers({k: r[k] for k in ("cells", "baselines", "tasks")}) + numbers(
        [{k: v for k, v in c.items() if k not in not_shown} for c in r["comparisons"]])
    assert not [v for v in values if markdown.fmt(v) not in shown]
    assert not [c for c in r["comparisons"] for k in ("p", "p_adj")
                if markdown.fmt_p(c[k]) not in shown]  # raw and adjusted p of every comparison
    for k, v in r["consistency"]["hyb vs mlm"].items():  # 2 cells, hyb never greater
        sig = v["significant"]
        assert f"| {k} | 2 | 0 | 2 | 2 | {sig} (0) | {'yes' if sig == 2 else 'no'} |" in md
    assert "matplotlib is not installed" in md and "Skipped mnli: no data" in md
    for sentence in analyze.TESTS.values():  # each test's null, in one sentence
        assert sentence in md
    # nothing numeric in the report that the JSON does not hold (definitions aside)
    body = md.split("## Definitions")[0] + md.split("## Summary")[1]
    allowed = {markdown.fmt(v) for v in numbers(r)} | {markdown.fmt_p(v) for v in numbers(r)}
    assert set(re.findall(r"-?\d+\.\d{3}", body)) <= allowed


def test_figures_are_written_when_matplotlib_is_there(tmp_path):
    import matplotlib  # noqa: F401 (make test installs requirements-paper.txt: never skipped)
    files = figures.write_figures(fake_analysis(), tmp_path)
    assert "spectrum-sst2.png" in files and all((tmp_path / f).stat().st_size > 0 for f in files)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """Two tiny runs (hybrid, mlm) with probe-style checkpoints and fixture GLUE data."""
    write_glue(tmp_path / "data", n_train=80, n_dev=30, tasks=("sst2", "mrpc"))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(lib.download, "RETRY_BACKOFF", 0)  # mnli is missing: fail fast, offline
    monkeypatch.chdir(tmp_path)
    folders = []
    for seed, mode in enumerate(("hybrid", "mlm")):
        folder = tmp_path / f"{mode}-x"
        folder.mkdir()
        save_checkpoint(folder / "ckpt.pt", mode=mode, seed=seed)
        (folder / "config.json").write_text(json.dumps(dict(config=dict(mode=mode,
                                                                        preset="tiny"))))
        folders.append(str(folder))
    return folders


def run_analysis(runs, out, reuse=False, **kw):
    cfg = analyze.AnalyzeConfig(runs=tuple(runs), tasks=("sst2", "mrpc", "mnli"),
                          pools=("mean", "attention"), random=False, n=25, lex_k=10,
                          lex_train=60, bootstrap=30, permutations=30, out=str(out),
                          figures=False, probe_args="--max_iter=30 --l2_grid=1e-2,1", **kw)
    return analyze.analyze(cfg, reuse)


def test_same_inputs_give_a_bit_identical_analysis_json(runs, tmp_path):
    first = run_analysis(runs, tmp_path / "a")
    before = (tmp_path / "a" / "analysis.json").read_bytes()
    run_analysis(runs, tmp_path / "a")  # second time: features from the probe's cache
    assert (tmp_path / "a" / "analysis.json").read_bytes() == before
    assert "mnli" in first["skipped"] and set(first["tasks"]) == {"sst2", "mrpc"}
    assert len(first["cells"]) == 2 * 2 * 2  # tasks x pools x models
    assert {c["metric"] for c in first["comparisons"]} >= {"uniformity", "alignment", "rankme"}
    assert all(0 < c["p"] <= 1 for c in first["comparisons"] if c["p"] is not None)
    sst2 = next(c for c in first["cells"] if c["task"] == "sst2")
    assert "class_separation" in sst2["metrics"] and "alignment" not in sst2["metrics"]
    assert "error" in first["baselines"]["sst2"]["bow"]  # no bert vocab offline: reported
    assert (tmp_path / "a" / "report.md").read_text().count("## ") >= len(analyze.METRICS)


def test_lexical_probe_never_sees_the_dev_subset(runs, tmp_path, monkeypatch):
    """The ridge probe is fitted on train vectors only: other dev sentences change nothing it is
    fitted on, nor the strength it chooses."""
    seen = []
    fit = analyze.ridge_scores
    monkeypatch.setattr(analyze, "ridge_scores", lambda X, Y, X_eval, seed: seen.append((X, Y)) or
                        fit(X, Y, X_eval, seed))
    first = run_analysis(runs, tmp_path / "a")
    other = write_glue(tmp_path / "other", n_train=80, n_dev=30, seed=1, tasks=("sst2", "mrpc"))
    for task in ("SST-2", "MRPC"):  # same train split, other dev sentences
        shutil.copy(tmp_path / "data/glue" / task / "train.tsv", other / "glue" / task)
    for run in runs:  # the probe's feature cache is keyed by split name, not by content
        shutil.rmtree(f"{run}/probe")
    monkeypatch.setenv("DATA_DIR", str(other))
    fitted_first = seen[:]
    seen.clear()
    second = run_analysis(runs, tmp_path / "b")
    assert len(seen) == len(fitted_first) == 8
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(fitted_first, seen))
    assert [c["lexical_ridge"] for c in first["cells"]] == [c["lexical_ridge"]
                                                            for c in second["cells"]]
    assert first["tasks"]["sst2"]["lexical_tokens"] == second["tasks"]["sst2"]["lexical_tokens"]


def test_an_analysis_made_with_other_settings_is_not_reused_and_says_why(runs, tmp_path, capsys):
    run_analysis(runs, tmp_path / "a")
    capsys.readouterr()
    stamp = (tmp_path / "a" / "analysis.json").stat().st_mtime_ns
    run_analysis(runs, tmp_path / "a", reuse=True)
    assert "reused (made with these settings)" in capsys.readouterr().err
    assert (tmp_path / "a" / "analysis.json").stat().st_mtime_ns == stamp
    cfg = analyze.AnalyzeConfig(runs=tuple(runs), tasks=("sst2",), pools=("mean",), random=False,
                                n=25, lex_k=10, lex_train=60, bootstrap=30, permutations=30,
                                out=str(tmp_path / "a"), figures=False,
                                probe_args="--max_iter=31 --l2_grid=1e-2,1")
    analyze.analyze(cfg, reuse=True)
    err = capsys.readouterr().err
    assert "not reused: made with other settings (flags.max_iter: 30 -> 31)" in err  # the probes
    assert "analysis.json is not reused: made with other settings (" in err
    assert "flags.probe_args: --max_iter=30 --l2_grid=1e-2,1 -> --max_iter=31" in err


def test_an_a_a_comparison_of_two_groups_of_one_method_finds_no_difference(tmp_path, monkeypatch):
    """Two runs against two runs of the same method (here: random inits, 4 seeds): the unit is
    the run (Welch over seeds), each p is scipy's Welch test of the runs' values in the cells
    (2 vs 2: Welch's df here 1.0 to 2.0, so Student's df = 2 gives other p's, e.g. 0.42 for 0.5),
    p_adj is Holm's of the pair's family, and after it nothing is significant."""
    write_glue(tmp_path / "data", n_train=80, n_dev=30, tasks=("sst2",))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    for seed in range(4):
        (tmp_path / f"mlm-{seed}").mkdir()
        save_checkpoint(tmp_path / f"mlm-{seed}" / "ckpt.pt", mode="mlm", seed=seed)
        (tmp_path / f"mlm-{seed}" / "config.json").write_text(json.dumps(dict(config=dict(
            mode="mlm", preset="tiny"))))
    r = analyze.analyze(analyze.AnalyzeConfig(
        runs=tuple(f"mlm-{s}" for s in range(4)), tasks=("sst2",), pools=("mean",), random=False,
        n=30, lex_k=10, lex_train=60, bootstrap=30, permutations=99, out="a", figures=False,
        probe_args="--max_iter=30 --l2_grid=1e-2,1", compare=("mlm-0+mlm-1/mlm-2+mlm-3",)))
    pair = r["pairs"][0]
    assert (pair["a"], pair["b"]) == (["mlm-0", "mlm-1"], ["mlm-2", "mlm-3"])
    assert pair["unit"].startswith("runs") and pair["family"] >= 9
    tested = [c for c in r["comparisons"] if c["p"] is not None]
    assert all(c["test"] == "welch" and c["a_sd"] is not None for c in tested)
    cell = {(c["task"], c["pool"], c["model"]): c["metrics"] for c in r["cells"]}
    for c in tested:  # the JSON's p has 4 significant digits, the cells' values 6 decimals
        a, b = ([cell[c["task"], c["pool"], m][c["metric"]]["value"] for m in pair[side]]
                for side in ("a", "b"))
        want = scipy.stats.ttest_ind_from_stats(np.mean(a), np.std(a, ddof=1), 2, np.mean(b),
                                                np.std(b, ddof=1), 2, equal_var=False)
        assert c["p"] == pytest.approx(want.pvalue, rel=1e-3), c["metric"]
    assert [c["p_adj"] for c in tested] == [float(f"{q:.4g}")
                                            for q in stats.holm([c["p"] for c in tested])]
    assert not [c["metric"] for c in tested if c["p_adj"] < analyze.ALPHA]
    with pytest.raises(analyze.UserError, match="mlm-1 is on both sides"):
        analyze.resolve_pairs(dataclasses.replace(analyze.AnalyzeConfig(), compare=("mlm-1/mlm",)),
                        analyze.resolve_models(analyze.AnalyzeConfig(runs=("mlm-0", "mlm-1"))))


@pytest.mark.faults
@pytest.mark.parametrize("flags, message", [
    (["--tasks=sst3"], "--tasks=sst3"), (["--pools=cls"], "--pools=cls"),
    (["--n=0"], "--n"), (["--runs=nowhere"], "nowhere has no config.json"),
    (["--correction=bonferroni"], "--correction=bonferroni: expected holm or bh"),
    (["--runs=", "--random=true", "--compare=hybrid"], "--compare=hybrid: expected two sides"),
    (["--runs=", "--random=true", "--compare=hybrid/random-tiny"], "hybrid is neither a run")])
def test_bad_flags_are_user_errors(flags, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(analyze.UserError, match=re.escape(message)):
        analyze.main(flags)


def test_random_baseline_on_real_sst2(mirror, tmp_path, monkeypatch):
    """The mirror's SST-2 dev set with a random d128 encoder (mean pooling, 200 dev examples,
    probes fitted on 500 train examples). Bands a broken probe or metric falls out of, measured
    today (values [95% CIs]):
    - semantic probe 56.31 [53.10, 59.40]: its CI above the majority baseline (50.92) and below
      bag-of-words (65.94), both fitted in this run. A probe at chance (shuffled labels, zero
      features) is the majority's 50.92 or 50 +- 1.7, which clears by its CI 0.7% of the time.
    - lexical AUC 0.865 [0.851, 0.879], CI inside (0.75, 0.95): lexical labels shuffled across
      the fit examples give 0.507 [0.482, 0.532] (chance is 0.5); a probe fitted on the scored
      dev examples themselves 0.999. Lexical F1 0.534 [0.512, 0.556], CI inside (0.3, 0.75):
      0.059 and 0.855 for those two (predicting each token's train majority scores 0).
    - effective rank 73.3 [71.5, 75.1] of 128 dimensions, inside (66, 81), +-10%: without the
      square root (the entropy of the eigenvalues, not of the singular values) it is 32.4,
      uncentred (RankMe) 60.6, a collapsed encoder 1; zero features give no value at all."""
    monkeypatch.chdir(tmp_path)
    like = bert_random_like(tmp_path / "like.pt")
    r = analyze.analyze(analyze.AnalyzeConfig(runs=(), tasks=("sst2",), pools=("mean",), n=200,
                                  probe_args=f"--max_train=500 --random_like={like}",
                                  lex_train=500, bootstrap=20, permutations=20, out="a",
                                  figures=False))
    cell, base = r["cells"][0]["metrics"], r["baselines"]["sst2"]
    lo, hi = cell["semantic_probe"]["ci"]
    assert base["majority"]["value"] < lo and hi < base["bow"]["value"], (lo, hi, base)
    assert r["tasks"]["sst2"]["lexical_majority_f1"] < cell["lexical_f1"]["ci"][0]
    for metric, (floor, ceiling) in dict(lexical_auc=(0.75, 0.95), lexical_f1=(0.3, 0.75),
                                         effective_rank=(66, 81)).items():
        lo, hi = cell[metric]["ci"]
        assert floor < lo <= cell[metric]["value"] <= hi < ceiling, (metric, cell[metric])
