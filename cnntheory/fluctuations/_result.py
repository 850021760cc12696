"""`Fluctuations`, the predicted seed mean and covariance, and the argument checks shared by its entry points."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._config import resolve_config
from .._methods import DIFFRAX_SOLVERS
from .._problem import TeacherStudent
from .._trajectory import CnnTheoryError, SolverError, _Result, checked
from .._validate import check_times, require, require_finite
from ._validity import Validity


class Fluctuations(_Result):
    """Predicted seed mean and covariance of `(m, v)` at the saved times.

    - `t`: `(T,)`; `mean_m`: `(T, L, P)`, `mean_v`: `(T, L)` the predicted mean;
      `cov`: `(T, n, n)` the covariance of the flat state `(m.ravel(), v)`.
    - `flow_m`, `flow_v`: the plain order-parameter flow at the same times (the `lr -> 0`
      mean); `mean_m - flow_m` is the predicted bias.
    - `status`, `message`, `success`, `raise_for_status()` (`SolverError`): as `Trajectory`.
    - `kind`: `"online"` (`moments`) or `"training_set"` (`training_set_spread`);
      `lr`, `batch_size`, `num_train`: the parameters (`None` where not applicable);
      `discrete`: `True` for the discrete-step maps (the default at a finite `lr`),
      `False` for the continuous `lr -> 0` equations.
    - `validity`: the indicators of where the approximation holds (`Validity`:
      `lr_rho`, `curvature`, `kink_window`, `valid`), one value per saved time.
    """

    t: Float[Array, " T"]
    mean_m: Float[Array, "T L P"]
    mean_v: Float[Array, "T L"]
    cov: Float[Array, "T n n"]
    flow_m: Float[Array, "T L P"]
    flow_v: Float[Array, "T L"]
    status: Int[Array, ""]
    message: str = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    lr: float | None = eqx.field(static=True)
    batch_size: int | None = eqx.field(static=True)
    num_train: int | None = eqx.field(static=True)
    discrete: bool = eqx.field(static=True)
    validity: Validity

    exception: ClassVar[type[CnnTheoryError]] = SolverError

    @property
    def std(self) -> Float[Array, "T n"]:
        """Predicted standard deviation of every flat component, `sqrt(diag cov)`."""
        return jnp.sqrt(jnp.clip(jnp.diagonal(self.cov, axis1=1, axis2=2), 0.0, None))

    @property
    def std_m(self) -> Float[Array, "T L P"]:
        """Predicted standard deviation of `m`."""
        return self.std[:, : self.mean_m[0].size].reshape(self.mean_m.shape)

    @property
    def std_v(self) -> Float[Array, "T L"]:
        """Predicted standard deviation of `v`."""
        return self.std[:, self.mean_m[0].size :]

    @property
    def mean(self) -> Float[Array, "T n"]:
        """The predicted mean of the flat state."""
        return jnp.concatenate([self.mean_m.reshape(self.t.shape[0], -1), self.mean_v], axis=1)


def _check(caller, problem, m0, v0, t0, t1, ts, config, options):
    """The checked `(m0, v0, t0, t1, ts)` and the `SolverConfig` of a call to `caller`."""
    config = resolve_config(config, options, caller=caller)
    require(isinstance(problem, TeacherStudent), f"problem must be a TeacherStudent, got {type(problem).__name__}")
    m0 = jnp.asarray(m0, dtype=float)
    v0 = jnp.asarray(v0, dtype=float)
    problem.check_state(m0, v0)
    require_finite("m0", m0)
    require_finite("v0", v0)
    t0, t1, ts = check_times(float(t0), float(t1), ts)
    require(
        config.method in DIFFRAX_SOLVERS and config.method != "euler",
        f"method must be an adaptive diffrax solver ({', '.join(sorted(set(DIFFRAX_SOLVERS) - {'euler'}))}), "
        f"got {config.method!r}",
    )
    return m0, v0, t0, t1, ts, config


def _result(problem, ts, m0, out, status, message, throw, **params):
    y_flow, mu, cov = out
    P = problem.num_atoms
    L = m0.shape[0]
    T = ts.shape[0]
    result = Fluctuations(
        t=jnp.asarray(ts),
        mean_m=mu[:, : L * P].reshape(T, L, P),
        mean_v=mu[:, L * P :],
        cov=cov,
        flow_m=y_flow[:, : L * P].reshape(T, L, P),
        flow_v=y_flow[:, L * P :],
        status=jnp.asarray(status),
        message=message,
        **params,
    )
    return checked(result, throw)


def _check_lr(lr) -> float:
    require(
        isinstance(lr, (int, float, np.integer, np.floating)) and np.isfinite(lr) and lr > 0,
        f"lr must be a finite number > 0 (the SGD step in ODE time), got {lr!r}",
    )
    return float(lr)


def _check_batch(batch_size) -> int:
    require(
        isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool) and batch_size >= 1,
        f"batch_size must be an integer >= 1, got {batch_size!r}",
    )
    return int(batch_size)


def _grid_ts(t0: float, t1: float, ts, lr: float, num_saves: int = 101):
    """Default save times of a discrete map: `num_saves` (at most) whole steps in `[t0, t1]`."""
    steps = _whole_steps("t1 - t0", float(t1) - float(t0), lr)
    if ts is not None:
        return ts
    return float(t0) + lr * np.unique(np.round(np.linspace(0, steps, num_saves)))


def _whole_steps(name: str, duration: float, lr: float) -> int:
    """`duration / lr` as a whole number of steps, or a `ValueError` naming `name`."""
    k = duration / lr
    require(
        abs(k - round(k)) <= 1e-6 * max(1.0, abs(k)),
        f"{name} = {duration:.12g} is not a whole number of steps lr = {lr:g} ({k:.6g} steps): the discrete map "
        "records after whole SGD steps (t = t0 + k * lr); round it to the step grid, or pass discrete=False for "
        "the continuous lr -> 0 equations",
    )
    return int(round(k))


def _record_steps(t0: float, ts, lr: float) -> np.ndarray:
    """The step index `k` of every save time `t0 + k lr` (a `ValueError` off the grid)."""
    ts = np.asarray(ts, dtype=float)
    k = (ts - t0) / lr
    off = np.flatnonzero(np.abs(k - np.round(k)) > 1e-6 * np.maximum(1.0, np.abs(k)))
    if off.size:
        raise ValueError(
            f"ts[{off[0]}] = {ts[off[0]]:.12g} is not a whole number of steps lr = {lr:g} after t0 = {t0:g} "
            f"({k[off[0]]:.6g} steps): the discrete map records after whole SGD steps (t = t0 + k * lr); round ts "
            "to the step grid, or pass discrete=False for the continuous lr -> 0 equations"
        )
    return np.round(k).astype(np.int64)
