r"""Plateaus of the loss along a trajectory, and escape times from small initialisation.

A **plateau** is a maximal time interval on which the loss is nearly flat on a log scale
while a substantial drop is still to come (so it is not the final minimum):

$$\Big|\frac{d\log\mathcal L}{dt}\Big| < \texttt{flatness}\cdot\bar r,\qquad
\bar r = \frac{\log\mathcal L(t_0) - \log\min_t\mathcal L}{t_{end} - t_0},\qquad
\frac{\mathcal L(t)}{\min_{s > t}\mathcal L(s)} > \texttt{drop}.$$

The rate is relative to the trajectory's own mean log-rate, so an exponential decay
(constant log-rate) never has a plateau, whatever its speed. Near a plateau the state
shadows a saddle of the flow: `find_plateaus(..., problem=...)` polishes the state of
least `|F|` on the plateau into a fixed point (`find_fixed_points` from that start).

**Escape time.** With head `v(0) = eps * v_dir`, the time for the loss to fall half-way
from `L(0)` to its final value. Near an unstable fixed point with growth rate `lambda`
it grows like `log(1/eps) / lambda`; `loss_drop_time` measures it and fits
`T = a + b log(1/eps)`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from typing_extensions import Unpack

from .._config import SolverConfig, SolverOptions, resolve_config
from .._problem import TeacherStudent
from .._solve import solve
from .._typing import AnyArray
from .._validate import require
from ._fixed_points import FixedPoint, find_fixed_points


class Plateau(eqx.Module):
    """One plateau: `start`, `end`, `length = end - start` (time), `height` (mean loss on it),
    `index` (the save-time indices `[i0, i1]`), and `saddle` (the fixed point it shadows,
    or `None` if no problem was given or none was found)."""

    start: float
    end: float
    height: float
    index: tuple[int, int]
    saddle: FixedPoint | None

    @property
    def length(self) -> float:
        return self.end - self.start


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive index ranges of the True runs of `mask`."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


@runtime_checkable
class _LossCurve(Protocol):
    """What `find_plateaus` reads: save times `t` and a loss `loss` (a `Trajectory`, a `GaussianTrajectory`)."""

    @property
    def t(self) -> Array: ...

    @property
    def loss(self) -> Array: ...


def plateau_mask(
    t: Float[AnyArray, " T"],
    loss: Float[AnyArray, " T"],
    *,
    flatness: float = 0.1,
    drop: float = 2.0,
    floor: float = 1e-300,
):
    """Boolean `(T,)`: where the loss is on a plateau (module docstring)."""
    times, values = np.asarray(t, float), np.maximum(np.asarray(loss, float), floor)
    log_loss = np.log(values)
    rate = np.abs(np.gradient(log_loss, times))
    mean_rate = (log_loss[0] - log_loss.min()) / (times[-1] - times[0])
    future_min = np.minimum.accumulate(values[::-1])[::-1]
    return (rate < flatness * mean_rate) & (values > drop * future_min)


def find_plateaus(
    traj: _LossCurve,
    *,
    flatness: float = 0.1,
    drop: float = 2.0,
    min_length: float | None = None,
    problem: TeacherStudent | None = None,
) -> list[Plateau]:
    """The plateaus of a single trajectory (`traj.loss` of shape `(T,)`).

    - `flatness`: the log-loss rate must be below this fraction of the mean log-rate.
    - `drop`: the loss must later fall by at least this factor.
    - `min_length`: shortest plateau (time); default 5% of the time span.
    - `problem`: if given, each plateau's `saddle` is the fixed point polished from its
      state of least `|F|`.
    """
    t, loss = np.asarray(traj.t), np.asarray(traj.loss)
    require(
        loss.ndim == 1,
        f"find_plateaus takes one trajectory (loss of shape (T,)), got loss shape {loss.shape}; index the batch first",
    )
    require(t.size >= 3, "find_plateaus needs at least 3 save times")
    min_length = 0.05 * (t[-1] - t[0]) if min_length is None else min_length
    out = []
    for i0, i1 in _runs(plateau_mask(t, loss, flatness=flatness, drop=drop)):
        if t[i1] - t[i0] < min_length:
            continue
        saddle = None if problem is None else _shadowed_saddle(problem, traj, i0, i1)
        out.append(Plateau(float(t[i0]), float(t[i1]), float(np.mean(loss[i0 : i1 + 1])), (i0, i1), saddle))
    return out


def _shadowed_saddle(problem, traj, i0, i1):
    m, v = np.asarray(traj.m[i0 : i1 + 1]), np.asarray(traj.v[i0 : i1 + 1])
    speed = [
        max(float(jnp.max(jnp.abs(dm))), float(jnp.max(jnp.abs(dv))))
        for dm, dv in (problem.rhs(jnp.asarray(a), jnp.asarray(b)) for a, b in zip(m, v, strict=True))
    ]
    j = int(np.argmin(speed))
    points = find_fixed_points(problem, m.shape[1], starts=(m[j][None], v[j][None]))
    return points[0] if points else None


class EscapeFit(eqx.Module):
    """Escape times `times` for head scales `eps`, and the fit `T = intercept + slope log(1/eps)`
    (`r2` its coefficient of determination)."""

    eps: Float[Array, " E"]
    times: Float[Array, " E"]
    slope: float
    intercept: float
    r2: float

    @classmethod
    def from_times(cls, eps_values, times) -> EscapeFit:
        """The least-squares line of `times` against `log(1/eps)`."""
        times, x = np.asarray(times, dtype=float), np.log(1.0 / np.asarray(eps_values, dtype=float))
        slope, intercept = np.polyfit(x, times, 1)
        resid = times - (intercept + slope * x)
        r2 = 1.0 - np.sum(resid**2) / max(np.sum((times - times.mean()) ** 2), 1e-300)
        return cls(jnp.asarray(eps_values), jnp.asarray(times), float(slope), float(intercept), float(r2))


def loss_drop_time(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    eps_values,
    t1: float,
    *,
    v_dir: Float[AnyArray, " L"] | None = None,
    fraction: float = 0.5,
    num_points: int = 2001,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> EscapeFit:
    """Time to fall `fraction` of the way from `L(0)` to `L(t1)`, for `v(0) = eps * v_dir`.

    Not `cnntheory.gaussian.plateau_escape_time`, which perturbs `R(0)` and measures the
    first fall of the error below `fraction` of the plateau's height.

    `v_dir` defaults to `(1, -1, 1, ...)`. Each `eps` is one `solve` (same shapes: one
    compile), with the solver options `config` (or its fields as keywords) as in
    `cnntheory.solve`. Returns an `EscapeFit` with the log fit.
    """
    config = resolve_config(config, options, caller="loss_drop_time")
    eps_values = np.asarray(eps_values, float)
    require(
        eps_values.ndim == 1 and eps_values.size >= 2 and np.all(eps_values > 0),
        "eps_values must be >= 2 positive numbers",
    )
    L = np.shape(m0)[0]
    v_dir = np.array([(-1.0) ** l for l in range(L)]) if v_dir is None else np.asarray(v_dir, float)
    ts = np.linspace(0.0, t1, num_points)
    found = []
    for eps in eps_values:
        traj = solve(problem, m0, eps * v_dir, t1, ts=ts, config=config)
        loss = np.asarray(traj.loss)
        level = loss[0] - fraction * (loss[0] - loss[-1])
        below = np.flatnonzero(loss <= level)
        require(below.size > 0, f"the loss did not fall by {fraction} before t1={t1} for eps={eps}: raise t1")
        j = int(below[0])
        # Linear interpolation between the bracketing save times.
        tj = ts[j] if j == 0 else ts[j - 1] + (ts[j] - ts[j - 1]) * (loss[j - 1] - level) / (loss[j - 1] - loss[j])
        found.append(tj)
    return EscapeFit.from_times(eps_values, found)
