"""What the tabular designs share, whatever the student family: the regression teacher, the MLP students of a
config, and the statistics every design reports on R students (written once).

Students follow the protocol of :mod:`uqkd.students.protocol`: targets and weights (R, n), predictions (R, m).
Experiments import these public names (no private names across modules); the module is not an experiment
module (its name starts with ``_``: package discovery skips it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import check_options, option
from ..data.tabular import load_tabular
from ..metrics import inter_student_var_se, student_mse
from ._options import EPOCHS, LR, N_STUDENTS, TABULAR, THREADS, WIDTHS, mlp_memory

__all__ = ["MLPStudentConfig", "RegressionMLPConfig", "RegressionTeacher", "regression_teacher", "ground_truth", "teacher_for", "mlp", "mlp_students",
           "student_stats", "fit_student_stats", "MLP_FIELDS_HELP", "THREADS_HELP"]

THREADS_HELP = ("torch threads per cell process (none: torch's default); on few shared cores one thread per process "
                "with --workers N is fastest")
#: help text of the MLP student and teacher fields, shared by every MLP config
MLP_FIELDS_HELP = {
    "hidden": "student hidden layer widths",
    "lr": "student Adam learning rate",
    "n_epochs": "student full-batch Adam epochs",
    "teacher_hidden": "teacher MLP hidden widths",
    "teacher_lr": "teacher Adam learning rate",
    "teacher_n_epochs": "teacher full-batch Adam epochs",
}



@dataclass(frozen=True)
class MLPStudentConfig:
    """The MLP student settings every MLP experiment shares: the base its config extends (TRL style).

    An experiment's config redeclares a field only to change its default or help.
    """

    n_students: int = option(200, "students per cell", **N_STUDENTS)
    hidden: tuple[int, ...] = option((16,), MLP_FIELDS_HELP["hidden"], **WIDTHS)
    lr: float = option(0.01, MLP_FIELDS_HELP["lr"], **LR)
    n_epochs: int = option(200, MLP_FIELDS_HELP["n_epochs"], **EPOCHS)
    num_threads: int | None = option(1, THREADS_HELP, **THREADS)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class RegressionMLPConfig(MLPStudentConfig):
    """:class:`MLPStudentConfig` plus a tabular dataset and the regression teacher fitted on its ground truth."""

    dataset: str = option("boston", "tabular dataset (boston, boston11, diabetes, synthetic)", choices=TABULAR)
    teacher: str = option("mlp", "teacher fitted on ground truth: mlp or ols", choices=("mlp", "ols"))
    teacher_hidden: tuple[int, ...] = option((16,), MLP_FIELDS_HELP["teacher_hidden"], **WIDTHS)
    teacher_lr: float = option(0.01, MLP_FIELDS_HELP["teacher_lr"], **LR)
    teacher_n_epochs: int = option(200, MLP_FIELDS_HELP["teacher_n_epochs"], **EPOCHS)

    def memory_estimate(self) -> tuple[float, str, str]:
        return mlp_memory(self)


def mlp(**kw: Any) -> Any:
    """An unfitted :class:`uqkd.students.mlp.BatchedMLP` (torch is imported only when an MLP is trained)."""
    from ..students.mlp import BatchedMLP

    return BatchedMLP(**kw)


@dataclass(frozen=True)
class RegressionTeacher:
    """A tabular split and its teacher's noise-free means on train and test inputs."""

    split: Any
    mu_train: np.ndarray
    mu_test: np.ndarray
    var_y: float


@functools.lru_cache(maxsize=8)
def regression_teacher(dataset: str, seed: int, teacher: str = "mlp", hidden: tuple[int, ...] = (16,),
                       lr: float = 0.01, n_epochs: int = 200) -> RegressionTeacher:
    """Fit the teacher on the ground truth (an MLP, as the paper's, or OLS) and cache it."""
    split = load_tabular(dataset, seed=seed)
    if teacher == "ols":
        D = np.hstack([np.ones((len(split.y_train), 1)), split.X_train])
        theta = np.linalg.lstsq(D, split.y_train, rcond=None)[0]
        mu_tr = D @ theta
        mu_te = np.hstack([np.ones((len(split.y_test), 1)), split.X_test]) @ theta
    elif teacher == "mlp":
        t = mlp(hidden=hidden, lr=lr, n_epochs=n_epochs, random_state=seed, identity=("teacher", dataset),
                init="torch_default", dtype="float64", num_threads=1).fit(split.X_train, split.y_train)
        mu_tr, mu_te = t.predict(split.X_train)[0], t.predict(split.X_test)[0]
    else:
        raise ValueError(f"teacher: expected mlp or ols, got {teacher!r}")
    return RegressionTeacher(split, mu_tr, mu_te, float(split.y_train.var()))


