r"""The scipy backend of `solve`: `scipy.integrate.solve_ivp` on the flattened state.

Smooth flows are one `solve_ivp` call; relu students are integrated as Filippov solutions
by the same hybrid scheme as the diffrax path (`cnntheory._filippov`): one `solve_ivp`
call per mode, one terminal event at the smallest distance of any entry to leaving its
mode, then `pending_entries` + `resolve_mode` (every entry's side is checked).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._filippov import REPULSIVE_BRANCHES, Mode, event_condition, initial_mode, mode_flow, pending_entries, resolve_mode
from ._problem import TeacherStudent, flatten_state
from ._trajectory import DIVERGENCE_BOUND, Events, Status


# Module-level jitted functions of (problem, y, ...): compiled once per shape and reused
# across solves (scipy calls them from Python at every stage, `t` never traced).
def _flat_smooth(problem, y):
    return problem.flat_rhs(y)


def _flat_mode(problem, y, side, slide):
    m, v = problem.unflatten(y)
    dm, dv, _ = mode_flow(problem, m, v, Mode(side, slide))
    return flatten_state(dm, dv)


def _condition(problem, y, side, slide, watch):
    m, v = problem.unflatten(y)
    return event_condition(problem, m, v, Mode(side, slide), watch)


def _initial(problem, y, events, t, branch):
    m, v = problem.unflatten(y)
    return initial_mode(problem, m, v, events, t, branch)


def _after_event(problem, y, mode, events, t, fired, branch):
    m, v = problem.unflatten(y)
    hit = pending_entries(problem, m, v, mode, fired, jnp.asarray(branch) != 2)
    return resolve_mode(problem, m, v, mode, hit, events, t, branch)


_smooth = jax.jit(_flat_smooth)
_smooth_jac = jax.jit(jax.jacfwd(_flat_smooth, argnums=1))
_mode = jax.jit(_flat_mode)
_mode_jac = jax.jit(jax.jacfwd(_flat_mode, argnums=1))
_condition_jit = jax.jit(_condition)
_after_event_jit = jax.jit(_after_event)
_initial_jit = jax.jit(_initial)


class _ScipyFlow:
    """Flat-state callables of the flow of one problem, for scipy: the module-level programs
    with the problem bound. `smooth` / `smooth_jac` may be replaced (a custom `rhs`)."""

    def __init__(self, problem: TeacherStudent, L: int):
        self.problem, self.L, self.P = problem, L, problem.num_atoms
        self.smooth: Callable[[Any], Any] = lambda y: _smooth(problem, y)
        self.smooth_jac: Callable[[Any], Any] = lambda y: _smooth_jac(problem, y)

    def mode(self, y, side, slide):
        return _mode(self.problem, y, side, slide)

    def mode_jac(self, y, side, slide):
        return _mode_jac(self.problem, y, side, slide)

    def condition(self, y, side, slide, watch):
        return _condition_jit(self.problem, y, side, slide, watch)

    def after_event(self, y, mode, events, t, fired, branch):
        return _after_event_jit(self.problem, y, mode, events, t, fired, branch)

    def initial(self, y, events, t, branch):
        return _initial_jit(self.problem, y, events, t, branch)


def _divergence_event(t, y):
    return DIVERGENCE_BOUND - np.max(np.abs(y)) if np.all(np.isfinite(y)) else -1.0


_divergence_event.terminal = True  # type: ignore[attr-defined]  # scipy reads event options off the function


def _mode_event(flow: _ScipyFlow, mode: Mode, watch: bool):
    """One terminal event: the smallest distance of any entry to leaving its mode."""

    def g(t, y):
        return float(flow.condition(y, *mode, watch))

    g.terminal, g.direction = True, -1  # type: ignore[attr-defined]  # scipy reads event options off the function
    return g


def _segment(fun, jac, t, t1, y, ts, method, rtol, atol, events):
    implicit = {"jac": jac} if method in ("Radau", "BDF", "LSODA") else {}
    # A segment with no save time in it still needs a (non-empty) t_eval: scipy returns
    # a list, not an array, for an empty one. Save its end instead and drop it.
    t_eval = ts if len(ts) else np.array([t1])
    import scipy.integrate  # here, not at the top: `import cnntheory` stays free of scipy

    sol = scipy.integrate.solve_ivp(
        fun, (t, t1), y, method=method, t_eval=t_eval, rtol=rtol, atol=atol, events=events, **implicit
    )
    sol.y = np.asarray(sol.y).reshape(len(y), -1)[:, : len(ts)]
    return sol


def scipy_solve(problem, m0, v0, t0, t1, ts, config, hybrid, rhs=None, repulsive="minus"):
    """Returns `(m, v, status, num_steps, num_segments, t_end, detail, events)` at `ts`.

    `config` is the `SolverConfig` of the solve (a scipy `method`).
    """
    method, rtol, atol, max_segments, max_events = (
        config.method,
        config.rtol,
        config.atol,
        config.max_segments,
        config.max_events,
    )
    L, P = m0.shape
    flow = _ScipyFlow(problem, L)
    if rhs is not None:

        def custom(y):
            return flatten_state(*rhs(*problem.unflatten(y)))

        flow.smooth, flow.smooth_jac = jax.jit(custom), jax.jit(jax.jacfwd(custom))
    y = np.concatenate([np.ravel(m0), np.asarray(v0)])
    out = np.full((len(ts), y.size), np.nan)
    saved = np.zeros(len(ts), dtype=bool)
    status, nsteps, nseg, t, msg = Status.SUCCESS, 0, 0, float(t0), ""
    mode: Mode | None = None
    branch = REPULSIVE_BRANCHES.index(repulsive) if isinstance(repulsive, str) else int(repulsive)
    events = Events.empty(max_events if hybrid else 0)
    if hybrid:
        m_init, mode, events = flow.initial(y, events, float(t0), branch)
        y = np.concatenate([np.ravel(m_init), y[L * P :]])
    while t < t1 and nseg < max_segments:
        todo = ~saved & (ts >= t)
        fun: Callable[..., Any]
        jac: Callable[..., Any]
        if hybrid:
            assert mode is not None  # set by flow.initial above
            side, slide = mode
            fun = lambda _t, yy, s=side, sl=slide: np.asarray(flow.mode(yy, s, sl))
            jac = lambda _t, yy, s=side, sl=slide: np.asarray(flow.mode_jac(yy, s, sl))
            events_fns = [_mode_event(flow, mode, branch != 2), _divergence_event]
        else:
            fun = lambda _t, yy: np.asarray(flow.smooth(yy))
            jac = lambda _t, yy: np.asarray(flow.smooth_jac(yy))
            events_fns = [_divergence_event]
        sol = _segment(fun, jac, t, float(t1), y, ts[todo], method, rtol, atol, events_fns)
        nseg += 1
        nsteps += int(sol.nfev)
        idx = np.flatnonzero(todo)[: sol.y.shape[1]]
        out[idx] = sol.y.T
        saved[idx] = True
        if sol.status == -1:
            status, msg, t = Status.FAILED, sol.message, float(sol.t[-1])
            break
        if sol.status == 0:
            t = float(t1)
            break
        fired = [i for i, te in enumerate(sol.t_events) if len(te)]
        t = float(sol.t_events[fired[0]][0])
        y = sol.y_events[fired[0]][0]
        if fired[0] == len(events_fns) - 1:
            status = Status.DIVERGED
            break
        m_next, mode, events = flow.after_event(y, mode, events, t, True, branch)
        y = np.concatenate([np.ravel(m_next), y[L * P :]])
    if status == Status.SUCCESS and t < t1:
        status = Status.MAX_SEGMENTS
    m = out[:, : L * P].reshape(len(ts), L, P)
    return jnp.asarray(m), jnp.asarray(out[:, L * P :]), status, nsteps, nseg, t, msg, events
