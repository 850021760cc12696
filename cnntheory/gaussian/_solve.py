r"""Solving the Gaussian-patch order-parameter flow `d(Q, R, v)/dalpha = F(Q, R, v)`.

The state is the pytree `(Q, R, v)`; it is integrated by the package's generic diffrax
driver (`cnntheory._integrate.integrate`), saved at the times `ts` only. Results follow
`cnntheory.Trajectory`: `t`, the state at `t`, `error` (alias `loss`, so the plateau tools
of `cnntheory.analysis` apply), `status`, `message`; a failed solve raises `SolverError`
unless `throw=False`.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int
from typing_extensions import Unpack

from .._config import SolverConfig, SolverOptions, resolve_config
from .._integrate import integrate, times_checked
from .._methods import DIFFRAX_SOLVERS
from .._trajectory import CnnTheoryError, SolverError, Status, _Result, checked, status_message
from .._typing import AnyArray
from .._validate import require, require_finite, require_shape
from ._problem import GaussianTeacherStudent, require_realisable


class GaussianTrajectory(_Result):
    """The solution at the saved times (a batched solve adds a leading axis to all but `t`).

    - `t`: `(T,)` times `alpha`; `Q`: `(T, K, K)`; `R`: `(T, K, M)`; `v`: `(T, K)`;
      `error`: `(T,)` generalisation error (`loss` is the same array).
    - `status` (`Status` codes: 0 success, 1 `max_steps`, 3 diverged: non-finite, huge, or a
      student norm past `norm_bound`, 4 failed), `message`,
      `num_steps`, `t_end`; `success` and `raise_for_status()` (`SolverError`) as `Trajectory`.
    """

    exception: ClassVar[type[CnnTheoryError]] = SolverError

    t: Float[Array, " T"]
    Q: Float[Array, "*B T K K"]
    R: Float[Array, "*B T K M"]
    v: Float[Array, "*B T K"]
    error: Float[Array, "*B T"]
    status: Int[Array, "*B"]
    num_steps: Int[Array, "*B"]
    t_end: Float[Array, "*B"]
    method: str = eqx.field(static=True)
    message: str = eqx.field(static=True)

    @property
    def loss(self):
        """The generalisation error, under the name the analysis tools read."""
        return self.error

    @property
    def y(self):
        return self.Q, self.R, self.v


#: A solve whose largest student norm `Q_ll` passes `NORM_GROWTH` times the problem's scale
#: (`norm_bound`) has diverged.
NORM_GROWTH = 100.0


def norm_bound(
    problem: GaussianTeacherStudent, Q0: Float[AnyArray, "K K"], v0: Float[AnyArray, " K"]
) -> Float[Array, ""]:
    r"""`NORM_GROWTH * max(1, max T_nn, max Q0_ll, max v0_l^2, max v*_n^2 max T_nn)`: the student norm
    `Q_ll` beyond which a solve is `DIVERGED`.

    Above the largest stable learning rate the student norms of online SGD grow without bound
    (Saad & Solla 1995). With bounded activations (erf) they grow only slowly, never reaching
    `DIVERGENCE_BOUND`, while the flow stiffens until the solver ends at `max_steps`; this bound
    names that runaway. The scale covers every norm a converging run needs: the teacher's, the
    start's, and (for 1-homogeneous activations, where the norm and the head trade off) the heads'.
    """
    T, head = problem.teacher_overlaps, problem.teacher_head
    scale = jnp.max(
        jnp.stack(
            [
                jnp.asarray(1.0),
                jnp.max(jnp.diag(T)),
                jnp.max(jnp.diag(Q0)),
                jnp.max(v0**2),
                jnp.max(head**2) * jnp.max(jnp.diag(T)),
            ]
        )
    )
    return NORM_GROWTH * scale


def _field(t, y, args):
    problem, bound = args
    velocity = problem.rhs(*y)
    # Past the bound the run has diverged: stop the flow there (the solve then ends in a few
    # steps instead of grinding a stiff runaway) and report it after the solve.
    runaway = jnp.max(jnp.diag(y[0])) > bound
    return jax.tree_util.tree_map(lambda d: jnp.where(runaway, jnp.zeros_like(d), d), velocity)


@eqx.filter_jit
def _solve(problem, y0, t0, t1, ts, bound, config):
    # `solve` checks the save times in Python before every call (no host callbacks: cacheable).
    with times_checked():
        ys, status, num_steps, t_end = integrate(_field, y0, (problem, bound), t0, t1, ts, config)
    error = jax.vmap(problem.error)(*ys)
    return ys, error, status, num_steps, t_end


SOLVE_DEFAULTS = SolverConfig(dt0=1e-2, max_steps=1_000_000)


def solve(
    problem: GaussianTeacherStudent,
    Q0: Float[AnyArray, "K K"],
    R0: Float[AnyArray, "K M"],
    v0: Float[AnyArray, " K"],
    t1: float,
    *,
    ts=None,
    num_saves: int = 201,
    throw: bool = True,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> GaussianTrajectory:
    """Integrate the flow from `(Q0, R0, v0)` at `alpha = 0` to `t1`, saving at `ts`
    (default `num_saves` equally spaced times).

    The solver options are a `cnntheory.SolverConfig` (`config=`) or its fields as
    keywords, as in `cnntheory.solve`; adaptive diffrax methods (and `"euler"` with
    `dt0`). Here `dt0` defaults to `1e-2` and `max_steps` to `10**6`.
    """
    config = resolve_config(config, options, caller="gaussian.solve", defaults=SOLVE_DEFAULTS)
    require(
        config.method in DIFFRAX_SOLVERS,
        f"method must be a diffrax solver ({', '.join(sorted(DIFFRAX_SOLVERS))}), got {config.method!r}",
    )
    require(float(t1) > 0, f"t1 must be > 0, got {t1}")
    Q0, R0, v0 = (jnp.asarray(x, dtype=jnp.float64) for x in (Q0, R0, v0))
    K, M = Q0.shape[0], problem.num_teachers
    require_shape("Q0", Q0, (K, K))
    require_shape("R0", R0, (K, M), " (students x teachers)")
    require_shape("v0", v0, (K,))
    for name, x in (("Q0", Q0), ("R0", R0), ("v0", v0)):
        require_finite(name, x)
    require_realisable(problem.teacher_overlaps, Q0, R0)
    ts = jnp.linspace(0.0, float(t1), num_saves) if ts is None else jnp.asarray(ts, dtype=jnp.float64)
    ts_host = np.asarray(ts)
    require(
        bool(np.all(np.diff(ts_host) > 0)) and ts_host[0] >= 0 and ts_host[-1] <= float(t1),
        "ts must be increasing within [0, t1]",
    )
    f64 = lambda x: jnp.asarray(x, dtype=jnp.float64)  # arrays: no recompiles
    bound = norm_bound(problem, Q0, v0)
    # Save at t1 too: a runaway after the last requested save still shows in the frozen end state.
    ts_solve = ts if float(ts[-1]) == float(t1) else jnp.append(ts, f64(t1))
    ys, error, status, num_steps, t_end = _solve(problem, (Q0, R0, v0), f64(0.0), f64(t1), ts_solve, bound, config)
    message = status_message(status, t_end, config.method, float(t1), config.max_steps, 0)
    # Saves the solver did not reach hold inf; a runaway state is finite (stopped at the bound).
    norms = np.max(np.diagonal(np.asarray(ys[0]), axis1=-2, axis2=-1), axis=-1)
    runaway = np.flatnonzero(np.isfinite(norms) & (norms > float(bound)))
    if runaway.size and int(status) != Status.DIVERGED:
        j = int(runaway[0])
        status, t_end = jnp.asarray(Status.DIVERGED), ts_solve[j]
        # As after any divergence, the saves from there on were not reached.
        ys = tuple(x.at[j:].set(jnp.inf) for x in ys)
        error = error.at[j:].set(jnp.inf)
        message = (
            f"the solution diverged: a student norm Q_ll passed {float(bound):.6g} ({NORM_GROWTH:g} x the "
            f"problem's scale) by t={float(t_end):.6g}; lr={float(problem.lr):g} is "
            "above the largest stable learning rate, where the norms grow without bound: reduce lr"
        )
    ys, error = tuple(x[: ts.shape[0]] for x in ys), error[: ts.shape[0]]
    Q, R, v = ys
    traj = _structure(config.method, message).unflatten([ts, Q, R, v, error, status, num_steps, t_end])
    return checked(traj, throw)


@functools.lru_cache(maxsize=128)
def _structure(method: str, message: str):
    """The pytree structure of a `GaussianTrajectory` with these static fields: building the
    result is then an unflatten, not the dataclass `__init__` and its checks on every solve."""
    with jax.ensure_compile_time_eval():
        x, i = jnp.zeros(1), jnp.zeros((), dtype=int)
        template = GaussianTrajectory(
            t=x,
            Q=jnp.zeros((1, 1, 1)),
            R=jnp.zeros((1, 1, 1)),
            v=jnp.zeros((1, 1)),
            error=x,
            status=i,
            num_steps=i,
            t_end=jnp.zeros(()),
            method=method,
            message=message,
        )
    return jax.tree_util.tree_structure(template)
