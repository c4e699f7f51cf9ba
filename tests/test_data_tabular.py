import numpy as np
import pytest

from uqkd.data import load_boston, load_diabetes, load_tabular, make_linear_gaussian, standardize_split


def test_boston_is_the_papers_data_standardised():
    s = load_boston(seed=0)
    assert s.X_train.shape == (405, 13) and s.X_test.shape == (101, 13)
    np.testing.assert_allclose(s.X_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(s.X_train.std(axis=0), 1, atol=1e-12)
    assert s.y_train.mean() == pytest.approx(0, abs=1e-12) and s.y_train.std() == pytest.approx(1)
    assert load_boston(seed=0, n_features=11).X_train.shape[1] == 11
    with pytest.raises(ValueError, match="n_features: expected 13 .* or 11"):
        load_boston(n_features=12)


def test_split_is_seeded():
    a, b, c = load_diabetes(seed=0), load_diabetes(seed=0), load_diabetes(seed=1)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)
    assert a.X_train.shape[1] == 10


def test_synthetic_generator_heteroscedastic_noise_tracks_x():
    s = make_linear_gaussian(n=20000, d=3, coef=np.array([1.0, -2.0, 0.5]), noise=1.0, heteroscedastic=1.0, seed=0)
    resid = s.y_train - s.X_train @ np.array([1.0, -2.0, 0.5])
    lo, hi = resid[s.X_train[:, 0] < -1], resid[s.X_train[:, 0] > 1]
    assert hi.var() > 4 * lo.var()
    homo = make_linear_gaussian(n=20000, d=3, coef=np.array([1.0, -2.0, 0.5]), noise=1.0, seed=0)
    r = homo.y_train - homo.X_train @ np.array([1.0, -2.0, 0.5])
    assert r.var() == pytest.approx(1.0, rel=0.05)
    assert r[homo.X_train[:, 0] > 1].var() == pytest.approx(r[homo.X_train[:, 0] < -1].var(), rel=0.15)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="dataset: expected one of boston, diabetes, synthetic, boston11; got 'mnist'"):
        load_tabular("mnist")
    with pytest.raises(ValueError, match=r"y: expected shape \(3,\), got \(2,\)"):
        standardize_split(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="X: expected finite values"):
        standardize_split(np.array([[np.nan], [1.0], [2.0], [3.0]]), np.zeros(4))
