"""The floor + b/k decomposition of inter-student variance and the jackknife SE it is weighted by."""

from __future__ import annotations

import numpy as np
import pytest

from uqkd.decomposition import decomposition_table, fit_floor_plus_slope
from uqkd.metrics import inter_student_var, inter_student_var_se

KS = np.array([1, 3, 5, 10, 20, 50])


def _students(rng, R, m, floor, b, k):
    """R students' predictions on m correlated inputs: a per-student 'init' effect (variance floor) plus
    teacher noise averaged over k draws (variance b / k), each shared by neighbouring inputs."""
    L = np.linalg.cholesky(0.5 * np.eye(m) + 0.5)  # inputs correlated 0.5
    init = rng.standard_normal((R, m)) @ L.T * np.sqrt(floor)
    noise = rng.standard_normal((R, m)) @ L.T * np.sqrt(b / k)
    return init + noise


def test_jackknife_se_matches_the_spread_over_repeats():
    rng = np.random.default_rng(1)
    reps = [_students(rng, 60, 8, 0.01, 0.1, 3) for _ in range(400)]
    v = np.array([inter_student_var(p) for p in reps])
    se = np.array([inter_student_var_se(p) for p in reps])
    # SE of the SD of 400 draws ~ 1/sqrt(800) = 3.5 %; the jackknife's own bias is a few % at R = 60
    assert np.mean(se) == pytest.approx(v.std(ddof=1), rel=0.12)
    with pytest.raises(ValueError, match="n_students >= 3"):
        inter_student_var_se(np.zeros((2, 4)))


def test_fit_recovers_known_floor_and_b_within_their_errors():
    floor, b, R = 0.0095, 0.2, 400
    rng = np.random.default_rng(7)
    z_floor, z_b, pvals = [], [], []
    for _ in range(25):
        preds = [_students(rng, R, 10, floor, b, k) for k in KS]
        v = np.array([inter_student_var(p) for p in preds])
        se = np.array([inter_student_var_se(p) for p in preds])
        f = fit_floor_plus_slope(KS, v, se)
        z_floor.append((f.floor - floor) / f.floor_se)
        z_b.append((f.b - b) / f.b_se)
        pvals.append(f.p_value)
    z_floor, z_b = np.array(z_floor), np.array(z_b)
    # each estimate within 3.5 of its own SE (Bonferroni over 50 at ~5e-4 each) ...
    assert np.all(np.abs(z_floor) < 3.5) and np.all(np.abs(z_b) < 3.5)
    # ... and the SEs are honest: the z's spread like N(0, 1) (sd of a 25-draw sd ~ 0.14)
    assert 0.6 < z_floor.std(ddof=1) < 1.45 and 0.6 < z_b.std(ddof=1) < 1.45
    # the 1/k form is true here: its goodness of fit is not rejected wholesale
    assert np.mean(np.array(pvals) < 0.05) < 0.3


def test_fit_rejects_a_wrong_form_and_flags_a_missing_floor():
    k = KS.astype(float)
    v = 0.2 / np.sqrt(k)  # 1/sqrt(k): not floor + b/k
    f = fit_floor_plus_slope(k, v, 0.01 * v)
    assert f.p_value < 1e-6 and f.scale > 1
    g = fit_floor_plus_slope(k, 0.3 / k, 0.01 * 0.3 / k)  # no floor (OLS)
    lo, hi = g.interval("floor")
    assert lo <= 0 <= hi and g.b == pytest.approx(0.3)


def test_relative_se_path_and_table():
    import pandas as pd

    rng = np.random.default_rng(3)
    R = 1000
    rows = []
    for a, (floor, b) in {0.1: (0.01, 0.02), 1.0: (0.01, 0.2)}.items():
        for k in KS:
            true = floor + b / k
            rows.append({"noise": "homoscedastic", "alpha": a, "k": int(k), "method": "averaging", "n_students": R,
                         "inter_student_var": true * rng.chisquare(R - 1) / (R - 1)})
    t = decomposition_table(pd.DataFrame(rows))
    assert list(t["alpha"]) == [0.1, 1.0] and set(t["se_source"]) == {"sqrt(2/(R-1)) bound"}
    for r, b in zip(t.itertuples(), (0.02, 0.2)):
        assert r.floor_lo < 0.01 < r.floor_hi and r.b_lo < b < r.b_hi
    with pytest.raises(ValueError, match="3 distinct k"):
        fit_floor_plus_slope([1, 2], [1.0, 0.5], [0.1, 0.1])
    with pytest.raises(ValueError, match="se, rel_se"):
        fit_floor_plus_slope(KS, np.ones(6))


def test_second_order_fit_recovers_a_curved_response_the_1_over_k_form_rejects():
    """Students nonlinear in their labels: prediction = init + e + kappa e^2 with label noise e ~ N(0, s2/k),
    so V(k) = floor + s2/k + 2 kappa^2 s2^2/k^2 (the delta method's next term). The 1/k form is rejected;
    floor + b/k + c/k^2 fits and recovers (floor, b, c) within their errors."""
    import pandas as pd

    floor, s2, kappa, R, m = 0.01, 1.0, 0.5, 3000, 10
    c_true = 2 * kappa**2 * s2**2
    ks = np.array([1, 2, 3, 5, 8, 13, 20, 50])
    rng = np.random.default_rng(11)
    L = np.linalg.cholesky(0.5 * np.eye(m) + 0.5)
    rows = []
    for k in ks:
        init = rng.standard_normal((R, m)) @ L.T * np.sqrt(floor)
        e = rng.standard_normal((R, m)) @ L.T * np.sqrt(s2 / k)
        p = init + e + kappa * e**2
        rows.append({"noise": "homoscedastic", "alpha": 1.0, "k": int(k), "method": "averaging", "n_students": R,
                     "inter_student_var": inter_student_var(p), "inter_student_var_se": inter_student_var_se(p)})
    d = pd.DataFrame(rows)
    v, se = d["inter_student_var"].to_numpy(), d["inter_student_var_se"].to_numpy()
    first = fit_floor_plus_slope(ks, v, se)
    second = fit_floor_plus_slope(ks, v, se, quadratic=True)
    assert first.p_value < 1e-4 and not first.quadratic
    assert second.quadratic and second.p_value > 1e-3 and second.df == len(ks) - 3
    for est, se_, true in ((second.floor, second.floor_se, floor), (second.b, second.b_se, s2),
                           (second.c, second.c_se, c_true)):
        assert abs(est - true) < 3.5 * se_
    lo, hi = second.interval("c")
    assert lo > 0  # the curvature is detected
    assert second.predict(ks) == pytest.approx(second.floor + second.b / ks + second.c / ks**2)
    t = decomposition_table(d)
    assert t.loc[0, "q_c_lo"] > 0 and t.loc[0, "q_p_value"] == pytest.approx(second.p_value)
    with pytest.raises(ValueError, match="4 distinct k"):
        fit_floor_plus_slope(ks[:3], v[:3], se[:3], quadratic=True)
    with pytest.raises(ValueError, match="expected one of"):
        first.interval("c")
