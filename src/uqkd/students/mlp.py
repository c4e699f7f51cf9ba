r"""Batched MLP students: R independent ReLU networks trained at once with full-batch Adam.

All R students share the inputs ``X``; each has its own initialisation (seeded by its
student id), its own labels (teacher draws, or soft / sampled class targets) and its own
per-example loss weights (inverse-variance weights, or bootstrap counts: a bootstrap sample
is the full ``X`` with per-row count weights, which keeps ``X`` shared).

Independence of students
------------------------
The objective is a **sum over students of per-student weighted mean losses**

.. math:: \mathcal L(\Theta) = \sum_{r=1}^R \frac{\sum_i w_{ri}\, \ell(f_{\theta_r}(x_i), t_{ri})}{\sum_i w_{ri}},

so :math:`\partial\mathcal L/\partial\theta_r` is student r's own gradient, and Adam, being
element-wise, over the stacked parameters is R separate Adam optimisers. Student r's initial
weights come from :func:`uqkd._seeding.student_normals` keyed by its id, so its trained
weights depend only on (seed, identity, id, data, labels, weights): not on R, on the chunk
size or on the worker count.

Computation
-----------
Activations are kept feature-major, ``(R, h, n)``. The first layer, bias included, is one
matmul for every student, ``(R*h1, d+1) @ (d+1, n)`` with ``[X | 1]`` (in float32 one oneDNN
GEMM with the ReLU fused in, its gradient one ``(R*h1, n) @ (n, d+1)`` GEMM; otherwise MKL's
``bmm``); deeper layers are ``bmm``. Forward, backward and Adam are written out by hand (no
autograd graph) into preallocated buffers: per epoch about ten large tensor operations per
chunk. For one hidden layer and one output (the paper's regression students) the first-layer
gradient is formed as :math:`w_2 \odot (\mathbb 1[A>0]\,(\delta \otimes [X|1]))` without
materialising the ``(R, h, n)`` back-propagated gradient, and the second-layer gradient comes
from it without another pass over the activations: where :math:`A>0` the activation is the
pre-activation :math:`[W_1|b_1][x|1]`, so
:math:`\partial L/\partial w_{2,j} = \sum_c [W_1|b_1]_{jc}\,\big(\sum_i \mathbb 1[A_{ji}>0]\,\delta_i [x_i|1]_c\big)`. Students are processed in chunks whose activations
fit a cache budget (10 MB by default), training each chunk for all epochs before the next.

Numerics: in float64 the result equals training each student alone with ``nn.Sequential``,
autograd and ``torch.optim.Adam`` to ~1e-14 (tests). In float32 the first-layer GEMMs run in
oneDNN (:data:`ONEDNN_GEMM`) and, like MKL's bmm before them, may round differently for
different numbers of students per chunk: a student's float32 weights then depend on its
chunk's size in the last bits, which some training regimes amplify (128 hidden units, Adam
lr 0.01, 300 epochs: test predictions differ by ~0.05 on average from float64, a tenth of the
spread across students; MSE statistics agree). The chunk size follows from the shapes only
(:func:`auto_chunk_size`), so a sweep gives the same bits for any worker count or order, and
results do not depend on the thread count. Use ``dtype="float64"`` where a single student's
trajectory must be reproduced exactly (its GEMMs stay in MKL).

Autotuning
----------
The fastest variant differs between hosts (oneDNN against MKL's bmm for the first-layer GEMMs, the
activation budget that sets the chunk size). ``backend="auto"`` therefore times the candidates
(fused with oneDNN, fused with MKL bmm, each at the budgets of :data:`AUTOTUNE_BUDGETS`; the autograd
path for large fits) for :data:`AUTOTUNE_TRIAL_EPOCHS` epochs on one chunk of the fit's own students,
once per (layers, rows, task, dtype, thread count, chunk size class, allocator) and host, and keeps the
fastest (:mod:`uqkd.students._autotune`: in-process memo and ``$UQKD_CACHE/autotune``, keyed by the
host's fingerprint, so worker processes read the first measurement). Only float32 fits large enough
to pay for the measurement (:data:`AUTOTUNE_MIN_WORK_RATIO`, a function of the shapes) are tuned;
float64 keeps its MKL path. The variants agree to float32 rounding (the tolerance above); on a given
host every fit of a key uses the cached variant, so a sweep's numbers stay the same for any worker
count or order. ``UQKD_AUTOTUNE=0`` restores the fixed defaults (oneDNN, 10 MB), and
``UQKD_AUTOTUNE=<variant>`` or ``backend="fused-onednn" | "fused-bmm" | "autograd"`` pins one.

General path
------------
``backend="autograd"`` (chosen by ``backend="auto"`` whenever the fused kernel does not apply)
trains the same stacked parameters with autograd and ``torch.optim.Adam`` (``adam="foreach"``,
``"fused"`` or ``"for-loop"``): any activation of :data:`ACTIVATIONS`, the built-in losses or
any callable per-example loss, on any ``device`` (``"cuda"``). In float64 it equals the fused
kernel to ~1e-15 (tests); :data:`FUSED_SPEEDUP` records what the fused kernel buys.

Only this module (and experiments using it) imports torch; ``uqkd``'s core math does not.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.metaestimators import available_if

from .. import _malloc
from .._seeding import make_rng, student_normals, student_uniforms
from .._validation import check_array, check_choice, check_float, check_int
from ..config import UserError
from . import _autotune
from .protocol import check_X, check_y_given

__all__ = ["BatchedMLP", "distillation_targets", "auto_chunk_size", "NotFittedError"]

#: Activation bytes per chunk of students. Measured on the 2-core machine (32 MB L3 shared by both
#: cores, 2 MB L2 each; idle, one thread, 2026-12-06): 10 MB trains 1.25-1.5x faster than 25 MB
#: (16, 64 and 128 hidden), and leaves room in L3 for a second worker's chunk.
ACTIVATION_BUDGET_BYTES = 10_000_000

#: Hidden-layer activations of the autograd path (the fused kernel is ReLU only).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
    "identity": lambda a: a,
}

#: Built-in per-example losses ``loss(outputs (R, C, n), targets (R|1, C, n)) -> (R, n)``, feature-major.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": lambda z, t: ((z - t) ** 2).sum(dim=1),
    "cross_entropy": lambda z, t: -(torch.log_softmax(z, dim=1) * t).sum(dim=1),
}

#: Measured speed-up of the fused kernel over the autograd path (stacked parameters, autograd,
#: ``torch.optim.Adam``, best of foreach / fused / for-loop), R = 1,000 Boston students, float32,
#: one thread, idle 2-core machine (``benchmarks/bench_mlp_backends.py``, 2026-12-07, malloc tuned
#: as in uqkd's processes, the kernel's first-layer GEMMs in oneDNN: 5.79 / 20.94 / 42.09 us per
#: student-epoch, 67-74 % of the machine's float32 matmul rate). ``torch.func.vmap(grad)`` was
#: slower still (4.9x, 11.3x, 14.1x behind fused) and ``torch.compile`` of the forward + loss too
#: (2.0x, 4.7x, 3.8x behind the kernel as it was on 2026-12-06). The fused kernel is the fast path
#: for ReLU + the default loss on the CPU: it wins by >= 1.5x on every paper network (16 hidden:
#: sections 4/7; 64: section 5 bootstrap; 128: section 5 init noise).
FUSED_SPEEDUP: dict[str, float] = {"13-16-1": 3.65, "13-64-1": 3.81, "13-128-1": 3.50}

#: float32 first-layer GEMMs of the fused kernel through oneDNN (``torch.ops.mkldnn._linear_pointwise``,
#: the op torch.compile's CPU backend emits) instead of MKL's bmm: the forward with its ReLU fused into
#: the GEMM, and the first-layer gradient as one (R*h1, n) @ (n, d+1) GEMM. Measured on the idle 2-core
#: machine, one thread, 2026-12-07: forward + ReLU 439 -> 310 us, gradient 463 -> 190 us per epoch for a
#: chunk of 167 students of 13-16-1 (64 hidden: 414 -> 344 and 461 -> 276 us; 128: 417 -> 319 and
#: 441 -> 264 us). The forward gives the same bits as bmm + clamp there; the gradient differs by float32
#: rounding. Off (bmm) for float64, which oneDNN's matmul does not run, and where torch lacks oneDNN.
#: ``benchmarks/bench_mlp_backends.py`` prints the kernel's time with this on and off.
ONEDNN_GEMM: bool = bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")

#: Activation budgets the autotuner tries (with the fused kernel's two GEMM variants and the autograd path)
#: when ``backend="auto"`` fits a float32 problem on the CPU; see :mod:`uqkd.students._autotune`.
AUTOTUNE_BUDGETS: tuple[int, ...] = (4_000_000, ACTIVATION_BUDGET_BYTES, 25_000_000)
#: Epochs per timed trial of a candidate (on one chunk of the fit's own students, inputs and labels).
AUTOTUNE_TRIAL_EPOCHS = 3
#: A fit is autotuned only when its work (students x epochs) is at least this many times a full
#: measurement's (so toy fits, and tests, keep the defaults; the decision depends on the shapes only).
AUTOTUNE_MIN_WORK_RATIO = 4.0
#: The autograd path is timed only for fits estimated (from the fused trials) at this many seconds or more:
#: its first call in a process costs about a second (torch's optimiser imports), and on the machines
#: measured it is 3.5x behind the fused kernel (:data:`FUSED_SPEEDUP`).
AUTOTUNE_AUTOGRAD_MIN_FIT_S = 30.0


def _onednn_linear(x: torch.Tensor, w: torch.Tensor, attr: str) -> torch.Tensor:
    """``attr(x @ w.T)`` by oneDNN, attr "relu" or "none"; x (m, k), w (n, k) -> (m, n), a new tensor."""
    return torch.ops.mkldnn._linear_pointwise(x, w, None, attr, [], "")


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (no-op for None)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def auto_chunk_size(n: int, layer_sizes: Sequence[int], itemsize: int = 4,
                    budget_bytes: int = ACTIVATION_BUDGET_BYTES) -> int:
    r"""Students per chunk so that one chunk's activations fit ``budget_bytes``.

    Per student the training loop holds each hidden activation ``(h_l, n)``, the output and
    its gradient ``(C, n)``, and one backward temporary of the widest hidden layer:

    .. math:: \text{bytes} = \text{itemsize}\cdot n\,\big(\textstyle\sum_l h_l + \max_l h_l + 2C\big)

    Parameters
    ----------
    n : int
        Rows of ``X``.
    layer_sizes : sequence of int
        ``(d, h_1, ..., h_L, C)``.
    """
    hidden = list(layer_sizes[1:-1])
    c = layer_sizes[-1]
    per = itemsize * n * (sum(hidden) + (max(hidden) if hidden else 0) + 2 * c)
    return int(max(1, budget_bytes // max(per, 1)))


def distillation_targets(
    teacher_proba: np.ndarray,
    mode: Literal["argmax", "soft", "sampled"] = "argmax",
    *,
    temperature: float = 1.0,
    k: int = 1,
    n_students: int = 1,
    seed: int = 0,
    identity: Sequence[Any] = (),
    student_ids: np.ndarray | None = None,
) -> np.ndarray:
    r"""Classification targets a student is distilled on, from the teacher's probabilities.

    * ``argmax``: one-hot of :math:`\arg\max_c p_c(x)` (the paper's standard KD).
    * ``soft``: the teacher's distribution at temperature :math:`\tau`,
      :math:`t_c \propto p_c^{1/\tau}` (= softmax of logits / :math:`\tau`).
    * ``sampled``: the empirical distribution of k labels drawn from :math:`p(x)`
      independently for each student (equivalent to k hard-labelled copies of each input);
      :math:`k \to \infty` recovers ``soft`` at :math:`\tau = 1`.

    Parameters
    ----------
    teacher_proba : array of shape (n, C)
    mode : {"argmax", "soft", "sampled"}
    temperature : float > 0
        Used by ``soft``.
    k : int >= 1
        Labels drawn per input and student, used by ``sampled``.
    n_students, seed, identity, student_ids
        ``sampled`` draws student r's labels from ``(seed, identity, r)``.

    Returns
    -------
    array of shape (n, C) (``argmax``, ``soft``) or (R, n, C) (``sampled``), rows summing to 1.

    Examples
    --------
    >>> p = np.array([[0.7, 0.3]])
    >>> distillation_targets(p, "argmax").tolist()
    [[1.0, 0.0]]
    """
    p = check_array(teacher_proba, "teacher_proba", ndim=2, nonnegative=True)
    s = p.sum(axis=1)
    if not np.allclose(s, 1.0, atol=1e-4):
        raise ValueError(f"teacher_proba: expected rows summing to 1, got sums in [{s.min():.4g}, {s.max():.4g}]")
    check_choice(mode, "mode", ("argmax", "soft", "sampled"))
    n, C = p.shape
    if mode == "argmax":
        return np.eye(C)[p.argmax(axis=1)]
    if mode == "soft":
        tau = check_float(temperature, "temperature", min_value=0.0, exclusive_min=True)
        logp = np.log(np.maximum(p, 1e-300)) / tau
        logp -= logp.max(axis=1, keepdims=True)
        e = np.exp(logp)
        return e / e.sum(axis=1, keepdims=True)
    k = check_int(k, "k", min_value=1)
    ids = np.arange(check_int(n_students, "n_students", min_value=1)) if student_ids is None else np.asarray(student_ids)
    cdf = np.cumsum(p / s[:, None], axis=1)  # (n, C)
    cdf[:, -1] = 1.0
    u = student_uniforms(seed, (*identity, "sampled-labels", k), ids, (n, k))  # (R, n, k)
    labels = (u[..., None] >= cdf[None, :, None, :]).sum(axis=-1)  # (R, n, k) class index
    counts = np.zeros((len(ids), n, C))
    np.add.at(counts, (np.arange(len(ids))[:, None, None], np.arange(n)[None, :, None], labels), 1.0)
    return counts / k


class BatchedMLP(BaseEstimator):
    r"""An ensemble of R independent ReLU MLPs trained simultaneously with full-batch Adam.

    A student family of :mod:`uqkd.students.protocol` and a scikit-learn estimator (``get_params``,
    ``clone``, :class:`sklearn.exceptions.NotFittedError`); targets are (R, n) and predictions
    (R, m), students as rows (:class:`uqkd.students.protocol.SingleStudent` gives one student as a
    plain regressor). ``predict_proba`` exists only for ``task="classification"``.

    Student r minimises its own weighted mean loss

    .. math:: L_r(\theta_r) = \frac{\sum_i w_{ri}\,\ell(f_{\theta_r}(x_i), t_{ri})}{\sum_i w_{ri}}

    with :math:`\ell` the squared error (regression) or the cross-entropy
    :math:`-\sum_c t_{ric}\log \mathrm{softmax}(f_{\theta_r}(x_i))_c` (classification, hard or
    soft targets), by Adam on its own parameters (PyTorch's update rule). Training R of them
    at once gives the same weights as training each alone (see the module docstring).

    Initialisation (uqkd defines): weights Kaiming-normal, :math:`W \sim N(0, 2/\text{fan\_in})`,
    biases zero (``init="kaiming_normal"``), or PyTorch's ``nn.Linear`` default
    (``init="torch_default"``: weights and biases :math:`U(\pm 1/\sqrt{\text{fan\_in}})`). Then,
    with ``sigma_init`` = :math:`\sigma > 0` (paper section 5), each student's weights are
    perturbed multiplicatively and its biases additively:

    .. math:: W \leftarrow W \odot (1 + \varepsilon),\ \varepsilon \sim N(0, \sigma^2);\qquad
              b \leftarrow b + \eta,\ \eta \sim N(0, (0.1\,\sigma)^2).

    With ``shared_init=True`` every student starts from the same base draw (only the
    perturbation differs, the section 5 design); otherwise each student draws its own.

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer widths, e.g. ``(16,)`` or ``(128, 64)``; ``()`` is a linear model
        (logistic regression for classification).
    task : {"regression", "classification"}
    n_epochs : int
        Full-batch Adam steps.
    lr, betas, eps : float
        Adam hyper-parameters.
    sigma_init : float >= 0
        Relative weight perturbation at initialisation.
    init : {"kaiming_normal", "torch_default"}
    shared_init : bool
        One base initialisation for every student (perturbations still per student).
    n_classes : int or None
        Number of classes; inferred from the targets when None (pass it when students are
        fitted in separate calls so their output layers agree).
    n_students : int or None
        Ensemble size when neither ``y``, ``sample_weight`` nor ``student_ids`` say it.
    random_state : int
        Root seed; student r's initialisation derives from (random_state, identity, r).
    identity : tuple
        Names the unit of work the students belong to (part of their seeds).
    chunk_size : int or None
        Students per chunk; None picks it from the shapes (:func:`auto_chunk_size`).
    dtype : {"float32", "float64"}
    track : tuple of int
        Flat parameter indices (see :meth:`param_vectors`) recorded after every epoch in
        ``trajectory_``.
    num_threads : int or None
        torch intra-op threads while fitting / predicting (restored afterwards); None leaves
        torch's setting alone. On a shared machine one thread per process (and several worker
        processes) is much faster than two threads fighting for one free core.

    Attributes
    ----------
    coefs_ : list of arrays (R, out, in)
    intercepts_ : list of arrays (R, out)
    init_params_ : array (R, P)
        Parameter vectors before training (after perturbation).
    trajectory_ : array (n_epochs + 1, R, len(track)) or None
    loss_ : array (R,)
        Final training loss of each student.
    n_students_, n_features_in_, n_outputs_, classes_ (classification)

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(50, 3)); y = X[:, 0]
    >>> m = BatchedMLP(hidden=(8,), n_epochs=50, n_students=4).fit(X, y)
    >>> m.predict(X).shape
    (4, 50)
    """

    def __init__(
        self,
        *,
        hidden: Sequence[int] = (16,),
        task: Literal["regression", "classification"] = "regression",
        n_epochs: int = 200,
        lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        sigma_init: float = 0.0,
        init: Literal["kaiming_normal", "torch_default"] = "kaiming_normal",
        shared_init: bool = False,
        n_classes: int | None = None,
        n_students: int | None = None,
        random_state: int = 0,
        identity: tuple[Any, ...] = (),
        chunk_size: int | None = None,
        dtype: Literal["float32", "float64"] = "float32",
        track: tuple[int, ...] = (),
        num_threads: int | None = None,
        activation: str = "relu",
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        backend: Literal["auto", "fused", "autograd", "fused-onednn", "fused-bmm"] = "auto",
        device: str | None = None,
        adam: Literal["foreach", "fused", "for-loop"] = "foreach",
    ) -> None:
        self.hidden = hidden
        self.task = task
        self.n_epochs = n_epochs
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.sigma_init = sigma_init
        self.init = init
        self.shared_init = shared_init
        self.n_classes = n_classes
        self.n_students = n_students
        self.random_state = random_state
        self.identity = identity
        self.chunk_size = chunk_size
        self.dtype = dtype
        self.track = track
        self.num_threads = num_threads
        self.activation = activation
        self.loss = loss
        self.backend = backend
        self.device = device
        self.adam = adam

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        hidden = tuple(self.hidden)
        for h in hidden:
            check_int(h, "hidden", min_value=1)
        check_choice(self.task, "task", ("regression", "classification"))
        check_int(self.n_epochs, "n_epochs", min_value=0)
        check_float(self.lr, "lr", min_value=0.0, exclusive_min=True)
        if len(tuple(self.betas)) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        check_float(self.eps, "eps", min_value=0.0, exclusive_min=True)
        check_float(self.sigma_init, "sigma_init", min_value=0.0)
        check_choice(self.init, "init", ("kaiming_normal", "torch_default"))
        if self.n_classes is not None:
            check_int(self.n_classes, "n_classes", min_value=2)
        if self.n_students is not None:
            check_int(self.n_students, "n_students", min_value=1)
        if self.chunk_size is not None:
            check_int(self.chunk_size, "chunk_size", min_value=1)
        if self.num_threads is not None:
            check_int(self.num_threads, "num_threads", min_value=1)
        check_choice(self.dtype, "dtype", ("float32", "float64"))
        check_choice(self.activation, "activation", tuple(ACTIVATIONS))
        if self.loss is not None and not callable(self.loss):
            check_choice(self.loss, "loss", tuple(LOSSES))
        check_choice(self.backend, "backend", ("auto", "fused", "autograd", "fused-onednn", "fused-bmm"))
        check_choice(self.adam, "adam", ("foreach", "fused", "for-loop"))
        if self._resolved_backend() == "fused" and not self._fused_supports():
            raise ValueError("backend: 'fused' supports only activation='relu' with the default loss on the CPU "
                             f"(got activation={self.activation!r}, loss={self.loss!r}, device={self.device!r}); "
                             "use backend='autograd' or 'auto'")

    def _loss_name(self) -> str | None:
        if self.loss is None:
            return "mse" if self.task == "regression" else "cross_entropy"
        return None if callable(self.loss) else str(self.loss)

    def _fused_supports(self) -> bool:
        default = "mse" if self.task == "regression" else "cross_entropy"
        dev = torch.device(self.device) if self.device is not None else torch.device("cpu")
        return self.activation == "relu" and self._loss_name() == default and dev.type == "cpu"

    def _resolved_backend(self) -> str:
        """``auto``: the fused kernel where it supports the problem (it wins there, see ``FUSED_SPEEDUP``)."""
        if self.backend != "auto":
            return "fused" if str(self.backend).startswith("fused") else str(self.backend)
        return "fused" if self._fused_supports() else "autograd"

    @property
    def _torch_dtype(self) -> torch.dtype:
        return torch.float32 if self.dtype == "float32" else torch.float64

    def _torch_device(self) -> torch.device:
        return torch.device(self.device) if self.device is not None else torch.device("cpu")

    def _layer_sizes(self) -> list[int]:
        return [self.n_features_in_, *[int(h) for h in self.hidden], self.n_outputs_]

    def _param_shapes(self) -> list[tuple[tuple[int, int], tuple[int]]]:
        s = self._layer_sizes()
        return [((s[i + 1], s[i]), (s[i + 1],)) for i in range(len(s) - 1)]

    @property
    def n_params_(self) -> int:
        return sum(o * i + o for (o, i), _ in self._param_shapes())

    # ------------------------------------------------------------------ targets
    def _resolve_targets(self, y: Any, n: int) -> tuple[np.ndarray, int | None]:
        """Targets as (n,) / (R, n) regression labels or (n, C) / (R, n, C) class distributions."""
        if self.task == "regression":
            yt = check_array(y, "y", ndim=(1, 2))
            if yt.shape[-1] != n:
                raise ValueError(f"y: expected shape ({n},) or (n_students, {n}) to match X, got {yt.shape}")
            self.n_outputs_ = 1
            return yt, (yt.shape[0] if yt.ndim == 2 else None)
        arr = np.asarray(y)
        # labels: (n,) or integer (R, n); class distributions: float (n, C) or (R, n, C)
        if arr.ndim == 1 or (arr.ndim == 2 and np.issubdtype(arr.dtype, np.integer)):
            lab = check_array(arr, "y", ndim=(1, 2))
            if lab.shape[-1] != n:
                raise ValueError(f"y: expected labels of shape ({n},) or (n_students, {n}) to match X, got {lab.shape}")
            if np.any(lab < 0) or np.any(lab != np.round(lab)):
                raise ValueError("y: expected non-negative integer class labels")
            lab = lab.astype(np.int64)
            C = int(self.n_classes) if self.n_classes is not None else max(2, int(lab.max()) + 1)
            if lab.max() >= C:
                raise ValueError(f"y: expected labels < n_classes={C}, got {int(lab.max())}")
            self.n_outputs_ = C
            self.classes_ = np.arange(C)
            return np.eye(C)[lab], (lab.shape[0] if lab.ndim == 2 else None)
        t = check_array(arr, "y", ndim=(2, 3), nonnegative=True)
        if t.shape[-2] != n:
            raise ValueError(f"y: expected soft targets of shape ({n}, C) or (n_students, {n}, C), got {t.shape}")
        s = t.sum(axis=-1)
        if not np.allclose(s, 1.0, atol=1e-4):
            raise ValueError(f"y: expected soft-target rows summing to 1, got sums in [{s.min():.4g}, {s.max():.4g}]")
        C = t.shape[-1]
        if self.n_classes is not None and C != self.n_classes:
            raise ValueError(f"y: expected {self.n_classes} classes (n_classes), got {C}")
        if C < 2:
            raise ValueError(f"y: expected at least 2 classes, got {C}")
        self.n_outputs_ = C
        self.classes_ = np.arange(C)
        return t, (t.shape[0] if t.ndim == 3 else None)

    # ------------------------------------------------------------------ initialisation
    def _init_params(self, ids: np.ndarray) -> np.ndarray:
        """Initial flat parameter vectors (R, P), [W1 (out, in), b1, W2, b2, ...] per student."""
        seed = int(self.random_state)
        ident = tuple(self.identity)
        P = self.n_params_
        scale = np.empty(P)  # per-entry std (normal) or half-width (uniform)
        is_w = np.zeros(P, dtype=bool)
        off = 0
        for (o, i), _ in self._param_shapes():
            if self.init == "kaiming_normal":
                scale[off:off + o * i] = math.sqrt(2.0 / i)
                scale[off + o * i:off + o * i + o] = 0.0
            else:
                scale[off:off + o * i + o] = 1.0 / math.sqrt(i)
            is_w[off:off + o * i] = True
            off += o * i + o
        base_ident = (*ident, "init", self.init, tuple(self._layer_sizes()))
        if self.shared_init:
            rng = make_rng(seed, *base_ident, "shared")
            z = rng.standard_normal(P) if self.init == "kaiming_normal" else 2.0 * rng.random(P) - 1.0
            base = np.broadcast_to(z * scale, (len(ids), P)).copy()
        elif self.init == "kaiming_normal":
            base = student_normals(seed, base_ident, ids, (P,)) * scale
        else:
            base = (2.0 * student_uniforms(seed, base_ident, ids, (P,)) - 1.0) * scale
        if self.sigma_init > 0:
            eps = student_normals(seed, (*ident, "init-noise", tuple(self._layer_sizes())), ids, (P,))  # (R, P)
            s = float(self.sigma_init)
            base = np.where(is_w[None, :], base * (1.0 + s * eps), base + 0.1 * s * eps)
        return base

    # ------------------------------------------------------------------ core loop
    def _views(self, flat: torch.Tensor, R: int) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Per-layer views of a chunk's flat buffer.

        Layout: layer 1 is one block ``(R, h1, d + 1)`` holding ``[W1 | b1]`` (so the first
        layer is a single matmul with ``[X | 1]``, bias included); each deeper layer is a block
        ``(R, out, in)`` followed by a block ``(R, out)``.

        Returns
        -------
        Ws : list of (R, out, in) views; bs : list of (R, out) views; block1 : (R*h1, d+1) view
        """
        Ws, bs = [], []
        (o, i), _ = self._param_shapes()[0]
        block1 = flat[: R * o * (i + 1)].view(R, o, i + 1)
        Ws.append(block1[:, :, :i])
        bs.append(block1[:, :, i])
        off = R * o * (i + 1)
        for (o, i), _ in self._param_shapes()[1:]:
            Ws.append(flat[off:off + R * o * i].view(R, o, i))
            off += R * o * i
            bs.append(flat[off:off + R * o].view(R, o))
            off += R * o
        return Ws, bs, block1.view(R * block1.shape[1], -1)

    def _to_blocked(self, vecs: np.ndarray) -> torch.Tensor:
        """(R, P) per-student vectors ``[W1.ravel(), b1, W2.ravel(), b2, ...]`` -> flat buffer (see :meth:`_views`)."""
        R = vecs.shape[0]
        shapes = self._param_shapes()
        (o, i), _ = shapes[0]
        parts = [np.concatenate([vecs[:, : o * i].reshape(R, o, i), vecs[:, o * i:o * i + o, None]], axis=2).ravel()]
        off = o * i + o
        for (o, i), _ in shapes[1:]:
            parts.append(vecs[:, off:off + o * i + o].reshape(R, -1)[:, : o * i].ravel())
            parts.append(vecs[:, off + o * i:off + o * i + o].ravel())
            off += o * i + o
        return torch.from_numpy(np.concatenate(parts)).to(self._torch_dtype)

    def _from_blocked(self, flat: torch.Tensor, R: int) -> np.ndarray:
        return self._vec_view(flat, R).numpy()

    def _forward(self, X1: torch.Tensor, flat: torch.Tensor, R: int,
                 acts: list[torch.Tensor] | None = None, Z: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (R, C, n) and hidden activations [(R, h_l, n)] for inputs ``X1 = [X | 1]`` (n, d+1).

        ``acts`` and ``Z`` are optional preallocated outputs (the training loop reuses them:
        allocating fresh multi-megabyte tensors every epoch costs page faults).
        """
        Ws, bs, block1 = self._views(flat, R)
        n = X1.shape[0]
        h1 = Ws[0].shape[1]
        if acts is None:
            acts = [torch.empty(R, W.shape[1], n, dtype=X1.dtype) for W in Ws[:-1]]
        if Z is None:
            Z = torch.empty(R, Ws[-1].shape[1], n, dtype=X1.dtype)
        # first layer, bias included: oneDNN's single GEMM where it applies (below), else per student
        # (h1, d+1) @ (d+1, n), one MKL bmm over the shared [X | 1]^T (expanded, not copied), which on MKL
        # beats the single (R*h1, d+1) @ (d+1, n) mm (all three printed by benchmarks/bench_mlp_backends.py)
        if self._use_onednn(X1) and _malloc.recycles_large_blocks():
            # one (R*h1, d+1) @ (d+1, n) GEMM with the ReLU fused in (see ONEDNN_GEMM). Its output is a
            # fresh multi-megabyte tensor each epoch: only where the allocator recycles such blocks
            # (uqkd's own processes, see uqkd._malloc) is that cheaper than bmm + clamp into a kept buffer
            if len(Ws) == 1:
                Z.view(R * h1, n).copy_(_onednn_linear(block1, X1, "none"))
                return Z, acts
            a = acts[0] = _onednn_linear(block1, X1, "relu").view(R, h1, n)
        else:
            X1T = X1.T.contiguous().expand(R, X1.shape[1], n)
            if len(Ws) == 1:  # no hidden layer (multinomial logistic / linear regression)
                torch.bmm(block1.view(R, h1, -1), X1T, out=Z)  # (R, C, n)
                return Z, acts
            a = acts[0]
            torch.bmm(block1.view(R, h1, -1), X1T, out=a)  # (R, h1, n)
            a.clamp_(min=0)  # (R, h1, n)
        for li in range(1, len(Ws) - 1):
            torch.baddbmm(bs[li].unsqueeze(-1), Ws[li], a, out=acts[li])  # (R, h_l, n)
            a = acts[li].clamp_(min=0)
        torch.baddbmm(bs[-1].unsqueeze(-1), Ws[-1], a, out=Z)  # (R, C, n)
        return Z, acts

    def _use_onednn(self, X1: torch.Tensor) -> bool:
        return (ONEDNN_GEMM and getattr(self, "_gemm", "onednn") == "onednn" and X1.dtype == torch.float32
                and X1.device.type == "cpu")

    def _train_chunk(self, X1: torch.Tensor, flat: torch.Tensor, R: int, T: torch.Tensor,
                     wn: torch.Tensor, track_idx: torch.Tensor | None, epochs: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Train one chunk of R students in place (for ``epochs``, default ``n_epochs``).

        X1: (n, d+1) inputs with a ones column; T: (R|1, C, n) targets; wn: (R|1, 1, n) weights
        normalised to sum one per student.
        """
        n = X1.shape[0]
        n_epochs = self.n_epochs if epochs is None else int(epochs)
        L = len(self.hidden) + 1
        regression = self.task == "regression"
        b1, b2 = (float(b) for b in self.betas)
        lr, eps = float(self.lr), float(self.eps)
        Ws, _, _ = self._views(flat, R)
        g = torch.zeros_like(flat)
        gWs, gbs, gblock1 = self._views(g, R)
        m = torch.zeros_like(flat)
        v = torch.zeros_like(flat)
        denom = torch.empty_like(flat)
        acts = [torch.empty(R, int(h), n, dtype=X1.dtype) for h in self.hidden]  # (R, h_l, n)
        Z = torch.empty(R, self.n_outputs_, n, dtype=X1.dtype)  # (R, C, n)
        tmp = torch.empty(R * max((int(h) for h in self.hidden), default=1) * n, dtype=X1.dtype)  # backward scratch
        wn2 = wn * 2.0 if regression else wn
        traj = None
        if track_idx is not None:
            traj = torch.empty(n_epochs + 1, R, len(track_idx), dtype=X1.dtype)
            # where each tracked entry of each student sits in the blocked buffer: one gather per epoch
            # instead of rebuilding every student's whole parameter vector (same values)
            where = self._vec_view(torch.arange(flat.numel()), R)[:, track_idx]  # (R, len(track)) offsets
            traj[0] = flat[where]
        thr_bwd = torch.ops.aten.threshold_backward.grad_input
        h1 = Ws[0].shape[1]
        fast = L == 2 and self.n_outputs_ == 1
        X1T_c = X1.T.contiguous()  # (d+1, n)
        X1T = X1T_c.expand(R, X1.shape[1], n)  # shared [X | 1]^T, (R, d+1, n) without a copy
        onednn = self._use_onednn(X1)
        gT1 = torch.empty(R, X1.shape[1], h1, dtype=X1.dtype)  # first-layer gradient, transposed
        if fast:
            gblock1_3d = gblock1.view(R, h1, X1.shape[1])  # (R, h1, d+1)
            block1_3d = self._views(flat, R)[2].view(R, h1, X1.shape[1])  # [W1 | b1] before this epoch's step
        for t in range(1, n_epochs + 1):
            self._forward(X1, flat, R, acts, Z)  # Z: (R, C, n)
            if regression:
                dZ = Z.sub_(T).mul_(wn2)  # d/dz sum_i w_i (z_i - y_i)^2 = 2 w (z - y): (R, 1, n)
            else:
                Z.sub_(Z.amax(dim=1, keepdim=True)).exp_()
                dZ = Z.div_(Z.sum(dim=1, keepdim=True)).sub_(T).mul_(wn)  # w (softmax(z) - t): (R, C, n)
            if fast:
                # one hidden layer, one output: dZ1 = w2 * (1[A > 0] dz), so
                # dW1b[r, j, :] = w2[r, j] * sum_i 1[A_rji > 0] dz_ri [x_i | 1]: the (R, h, n) factor
                # 1[A > 0] dz is one pass over A, and w2 scales the small (R, h1, d+1) result
                A = acts[0]  # (R, h1, n)
                torch.sum(dZ, dim=2, out=gbs[1])  # (R, 1)
                G = thr_bwd(dZ.expand(A.shape), A, 0.0, grad_input=A)  # 1[A > 0] dz, over A: (R, h1, n)
                if onednn:  # (R*h1, n) @ (n, d+1): the gradient in [W1 | b1]'s own layout
                    gG = _onednn_linear(G.view(R * h1, n), X1T_c, "none").view(R, h1, -1)
                else:
                    torch.bmm(X1T, G.transpose(1, 2), out=gT1)  # (R, d+1, h1): the fast layout for MKL
                    gG = gT1.transpose(1, 2)
                # second-layer gradient without another pass over A: where A > 0 it is the pre-activation
                # [W1 | b1] [x | 1], so dw2[r, j] = sum_i dz_ri relu(A_rji) = sum_c [W1|b1][r, j, c] gG[r, j, c]
                torch.mul(gG, block1_3d, out=gblock1_3d)
                torch.sum(gblock1_3d, dim=2, out=gWs[1].view(R, h1))
                torch.mul(gG, Ws[1].transpose(1, 2), out=gblock1_3d)  # times w2[r, j]
                L_loop = 0
            else:
                L_loop = L - 1
            for li in range(L_loop, 0, -1):
                A = acts[li - 1]  # (R, h_in, n)
                torch.sum(dZ, dim=2, out=gbs[li])  # (R, out)
                torch.bmm(dZ, A.transpose(1, 2), out=gWs[li])  # (R, out, in)
                dA = tmp[: A.numel()].view(A.shape)
                if dZ.shape[1] == 1:
                    torch.mul(Ws[li].transpose(1, 2), dZ, out=dA)  # outer product (R, in, 1) x (R, 1, n)
                else:
                    torch.bmm(Ws[li].transpose(1, 2), dZ, out=dA)  # (R, in, n)
                dZ = thr_bwd(dA, A, 0.0, grad_input=A)  # ReLU': dA where A > 0, written over A (R, in, n)
            if not fast:  # first layer, bias gradient included: per student [X | 1]^T @ dZ^T, (d+1, h1)
                if onednn:
                    gblock1.copy_(_onednn_linear(dZ.reshape(R * h1, n), X1T_c, "none"))
                else:
                    torch.bmm(X1T, dZ.transpose(1, 2), out=gT1)
                    gblock1.view(R, h1, -1).copy_(gT1.transpose(1, 2))
            # Adam (PyTorch's rule), element-wise over the stacked parameters of the chunk
            m.lerp_(g, 1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            bc1 = 1.0 - b1**t
            bc2_sqrt = math.sqrt(1.0 - b2**t)
            torch.sqrt(v, out=denom).div_(bc2_sqrt).add_(eps)
            flat.addcdiv_(m, denom, value=-lr / bc1)
            if traj is not None:
                torch.index_select(flat, 0, where.view(-1), out=traj[t].view(-1))
        self._forward(X1, flat, R, acts, Z)
        if regression:
            loss = ((Z - T) ** 2 * wn).sum(dim=(1, 2))
        else:
            loss = -(torch.log_softmax(Z, dim=1) * T * wn).sum(dim=(1, 2))
        return loss, traj

    # ------------------------------------------------------------------ autograd path
    def _split_vecs(self, vecs: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(R, P) vectors ``[W1.ravel(), b1, ...]`` -> contiguous per-layer (R, out, in) and (R, out) tensors."""
        R = vecs.shape[0]
        Ws, bs, off = [], [], 0
        for (o, i), _ in self._param_shapes():
            Ws.append(vecs[:, off:off + o * i].reshape(R, o, i).contiguous())
            off += o * i
            bs.append(vecs[:, off:off + o].contiguous())
            off += o
        return Ws, bs

    def _forward_stacked(self, XT: torch.Tensor, Ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Outputs (R, C, n) of R stacked networks for inputs ``XT`` (d, n), any activation, autograd-friendly."""
        act = ACTIVATIONS[self.activation]
        R, h1, d = Ws[0].shape
        n = XT.shape[1]
        # (R, h1, n): one bmm over the shared X^T, expanded (faster than one (R*h1, d) @ (d, n) mm, see _forward)
        a = torch.baddbmm(bs[0].unsqueeze(-1), Ws[0], XT.expand(R, d, n))
        for W, b in zip(Ws[1:], bs[1:]):
            a = torch.baddbmm(b.unsqueeze(-1), W, act(a))  # (R, out, n)
        return a

    def _per_example_loss(self, Z: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """(R, n) losses of outputs Z (R, C, n) against targets T (R|1, C, n)."""
        if callable(self.loss):
            out = self.loss(Z.transpose(1, 2), T.transpose(1, 2))  # user loss on (R, n, C), (R|1, n, C)
            if out.shape != Z.shape[:1] + Z.shape[2:]:
                raise ValueError(f"loss: expected per-example losses of shape {tuple(Z.shape[:1] + Z.shape[2:])}, "
                                 f"got {tuple(out.shape)}")
            return out
        return LOSSES[self._loss_name() or "mse"](Z, T)

    def _train_chunk_autograd(self, XT: torch.Tensor, vecs: torch.Tensor, T: torch.Tensor, wn: torch.Tensor,
                              track_idx: torch.Tensor | None, epochs: int | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Train one chunk with autograd and ``torch.optim.Adam`` over the stacked parameters.

        The objective is the sum over students of their weighted mean losses, so each student's
        gradient is its own, and Adam (element-wise) is R separate optimisers.
        XT: (d, n); vecs: (R, P) initial vectors; T: (R|1, C, n); wn: (R|1, n) weights summing to one.
        Returns final vectors (R, P), final losses (R,), trajectory or None.
        """
        Ws, bs = self._split_vecs(vecs)
        params = [p.requires_grad_() for pair in zip(Ws, bs) for p in pair]
        kw: dict[str, Any] = {"foreach": True} if self.adam == "foreach" else (
            {"fused": True} if self.adam == "fused" else {"foreach": False})
        opt = torch.optim.Adam(params, lr=float(self.lr), betas=tuple(float(b) for b in self.betas),
                               eps=float(self.eps), **kw)
        R = vecs.shape[0]
        n_epochs = self.n_epochs if epochs is None else int(epochs)

        def flat_now() -> torch.Tensor:
            return torch.cat([p.detach().reshape(R, -1) for p in params], dim=1)  # (R, P), torch order

        traj = None
        if track_idx is not None:
            traj = torch.empty(n_epochs + 1, R, len(track_idx), dtype=vecs.dtype, device=vecs.device)
            traj[0] = vecs[:, track_idx]
        with torch.enable_grad():
            for t in range(1, n_epochs + 1):
                opt.zero_grad(set_to_none=False)
                total = (self._per_example_loss(self._forward_stacked(XT, Ws, bs), T) * wn).sum()
                total.backward()
                opt.step()
                if traj is not None:
                    traj[t] = flat_now()[:, track_idx]
        with torch.no_grad():
            loss = (self._per_example_loss(self._forward_stacked(XT, Ws, bs), T) * wn).sum(dim=1)
        return flat_now(), loss, traj

    def _vec_view(self, flat: torch.Tensor, R: int) -> torch.Tensor:
        """Per-student parameter vectors (R, P) in torch order ``[W1.ravel(), b1, W2.ravel(), b2, ...]``."""
        Ws, bs, _ = self._views(flat, R)
        return torch.cat([t for W, b in zip(Ws, bs) for t in (W.reshape(R, -1), b)], dim=1)

    # ------------------------------------------------------------------ public API
    def fit(self, X: Any, y: Any, sample_weight: Any = None, *, student_ids: Any = None) -> BatchedMLP:
        """Train the ensemble.

        Parameters
        ----------
        X : array of shape (n, d)
            Inputs shared by every student.
        y : array
            Regression: (n,) shared or (R, n) per-student labels. Classification: integer
            labels (n,) or (R, n), or class distributions (n, C) or (R, n, C).
        sample_weight : array of shape (n,) or (R, n), optional
            Non-negative per-example loss weights (bootstrap counts, inverse variances);
            every student needs a positive total.
        student_ids : array of int of shape (R,), optional
            Ids that seed each student's initialisation (default ``0..R-1``).

        Returns
        -------
        self
        """
        self._check_params()
        check_y_given(self, y)
        Xa = check_X(self, X, reset=True)
        n, d = Xa.shape
        tgt, r_y = self._resolve_targets(y, n)
        sw = None
        r_w = None
        if sample_weight is not None:
            sw = check_array(sample_weight, "sample_weight", ndim=(1, 2), nonnegative=True)
            if sw.shape[-1] != n:
                raise ValueError(f"sample_weight: expected shape ({n},) or (n_students, {n}), got {sw.shape}")
            if np.any(sw.sum(axis=-1) <= 0):
                raise ValueError("sample_weight: expected a positive total weight for every student (all-zero weights "
                                 "leave its loss undefined)")
            r_w = sw.shape[0] if sw.ndim == 2 else None
        ids = None
        if student_ids is not None:
            ids = np.asarray(student_ids)
            if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0:
                raise ValueError(f"student_ids: expected a non-empty 1-d array of non-negative integers, got {ids!r}")
        sizes = {name: r for name, r in (("y", r_y), ("sample_weight", r_w),
                                         ("student_ids", None if ids is None else len(ids)),
                                         ("n_students", self.n_students)) if r is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"n_students: inconsistent ensemble sizes {sizes}")
        R = next(iter(sizes.values()), 1)
        ids = np.arange(R) if ids is None else ids.astype(np.int64)
        self.n_students_ = R
        self.student_ids_ = ids
        P = self.n_params_
        track = np.asarray(tuple(self.track), dtype=np.int64)
        if track.size and (track.min() < 0 or track.max() >= P):
            raise ValueError(f"track: expected flat parameter indices in [0, {P}), got {tuple(self.track)}")
        dt = self._torch_dtype
        np_dtype = np.float32 if self.dtype == "float32" else np.float64
        init_params = np.empty((R, P), dtype=np_dtype)
        X1 = torch.from_numpy(np.hstack([Xa, np.ones((n, 1))])).to(dt)  # [X | 1] (n, d+1)
        C = self.n_outputs_
        # targets -> feature-major (R|1, C, n)
        if self.task == "regression":
            Tall = torch.from_numpy(np.ascontiguousarray(tgt)).to(dt).reshape(-1, 1, n)
        else:
            Tall = torch.from_numpy(np.ascontiguousarray(np.swapaxes(tgt.reshape(-1, n, C), 1, 2))).to(dt)
        w = np.ones((1, n)) if sw is None else sw.reshape(-1, n)
        Wall = torch.from_numpy(w / w.sum(axis=1, keepdims=True)).to(dt).reshape(-1, 1, n)  # (R|1, 1, n)
        cs = int(self.chunk_size) if self.chunk_size is not None else auto_chunk_size(
            n, self._layer_sizes(), itemsize=4 if self.dtype == "float32" else 8)
        params = np.empty((R, P), dtype=np_dtype)
        loss = np.empty(R)
        traj = np.empty((self.n_epochs + 1, R, track.size), dtype=params.dtype) if track.size else None
        tidx = torch.from_numpy(track) if track.size else None
        with torch.no_grad(), _threads(self.num_threads):
            kernel, cs = self._plan(X1, Tall, Wall, ids, cs)
        fused = kernel != "autograd"
        self._gemm = "bmm" if kernel == "fused-bmm" else "onednn"
        self.kernel_, self.chunk_size_ = kernel, cs
        dev = self._torch_device()
        if not fused:
            if self.chunk_size is None and dev.type != "cpu":
                cs = R  # accelerators: one chunk (the whole ensemble) unless chunk_size says otherwise
            XT = X1[:, :-1].T.contiguous().to(dev)  # (d, n)
            Tall, Wall = Tall.to(dev), Wall.to(dev).reshape(-1, n)
            tidx = tidx.to(dev) if tidx is not None else None
        self.backend_ = "fused" if fused else "autograd"
        with torch.no_grad(), _threads(self.num_threads):
            for lo in range(0, R, cs):
                hi = min(R, lo + cs)
                r = hi - lo
                init_params[lo:hi] = self._init_params(ids[lo:hi])  # per chunk: bounded memory
                T = Tall[lo:hi] if Tall.shape[0] > 1 else Tall
                wn = Wall[lo:hi] if Wall.shape[0] > 1 else Wall
                if fused:
                    flat = self._to_blocked(init_params[lo:hi])
                    lc, tr = self._train_chunk(X1, flat, r, T, wn, tidx)
                    params[lo:hi] = self._from_blocked(flat, r)
                else:
                    vecs = torch.from_numpy(init_params[lo:hi]).to(device=dev, dtype=dt)
                    pv, lc, tr = self._train_chunk_autograd(XT, vecs, T, wn, tidx)
                    params[lo:hi] = pv.cpu().numpy()
                loss[lo:hi] = lc.double().cpu().numpy()
                # divergence: one check per chunk of students, after its last epoch (nothing in the epoch loop)
                if not (np.isfinite(loss[lo:hi]).all() and np.isfinite(params[lo:hi]).all()):
                    self._raise_diverged(loss[lo:hi], params[lo:hi], ids[lo:hi])
                if traj is not None and tr is not None:
                    traj[:, lo:hi] = tr.cpu().numpy()
        self.init_params_ = init_params
        self.params_ = params
        self.loss_ = loss
        self.trajectory_ = traj
        self.coefs_, self.intercepts_ = [], []
        off = 0
        for (o, i), _ in self._param_shapes():
            self.coefs_.append(params[:, off:off + o * i].reshape(R, o, i))
            off += o * i
            self.intercepts_.append(params[:, off:off + o])
            off += o
        return self

    def _plan(self, X1: torch.Tensor, Tall: torch.Tensor, Wall: torch.Tensor, ids: np.ndarray,
              cs: int) -> tuple[str, int]:
        """(kernel variant, students per chunk) of this fit: pinned, the default, or measured on the host.

        ``backend="auto"`` on a float32 CPU problem the fused kernel supports is autotuned (see
        :mod:`uqkd.students._autotune`, ``UQKD_AUTOTUNE``) when the fit is large enough; everything
        else (float64 included: its bit-exact MKL path) keeps today's choice.
        """
        fused = self._resolved_backend() == "fused"
        onednn_ok = ONEDNN_GEMM and self.dtype == "float32"
        default = ("fused-onednn" if onednn_ok else "fused-bmm") if fused else "autograd"
        if self.backend in ("fused-onednn", "fused-bmm"):
            return ("fused-bmm" if not onednn_ok else str(self.backend)), cs
        if self.backend != "auto" or not fused or self.dtype != "float32":
            return default, cs
        mode = _autotune.autotune_mode()
        if mode == "off":
            return default, cs
        if mode in _autotune.VARIANTS:
            return ("fused-bmm" if mode == "fused-onednn" and not onednn_ok else mode), cs
        n, R, E = X1.shape[0], len(ids), AUTOTUNE_TRIAL_EPOCHS
        sizes = self._layer_sizes()
        budgets: tuple[int | None, ...] = AUTOTUNE_BUDGETS if self.chunk_size is None else (None,)

        def chunk(b: int | None) -> int:
            return min(R, cs if b is None else auto_chunk_size(n, sizes, itemsize=4, budget_bytes=b))

        variants = [v for v in _autotune.VARIANTS if onednn_ok or v != "fused-onednn"]
        base = None if self.chunk_size is not None else ACTIVATION_BUDGET_BYTES  # today's chunking
        plan = {f"{v}@{b}": chunk(b) for v in variants for b in (budgets if v != "autograd" else (base,))}
        units = sum((1 + 3) * E * r * (4 if k.startswith("autograd") else 1) for k, r in plan.items())
        if R * self.n_epochs < AUTOTUNE_MIN_WORK_RATIO * units:
            return default, cs  # too small to pay for a measurement (a function of the shapes only)
        size_class = 1 << max(0, math.ceil(math.log2(min(R, cs))))
        key = (f"{self.task}|layers={'-'.join(map(str, sizes))}|n={n}|float32|threads={torch.get_num_threads()}|"
               f"students={size_class}|chunk={'auto' if self.chunk_size is None else cs}|"
               f"malloc={int(_malloc.recycles_large_blocks())}")

        def candidates() -> dict[str, Callable[[], float]]:
            r_max = max(plan.values())
            init = self._init_params(ids[:r_max])
            dt = X1.dtype
            XT = X1[:, :-1].T.contiguous()

            def trial(name: str, r: int) -> Callable[[], float]:
                T = Tall[:r] if Tall.shape[0] > 1 else Tall
                wn = Wall[:r] if Wall.shape[0] > 1 else Wall
                if name.startswith("autograd"):
                    def run() -> float:
                        vecs = torch.from_numpy(init[:r]).to(dt)
                        t0 = time.perf_counter()
                        self._train_chunk_autograd(XT, vecs, T, wn.reshape(-1, n), None, epochs=E)
                        return (time.perf_counter() - t0) / (r * E)
                    return run
                gemm = "bmm" if name.startswith("fused-bmm") else "onednn"

                def run_fused() -> float:
                    self._gemm = gemm
                    flat = self._to_blocked(init[:r])
                    t0 = time.perf_counter()
                    self._train_chunk(X1, flat, r, T, wn, None, epochs=E)
                    return (time.perf_counter() - t0) / (r * E)
                return run_fused

            return {name: trial(name, r) for name, r in plan.items()}

        def admit(name: str, best_s: float) -> bool:  # autograd (~1 s first call) only where the fit pays for it
            return not name.startswith("autograd") or best_s * R * self.n_epochs >= AUTOTUNE_AUTOGRAD_MIN_FIT_S

        won = _autotune.choose(key, candidates, prefer=f"{default}@{base}", admit=admit)
        variant, _, budget = won.partition("@")
        if variant not in _autotune.VARIANTS:
            return default, cs
        return variant, chunk(None if budget in ("None", "") or self.chunk_size is not None else int(budget))

    def _raise_diverged(self, loss: np.ndarray, params: np.ndarray, ids: np.ndarray) -> None:
        """Non-finite training loss or weights (Adam blown up by too large a step): a clear error, never NaN students."""
        bad = ~(np.isfinite(loss) & np.isfinite(params).all(axis=1))
        first = int(np.flatnonzero(bad)[0])
        raise UserError(f"lr: training diverged at lr={self.lr!r}: the loss became non-finite ({float(loss[first])}) "
                        f"for {int(bad.sum())} of the {len(loss)} students checked (first: student {int(ids[first])}); "
                        f"use a lower learning rate (e.g. lr={min(float(self.lr) / 100.0, 0.01):g})")

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(X, y) before predicting.")

    def held_out_predictions(self, X: Any, y: Any, *, folds: Any = None, sample_weight: Any = None) -> np.ndarray:
        """Two-fold cross-fitted predictions f_{-i}(x_i), (R, n): each fold predicted by students trained on the
        other fold only, with this estimator's settings (the family's held-out reference prediction).

        ``folds`` (n,) of 0/1 says each input's fold; by default one seeded split shared by every student,
        ``permutation(n) % 2`` from ``(random_state, *identity, "crossfit-folds")``. Fold f's students are
        seeded by ``(*identity, "crossfit", f)``.
        """
        Xa = check_array(X, "X", ndim=2)
        Y = check_array(y, "y", ndim=2)
        n = Xa.shape[0]
        if Y.shape[1] != n:
            raise ValueError(f"y: expected shape (R, {n}) to match X's {n} rows, got {Y.shape}")
        if folds is None:
            folds = make_rng(self.random_state, *self.identity, "crossfit-folds").permutation(n) % 2
        folds = np.asarray(folds)
        if folds.shape != (n,) or not np.isin(folds, (0, 1)).all():
            raise ValueError(f"folds: expected an array of 0/1 of shape ({n},), got shape {folds.shape}")
        out = np.empty_like(Y)
        for f in (0, 1):
            tr, te = folds != f, folds == f
            sw = None if sample_weight is None else np.asarray(sample_weight)[..., tr]
            m = clone(self).set_params(identity=(*self.identity, "crossfit", f))
            m.fit(Xa[tr], Y[:, tr], sample_weight=sw)
            out[:, te] = m.predict(Xa[te])
        return out

    def param_vectors(self, which: Literal["final", "init"] = "final") -> np.ndarray:
        """Per-student parameter vectors (R, P): ``[W1.ravel(), b1, W2.ravel(), b2, ...]`` (torch order)."""
        self._check_fitted()
        check_choice(which, "which", ("final", "init"))
        return self.params_ if which == "final" else self.init_params_

    def decision_function(self, X: Any, *, params: Literal["final", "init"] = "final") -> np.ndarray:
        """Raw outputs of every student, shape (R, n, C); ``params="init"`` uses the weights before training."""
        self._check_fitted()
        check_choice(params, "params", ("final", "init"))
        Xa = check_X(self, X, reset=False)
        n = Xa.shape[0]
        R = self.n_students_
        vecs = self.params_ if params == "final" else self.init_params_
        X1 = torch.from_numpy(np.hstack([Xa, np.ones((n, 1))])).to(self._torch_dtype)  # (n, d+1)
        cs = int(self.chunk_size) if self.chunk_size is not None else auto_chunk_size(n, self._layer_sizes())
        out = np.empty((R, n, self.n_outputs_), dtype=vecs.dtype)
        generic = getattr(self, "backend_", "fused") != "fused"
        dev = self._torch_device()
        XT = X1[:, :-1].T.contiguous().to(dev) if generic else None  # (d, n)
        with torch.no_grad(), _threads(getattr(self, "num_threads", None)):
            for lo in range(0, R, cs):
                hi = min(R, lo + cs)
                if XT is not None:
                    Ws, bs = self._split_vecs(torch.from_numpy(vecs[lo:hi]).to(device=dev, dtype=self._torch_dtype))
                    Z = self._forward_stacked(XT, Ws, bs).cpu()  # (r, C, n)
                else:
                    flat = self._to_blocked(vecs[lo:hi])
                    Z, _ = self._forward(X1, flat, hi - lo)  # (r, C, n)
                out[lo:hi] = Z.transpose(1, 2).numpy()
        return out

    def predict(self, X: Any, *, params: Literal["final", "init"] = "final") -> np.ndarray:
        """Regression: predictions (R, n). Classification: predicted class per student (R, n)."""
        Z = self.decision_function(X, params=params)
        if self.task == "regression":
            return Z[..., 0]
        return Z.argmax(axis=-1)

    def _is_classifier(self) -> bool:
        if self.task != "classification":
            raise AttributeError(f"task: predict_proba needs task='classification', got {self.task!r}")
        return True

    @available_if(_is_classifier)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of every student, shape (R, n, C) (classification only: absent otherwise)."""
        Z = self.decision_function(X).astype(np.float64)
        Z -= Z.max(axis=-1, keepdims=True)
        e = np.exp(Z)
        return e / e.sum(axis=-1, keepdims=True)
