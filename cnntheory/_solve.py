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

import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from ._filippov import REPULSIVE_BRANCHES, integrate_filippov
from ._integrate import DIFFRAX_SOLVERS, integrate
from ._problem import TeacherStudent
from ._scipy import SCIPY_METHODS, scipy_solve
from ._trajectory import SUCCESS, Events, SolverError, Trajectory
from ._typing import AnyArray, Scalar, Times
from ._validate import is_concrete, require, require_finite

__all__ = ["DIFFRAX_SOLVERS", "SCIPY_METHODS", "SUCCESS", "Events", "SolverError", "Trajectory", "solve", "solve_batch", "stack_problems"]


def _smooth_vector_field(t, y, problem):
    return problem.rhs(*y)


def _integrate_smooth(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, *, solver_name, max_steps, max_segments, rhs=None, **relu):
    del max_segments, relu
    field = _smooth_vector_field if rhs is None else (lambda t, y, args: rhs(*y))
    (m, v), status, nsteps, t_end = integrate(field, (m0, v0), problem, t0, t1, ts, dt0, rtol, atol, solver_name=solver_name, max_steps=max_steps)
    return m, v, status, nsteps, jnp.asarray(1), t_end, Events.empty(0)


def _integrate_hybrid(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, *, solver_name, max_steps, max_segments, rhs=None, **relu):
    del rhs  # the hybrid scheme integrates the mode flows of `problem` itself
    return integrate_filippov(
        problem, m0, v0, t0, t1, ts, dt0, rtol, atol, solver_name=solver_name, max_steps=max_steps, max_segments=max_segments, **relu
    )


_STATIC = ("solver_name", "max_steps", "max_segments", "max_events", "hybrid", "batch_problem", "batched", "rhs")


def _solve_one(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, repulsive, *, solver_name, max_steps, max_segments, max_events, hybrid, rhs):
    """One solve and the population loss along it, all inside the compiled function."""
    core = _integrate_hybrid if hybrid else _integrate_smooth
    m, v, status, nsteps, nseg, t_end, events = core(
        problem, m0, v0, t0, t1, ts, dt0, rtol, atol, solver_name=solver_name, max_steps=max_steps, max_segments=max_segments, rhs=rhs,
        repulsive=repulsive, max_events=max_events,
    )
    return m, v, jax.vmap(problem.loss)(m, v), status, nsteps, nseg, t_end, events


@functools.partial(jax.jit, static_argnames=_STATIC)
def _compiled(
    problem, m0, v0, t0, t1, ts, dt0, rtol, atol, repulsive, *, solver_name, max_steps, max_segments, max_events, hybrid, batch_problem, batched, rhs
):
    """The whole solve, loss included, as one XLA program.

    Every number (times, save times, tolerances, the problem's arrays, the initial state,
    the relu branch index `repulsive`) is a traced argument: new values reuse the compiled
    program.
    """

    def one(problem, m0, v0):
        return _solve_one(
            problem, m0, v0, t0, t1, ts, dt0, rtol, atol, repulsive,
            solver_name=solver_name, max_steps=max_steps, max_segments=max_segments, max_events=max_events, hybrid=hybrid, rhs=rhs,
        )

    if batched:
        one = jax.vmap(one, in_axes=(0 if batch_problem else None, 0, 0))
    m, v, loss, status, nsteps, nseg, t_end, events = one(problem, m0, v0)
    # Built inside the program: returning it costs a pytree unflatten, not a Module __init__.
    return Trajectory(ts, m, v, loss, status, nsteps, nseg, t_end, solver_name, None, max_steps, max_segments, "", events)


# --- public API ---------------------------------------------------------------------------


def _traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _number(x):
    """A traced number stays traced; a concrete one becomes a numpy float64 (one jit signature)."""
    return jnp.asarray(x, dtype=float) if _traced(x) else np.float64(x)


