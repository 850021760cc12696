r"""Integrate the order-parameter flow: `solve` (one initial condition) and `solve_batch`.

`method` names a diffrax solver (`"tsit5"`, `"dopri5"`, `"dopri8"`, `"bosh3"`, `"heun"`,
`"kvaerno3"`, `"kvaerno5"`, ...; adaptive, PID step control), `"euler"` (the explicit
Euler map with fixed step `dt0`: gradient descent with learning rate `dt0`), or a scipy
`solve_ivp` method (`"RK45"`, `"RK23"`, `"DOP853"`, `"LSODA"`, `"Radau"`, `"BDF"`).

For a relu student every adaptive method integrates the **Filippov solution**, the
small-step limit of gradient descent, with the hybrid event scheme of
`cnntheory._filippov`: smooth flow within a mode, exact event location at `m_lp = 0`,
sliding along the surface when both one-sided flows point into it. `"euler"` is the
plain gradient-descent map (with `relu'(0) = 0`, as `jax.grad` computes it).

Results are saved at the times `ts` only (never dense output: diffrax allocates dense
output for `max_steps` steps up front).

This module holds the entry points and their checks; the result type is in
`cnntheory._trajectory`, the shared diffrax pieces in `cnntheory._integrate`, the relu
hybrid driver in `cnntheory._filippov` and the scipy backend in `cnntheory._scipy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._filippov import REPULSIVE_BRANCHES, integrate_filippov
from ._integrate import DIFFRAX_SOLVERS, integrate
from ._problem import TeacherStudent
from ._scipy import SCIPY_METHODS, scipy_solve
from ._trajectory import SUCCESS, Events, SolverError, Trajectory, status_message
from ._validate import require, require_finite

__all__ = ["DIFFRAX_SOLVERS", "SCIPY_METHODS", "SUCCESS", "SolverError", "Trajectory", "solve", "solve_batch", "stack_problems"]


def _smooth_vector_field(t, y, problem):
    return problem.rhs(*y)


def _integrate_smooth(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, *, solver_name, max_steps, max_segments, rhs=None, **relu):
    del max_segments, relu
    field = _smooth_vector_field if rhs is None else (lambda t, y, args: rhs(*y))
    (m, v), status, nsteps, t_end = integrate(field, (m0, v0), problem, t0, t1, ts, dt0, rtol, atol, solver_name=solver_name, max_steps=max_steps)
    return m, v, status, nsteps, jnp.asarray(1), t_end, Events.empty(0)


def _integrate_hybrid(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, *, solver_name, max_steps, max_segments, rhs=None, **relu):
    del rhs  # the hybrid scheme integrates the mode flows of `problem` itself
    return integrate_filippov(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, solver_name=solver_name, max_steps=max_steps, max_segments=max_segments, **relu)


@eqx.filter_jit
def _diffrax_core(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, *, solver_name, max_steps, max_segments, hybrid, batch_problem, batched, rhs=None, relu=()):
    core = _integrate_hybrid if hybrid else _integrate_smooth
    kwargs = dict(solver_name=solver_name, max_steps=max_steps, max_segments=max_segments, rhs=rhs, **dict(relu))

    def one(problem, m0, v0):
        return core(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, **kwargs)

    if batched:
        one = jax.vmap(one, in_axes=(0 if batch_problem else None, 0, 0))
    return one(problem, m0, v0)


# --- public API ---------------------------------------------------------------------------


def _check_common(problem, t0, t1, ts, method, rtol, atol, dt0):
    require(isinstance(problem, TeacherStudent), f"problem must be a TeacherStudent, got {type(problem).__name__}")
    known = sorted(DIFFRAX_SOLVERS) + list(SCIPY_METHODS)
    require(method in DIFFRAX_SOLVERS or method in SCIPY_METHODS, f"unknown method {method!r}; choose one of: {', '.join(known)}")
    t0, t1 = float(t0), float(t1)
    require(math.isfinite(t0) and math.isfinite(t1) and t1 > t0, f"need finite t0 < t1, got t0={t0}, t1={t1}")
    ts = np.linspace(t0, t1, 101) if ts is None else np.asarray(ts, dtype=float)
    require(ts.ndim == 1 and ts.size >= 1, f"ts must be a non-empty 1-D array of save times, got shape {ts.shape}")
    require(bool(np.all(np.diff(ts) >= 0)), "ts must be sorted in increasing order")
    require(ts[0] >= t0 and ts[-1] <= t1, f"ts must lie within [t0, t1] = [{t0}, {t1}], got [{ts[0]}, {ts[-1]}]")
    require(rtol > 0 and atol > 0, f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    if method == "euler":
        require(dt0 is not None and float(dt0) > 0, f"method='euler' needs a fixed step dt0 > 0, got dt0={dt0}")
    return t0, t1, ts


def _check_relu(repulsive, max_events):
    """The relu (Filippov) options, checked: the branch as a traced index (no recompile)."""
    require(repulsive in REPULSIVE_BRANCHES, f"repulsive must be one of {REPULSIVE_BRANCHES}, got {repulsive!r}")
    require(isinstance(max_events, int) and max_events >= 1, f"max_events must be an int >= 1, got {max_events!r}")
    return (("repulsive", jnp.asarray(REPULSIVE_BRANCHES.index(repulsive))), ("max_events", max_events))


def _max_steps(method, t0, t1, dt0, max_steps):
    if method == "euler":
        return max(max_steps or 0, int(math.ceil((t1 - t0) / float(dt0))) + 16)
    return max_steps


def _losses(problem, m, v, batched, batch_problem):
    """Population loss along the saved states (per batch element, per problem if batched)."""
    along_time = lambda p, mm, vv: jax.vmap(p.loss)(mm, vv)  # noqa: E731
    if not batched:
        return along_time(problem, m, v)
    return jax.vmap(along_time, in_axes=(0 if batch_problem else None, 0, 0))(problem, m, v)


def _run_diffrax(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, *, method, max_steps, max_segments, hybrid, batch_problem, batched, rhs=None, relu=()):
    return _diffrax_core(
        problem, m0, v0, *map(jnp.asarray, (t0, t1, ts)), None if dt0 is None else jnp.asarray(float(dt0)),
        jnp.asarray(rtol), jnp.asarray(atol),
        solver_name=method, max_steps=max_steps, max_segments=max_segments, hybrid=hybrid,
        batch_problem=batch_problem, batched=batched, rhs=rhs, relu=relu,
    )


def _finish(problem, ts, m, v, status, nsteps, nseg, t_end, method, message, throw, batched, batch_problem=False, events=None):
    traj = Trajectory(
        t=jnp.asarray(ts),
        m=m,
        v=v,
        loss=_losses(problem, m, v, batched, batch_problem),
        status=jnp.asarray(status),
        num_steps=jnp.asarray(nsteps),
        num_segments=jnp.asarray(nseg),
        t_end=jnp.asarray(t_end),
        method=method,
        message=message,
        events=Events.empty(0, np.shape(status)) if events is None else events,
    )
    if throw and not traj.success:
        raise SolverError(message)
    return traj


def solve(
    problem: TeacherStudent,
    m0: Float[Array, "L P"],
    v0: Float[Array, " L"],
    t1: float,
    *,
    ts: Float[Array, " T"] | None = None,
    t0: float = 0.0,
    method: str = "tsit5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    dt0: float | None = None,
    max_steps: int = 100_000,
    max_segments: int = 1000,
    throw: bool = True,
    rhs: Callable | None = None,
    repulsive: str = "minus",
    max_events: int = 256,
) -> Trajectory:
    """Integrate the population gradient flow of `problem` from `(m0, v0)` to `t1`.

    **Arguments:**

    - `problem`: a `TeacherStudent`; `m0`: `(L, P)`; `v0`: `(L,)`.
    - `t1`, `t0`: the interval; `ts`: save times in `[t0, t1]` (default 101 equally
      spaced). Nothing else is stored.
    - `method`: a diffrax solver name, `"euler"` (fixed step `dt0`; saves should be
      multiples of `dt0` for the exact gradient-descent map), or a scipy method.
    - `rtol`, `atol`: adaptive step control; `max_steps`: per smooth segment.
    - `max_segments`: the most relu mode switches (Filippov events) allowed.
    - `throw`: raise `SolverError` when the solve fails (else check `status`).
    - `rhs`: an alternative right-hand side `rhs(m, v) -> (dm/dt, dv/dt)` (e.g. generated
      by `cnntheory.symbolic.to_jax`) used instead of `problem.rhs`; smooth flows and
      `"euler"` only (relu's Filippov scheme integrates the problem's own mode flows).
    - `repulsive`: relu only, the branch where a sliding surface turns repulsive (the
      continuation is not unique): `"minus"` (default; leave to `m_lp < 0`, the
      gradient-descent limit with `relu'(0) = 0`), `"plus"` (leave to `m_lp > 0`) or
      `"stay"` (keep sliding). Each such moment is an event of kind `"repulsive"`.
    - `max_events`: room in the `events` record of relu mode changes.

    Relu students are integrated as Filippov solutions (module docstring).
    """
    t0, t1, ts = _check_common(problem, t0, t1, ts, method, rtol, atol, dt0)
    m0 = jnp.asarray(m0, dtype=float)
    v0 = jnp.asarray(v0, dtype=float)
    problem.check_state(m0, v0)
    require_finite("m0", m0)
    require_finite("v0", v0)
    hybrid = not problem.sigma.smooth and method != "euler"
    require(rhs is None or not hybrid, "a custom rhs cannot be combined with the Filippov integration of a relu student: use method='euler' or a smooth activation")
    require(rhs is None or callable(rhs), f"rhs must be a callable rhs(m, v) -> (dm, dv), got {type(rhs).__name__}")
    relu = _check_relu(repulsive, max_events)
    steps = _max_steps(method, t0, t1, dt0, max_steps)
    detail = ""
    if method in SCIPY_METHODS:
        m, v, status, nsteps, nseg, t_end, detail, events = scipy_solve(problem, m0, v0, t0, t1, ts, method, rtol, atol, max_segments, hybrid, rhs, **dict(relu))
    else:
        m, v, status, nsteps, nseg, t_end, events = _run_diffrax(
            problem, m0, v0, t0, t1, ts, dt0, rtol, atol,
            method=method, max_steps=steps, max_segments=max_segments, hybrid=hybrid, batch_problem=False, batched=False, rhs=rhs, relu=relu,
        )
    message = status_message(status, t_end, method, t1, steps, max_segments, detail)
    return _finish(problem, ts, m, v, status, nsteps, nseg, t_end, method, message, throw, batched=False, events=events)


def stack_problems(problems: list[TeacherStudent]) -> TeacherStudent:
    """Stack problems that differ only in numbers into one batched problem for `solve_batch`."""
    require(len(problems) >= 1, "stack_problems needs at least one problem")
    structure = jax.tree_util.tree_structure(problems[0])
    require(
        all(jax.tree_util.tree_structure(p) == structure for p in problems),
        "problems differ in more than numbers (activations, pooling, patch count or sizes): they cannot be batched",
    )
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *problems)


def solve_batch(
    problem: TeacherStudent,
    m0: Float[Array, "B L P"],
    v0: Float[Array, "B L"],
    t1: float,
    *,
    ts: Float[Array, " T"] | None = None,
    t0: float = 0.0,
    method: str = "tsit5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    dt0: float | None = None,
    max_steps: int = 100_000,
    max_segments: int = 1000,
    batch_problem: bool = False,
    throw: bool = True,
    repulsive: str = "minus",
    max_events: int = 256,
) -> Trajectory:
    """Solve many initial conditions (and problems) at once: one `jit(vmap)` diffrax solve.

    `m0` is `(B, L, P)`, `v0` is `(B, L)`. With `batch_problem=True`, `problem` carries a
    leading batch axis `B` on its arrays (build it with `stack_problems`). Diffrax methods
    only. The result has a leading batch axis on every field but `t`.
    """
    require(method in DIFFRAX_SOLVERS, f"solve_batch needs a diffrax method ({', '.join(sorted(DIFFRAX_SOLVERS))}), got {method!r}")
    t0, t1, ts = _check_common(problem, t0, t1, ts, method, rtol, atol, dt0)
    m0 = jnp.asarray(m0, dtype=float)
    v0 = jnp.asarray(v0, dtype=float)
    require(m0.ndim == 3 and v0.ndim == 2 and m0.shape[0] == v0.shape[0], f"m0 must be (B, L, P) and v0 (B, L) with the same B, got {m0.shape} and {v0.shape}")
    require_finite("m0", m0)
    require_finite("v0", v0)
    if batch_problem:
        sizes = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree_util.tree_leaves(problem)}
        require(
            sizes == {m0.shape[0]},
            f"batch_problem=True needs a stacked problem (ct.stack_problems) whose arrays all have leading axis B={m0.shape[0]}; "
            f"got leading sizes {sizes} (None: a scalar, i.e. an unstacked problem)",
        )
    first_problem = jax.tree_util.tree_map(lambda x: x[0], problem) if batch_problem else problem
    first_problem.check_state(m0[0], v0[0])
    hybrid = not problem.sigma.smooth and method != "euler"
    relu = _check_relu(repulsive, max_events)
    steps = _max_steps(method, t0, t1, dt0, max_steps)
    m, v, status, nsteps, nseg, t_end, events = _run_diffrax(
        problem, m0, v0, t0, t1, ts, dt0, rtol, atol,
        method=method, max_steps=steps, max_segments=max_segments, hybrid=hybrid, batch_problem=batch_problem, batched=True, relu=relu,
    )
    message = status_message(status, t_end, method, t1, steps, max_segments)
    return _finish(problem, ts, m, v, status, nsteps, nseg, t_end, method, message, throw, batched=True, batch_problem=batch_problem, events=events)