def ground_truth(dataset: str, seed: int) -> RegressionTeacher:
    """The split alone, for students trained on the ground truth (no teacher is fitted)."""
    split = load_tabular(dataset, seed=seed)
    nan_tr, nan_te = np.full(len(split.y_train), np.nan), np.full(len(split.y_test), np.nan)
    return RegressionTeacher(split, nan_tr, nan_te, float(split.y_train.var()))


def teacher_for(cfg: Any, seed: int) -> RegressionTeacher:
    """The regression teacher of ``cfg``: its architecture and training are the config's settings."""
    return regression_teacher(cfg.dataset, seed, cfg.teacher, tuple(cfg.teacher_hidden), float(cfg.teacher_lr),
                              int(cfg.teacher_n_epochs))


def mlp_students(cfg: Any, seed: int, identity: tuple[Any, ...], **kw: Any) -> Any:
    """An unfitted BatchedMLP for ``cfg``'s students (architecture, optimiser, seeds).

    Students start from PyTorch's ``nn.Linear`` default initialisation (what a research script
    gets), each student its own draw unless ``shared_init=True`` is passed (``bootstrap-mlp``'s
    published design); ``init-noise-mlp`` overrides this with Kaiming bases.
    """
    args = dict(hidden=tuple(cfg.hidden), lr=cfg.lr, n_epochs=cfg.n_epochs, random_state=seed, identity=identity,
                n_students=cfg.n_students, num_threads=cfg.num_threads, init="torch_default")
    args.update(kw)
    return mlp(**args)


def student_stats(pred_test: np.ndarray, y_test: np.ndarray, pred_train: np.ndarray | None = None,
                  y_train: np.ndarray | None = None, keep: dict[str, Any] | None = None,
                  name: str = "") -> dict[str, Any]:
    """The statistics every tabular design reports on R students, from predictions (R, m) (and (R, n) on train).

    Test MSE against the ground truth (mean, SD and SEM across students), the inter-student variance of the test
    predictions with its jackknife SE, ``n_students`` and, given ``pred_train``, the train MSE (mean, SD). With
    fewer than 2 (3 for the SE) students the spreads are 0 (NaN). ``keep[name]`` receives the per-student test
    MSE (R,) (paired comparisons between methods fitted on the same draws).
    """
    te = student_mse(pred_test, y_test)
    if keep is not None:
        keep[name] = te
    R = pred_test.shape[0]
    out = {
        "mse_mean": float(te.mean()),
        "mse_std": float(te.std(ddof=1)) if R > 1 else 0.0,
        "mse_sem": float(te.std(ddof=1) / np.sqrt(R)) if R > 1 else 0.0,
        "inter_student_var": float(pred_test.var(axis=0, ddof=1).mean()) if R > 1 else 0.0,
        "inter_student_var_se": inter_student_var_se(pred_test) if R > 2 else float("nan"),
        "n_students": int(R),
    }
    if pred_train is not None:
        tr = student_mse(pred_train, y_train)  # (R,)
        out["train_mse_mean"] = float(tr.mean())
        out["train_mse_std"] = float(tr.std(ddof=1)) if R > 1 else 0.0
    return out


def fit_student_stats(model: Any, tch: RegressionTeacher, labels: np.ndarray, **fit_kw: Any) -> dict[str, Any]:
    """Fit a student family on the teacher's training inputs (labels (R, n)) and report :func:`student_stats`."""
    model.fit(tch.split.X_train, labels, **fit_kw)
    sp = tch.split
    return student_stats(model.predict(sp.X_test), sp.y_test, model.predict(sp.X_train), sp.y_train)