def _check_common(problem, t0, t1, ts, method, rtol, atol, dt0):
    """Check what can be checked and return `(t0, t1, ts, rtol, atol, dt0)`.

    Values are checked only when they are concrete; under `jit` / `vmap` / `grad` the
    traced ones pass through unchecked (shapes are still checked). Messages are built only
    on failure: this runs on every call.
    """
    if not isinstance(problem, TeacherStudent):
        require(False, f"problem must be a TeacherStudent, got {type(problem).__name__}")
    if method not in DIFFRAX_SOLVERS and method not in SCIPY_METHODS:
        require(False, f"unknown method {method!r}; choose one of: {', '.join(sorted(DIFFRAX_SOLVERS) + list(SCIPY_METHODS))}")
    t0, t1, rtol, atol = _number(t0), _number(t1), _number(rtol), _number(atol)
    dt0 = None if dt0 is None else _number(dt0)
    times_concrete = not (_traced(t0) or _traced(t1))
    if ts is None:
        ts = (np if times_concrete else jnp).linspace(t0, t1, 101)
    ts = jnp.asarray(ts, dtype=float) if _traced(ts) else np.asarray(ts, dtype=np.float64)
    if not (ts.ndim == 1 and ts.size >= 1):
        require(False, f"ts must be a non-empty 1-D array of save times, got shape {ts.shape}")
    if times_concrete and not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
        require(False, f"need finite t0 < t1, got t0={t0}, t1={t1}")
    if not _traced(ts):
        require(bool((ts[1:] >= ts[:-1]).all()), "ts must be sorted in increasing order")
        if times_concrete and not (ts[0] >= t0 and ts[-1] <= t1):
            require(False, f"ts must lie within [t0, t1] = [{t0}, {t1}], got [{ts[0]}, {ts[-1]}]")
    if not (_traced(rtol) or _traced(atol) or (rtol > 0 and atol > 0)):
        require(False, f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    if method == "euler" and not (dt0 is not None and (_traced(dt0) or dt0 > 0)):
        require(False, f"method='euler' needs a fixed step dt0 > 0, got dt0={dt0}")
    return t0, t1, ts, rtol, atol, dt0


def _check_state(name, x):
    """`require_finite`, with the common case (concrete and finite) kept cheap."""
    if not _traced(x) and not np.isfinite(np.asarray(x)).all():
        require_finite(name, x)


def _check_relu(repulsive, max_events):
    """The relu (Filippov) options, checked: the branch as a traced index (no recompile)."""
    if repulsive not in REPULSIVE_BRANCHES:
        require(False, f"repulsive must be one of {REPULSIVE_BRANCHES}, got {repulsive!r}")
    if not (isinstance(max_events, int) and max_events >= 1):
        require(False, f"max_events must be an int >= 1, got {max_events!r}")
    return np.int32(REPULSIVE_BRANCHES.index(repulsive))


def _max_steps(method, t0, t1, dt0, max_steps):
    """Euler needs `(t1 - t0) / dt0` steps: raise `max_steps` to that when it is known."""
    if method == "euler" and is_concrete(t0, t1, dt0):
        return max(max_steps or 0, math.ceil((t1 - t0) / float(dt0)) + 16)
    return max_steps


def _float_array(x):
    """`x` as a float64 array (without a copy or a dispatch when it already is one)."""
    return x if isinstance(x, jax.Array) and x.dtype == jnp.float64 else jnp.asarray(x, dtype=float)


def _checked(traj, throw):
    """`throw`: raise `SolverError` for a failed solve.

    Traced (inside the caller's `jit` / `vmap` / `grad`), the status is not known yet: then
    the check goes into the caller's program (`eqx.error_if`, as `diffrax.diffeqsolve` does)
    and fires when the result is computed, with a fixed message.
    """
    if not throw:
        return traj
    if not _traced(traj.status):
        if not traj.success:
            raise SolverError(traj.message)
        return traj
    message = (
        f"cnntheory.solve ({traj.method}) did not reach t1: status 1 max_steps={traj.max_steps} reached, "
        f"2 more than max_segments={traj.max_segments} relu mode switches, 3 diverged, 4 solver failure; "
        "pass throw=False to get the Trajectory and read its status"
    )
    return eqx.error_if(traj, traj.status != SUCCESS, message)


def solve(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: Scalar,
    *,
    ts: Times | None = None,
    t0: Scalar = 0.0,
    method: str = "tsit5",
    rtol: Scalar = 1e-8,
    atol: Scalar = 1e-10,
    dt0: Scalar | None = None,
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
    t0, t1, ts, rtol, atol, dt0 = _check_common(problem, t0, t1, ts, method, rtol, atol, dt0)
    m0, v0 = _float_array(m0), _float_array(v0)
    if not (m0.ndim == 2 and v0.shape == (m0.shape[0],) and m0.shape[1] == problem.mixture.atoms.shape[0]):
        problem.check_state(m0, v0)  # raises, naming the shapes
    _check_state("m0", m0)
    _check_state("v0", v0)
    hybrid = not problem.sigma.smooth and method != "euler"
    if rhs is not None:
        require(not hybrid, "a custom rhs cannot be combined with the Filippov integration of a relu student: use method='euler' or a smooth activation")
        require(callable(rhs), f"rhs must be a callable rhs(m, v) -> (dm, dv), got {type(rhs).__name__}")
    branch = _check_relu(repulsive, max_events)
    steps = _max_steps(method, t0, t1, dt0, max_steps)
    if method in SCIPY_METHODS:
        require(is_concrete(problem, m0, v0, t0, t1, ts, rtol, atol), f"method={method!r} (scipy) needs concrete inputs: use a diffrax method under jit / vmap / grad")
        m, v, status, nsteps, nseg, t_end, detail, events = scipy_solve(
            problem, m0, v0, t0, t1, ts, method, rtol, atol, max_segments, hybrid, rhs, repulsive=repulsive, max_events=max_events
        )
        loss = jax.vmap(problem.loss)(m, v)
        traj = Trajectory(
            jnp.asarray(ts), m, v, loss, jnp.asarray(status), jnp.asarray(nsteps), jnp.asarray(nseg), jnp.asarray(t_end),
            method, None, steps, max_segments, detail, events,
        )
        return _checked(traj, throw)
    traj = _compiled(
        problem, m0, v0, t0, t1, ts, dt0, rtol, atol, branch, solver_name=method, max_steps=steps, max_segments=max_segments,
        max_events=max_events, hybrid=hybrid, batch_problem=False, batched=False, rhs=rhs,
    )
    return _checked(traj, throw)


def stack_problems(problems: list[TeacherStudent]) -> TeacherStudent:
    """Stack problems that differ only in numbers into one batched problem for `solve_batch`."""
    require(len(problems) >= 1, "stack_problems needs at least one problem")
    structure = jax.tree_util.tree_structure(problems[0])
    require(
        all(jax.tree_util.tree_structure(p) == structure for p in problems),  # type: ignore[operator]  # jaxlib's PyTreeDef is opaque to mypy
        "problems differ in more than numbers (activations, pooling, patch count or sizes): they cannot be batched",
    )
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *problems)


def solve_batch(
    problem: TeacherStudent,
    m0: Float[AnyArray, "B L P"],
    v0: Float[AnyArray, "B L"],
    t1: Scalar,
    *,
    ts: Times | None = None,
    t0: Scalar = 0.0,
    method: str = "tsit5",
    rtol: Scalar = 1e-8,
    atol: Scalar = 1e-10,
    dt0: Scalar | None = None,
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
    only. The result has a leading batch axis on every field but `t`. `repulsive` and
    `max_events` are the relu options of `solve`.
    """
    if method not in DIFFRAX_SOLVERS:
        require(False, f"solve_batch needs a diffrax method ({', '.join(sorted(DIFFRAX_SOLVERS))}), got {method!r}")
    t0, t1, ts, rtol, atol, dt0 = _check_common(problem, t0, t1, ts, method, rtol, atol, dt0)
    m0, v0 = _float_array(m0), _float_array(v0)
    require(m0.ndim == 3 and v0.ndim == 2 and m0.shape[0] == v0.shape[0], f"m0 must be (B, L, P) and v0 (B, L) with the same B, got {m0.shape} and {v0.shape}")
    _check_state("m0", m0)
    _check_state("v0", v0)
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
    branch = _check_relu(repulsive, max_events)
    steps = _max_steps(method, t0, t1, dt0, max_steps)
    traj = _compiled(
        problem, m0, v0, t0, t1, ts, dt0, rtol, atol, branch, solver_name=method, max_steps=steps, max_segments=max_segments,
        max_events=max_events, hybrid=hybrid, batch_problem=batch_problem, batched=True, rhs=None,
    )
    return _checked(traj, throw)
