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
"""

from __future__ import annotations

import math
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import scipy.integrate
from jaxtyping import Array, Float, Int

from ._filippov import Mode, event_distances, initial_mode, mode_flow, resolve_mode
from ._problem import TeacherStudent
from ._validate import require, require_finite

DIFFRAX_SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
    "kvaerno3": diffrax.Kvaerno3,
    "kvaerno4": diffrax.Kvaerno4,
    "kvaerno5": diffrax.Kvaerno5,
    "euler": diffrax.Euler,
}
SCIPY_METHODS = ("RK23", "RK45", "DOP853", "LSODA", "Radau", "BDF")

#: Status codes of a `Trajectory`.
SUCCESS, MAX_STEPS, MAX_SEGMENTS, DIVERGED, FAILED = 0, 1, 2, 3, 4
#: Locates relu events in time, within the step that brackets them. Where it cannot
#: converge (a sliding distance that is ~0/0 at a minimum, r -> 0), the event is taken at
#: its last iterate, which still lies inside that step.
ROOT_FINDER = optx.Newton(rtol=1e-12, atol=1e-14)
#: A state component beyond this magnitude counts as divergence.
DIVERGENCE_BOUND = 1e100


class SolverError(RuntimeError):
    """A solve that did not reach `t1`; the message says why and where."""


class Trajectory(eqx.Module):
    """The solution of the flow at the saved times (cf. `scipy.integrate.solve_ivp`).

    Fields (a batched solve adds a leading batch axis `B` to all but `t`):

    - `t`: `(T,)` save times; `m`: `(T, L, P)` order parameters; `v`: `(T, L)` head;
      `loss`: `(T,)` population loss.
    - `status`: 0 success, 1 `max_steps` reached, 2 too many relu mode switches,
      3 diverged, 4 other solver failure; `message` says which, and where.
    - `num_steps`: accepted + rejected steps; `num_segments`: smooth pieces of a relu
      (Filippov) solve, 1 otherwise; `t_end`: the time the solver reached.
    """

    t: Float[Array, " T"]
    m: Float[Array, "*B T L P"]
    v: Float[Array, "*B T L"]
    loss: Float[Array, "*B T"]
    status: Int[Array, "*B"]
    num_steps: Int[Array, "*B"]
    num_segments: Int[Array, "*B"]
    t_end: Float[Array, "*B"]
    method: str = eqx.field(static=True)
    message: str = eqx.field(static=True)

    @property
    def success(self) -> bool:
        """True when every solve reached `t1`."""
        return bool(np.all(np.asarray(self.status) == SUCCESS))

    @property
    def y(self):
        """`(m, v)`, the state as a tuple (scipy's `y`)."""
        return self.m, self.v


# --- shared pieces --------------------------------------------------------------------


def _diverged(m, v):
    big = jnp.maximum(jnp.max(jnp.abs(m)), jnp.max(jnp.abs(v)))
    return ~(jnp.isfinite(big) & (big < DIVERGENCE_BOUND))


def _status_from_result(result, diverged):
    R = diffrax.RESULTS
    ok = (result == R.successful) | (result == R.event_occurred)
    return jnp.where(
        diverged,
        DIVERGED,
        jnp.where(ok, SUCCESS, jnp.where(result == R.max_steps_reached, MAX_STEPS, FAILED)),
    )


def _saveat(ts):
    return diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts), diffrax.SubSaveAt(t1=True)])


def _controller(solver_name, rtol, atol, dt0):
    if solver_name == "euler":
        return diffrax.ConstantStepSize()
    return diffrax.PIDController(rtol=rtol, atol=atol, dtmin=None)


def _diverge_event_fn(t, y, args, **kwargs):
    return _diverged(*y)


# --- diffrax: smooth flow ---------------------------------------------------------------


def _smooth_vector_field(t, y, problem):
    return problem.rhs(*y)


def _diffrax_smooth(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, *, solver_name, max_steps, max_segments, rhs=None):
    del max_segments
    field = _smooth_vector_field if rhs is None else (lambda t, y, args: rhs(*y))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        DIFFRAX_SOLVERS[solver_name](),
        t0,
        t1,
        dt0,
        (m0, v0),
        args=problem,
        saveat=_saveat(ts),
        stepsize_controller=_controller(solver_name, rtol, atol, dt0),
        max_steps=max_steps,
        event=diffrax.Event(_diverge_event_fn),
        throw=False,
    )
    (m, v), (m_end, v_end) = sol.ys
    status = _status_from_result(sol.result, _diverged(m_end[0], v_end[0]))
    return m, v, status, sol.stats["num_steps"], jnp.asarray(1), sol.ts[1][0]


