"""Batched MLP students: equivalence with one-at-a-time training, seeding, targets, validation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from uqkd.data.classification import load_wine  # noqa: E402
from uqkd.data.tabular import load_boston  # noqa: E402
from uqkd.metrics import predictive_entropy  # noqa: E402
from uqkd.students import mlp as mlp_module  # noqa: E402
from uqkd.students.mlp import (  # noqa: E402
    ACTIVATION_BUDGET_BYTES,
    BatchedMLP,
    NotFittedError,
    auto_chunk_size,
    distillation_targets,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a small shared machine two threads contend and run far slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def boston():
    return load_boston()


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    return X, rng


def _reference_torch(init_vec, X, T, w, hidden, task, epochs, lr, C):
    """One student trained the textbook way: nn.Sequential + autograd + torch.optim.Adam (float64)."""
    sizes = [X.shape[1], *hidden, C]
    layers: list = []
    for i in range(len(sizes) - 1):
        layers += [torch.nn.Linear(sizes[i], sizes[i + 1]).double(), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.tensor(init_vec, dtype=torch.float64), net.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    Xt, Tt, wt = torch.tensor(X), torch.tensor(T), torch.tensor(w / w.sum())
    for _ in range(epochs):
        opt.zero_grad()
        z = net(Xt)
        if task == "regression":
            loss = (wt * (z[:, 0] - Tt) ** 2).sum()
        else:
            loss = -(wt[:, None] * Tt * torch.log_softmax(z, 1)).sum()
        loss.backward()
        opt.step()
    return torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy()


@pytest.mark.parametrize("task,hidden", [("regression", (7, 4)), ("regression", (6,)), ("regression", ()),
                                         ("classification", (6,)), ("classification", ())])
def test_matches_autograd_and_torch_adam(small, task, hidden):
    X, rng = small
    R, C = 3, 3
    Y = rng.normal(size=(R, 60)) if task == "regression" else rng.integers(0, C, size=(R, 60))
    W = rng.integers(0, 3, size=(R, 60)).astype(float)
    W[:, 0] += 1
    m = BatchedMLP(hidden=hidden, task=task, n_epochs=40, lr=0.01, dtype="float64", sigma_init=0.2,
                   n_classes=None if task == "regression" else C).fit(X, Y, sample_weight=W)
    for r in range(R):
        T = Y[r] if task == "regression" else np.eye(C)[Y[r]]
        ref = _reference_torch(m.init_params_[r], X, T, W[r], hidden, task, 40, 0.01, 1 if task == "regression" else C)
        np.testing.assert_allclose(m.params_[r], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype,atol", [("float64", 1e-12), ("float32", 1e-5)])
def test_batched_equals_one_at_a_time(small, dtype, atol):
    X, rng = small
    R = 7
    Y = rng.normal(size=(R, 60))
    W = rng.poisson(1.0, size=(R, 60)).astype(float) + 0.1
    kw = dict(hidden=(8, 5), n_epochs=60, lr=0.01, sigma_init=0.1, random_state=3, identity=("t",), dtype=dtype)
    full = BatchedMLP(**kw).fit(X, Y, sample_weight=W)
    chunked = BatchedMLP(chunk_size=2, **kw).fit(X, Y, sample_weight=W)
    np.testing.assert_allclose(chunked.params_, full.params_, rtol=0, atol=atol)
    for r in range(R):
        alone = BatchedMLP(**kw).fit(X, Y[r:r + 1], sample_weight=W[r:r + 1], student_ids=[r])
        np.testing.assert_allclose(alone.params_[0], full.params_[r], rtol=0, atol=atol)
        np.testing.assert_allclose(alone.predict(X)[0], full.predict(X)[r], rtol=0, atol=10 * atol)
    # the comparison is meaningful: students differ from each other by far more than the tolerance
    assert np.abs(full.params_[0] - full.params_[1]).max() > 1e-2


def test_student_does_not_depend_on_ensemble_size(small):
    X, rng = small
    Y = rng.normal(size=(10, 60))
    big = BatchedMLP(hidden=(6,), n_epochs=30, dtype="float64").fit(X, Y)
    few = BatchedMLP(hidden=(6,), n_epochs=30, dtype="float64").fit(X, Y[:4])
    np.testing.assert_allclose(few.params_, big.params_[:4], rtol=0, atol=1e-12)
    np.testing.assert_allclose(few.init_params_, big.init_params_[:4], rtol=0, atol=0)
    other_seed = BatchedMLP(hidden=(6,), n_epochs=30, dtype="float64", random_state=1).fit(X, Y[:4])
    assert np.abs(other_seed.init_params_ - few.init_params_).max() > 1e-3


def test_bootstrap_counts_equal_duplicated_rows(small):
    X, rng = small
    y = rng.normal(size=60)
    counts = rng.multinomial(60, np.full(60, 1 / 60)).astype(float)
    a = BatchedMLP(hidden=(5,), n_epochs=50, dtype="float64").fit(X, y, sample_weight=counts)
    rows = np.repeat(np.arange(60), counts.astype(int))
    b = BatchedMLP(hidden=(5,), n_epochs=50, dtype="float64").fit(X[rows], y[rows])
    np.testing.assert_allclose(a.params_, b.params_, rtol=0, atol=1e-10)


def test_shared_init_and_perturbation(small):
    X, rng = small
    y = rng.normal(size=60)
    m0 = BatchedMLP(hidden=(4,), n_epochs=1, n_students=5, shared_init=True, dtype="float64").fit(X, y)
    assert np.ptp(m0.init_params_, axis=0).max() == 0.0  # one base draw, no noise
    s = 0.3
    m = BatchedMLP(hidden=(4,), n_epochs=1, n_students=4000, shared_init=True, sigma_init=s,
                   dtype="float64").fit(X, y)
    base = m0.init_params_[0]
    n_w1 = 4 * 5
    rel = m.init_params_[:, :n_w1] / base[:n_w1] - 1.0  # W <- W (1 + eps)
    assert abs(rel.std() - s) < 0.02
    bias_noise = m.init_params_[:, n_w1:n_w1 + 4] - base[n_w1:n_w1 + 4]  # b <- b + N(0, (0.1 s)^2)
    assert abs(bias_noise.std() - 0.1 * s) < 0.003


def test_kaiming_scale(small):
    X, rng = small
    m = BatchedMLP(hidden=(50,), n_epochs=1, n_students=200).fit(X, rng.normal(size=60))
    w1 = m.init_params_[:, : 50 * 5]
    assert abs(w1.std() - np.sqrt(2 / 5)) < 0.02


def test_trajectory_records_tracked_parameter(small):
    X, rng = small
    m = BatchedMLP(hidden=(4,), n_epochs=12, n_students=3, track=(0, 7), dtype="float64").fit(X, rng.normal(size=60))
    assert m.trajectory_.shape == (13, 3, 2)
    np.testing.assert_array_equal(m.trajectory_[0], m.init_params_[:, [0, 7]])
    np.testing.assert_array_equal(m.trajectory_[-1], m.params_[:, [0, 7]])


def test_trajectory_of_entries_in_every_layer_and_chunk_matches_autograd(small):
    X, rng = small
    track = (0, 5, 41, 47, 55, 74, 75, 78)  # W1, b1, W2, b2, W3, b3 of a 5-8-3-1 network (P = 48 + 27 + 4)
    kw = dict(hidden=(8, 3), n_epochs=9, n_students=5, track=track, dtype="float64", chunk_size=2)
    y = rng.normal(size=(5, 60))
    fused = BatchedMLP(backend="fused", **kw).fit(X, y)
    auto = BatchedMLP(backend="autograd", **kw).fit(X, y)  # its trajectory is read from torch-order vectors
    np.testing.assert_allclose(fused.trajectory_, auto.trajectory_, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(fused.trajectory_[-1], fused.params_[:, list(track)])


def test_training_reduces_loss_and_fits(boston):
    m = BatchedMLP(hidden=(16,), n_epochs=200, n_students=4).fit(boston.X_train, boston.y_train)
    mse = ((m.predict(boston.X_test) - boston.y_test) ** 2).mean(axis=1)
    assert np.all(mse < 0.35)  # Var(y) = 1 in standardised units; an MLP reaches ~0.15-0.25
    assert np.all(m.loss_ < 0.2)


def test_inter_student_variance_falls_with_k(boston):
    from uqkd.experiments.linear import teacher_moments

    mu = boston.y_train  # a noise-free "teacher" mean
    nv = np.full(mu.shape, 0.5)
    ids = np.arange(24)
    var = {}
    for k in (1, 4, 16):
        mean_k, _ = teacher_moments(mu, nv, k, ids, 0, ("test-k",))
        m = BatchedMLP(hidden=(8,), n_epochs=100, n_students=24, shared_init=True).fit(boston.X_train, mean_k)
        var[k] = m.predict(boston.X_test).var(axis=0, ddof=1).mean()
    assert var[1] > 2 * var[4] > 4 * var[16]


def test_parameter_variance_shrinks_in_convex_case(boston):
    # hidden=() is linear regression: perturbed students all converge to the OLS solution.
    m = BatchedMLP(hidden=(), n_epochs=400, lr=0.05, n_students=50, sigma_init=0.4, shared_init=True,
                   init="torch_default", dtype="float64").fit(boston.X_train, boston.y_train)
    before = m.param_vectors("init").var(axis=0, ddof=1).mean()
    after = m.param_vectors("final").var(axis=0, ddof=1).mean()
    assert after < 0.1 * before


def test_prediction_variance_shrinks_after_training(boston):
    m = BatchedMLP(hidden=(32,), n_epochs=150, n_students=30, sigma_init=0.4, shared_init=True).fit(
        boston.X_train, boston.y_train)
    before = m.predict(boston.X_test, params="init").var(axis=0, ddof=1).mean()
    after = m.predict(boston.X_test).var(axis=0, ddof=1).mean()
    assert after < 0.5 * before


def test_argmax_distillation_suppresses_entropy_and_soft_labels_restore_it():
    sp = load_wine()
    teacher = BatchedMLP(hidden=(32,), task="classification", n_epochs=15, n_classes=3, random_state=1).fit(
        sp.X_train, sp.y_train)
    p_tr, p_te = teacher.predict_proba(sp.X_train)[0], teacher.predict_proba(sp.X_test)[0]
    h_teacher = predictive_entropy(p_te).mean()
    h = {}
    for mode in ("argmax", "soft", "sampled"):
        tg = distillation_targets(p_tr, mode, k=5, n_students=4)
        s = BatchedMLP(hidden=(16,), task="classification", n_epochs=200, n_classes=3, n_students=4).fit(sp.X_train, tg)
        h[mode] = predictive_entropy(s.predict_proba(sp.X_test)).mean()
    assert h["argmax"] < h_teacher
    assert abs(h["soft"] - h_teacher) < abs(h["argmax"] - h_teacher)
    assert abs(h["sampled"] - h_teacher) < abs(h["argmax"] - h_teacher)


def test_distillation_targets():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_array_equal(distillation_targets(p, "argmax"), [[1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(distillation_targets(p, "soft"), p)
    hot = distillation_targets(p, "soft", temperature=0.5)
    assert hot[0, 0] > 0.7 and np.allclose(hot.sum(axis=1), 1)
    s = distillation_targets(p, "sampled", k=4000, n_students=3)
    assert s.shape == (3, 2, 3) and np.allclose(s.sum(axis=-1), 1)
    assert np.abs(s - p).max() < 0.03
    one = distillation_targets(p, "sampled", k=5, n_students=1, student_ids=[2])
    np.testing.assert_array_equal(one[0], distillation_targets(p, "sampled", k=5, n_students=3)[2])


def test_predict_proba_shapes_and_classes():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    m = BatchedMLP(hidden=(4,), task="classification", n_epochs=20, n_students=2).fit(X, y)
    P = m.predict_proba(X)
    assert P.shape == (2, 40, 2) and np.allclose(P.sum(-1), 1)
    np.testing.assert_array_equal(m.predict(X), P.argmax(-1))
    np.testing.assert_array_equal(m.classes_, [0, 1])
    assert m.fit(X, y) is m


def test_auto_chunk_size_respects_budget():
    cs = auto_chunk_size(404, [13, 128, 1])
    per = 4 * 404 * (128 + 128 + 2)
    assert cs * per <= ACTIVATION_BUDGET_BYTES < (cs + 1) * per
    assert auto_chunk_size(10**7, [784, 4096, 10]) == 1


@pytest.mark.parametrize(
    "kwargs,fit_args,arg",
    [
        ({"hidden": (0,)}, None, "hidden"),
        ({"lr": 0.0}, None, "lr"),
        ({"n_epochs": -1}, None, "n_epochs"),
        ({"sigma_init": -0.1}, None, "sigma_init"),
        ({"task": "ranking"}, None, "task"),
        ({"betas": (0.9, 1.0)}, None, "betas"),
        ({"chunk_size": 0}, None, "chunk_size"),
        ({}, "X1d", "X"),
        ({}, "ybad", "y"),
        ({}, "wneg", "sample_weight"),
        ({"n_students": 3}, "Rmismatch", "n_students"),
        ({"track": (10**6,)}, None, "track"),
    ],
)
def test_bad_inputs_raise_value_error_naming_argument(small, kwargs, fit_args, arg):
    X, rng = small
    y = rng.normal(size=60)
    fit_kw: dict = {}
    if fit_args == "X1d":
        X = X[:, 0]
    elif fit_args == "ybad":
        y = y[:50]
    elif fit_args == "wneg":
        fit_kw["sample_weight"] = -np.ones(60)
    elif fit_args == "Rmismatch":
        y = rng.normal(size=(4, 60))
    with pytest.raises(ValueError, match=arg):
        BatchedMLP(**{"n_epochs": 2, **kwargs}).fit(X, y, **fit_kw)


def test_classification_input_errors(small):
    X, rng = small
    with pytest.raises(ValueError, match="y"):
        BatchedMLP(task="classification", n_epochs=1).fit(X, np.full((60, 3), 0.5))  # rows do not sum to 1
    with pytest.raises(ValueError, match="y"):
        BatchedMLP(task="classification", n_epochs=1, n_classes=2).fit(X, np.arange(60) % 3)
    regressor = BatchedMLP(n_epochs=1).fit(X, rng.normal(size=60))
    assert not hasattr(regressor, "predict_proba")  # scikit-learn's contract: no predict_proba on a regressor
    with pytest.raises(AttributeError, match="predict_proba"):
        regressor.predict_proba(X)
    with pytest.raises(ValueError, match="temperature"):
        distillation_targets(np.array([[0.5, 0.5]]), "soft", temperature=0.0)
    with pytest.raises(ValueError, match="mode"):
        distillation_targets(np.array([[0.5, 0.5]]), "hardest")


def test_predict_before_fit_says_call_fit(small):
    X, _ = small
    with pytest.raises(NotFittedError, match="call fit"):
        BatchedMLP().predict(X)
    m = BatchedMLP(n_epochs=1).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="X"):
        m.predict(X[:, :3])


@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("hidden", [(), (8,), (6, 4)])
def test_autograd_path_equals_fused_kernel_float64(task, hidden):
    """Stacked autograd + torch.optim.Adam reproduces the fused kernel (every loss it supports)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 5))
    if task == "regression":
        y = rng.normal(size=(5, 40))
    else:
        y = rng.dirichlet(np.ones(3), size=(5, 40))  # soft targets (R, n, C)
    w = rng.integers(0, 3, size=(5, 40)) + 0.25
    kw = dict(hidden=hidden, task=task, n_epochs=25, dtype="float64", init="torch_default", track=(0, 2),
              sigma_init=0.1, chunk_size=2)
    fused = BatchedMLP(**kw, backend="fused").fit(X, y, sample_weight=w)
    for adam in ("foreach", "fused", "for-loop"):
        auto = BatchedMLP(**kw, backend="autograd", adam=adam).fit(X, y, sample_weight=w)
        assert fused.backend_ == "fused" and auto.backend_ == "autograd"
        np.testing.assert_allclose(auto.params_, fused.params_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(auto.trajectory_, fused.trajectory_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(auto.loss_, fused.loss_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(auto.decision_function(X), fused.decision_function(X), rtol=0, atol=1e-12)


def test_autograd_path_other_activations_and_losses():
    import torch

    rng = np.random.default_rng(4)
    X = rng.normal(size=(30, 3))
    y = X[:, 0] - X[:, 1] ** 2
    base = dict(hidden=(8,), n_epochs=150, n_students=3, dtype="float64")
    assert BatchedMLP(**base).fit(X, y).backend_ == "fused"
    m = BatchedMLP(**base, activation="tanh").fit(X, y)
    assert m.backend_ == "autograd"
    assert np.all(m.loss_ < 0.5 * np.mean((y - y.mean()) ** 2))  # it learns
    # a user loss on (R, n, C) outputs: mean absolute error; differs from the squared loss
    mae = BatchedMLP(**base, loss=lambda z, t: (z - t).abs().sum(dim=-1)).fit(X, y)
    assert mae.backend_ == "autograd" and not np.allclose(mae.params_, BatchedMLP(**base).fit(X, y).params_)
    # the explicit squared loss on the autograd path gives the fused kernel's students
    np.testing.assert_allclose(BatchedMLP(**base, loss="mse", backend="autograd").fit(X, y).params_,
                               BatchedMLP(**base).fit(X, y).params_, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="backend: 'fused' supports only"):
        BatchedMLP(**base, activation="gelu", backend="fused").fit(X, y)
    with pytest.raises(ValueError, match="activation"):
        BatchedMLP(**base, activation="swish").fit(X, y)
    with pytest.raises(ValueError, match="loss: expected per-example losses"):
        BatchedMLP(**base, loss=lambda z, t: (z - t).sum()).fit(X, y)
    assert torch.get_num_threads() >= 1


@pytest.mark.skipif(not mlp_module.ONEDNN_GEMM, reason="torch built without oneDNN")
@pytest.mark.parametrize("task,hidden", [("regression", (6,)), ("regression", (7, 4)), ("regression", ()),
                                         ("classification", (6,))])
@pytest.mark.parametrize("recycles", [True, False])  # the oneDNN forward runs only where malloc recycles blocks
def test_onednn_gemms_agree_with_bmm_and_float64(small, monkeypatch, task, hidden, recycles):
    X, rng = small
    R, C = 5, 3
    Y = rng.normal(size=(R, 60)) if task == "regression" else rng.integers(0, C, size=(R, 60))
    W = rng.integers(0, 3, size=(R, 60)).astype(float) + 0.5
    kw = dict(hidden=hidden, task=task, n_epochs=40, lr=0.01, sigma_init=0.2, n_classes=None if task == "regression" else C)
    ref = BatchedMLP(dtype="float64", **kw).fit(X, Y, sample_weight=W)
    calls = []
    real = mlp_module._onednn_linear
    monkeypatch.setattr(mlp_module, "_onednn_linear", lambda *a: calls.append(a[2]) or real(*a))
    monkeypatch.setattr(mlp_module._malloc, "recycles_large_blocks", lambda: recycles)
    on = BatchedMLP(dtype="float32", **kw).fit(X, Y, sample_weight=W)
    n_fwd = 41 if recycles else 0  # a forward per epoch and one for the final loss
    # a fused ReLU forward per pass with a hidden layer, a plain one without; the first-layer gradient every epoch
    assert (calls.count("relu"), calls.count("none")) == ((n_fwd, 40) if hidden else (0, 40 + n_fwd))
    monkeypatch.setattr(mlp_module, "ONEDNN_GEMM", False)
    calls.clear()
    off = BatchedMLP(dtype="float32", **kw).fit(X, Y, sample_weight=W)
    assert not calls
    np.testing.assert_allclose(on.params_, off.params_, rtol=0, atol=2e-5)
    np.testing.assert_allclose(on.params_, ref.params_, rtol=0, atol=2e-5)
    assert np.abs(ref.params_[0] - ref.params_[1]).max() > 1e-2  # students differ by far more than that


def test_float64_never_takes_the_onednn_path(small, monkeypatch):
    X, rng = small
    monkeypatch.setattr(mlp_module, "_onednn_linear", lambda *a: pytest.fail("oneDNN called in float64"))
    monkeypatch.setattr(mlp_module._malloc, "recycles_large_blocks", lambda: True)
    BatchedMLP(hidden=(6,), n_epochs=3, dtype="float64").fit(X, rng.normal(size=(2, 60)))
