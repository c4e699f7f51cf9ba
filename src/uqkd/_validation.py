"""Argument checks shared by the public API.

Every public function validates its inputs on entry and raises ``ValueError`` or
``TypeError`` whose message names the argument, what was expected and what was
received (scikit-learn's ``check_array`` style).
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "assume_valid",
    "check_array",
    "check_int",
    "check_float",
    "check_random_state",
    "check_choice",
    "check_teacher_samples",
    "check_variances",
]


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape}"
    return repr(x)


_ASSUME_VALID: contextvars.ContextVar[bool] = contextvars.ContextVar("uqkd_assume_valid", default=False)


@contextlib.contextmanager
def assume_valid() -> Iterator[None]:
    """Skip the value scans of :func:`check_array` (finite, non-negative) inside the block.

    scikit-learn's ``config_context(assume_finite=True)`` for uqkd's own hot loops: code that
    builds its arrays itself (a sweep cell drawing finite, non-negative teacher variances) need not
    pay a full pass over every (students, inputs) array at every function boundary; on the
    ``variance-aware-linear`` paper profile those scans were about 8 % of a cell. Conversions,
    dimensions, shapes and sizes are still checked; values are not. Context-local (threads and
    asyncio tasks see their own setting); never set it around user input.
    """
    token = _ASSUME_VALID.set(True)
    try:
        yield
    finally:
        _ASSUME_VALID.reset(token)


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple[int | None, ...] | None = None,
    finite: bool = True,
    nonnegative: bool = False,
    min_size: int = 1,
    dtype: type = np.float64,
) -> np.ndarray:
    """Convert ``x`` to a float array and check it.

    Parameters
    ----------
    x : array-like
        The value to check.
    name : str
        The argument name used in error messages.
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    shape : tuple, optional
        Expected shape; ``None`` entries match any length.
    finite : bool
        Reject NaN and infinity.
    nonnegative : bool
        Reject negative entries.
    min_size : int
        Minimum number of elements.

    Inside :func:`assume_valid` the ``finite`` and ``nonnegative`` scans are skipped.
    """
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__} ({exc})") from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name}: expected a {want}-d array, got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape, strict=False)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
    if arr.size < min_size:
        raise ValueError(f"{name}: expected at least {min_size} element(s), got shape {arr.shape}")
    if (finite or nonnegative) and _ASSUME_VALID.get():
        return arr
    if finite and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or infinite value(s)")
    if nonnegative and np.any(arr < 0):
        raise ValueError(f"{name}: expected non-negative values, got minimum {float(np.min(arr))!r}")
    return arr


def check_int(
    x: Any, name: str, *, min_value: int | None = None, max_value: int | None = None
) -> int:
    """Check that ``x`` is an integer within bounds and return it as ``int``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {_describe(x)}")
    x = int(x)
    if min_value is not None and x < min_value:
        raise ValueError(f"{name}: expected an integer >= {min_value}, got {x}")
    if max_value is not None and x > max_value:
        raise ValueError(f"{name}: expected an integer <= {max_value}, got {x}")
    return x


def check_float(
    x: Any,
    name: str,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    exclusive_min: bool = False,
) -> float:
    """Check that ``x`` is a finite real number within bounds and return it as ``float``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {_describe(x)}")
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"{name}: expected a finite number, got {x}")
    if min_value is not None:
        if exclusive_min and x <= min_value:
            raise ValueError(f"{name}: expected a number > {min_value}, got {x}")
        if not exclusive_min and x < min_value:
            raise ValueError(f"{name}: expected a number >= {min_value}, got {x}")
    if max_value is not None and x > max_value:
        raise ValueError(f"{name}: expected a number <= {max_value}, got {x}")
    return x


def check_choice(x: Any, name: str, choices: tuple[str, ...] | list[str]) -> str:
    """Check that ``x`` is one of ``choices``."""
    if x not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(str, choices))}; got {x!r}")
    return x


def check_random_state(random_state: Any, name: str = "random_state") -> np.random.Generator:
    """Turn ``random_state`` (None, int, SeedSequence or Generator) into a Generator.

    ``None`` gives fresh OS entropy; nothing touches numpy's global state.
    """
    if random_state is None or isinstance(random_state, np.random.SeedSequence):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"{name}: expected a non-negative integer seed, got {random_state}")
        return np.random.default_rng(int(random_state))
    raise TypeError(
        f"{name}: expected None, an int, a numpy SeedSequence or Generator, got {_describe(random_state)}"
    )


def check_teacher_samples(teacher_samples: Any, name: str = "teacher_samples") -> np.ndarray:
    """Check a ``(n_inputs, k, ...)`` array of teacher draws."""
    arr = check_array(teacher_samples, name, min_size=0)
    if arr.ndim < 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(
            f"{name}: expected shape (n_inputs, k, ...) with n_inputs >= 1 and k >= 1, got {arr.shape}"
        )
    return arr


def check_variances(variances: Any, name: str = "variances", *, positive: bool = False) -> np.ndarray:
    """Check an array of variances: finite and non-negative (strictly positive if asked)."""
    arr = check_array(variances, name, nonnegative=True)
    if positive and np.any(arr <= 0):
        raise ValueError(f"{name}: expected strictly positive variances, got minimum {float(np.min(arr))!r}")
    return arr