# --- diffrax: relu, Filippov hybrid -------------------------------------------------------


def _mode_vector_field(t, y, args):
    problem, mode = args
    dm, dv, _ = mode_flow(problem, *y, mode)
    return dm, dv


def _mode_events(L, P):
    def entry_fn(i):
        def cond(t, y, args, **kwargs):
            problem, mode = args
            return event_distances(problem, *y, mode).reshape(-1)[i]

        return cond

    cond_fns = [entry_fn(i) for i in range(L * P)] + [_diverge_event_fn]
    directions = [False] * (L * P) + [None]
    return diffrax.Event(cond_fns, ROOT_FINDER, direction=directions)


def _diffrax_filippov(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, *, solver_name, max_steps, max_segments, rhs=None):
    del rhs  # the hybrid scheme integrates the mode flows of `problem` itself
    L, P = m0.shape
    T = ts.shape[0]
    solver = DIFFRAX_SOLVERS[solver_name]()
    controller = _controller(solver_name, rtol, atol, dt0)
    event = _mode_events(L, P)
    m0, mode0 = initial_mode(problem, m0, v0)

    def segment(carry):
        t, m, v, mode, out_m, out_v, saved, status, nsteps, nseg = carry
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_mode_vector_field),
            solver,
            t,
            t1,
            dt0,
            (m, v),
            args=(problem, mode),
            saveat=_saveat(jnp.clip(ts, t, t1)),
            stepsize_controller=controller,
            max_steps=max_steps,
            event=event,
            throw=False,
        )
        (ms, vs), (m_end, v_end) = sol.ys
        t_end, m_end, v_end = sol.ts[1][0], m_end[0], v_end[0]
        new = ~saved & (ts <= t_end)
        out_m = jnp.where(new[:, None, None], ms, out_m)
        out_v = jnp.where(new[:, None], vs, out_v)
        hit = jnp.stack(sol.event_mask[: L * P]).reshape(L, P)
        m_next, mode_next = resolve_mode(problem, m_end, v_end, mode, hit)
        # An event stops the step at the located time even if the root find gave up.
        result = diffrax.RESULTS.where(jnp.any(hit), diffrax.RESULTS.event_occurred, sol.result)
        status = _status_from_result(result, _diverged(m_end, v_end))
        return (t_end, m_next, v_end, mode_next, out_m, out_v, saved | new, status, nsteps + sol.stats["num_steps"], nseg + 1)

    def unfinished(carry):
        t, *_, status, _, nseg = carry
        return (t < t1) & (status == SUCCESS) & (nseg < max_segments)

    init = (
        t0,
        m0,
        v0,
        mode0,
        jnp.full((T, L, P), jnp.nan, m0.dtype),
        jnp.full((T, L), jnp.nan, v0.dtype),
        jnp.zeros(T, dtype=bool),
        jnp.asarray(SUCCESS),
        jnp.asarray(0),
        jnp.asarray(0),
    )
    t, _, _, _, out_m, out_v, _, status, nsteps, nseg = jax.lax.while_loop(unfinished, segment, init)
    status = jnp.where((status == SUCCESS) & (t < t1), MAX_SEGMENTS, status)
    return out_m, out_v, status, nsteps, nseg, t


@eqx.filter_jit
def _diffrax_core(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, *, solver_name, max_steps, max_segments, hybrid, batch_problem, batched, rhs=None):
    core = _diffrax_filippov if hybrid else _diffrax_smooth
    kwargs = dict(solver_name=solver_name, max_steps=max_steps, max_segments=max_segments, rhs=rhs)

    def one(problem, m0, v0):
        return core(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, **kwargs)

    if batched:
        one = jax.vmap(one, in_axes=(0 if batch_problem else None, 0, 0))
    return one(problem, m0, v0)


# --- scipy -----------------------------------------------------------------------------


def _unflat(problem, y):
    P = problem.num_atoms
    L = y.shape[0] // (P + 1)
    return y[: L * P].reshape(L, P), y[L * P :]


def _flat(m, v):
    return jnp.concatenate([m.ravel(), v])


# Module-level jitted functions of (problem, y, ...): compiled once per shape and reused
# across solves (scipy calls them from Python at every stage, `t` never traced).
def _flat_smooth(problem, y):
    return _flat(*problem.rhs(*_unflat(problem, y)))


