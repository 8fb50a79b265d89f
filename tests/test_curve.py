"""`make curve` (study/jobs.py, study/curve.py) on a synthetic corpus and fixture GLUE tasks: jobs
run separately, each leaves a complete folder of its own, the merge reads those folders' small
files alone (a clone re-makes the report byte for byte with no checkpoint), and its statistics
are the seeds' (Welch, Holm within a comparison)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from probe_fixtures import write_glue
from synthetic import TINY_ARGS, write_corpus
from test_paper import train_in_process

import lib.download
from lib import stats
from lib.cli import UserError
from study import arms, curve, jobs

BUDGET = 2e9  # ~20 MLM steps, ~9 hybrid steps of the tiny test model


@pytest.fixture
def flags(tmp_path, monkeypatch):
    write_glue(tmp_path / "data", n_train=60, n_dev=24, tasks=("sst2", "stsb"))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(lib.download, "RETRY_BACKOFF", 0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(arms.subprocess, "run", train_in_process)
    corpus = Path(write_corpus(tmp_path / "corpus")).relative_to(tmp_path)  # no machine path
    sizes = " ".join(a for a in TINY_ARGS if not a.startswith("--preset="))
    return [f"--budget={BUDGET:g}", f"--corpus={corpus}", f"--train_args={sizes}",
            "--fractions=0.25,0.5", "--n=20",
            "--probe_args=--max_iter=30 --l2_grid=1e-2,1 --bootstrap=50"]


def test_jobs_run_separately_merge_and_remake_from_their_folders_alone(flags, tmp_path):
    out = tmp_path / "out/curve"
    for job in ("hybrid:0", "mlm:0", "mlm:1", "random:0", "random:1"):  # as separate commands
        assert jobs.main([*flags, f"--jobs={job}", "--merge=false"]) == 0
    assert not (out / "report.md").exists()
    job = json.loads((out / "mlm-s1/job.json").read_text())
    assert [p["fraction"] for p in job["points"]] == [0.25, 0.5, 1.0]
    conf = json.loads((out / "mlm-s1/run/config.json").read_text())
    assert job["points"][-1]["step"] == conf["planned_steps"] and conf["config"]["seed"] == 1
    assert 0 < job["points"][0]["flops"] < job["points"][1]["flops"] < job["points"][2]["flops"]
    for p in job["points"]:  # a kept checkpoint per point, probed and measured
        folder = out / "mlm-s1/points" / f"f{p['fraction']:g}"
        r = json.loads((folder / "sst2-mean.json").read_text())
        assert r["metrics"]["acc"] == p["probe"]["sst2"]["value"]
        geo = json.loads((folder / "geometry.json").read_text())["tasks"]["stsb"]
        assert geo["n"] == 20 and -4 <= geo["uniformity"] <= 0 and geo["effective_rank"] >= 1

    jobs.main([*flags, "--jobs=none"])  # merge only
    report = (out / "report.md").read_text()
    result = json.loads((out / "curve.json").read_text())
    assert [j["folder"] for j in result["jobs"]] == ["hybrid-s0", "mlm-s0", "mlm-s1",
                                                     "random-s0", "random-s1"]
    mlm_end = next(p for p in result["points"] if (p["arm"], p["fraction"]) == ("mlm", 1.0))
    values = [json.loads((out / f"mlm-s{s}/points/f1/stsb-mean.json").read_text())
              ["metrics"]["spearman"] for s in (0, 1)]
    assert mlm_end["metrics"]["stsb"]["probe"]["values"] == pytest.approx(values, abs=1e-6)
    assert mlm_end["seeds"] == [0, 1]
    # mlm vs random: Welch over 2 seeds and 2 inits, Holm over that comparison's tests
    family = [t for t in result["tests"] if (t["a"], t["b"]) == ("mlm", "random")]
    assert len(family) == 3 * 2 * len(curve.METRICS)  # fractions x tasks x metrics
    t = next(t for t in family if (t["task"], t["metric"], t["fraction"]) == ("stsb", "probe", 1))
    rand = [json.loads((out / f"random-s{s}/points/f0/stsb-mean.json").read_text())
            ["metrics"]["spearman"] for s in (0, 1)]
    assert t["p"] == pytest.approx(stats.welch(values, rand)[0], rel=1e-3)  # 4 digits
    ps = [x["p"] for x in family]
    assert [x["p_adj"] for x in family] == pytest.approx(stats.holm(ps), rel=2e-3)
    assert t["alpha_strictest"] == pytest.approx(0.05 / sum(p is not None for p in ps),
                                                rel=1e-3)
    # hybrid has one seed: its tests against MLM are there, without a p
    assert all(x["p"] is None for x in result["tests"] if x["b"] == "mlm")
    assert "## hybrid vs mlm" in report and "## Above the random-weight level" in report
    assert str(tmp_path) not in report + (out / "curve.json").read_text()  # no machine paths

    # a clone holds the small files only: no checkpoint, no feature cache
    clone = tmp_path / "clone"
    shutil.copytree(out, clone, ignore=shutil.ignore_patterns("*.pt", "cache"))
    assert not list(clone.rglob("*.pt"))
    (clone / "report.md").unlink()
    (clone / "curve.json").unlink()
    jobs.main(["--jobs=", f"--out={clone}"])
    assert (clone / "report.md").read_text() == report
    assert (clone / "curve.json").read_text() == (out / "curve.json").read_text()


def test_a_job_made_otherwise_or_unfinished_is_left_out_with_the_reason(flags, tmp_path):
    out = tmp_path / "out/curve"
    assert jobs.main([*flags, "--jobs=random:0,random:1"]) == 0
    job = out / "random-s1/job.json"  # pretend it was made with another subset size
    data = json.loads(job.read_text())
    data["settings"]["n"] = 50
    job.write_text(json.dumps(data))
    (out / "mlm-s0/run").mkdir(parents=True)  # a job that has not finished
    tie = curve.load_jobs(out)  # one job each way: the first folder's settings win
    assert [j["folder"] for j in tie[0]] == ["random-s0"]
    assert tie[1]["random-s1"] == "made with other settings: n 50 (the curve's: 20)"
    assert "no job.json yet" in tie[1]["mlm-s0"]


def test_bad_job_names_and_flags_are_one_line_errors(flags):
    for bad, msg in (("--jobs=hybrid", "expected <arm>:<seed>"), ("--jobs=hybrid:x", "<seed>"),
                     ("--jobs=mix:0", "expected <mode>"), ("--fractions=0.5,1", "fractions"),
                     ("--tasks=sst3", "--tasks=sst3")):
        with pytest.raises(UserError, match=msg):
            jobs.main([*flags, bad])


def test_detectable_difference_has_the_power_it_claims():
    """welch_detectable's difference, simulated again with other draws: Welch's test rejects at
    the level given in ~80% of experiments (sd 0.9% at 2,000 experiments), including at 3 vs 3
    seeds where the fixed-df shortcut overstates the power."""
    rng = np.random.default_rng(7)
    for sd_a, sd_b, n_a, n_b, alpha in ((1.0, 1.0, 3, 3, 0.05), (0.5, 2.0, 3, 4, 0.01),
                                        (1.0, 1.0, 3, 3, 0.05 / 32)):
        delta = stats.welch_detectable(sd_a, sd_b, n_a, n_b, alpha)
        hits = [stats.welch(rng.normal(delta, sd_a, n_a), rng.normal(0, sd_b, n_b))[0] < alpha
                for _ in range(2000)]
        assert 0.77 < np.mean(hits) < 0.83, (sd_a, sd_b, n_a, n_b, alpha, np.mean(hits))
    assert stats.welch_detectable(1.0, 1.0, 1, 3, 0.05) is None  # one seed: no test
    big = stats.welch_detectable(1.0, 1.0, 200, 200, 0.05)  # large n: the normal formula
    assert big == pytest.approx((1.959964 + 0.841621) * np.sqrt(2 / 200), rel=0.02)
