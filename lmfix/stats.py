"""Spread over seeds, and whether two variants differ by more than it (issue 23).

lmfix reports a variant trained at several seeds as mean ± standard deviation, and compares it
with a reference variant by the difference of their means, its 95% confidence interval and
Welch's t-test (unequal variances, ``scipy.stats.ttest_ind(equal_var=False)``), as Gal's
VD-LSTM reports ± over seeds and modded-nanogpt accepts a record only at p < 0.01 over several
runs. With one seed on either side there is no spread to test against: no p-value is made up.

Example::

    >>> r = welch([280.0, 284.0, 282.0], [300.0, 305.0, 303.0])
    >>> r["verdict"], round(r["diff"], 2), r["p"] < 0.01
    ('better', -20.67, True)
"""

from __future__ import annotations

import math
import statistics

ALPHA = 0.05  # a difference is called better/worse at p < ALPHA (and its 95% CI excludes 0)
NO_TEST = "no test possible with one seed"
NOT_DISTINGUISHABLE = "not distinguishable at these seeds"


def describe(values: list[float]) -> dict:
    """n, mean, sd (sample standard deviation; None for one value), min, max."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no values")
    return {"n": len(vals), "mean": statistics.fmean(vals),
            "sd": statistics.stdev(vals) if len(vals) > 1 else None,
            "min": min(vals), "max": max(vals)}


def welch(values: list[float], baseline: list[float]) -> dict:
    """How ``values`` compare with ``baseline`` (perplexities: lower is better): the difference
    of means (absolute and % of the baseline's), its 95% confidence interval by Welch's
    t-distribution, the two-sided p-value of Welch's t-test, and a verdict in words."""
    from scipy import stats as sps

    a, b = describe(values), describe(baseline)
    diff = a["mean"] - b["mean"]
    out = {"n": a["n"], "n_baseline": b["n"], "mean": a["mean"], "mean_baseline": b["mean"],
           "diff": diff, "diff_pct": 100.0 * diff / b["mean"] if b["mean"] else None,
           "ci95": None, "p": None, "verdict": NO_TEST}
    if a["n"] < 2 or b["n"] < 2:
        return out
    va, vb = a["sd"] ** 2 / a["n"], b["sd"] ** 2 / b["n"]
    se = math.sqrt(va + vb)
    if se == 0:  # every seed gave the same number on both sides: the difference is exact
        out.update(ci95=[diff, diff], p=1.0 if diff == 0 else 0.0)
    else:
        df = se ** 4 / (va ** 2 / (a["n"] - 1) + vb ** 2 / (b["n"] - 1))
        half = float(sps.t.ppf(1 - ALPHA / 2, df)) * se
        p = float(sps.ttest_ind(values, baseline, equal_var=False).pvalue)
        out.update(ci95=[diff - half, diff + half], p=p, df=df)
    if out["p"] < ALPHA and diff != 0:
        out["verdict"] = "better" if diff < 0 else "worse"
    else:
        out["verdict"] = NOT_DISTINGUISHABLE
    return out
