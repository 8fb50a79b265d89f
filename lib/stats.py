"""Every statistic of the study, written once: the probe metrics, the geometry metrics, the
bootstrap, the tests and the multiple-comparison corrections. probe.py and analyze.py import it.

The tests, each with the null hypothesis it tests (NULLS holds the sentences the reports print):
- bootstrap_p: the paired bootstrap (Wald) test of a difference of any statistic; null: the
  statistic is equal for the two sides. Both sides are measured on the same resamples of the same
  examples, so the spread of the resampled difference is the paired standard error.
- sign_flip_p: the paired permutation (sign-flip) test of a mean of per-example differences;
  null: per example, the two sides' values are exchangeable. Valid only for statistics that are
  means over examples of a per-example value (accuracy, alignment): swapping the vectors of a
  set-level metric (uniformity, spectra) mixes two coordinate systems, so that its null is not
  "equal metric" (issue 10 measured 0-12% false positives at alpha = 0.05).
- welch: Welch's two-sample t-test over runs (pre-training seeds); null: the two methods'
  mean value over seeds is equal. Its unit is the run, so it is the test of a claim about
  methods; the two tests above are about two given checkpoints.
- holm, bh: adjusted p-values over a family of tests (family-wise error rate; false discovery
  rate).
"""
import numpy as np
from scipy.stats import norm, rankdata
from scipy.stats import t as student_t

Z95 = norm.ppf(0.975)  # 1.96: the CI and the bootstrap p below agree (p < 0.05 iff 0 outside)
NULLS = {
    "bootstrap": "paired bootstrap of the difference (Wald: p = 2 Phi(-|diff| / sd of the "
                 "resampled difference)); null: the metric is equal for the two sides",
    "sign_flip": "paired sign-flip permutation of per-example differences; null: per example, "
                 "the two sides' values are exchangeable (so their means are equal)",
    "welch": "Welch's two-sample t-test over runs (pre-training seeds); null: the two methods' "
             "mean value over seeds is equal",
}


# ----------------------------------------------------------------------------- probe metrics
# Fractions in, fractions out; vectorised over leading axes so one call scores every bootstrap
# resample. An undefined value (a constant prediction) is 0, as sklearn reports it.

def _safe_div(num, den):
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)[()]


def accuracy(pred, gold):
    return (np.asarray(pred) == np.asarray(gold)).mean(-1)


def f1(pred, gold):
    """F1 of the positive class (label 1), as GLUE reports it for MRPC and QQP."""
    p, g = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp, fp, fn = (p & g).sum(-1), (p & ~g).sum(-1), (~p & g).sum(-1)
    return _safe_div(2.0 * tp, 2.0 * tp + fp + fn)


def mcc(pred, gold):
    """Matthews correlation of binary labels (CoLA)."""
    p, g = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp, tn = (p & g).sum(-1) * 1.0, (~p & ~g).sum(-1) * 1.0
    fp, fn = (p & ~g).sum(-1) * 1.0, (~p & g).sum(-1) * 1.0
    return _safe_div(tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))


