"""The statistics of the evidence page against scipy and worked examples: paired t, TOST, Holm, MDE, target."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from optarena.arena.analysis.stats import (
    holm,
    holm_alphas,
    minimum_detectable_effect,
    one_sided_p,
    reachable_target,
    tost,
)

METHOD = [0.912, 0.905, 0.931, 0.899, 0.921]
BASELINE = [0.901, 0.902, 0.915, 0.893, 0.911]


@pytest.mark.parametrize("bound", [0.0, 0.004, -0.01])
def test_one_sided_p_is_scipys_paired_t(bound):
    d = np.subtract(METHOD, BASELINE)
    want = stats.ttest_1samp(d, bound, alternative="greater").pvalue
    assert one_sided_p(d, bound, "greater") == pytest.approx(want, rel=1e-12)
    if bound == 0.0:  # against zero it is scipy's paired test of the two sides
        assert one_sided_p(d, 0.0, "greater") == pytest.approx(
            stats.ttest_rel(METHOD, BASELINE, alternative="greater").pvalue, rel=1e-12
        )
    want_less = stats.ttest_1samp(d, bound, alternative="less").pvalue
    assert one_sided_p(d, bound, "less") == pytest.approx(want_less, rel=1e-12)


def test_one_sided_p_edge_cases():
    assert one_sided_p([0.1], 0.0, "greater") == 1.0  # one value: nothing rejected
    assert one_sided_p([0.1, 0.1], 0.0, "greater") == 0.0  # no spread, above the bound
    assert one_sided_p([0.1, 0.1], 0.2, "greater") == 1.0
    with pytest.raises(ValueError, match="alternative"):
        one_sided_p([0.1, 0.2], 0.0, "two-sided")


def test_tost_is_two_scipy_one_sided_tests():
    d = np.subtract(METHOD, BASELINE)
    low, high = -0.02, 0.02
    p, p_low, p_high = tost(d, low, high)
    want_low = stats.ttest_1samp(d, low, alternative="greater").pvalue
    want_high = stats.ttest_1samp(d, high, alternative="less").pvalue
    assert (p_low, p_high) == pytest.approx((want_low, want_high), rel=1e-12)
    assert p == max(p_low, p_high)
    # equivalence at α = 0.05 exactly when the 90% t interval lies inside (low, high)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.90)
    assert (p < 0.05) == (low < ci.low and ci.high < high)
    assert tost(d, -0.001, 0.001)[0] > 0.05  # a narrow band is not shown
    with pytest.raises(ValueError, match="equivalence bounds"):
        tost(d, 0.1, 0.1)


def test_holm_matches_a_worked_example():
    # p = 0.01, 0.04, 0.03, 0.005 (m = 4): sorted 0.005, 0.01, 0.03, 0.04 -> 4·0.005, 3·0.01, 2·0.03, max(1·0.04, 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], rel=1e-12)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []
    assert holm_alphas([0.01, 0.04, 0.03, 0.005], 0.05) == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])
    with pytest.raises(ValueError, match="p-values"):
        holm([0.2, 1.5])


def test_holm_rejects_what_the_step_down_procedure_rejects():
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = rng.uniform(0, 0.08, size=rng.integers(1, 9))
        adjusted = holm(p)
        order = np.argsort(p)
        rejected = set()
        for rank, i in enumerate(order):  # the textbook procedure, stop at the first acceptance
            if p[i] >= 0.05 / (len(p) - rank):
                break
            rejected.add(int(i))
        assert {i for i, a in enumerate(adjusted) if a < 0.05} == rejected


def test_minimum_detectable_effect_formula():
    sd, n = 0.012, 5
    want = (stats.t.ppf(0.975, 4) + stats.t.ppf(0.8, 4)) * sd / math.sqrt(n)
    assert minimum_detectable_effect(sd, n) == pytest.approx(want, rel=1e-12)
    assert minimum_detectable_effect(sd, n, alpha=0.01, power=0.9) == pytest.approx(
        (stats.t.ppf(0.995, 4) + stats.t.ppf(0.9, 4)) * sd / math.sqrt(n), rel=1e-12
    )
    assert minimum_detectable_effect(sd, 1) == math.inf
    assert minimum_detectable_effect(sd, 10) < minimum_detectable_effect(sd, 3)  # more seeds resolve less
    # at the MDE the noncentral-t power of the two-sided test is the requested power to the formula's accuracy
    for n in (10, 30):
        mde = minimum_detectable_effect(1.0, n)
        crit = stats.t.ppf(0.975, n - 1)
        power = stats.nct.sf(crit, n - 1, mde * math.sqrt(n))
        assert 0.78 < power < 0.82, (n, power)
    with pytest.raises(ValueError, match="alpha"):
        minimum_detectable_effect(sd, n, alpha=1.5)


def test_reachable_target_is_a_median_some_optimizer_reached():
    assert reachable_target([0.80, 0.90, 0.85, 0.70], "max") == 0.80  # lower median: 2 of 4 reach it
    assert reachable_target([0.80, 0.90, 0.85], "max") == 0.85
    assert reachable_target([2.1, 2.5, 2.3, 2.0], "min") == 2.3  # a loss: at least half are at or below it
    assert reachable_target([math.inf, 0.5], "max") == 0.5
    with pytest.raises(ValueError, match="finite"):
        reachable_target([math.nan], "max")