def _flat_mode(problem, y, side, slide):
    dm, dv, _ = mode_flow(problem, *_unflat(problem, y), Mode(side, slide))
    return _flat(dm, dv)


_SCIPY_FNS = {
    "smooth": jax.jit(_flat_smooth),
    "smooth_jac": jax.jit(jax.jacfwd(_flat_smooth, argnums=1)),
    "mode": jax.jit(_flat_mode),
    "mode_jac": jax.jit(jax.jacfwd(_flat_mode, argnums=1)),
    "distances": jax.jit(lambda problem, y, side, slide: event_distances(problem, *_unflat(problem, y), Mode(side, slide)).ravel()),
    "resolve": jax.jit(lambda problem, y, mode, hit: resolve_mode(problem, *_unflat(problem, y), mode, hit)),
    "initial": jax.jit(lambda problem, y: initial_mode(problem, *_unflat(problem, y))),
}


class _ScipyFlow:
    """Flat-state callables of the flow of one problem, for scipy."""

    def __init__(self, problem: TeacherStudent, L: int):
        self.L, self.P = L, problem.num_atoms
        for name, fn in _SCIPY_FNS.items():
            setattr(self, name, lambda *a, _fn=fn: _fn(problem, *a))


def _scipy_divergence_event(t, y):
    return DIVERGENCE_BOUND - np.max(np.abs(y)) if np.all(np.isfinite(y)) else -1.0


_scipy_divergence_event.terminal = True


def _entry_events(flow: _ScipyFlow, mode: Mode):
    cache = {}

    def distances(y):
        key = y.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = np.asarray(flow.distances(y, *mode))
        return cache[key]

    def make(i):
        def g(t, y):
            return distances(y)[i]

        g.terminal, g.direction = True, -1
        return g

    return [make(i) for i in range(flow.L * flow.P)]


def _scipy_segment(flow, fun, jac, t, t1, y, ts, method, rtol, atol, events):
    implicit = {"jac": jac} if method in ("Radau", "BDF", "LSODA") else {}
    return scipy.integrate.solve_ivp(fun, (t, t1), y, method=method, t_eval=ts, rtol=rtol, atol=atol, events=events, **implicit)


def _scipy_solve(problem, m0, v0, t0, t1, ts, method, rtol, atol, max_segments, hybrid, rhs=None):
    L, P = m0.shape
    flow = _ScipyFlow(problem, L)
    if rhs is not None:
        custom = jax.jit(lambda y: _flat(*rhs(*_unflat(problem, y))))
        flow.smooth, flow.smooth_jac = custom, jax.jit(jax.jacfwd(lambda y: _flat(*rhs(*_unflat(problem, y)))))
    y = np.concatenate([np.ravel(m0), np.asarray(v0)])
    out = np.full((len(ts), y.size), np.nan)
    saved = np.zeros(len(ts), dtype=bool)
    status, nsteps, nseg, t, msg = SUCCESS, 0, 0, float(t0), ""
    mode = None
    if hybrid:
        m_init, mode = flow.initial(y)
        y = np.concatenate([np.ravel(m_init), y[L * P :]])
    while t < t1 and nseg < max_segments:
        todo = ~saved & (ts >= t)
        if hybrid:
            side, slide = mode
            fun = lambda _t, yy, s=side, sl=slide: np.asarray(flow.mode(yy, s, sl))  # noqa: E731
            jac = lambda _t, yy, s=side, sl=slide: np.asarray(flow.mode_jac(yy, s, sl))  # noqa: E731
            events = _entry_events(flow, mode) + [_scipy_divergence_event]
        else:
            fun = lambda _t, yy: np.asarray(flow.smooth(yy))  # noqa: E731
            jac = lambda _t, yy: np.asarray(flow.smooth_jac(yy))  # noqa: E731
            events = [_scipy_divergence_event]
        sol = _scipy_segment(flow, fun, jac, t, float(t1), y, ts[todo], method, rtol, atol, events)
        nseg += 1
        nsteps += int(sol.nfev)
        idx = np.flatnonzero(todo)[: sol.y.shape[1]]
        out[idx] = sol.y.T
        saved[idx] = True
        if sol.status == -1:
            status, msg, t = FAILED, sol.message, float(sol.t[-1])
            break
        if sol.status == 0:
            t = float(t1)
            break
        fired = [i for i, te in enumerate(sol.t_events) if len(te)]
        t = float(sol.t_events[fired[0]][0])
        y = sol.y_events[fired[0]][0]
        if fired[0] == len(events) - 1:
            status = DIVERGED
            break
        hit = np.zeros((L, P), dtype=bool)
        hit.ravel()[[i for i in fired if i < L * P]] = True
        m_next, mode = flow.resolve(y, mode, hit)
        y = np.concatenate([np.ravel(m_next), y[L * P :]])
    if status == SUCCESS and t < t1:
        status = MAX_SEGMENTS
    m = out[:, : L * P].reshape(len(ts), L, P)
    return jnp.asarray(m), jnp.asarray(out[:, L * P :]), status, nsteps, nseg, t, msg


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