def pearson(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    constant = (x.max(-1) == x.min(-1)) | (y.max(-1) == y.min(-1))  # rounding would not give 0
    x, y = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    den = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    return _safe_div((x * y).sum(-1), np.where(constant, 0.0, den))


def spearman(x, y):
    return pearson(rankdata(x, axis=-1), rankdata(y, axis=-1))


METRIC_FNS = {"acc": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}
PER_EXAMPLE = {"acc"}  # probe metrics that are means of a per-example value: sign-flip testable


# ----------------------------------------------------------------------------- geometry metrics
# Each scores weighted sets of examples: W (R, n) holds one set per row (ones = the examples
# themselves, counts = a bootstrap resample) and the result is (R,) values. W=None: the examples.

def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _sets(W, n):
    return np.ones((1, n)) if W is None else W


def pair_mean(K, W, mask=None):
    """sum_{i!=j} w_i w_j m_ij K_ij / sum_{i!=j} w_i w_j m_ij for each row w of W: the mean of
    K over pairs of distinct examples (where mask m is true) of a weighted set."""
    if mask is None:
        den = W.sum(1) ** 2 - (W * W).sum(1)
    else:
        K, m = K * mask, mask.astype(float)
        den = ((W @ m) * W).sum(1) - (W * W) @ np.diag(m)
    return (((W @ K) * W).sum(1) - (W * W) @ np.diag(K)) / np.where(den > 0, den, np.nan)


def sq_dists(z):
    return np.maximum(2 - 2 * z @ z.T, 0)  # ||z_i - z_j||^2 of unit vectors


def uniformity(x, W=None):
    return np.log(pair_mean(np.exp(-2 * sq_dists(unit(x))), _sets(W, len(x))))


def anisotropy(x, W=None):
    z = unit(x)
    return pair_mean(z @ z.T, _sets(W, len(x)))


def class_separation(x, y, W=None):
    W, d, same = _sets(W, len(x)), np.sqrt(sq_dists(unit(x))), y[:, None] == y[None, :]
    return pair_mean(d, W, same) / pair_mean(d, W, ~same)


def pair_sq_dist(u, v):
    """||z(u_i) - z(v_i)||^2 per example: alignment's per-example value."""
    return ((unit(u) - unit(v)) ** 2).sum(1)


def alignment(u, v, positive=None, W=None):
    W, a = _sets(W, len(u)), pair_sq_dist(u, v)
    keep = np.ones(len(u)) if positive is None else positive.astype(float)
    return (W @ (a * keep)) / np.where(W @ keep > 0, W @ keep, np.nan)


def entropy(p):
    p = p / p.sum(-1, keepdims=True)
    return -(p * np.log(np.where(p > 0, p, 1))).sum(-1)


def spectral(x, W=None) -> dict:
    """spectral_entropy, effective_rank, rankme (R,) and the normalised centred spectrum (R, d),
    from the eigenvalues of each set's covariance and raw second moment (= singular values^2/n)."""
    W, mean = _sets(W, len(x)), x.mean(0)
    xc = x - mean  # moments of centred data: no cancellation in the covariance below
    cov, raw = np.empty((2, len(W), x.shape[1], x.shape[1]))
    for r, w in enumerate(W):
        keep = w > 0
        xs, ws = xc[keep], w[keep] / w.sum()
        m2, mu = (xs * ws[:, None]).T @ xs, ws @ xs
        cov[r] = m2 - np.outer(mu, mu)
        raw[r] = m2 + np.outer(mean, mu) + np.outer(mu, mean) + np.outer(mean, mean)
    lam, lam_raw = (np.linalg.eigvalsh(m)[:, ::-1] for m in (cov, raw))
    # under 1e-12 of the largest is eigensolver noise: counted, it gives a rank-1 set rank 1.0000001
    lam, lam_raw = (np.where(v > 1e-12 * v[:, :1], v, 0) for v in (lam, lam_raw))
    return dict(spectral_entropy=entropy(lam) / np.log(x.shape[1]),
                effective_rank=np.exp(entropy(np.sqrt(lam))),
                rankme=np.exp(entropy(np.sqrt(lam_raw))), spectrum=lam / lam.sum(1, keepdims=True))


def auc(scores, Y, W=None):
    """Macro ROC AUC over the columns of Y (n, K) bool: P(s_pos > s_neg) + P(tie) / 2 between
    weighted examples. A label with no positive or no negative in a set is left out."""
    W = _sets(W, len(Y))
    out = np.full((len(W), Y.shape[1]), np.nan)
    for k in range(Y.shape[1]):
        order = np.argsort(scores[:, k], kind="stable")
        s, pos, w = scores[order, k], Y[order, k], W[:, order]
        new = np.r_[True, s[1:] != s[:-1]]  # a run of tied scores starts here
        start, group = np.flatnonzero(new), np.cumsum(new) - 1
        neg = w * ~pos
        below = (np.cumsum(neg, 1) - neg)[:, start]  # negative weight under each tie group
        wins = below[:, group] + 0.5 * np.add.reduceat(neg, start, axis=1)[:, group]
        den = (w * pos).sum(1) * neg.sum(1)
        out[:, k] = (w * pos * wins).sum(1) / np.where(den > 0, den, np.nan)
    seen = np.isfinite(out)
    return np.where(seen.any(1), np.nansum(out, 1) / np.maximum(seen.sum(1), 1), np.nan)


def micro_f1(pred, Y, W=None):
    W = _sets(W, len(Y))
    tp, fp, fn = W @ (pred & Y).sum(1), W @ (pred & ~Y).sum(1), W @ (~pred & Y).sum(1)
    return 2 * tp / np.where(2 * tp + fp + fn > 0, 2 * tp + fp + fn, np.nan)


# ----------------------------------------------------------------------------- the bootstrap

def resample_indices(n: int, resamples: int, seed) -> np.ndarray:
    """(resamples, n) example indices drawn with replacement; the same seed gives every model
    the same resamples, which is what makes a difference paired."""
    return np.random.default_rng(seed).integers(0, n, (resamples, n))


def resample_counts(n: int, resamples: int, seed) -> np.ndarray:
    """The same resamples as weights: (resamples, n) counts of each example."""
    idx = resample_indices(n, resamples, seed)
    return np.stack([np.bincount(i, minlength=n) for i in idx]).astype(float)


def seed_mean(fn, preds, gold, idx=None):
    """fn (a probe metric) averaged over probe seeds: preds (S, n) -> a value, or with idx
    (R, n) resample indices -> (R,) values, each resample scoring every seed."""
    preds, gold = np.asarray(preds), np.asarray(gold)
    if idx is None:
        return float(np.mean([fn(p, gold) for p in preds]))
    return np.mean([fn(p[idx], gold[idx]) for p in preds], axis=0)


def percentile_ci(samples) -> list:
    return [float(v) for v in np.percentile(samples, [2.5, 97.5])]


def sd_ci(point: float, samples) -> list | None:
    """point +- 1.96 bootstrap standard deviations. Not percentiles: a resample's duplicated
    examples lower its spectral metrics, and their percentile interval would miss the estimate."""
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if len(s) < 2 or not np.isfinite(point):
        return None
    return [float(point - Z95 * s.std(ddof=1)), float(point + Z95 * s.std(ddof=1))]


# ----------------------------------------------------------------------------- the tests

def bootstrap_p(point: float, samples) -> float | None:
    """Two-sided p of H0 "the difference is 0" from the paired bootstrap of the difference:
    2 Phi(-|point| / sd(samples)). Continuous in the data, so not floored at 1 / resamples (the
    resamples set only how well the sd is known: relative error ~ 1 / sqrt(2 resamples)); it is
    below 0.05 exactly when sd_ci excludes 0. None when undefined."""
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if len(s) < 2 or not np.isfinite(point):
        return None
    se = s.std(ddof=1)
    if se == 0:
        return 1.0 if point == 0 else None
    return float(max(2 * norm.sf(abs(point) / se), 1e-300))  # not 0 when sf underflows


def sign_flip_p(delta, flips: int, seed=0, chunk: int = 1000) -> float | None:
    """Two-sided paired permutation p of H0 "per example, the two sides' values are
    exchangeable": delta (n,) per-example differences get random signs `flips` times,
    p = (1 + #{|mean of flipped| >= |mean|}) / (1 + flips); at least 1 / (1 + flips)."""
    delta = np.asarray(delta, float)
    delta = delta[np.isfinite(delta)]
    if not len(delta):
        return None
    rng, observed, hits = np.random.default_rng(seed), abs(delta.sum()), 0
    for lo in range(0, flips, chunk):
        signs = rng.integers(0, 2, (min(chunk, flips - lo), len(delta))) * 2.0 - 1
        hits += int((np.abs(signs @ delta) >= observed - 1e-9 * (1 + observed)).sum())
    return (1 + hits) / (1 + flips)


def welch(a, b) -> tuple:
    """Welch's two-sided t-test of H0 "equal means" between the runs' values a (k,) and b (m,),
    k, m >= 2 -> (p, 95% CI of mean(a) - mean(b)); (None, None) when undefined (fewer than 2 runs
    on a side, or no spread at all)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None, None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return None, None
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    diff, se = a.mean() - b.mean(), np.sqrt(va + vb)
    half = student_t.ppf(0.975, df) * se
    return (float(max(2 * student_t.sf(abs(diff) / se, df), 1e-300)),
            [float(diff - half), float(diff + half)])


def welch_detectable(sd_a: float, sd_b: float, n_a: int, n_b: int, alpha: float,
                     power: float = 0.8, draws: int = 20_000, seed=0) -> float | None:
    """The smallest true difference of means that Welch's two-sided test at level alpha finds with
    probability `power`, for n_a and n_b normal runs of these standard deviations (taken as the
    true ones): by simulation on `draws` seeded samples, bisected to 1e-4 of the difference (the
    noncentral-t shortcut with a fixed df claims 80% where the test has 70% at 3 vs 3 runs, as
    the sample variances move the df). None when undefined (as for welch)."""
    if n_a < 2 or n_b < 2 or not np.isfinite(sd_a + sd_b) or sd_a + sd_b == 0:
        return None
    rng = np.random.default_rng(seed)
    za, zb = sd_a * rng.standard_normal((draws, n_a)), sd_b * rng.standard_normal((draws, n_b))
    va, vb = za.var(1, ddof=1) / n_a, zb.var(1, ddof=1) / n_b
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    reach = student_t.ppf(1 - alpha / 2, df) * np.sqrt(va + vb)  # reject iff |diff| > reach
    noise = za.mean(1) - zb.mean(1)

    def found(delta):
        return np.mean(np.abs(delta + noise) > reach)
    lo, hi = 0.0, float(np.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b))
    while found(hi) < power:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-4 * hi:
        lo, hi = ((lo + hi) / 2, hi) if found((lo + hi) / 2) < power else (lo, (lo + hi) / 2)
    return hi


def group_difference(points: tuple, boots: tuple, examples: tuple | None, flips: int,
                     seed=0) -> dict:
    """Side a - side b of one metric, where a side is one or more runs and stands for their mean.
    points: (a values (k,), b values (m,)), one per run; boots: (a (k, B), b (m, B)) values on
    resamples shared by every run; examples: (a (k, n), b (m, n)) per-example values when the
    metric is their mean (then the example-level test is sign_flip_p), else None (then it is
    bootstrap_p). p and ci are Welch's over runs when both sides have 2 or more, else the
    example-level ones."""
    a, b = (np.asarray(v, float) for v in points)
    diff = a.mean() - b.mean()
    d_boot = np.mean(boots[0], 0) - np.mean(boots[1], 0)
    if examples is not None:
        test = "sign_flip"
        p_examples = sign_flip_p(np.mean(examples[0], 0) - np.mean(examples[1], 0), flips, seed)
    else:
        test, p_examples = "bootstrap", bootstrap_p(diff, d_boot)
    p_seeds, ci_seeds = welch(a, b)
    ci_examples = sd_ci(diff, d_boot)
    return dict(a_mean=a.mean(), b_mean=b.mean(), a_sd=a.std(ddof=1) if len(a) > 1 else None,
                b_sd=b.std(ddof=1) if len(b) > 1 else None, diff=diff, test_examples=test,
                p_examples=p_examples, ci_examples=ci_examples, p_seeds=p_seeds,
                test=test if p_seeds is None else "welch",
                p=p_examples if p_seeds is None else p_seeds,
                ci=ci_examples if p_seeds is None else ci_seeds)


# ----------------------------------------------------------------------------- multiplicity

def holm(p) -> list:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input order; None
    entries are not tests and stay None. Reject at level a where adjusted p < a."""
    return _adjust(p, lambda q: np.maximum.accumulate(q * (len(q) - np.arange(len(q)))))


def bh(p) -> list:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the input order."""
    return _adjust(p, lambda q: np.minimum.accumulate(
        (q * len(q) / np.arange(1, len(q) + 1))[::-1])[::-1])


ADJUST = {"holm": holm, "bh": bh}
ADJUST_NAMES = {"holm": "Holm (family-wise error rate)",
                "bh": "Benjamini-Hochberg (false discovery rate)"}


def _adjust(p, step) -> list:
    tested = [i for i, v in enumerate(p) if v is not None]
    order = sorted(tested, key=lambda i: p[i])
    adjusted = np.minimum(step(np.array([p[i] for i in order], float)), 1.0) if order else []
    out = [None] * len(p)
    for i, v in zip(order, adjusted):
        out[i] = float(v)
    return out


# ----------------------------------------------------------------------------- ridge probe

RIDGE = (1e4, 1e3, 1e2, 10.0, 1.0, 0.1)  # strongest first: a tie keeps the simpler probe


def ridge_scores(X, Y, X_eval, seed: int):
    """Ridge regression from standardised vectors to the 0/1 token indicators (a linear
    probability model: one solve for all K tokens). Strength chosen on a seeded held-out 10% of
    the fit rows by macro AUC, then refitted on all of them. -> (scores (n_eval, K), strength)."""
    def fit(rows, alpha):
        mu, sd = X[rows].mean(0), X[rows].std(0) + 1e-8
        A, y_mean = (X[rows] - mu) / sd, Y[rows].mean(0)
        coef = np.linalg.solve(A.T @ A + alpha * np.eye(X.shape[1]), A.T @ (Y[rows] - y_mean))
        return lambda Z: (Z - mu) / sd @ coef + y_mean

    perm = np.random.default_rng(seed).permutation(len(X))
    held, rest = np.split(perm, [max(1, len(X) // 10)])
    held_auc = [np.nan_to_num(auc(fit(rest, a)(X[held]), Y[held])[0], nan=-1) for a in RIDGE]
    alpha = RIDGE[int(np.argmax(held_auc))]
    return fit(np.arange(len(X)), alpha)(X_eval), alpha