def _max_steps(method, t0, t1, dt0, max_steps):
    if method == "euler":
        return max(max_steps or 0, int(math.ceil((t1 - t0) / float(dt0))) + 16)
    return max_steps


def _message(status, t_end, method, t1, max_steps, max_segments, detail=""):
    status = np.atleast_1d(np.asarray(status))
    t_end = np.atleast_1d(np.asarray(t_end))
    bad = np.flatnonzero(status != SUCCESS)
    if bad.size == 0:
        return "The solver successfully reached the end of the integration interval."
    i = bad[0]
    where = f" (first failing batch element {i}, {bad.size} of {status.size} failed)" if status.size > 1 else ""
    te = float(t_end[i])
    reasons = {
        MAX_STEPS: f"max_steps={max_steps} reached at t={te:.6g} before t1={t1:.6g}: raise max_steps or loosen rtol/atol",
        MAX_SEGMENTS: f"more than max_segments={max_segments} relu mode switches before t={te:.6g}: the flow chatters on a surface m_lp = 0; raise max_segments",
        DIVERGED: f"the solution diverged (non-finite or |state| > {DIVERGENCE_BOUND:g}) near t={te:.6g}"
        + ("; the Euler step dt0 is too large for this problem: reduce dt0" if method == "euler" else ""),
        FAILED: f"the solver '{method}' failed at t={te:.6g}{': ' + detail if detail else ''}",
    }
    return reasons[int(status[i])] + where


def _losses(problem, m, v, batched, batch_problem):
    """Population loss along the saved states (per batch element, per problem if batched)."""
    along_time = lambda p, mm, vv: jax.vmap(p.loss)(mm, vv)  # noqa: E731
    if not batched:
        return along_time(problem, m, v)
    return jax.vmap(along_time, in_axes=(0 if batch_problem else None, 0, 0))(problem, m, v)


def _run_diffrax(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, *, method, max_steps, max_segments, hybrid, batch_problem, batched, rhs=None):
    return _diffrax_core(
        problem, m0, v0, *map(jnp.asarray, (t0, t1, ts)), None if dt0 is None else jnp.asarray(float(dt0)),
        jnp.asarray(rtol), jnp.asarray(atol),
        solver_name=method, max_steps=max_steps, max_segments=max_segments, hybrid=hybrid,
        batch_problem=batch_problem, batched=batched, rhs=rhs,
    )


def _finish(problem, ts, m, v, status, nsteps, nseg, t_end, method, message, throw, batched, batch_problem=False):
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
    steps = _max_steps(method, t0, t1, dt0, max_steps)
    detail = ""
    if method in SCIPY_METHODS:
        m, v, status, nsteps, nseg, t_end, detail = _scipy_solve(problem, m0, v0, t0, t1, ts, method, rtol, atol, max_segments, hybrid, rhs)
    else:
        m, v, status, nsteps, nseg, t_end = _run_diffrax(
            problem, m0, v0, t0, t1, ts, dt0, rtol, atol,
            method=method, max_steps=steps, max_segments=max_segments, hybrid=hybrid, batch_problem=False, batched=False, rhs=rhs,
        )
    message = _message(status, t_end, method, t1, steps, max_segments, detail)
    return _finish(problem, ts, m, v, status, nsteps, nseg, t_end, method, message, throw, batched=False)


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
    steps = _max_steps(method, t0, t1, dt0, max_steps)
    m, v, status, nsteps, nseg, t_end = _run_diffrax(
        problem, m0, v0, t0, t1, ts, dt0, rtol, atol,
        method=method, max_steps=steps, max_segments=max_segments, hybrid=hybrid, batch_problem=batch_problem, batched=True,
    )
    message = _message(status, t_end, method, t1, steps, max_segments)
    return _finish(problem, ts, m, v, status, nsteps, nseg, t_end, method, message, throw, batched=True, batch_problem=batch_problem)
