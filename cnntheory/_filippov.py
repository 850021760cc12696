r"""Filippov sliding for relu students: the small-step limit of gradient descent.

With `sigma = relu`, `sigma'(m_lp)` jumps at `m_lp = 0` and the flow is discontinuous
there. Gradient descent with a small step chatters across such a surface when the flows
on both sides point into it; its limit as the step goes to zero is the **Filippov
solution**, which slides along the surface.

For relu the Filippov convex combination has a simple form: on the surface `m_lp = 0`
(where `sigma(m_lp) = 0` from either side) the only side-dependent quantity is
`sigma'(m_lp) in {0, 1}`, so the sliding field is the flow with `sigma'(m_lp)` replaced by
`theta_lp in [0, 1]` (a Clarke generalised derivative), chosen so that the surface is
kept, `dm_lp/dt = 0`. For unit `l` with sliding set `S`, the unknowns
`x_q = theta_lq r_q` (`q in S`) solve the linear system

$$\sum_{q\in S} G_{pq}\,x_q = -\sum_{q\notin S} \sigma'_{lq}\, r_q\, G_{qp}\qquad(p\in S).$$

The integration is hybrid: within a *mode* (for every entry a fixed side,
`sigma' = side in {0, 1}` and `sigma(m) = side * m`, or sliding) the flow is smooth and
an adaptive solver integrates it; events stop it when a free entry reaches `m_lp = 0`
or a sliding `theta_lp` reaches 0 or 1, and `resolve_mode` chooses the next mode from the
one-sided normal velocities `F^-` (`sigma' = 0`) and `F^+` (`sigma' = 1`):

| at `m_lp = 0`          | next mode                                   |
|------------------------|---------------------------------------------|
| `F^- >= 0 >= F^+`      | slide (attractive surface)                  |
| `F^-, F^+ > 0`         | cross to (stay on) `m_lp > 0`               |
| `F^-, F^+ < 0`         | cross to (stay on) `m_lp < 0`               |
| sliding, `theta -> 0`  | leave to `m_lp < 0`; `theta -> 1`: to `m_lp > 0` |
"""

from __future__ import annotations

from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Bool, Float

from ._integrate import DIFFRAX_SOLVERS, controller, divergence_event_fn, saveat
from ._problem import TeacherStudent
from ._trajectory import MAX_SEGMENTS, SUCCESS, diverged, status_from_result

#: Denominators below this are treated as zero when solving for `theta`.
_TINY = 1e-300
#: Slack of the sliding-exit event (in units of the residual `r`): far below any physical
#: residual, far above the rounding noise of a converged state.
SLIDE_SLACK = 1e-14
#: Locates relu events in time, within the step that brackets them. Where it cannot
#: converge (a sliding distance that is ~0/0 at a minimum, r -> 0), the event is taken at
#: its last iterate, which still lies inside that step.
ROOT_FINDER = optx.Newton(rtol=1e-12, atol=1e-14)


class Mode(NamedTuple):
    """Which side of `m_lp = 0` each entry is on (`side` in {0, 1}), or whether it slides."""

    side: Float[Array, "L P"]
    slide: Bool[Array, "L P"]


def _sliding_theta(problem: TeacherStudent, r: Float[Array, " P"], mode: Mode) -> Float[Array, "L P"]:
    """`theta_lp` of the sliding entries (the other entries are returned as their side)."""
    G = problem.gram
    S = mode.slide.astype(G.dtype)
    P = G.shape[0]
    eye = jnp.eye(P, dtype=G.dtype)
    # Masked system: the sub-Gram on sliding entries, identity rows elsewhere.
    A = G[None] * S[:, :, None] * S[:, None, :] + eye[None] * (1 - S)[:, :, None]
    rhs = -S * ((mode.side * (1 - S) * r[None, :]) @ G)
    x = jnp.linalg.solve(A, rhs[..., None])[..., 0]
    safe_r = jnp.where(jnp.abs(r) > _TINY, r, 1.0)
    theta = jnp.where(jnp.abs(r) > _TINY, x / safe_r, 0.5)
    return jnp.where(mode.slide, theta, mode.side)


def _mode_residual(problem: TeacherStudent, m, v, mode: Mode):
    """Activations of the mode (relu on its fixed side, 0 on the surface) and `r = C (a - b)`."""
    activ = jnp.where(mode.slide, 0.0, mode.side * m)
    return activ, problem.moments @ (v @ activ - problem.teacher_outputs())


def mode_flow(problem: TeacherStudent, m, v, mode: Mode):
    """The smooth flow of one mode: `(dm/dt, dv/dt)` and the effective `sigma'` (`theta` where sliding)."""
    activ, r = _mode_residual(problem, m, v, mode)
    dsig = _sliding_theta(problem, r, mode)
    dm = -(problem.lr_kernel / problem.patch_dim) * (v[:, None] * dsig * r[None, :]) @ problem.gram
    dm = jnp.where(mode.slide, 0.0, dm)
    dv = -problem.lr_head * activ @ r
    return dm, dv, dsig


def event_distances(problem: TeacherStudent, m, v, mode: Mode) -> Float[Array, "L P"]:
    """Positive while every entry stays in its mode; an entry's zero crossing is an event.

    A free entry's distance is `|m_lp|` on its side. A sliding entry's is
    `min(theta, 1 - theta) |r_p| + SLIDE_SLACK`: weighting by `|r_p|` keeps it continuous
    where `theta = x / r_p` is 0/0 (at a minimum, `r -> 0`), and the slack keeps rounding
    noise there from ending the slide (it moves the exit by `SLIDE_SLACK / |r_p|` in theta).
    """
    _, r = _mode_residual(problem, m, v, mode)
    theta = _sliding_theta(problem, r, mode)
    sliding = jnp.minimum(theta, 1 - theta) * jnp.abs(r)[None, :] + SLIDE_SLACK
    return jnp.where(mode.slide, sliding, (2 * mode.side - 1) * m)


def _normal_velocities(problem, m, v, mode, l, p):
    """`F^-` and `F^+`: `dm_lp/dt` with entry `(l, p)` free on the side `sigma' = 0` / `= 1`."""
    off = mode.slide.at[l, p].set(False)
    f_minus = mode_flow(problem, m, v, Mode(mode.side.at[l, p].set(0.0), off))[0][l, p]
    f_plus = mode_flow(problem, m, v, Mode(mode.side.at[l, p].set(1.0), off))[0][l, p]
    return f_minus, f_plus


def resolve_mode(problem: TeacherStudent, m, v, mode: Mode, at_surface: Bool[Array, "L P"]):
    """Choose the next mode for the entries `at_surface` (processed one at a time).

    Returns the state with those entries set exactly to 0 and the new mode (table above).
    """
    L, P = m.shape

    def visit(i, carry, at_surface):
        m, mode = carry
        l, p = i // P, i % P

        def choose(carry):
            m, mode = carry
            m = m.at[l, p].set(0.0)
            was_sliding = mode.slide[l, p]
            theta = mode_flow(problem, m, v, mode)[2][l, p]
            f_minus, f_plus = _normal_velocities(problem, m, v, mode, l, p)
            attractive = (f_minus >= 0) & (f_plus <= 0)
            side_if_free = jnp.where(
                (f_minus > 0) & (f_plus > 0), 1.0, jnp.where((f_minus < 0) & (f_plus < 0), 0.0, mode.side[l, p])
            )
            new_side = jnp.where(was_sliding, jnp.where(theta > 0.5, 1.0, 0.0), side_if_free)
            new_slide = ~was_sliding & attractive
            return m, Mode(mode.side.at[l, p].set(new_side), mode.slide.at[l, p].set(new_slide))

        return jax.lax.cond(at_surface[l, p], choose, lambda c: c, (m, mode))

    def one_pass(carry, mask):
        return jax.lax.fori_loop(0, L * P, lambda i, c: visit(i, c, mask), carry)

    m, mode = one_pass((m, mode), at_surface)
    # A new mode can push a neighbouring sliding entry's theta out of [0, 1]: re-decide it.
    for _ in range(2):
        theta = mode_flow(problem, m, v, mode)[2]
        m, mode = one_pass((m, mode), mode.slide & ((theta < 0) | (theta > 1)))
    return m, mode


def initial_mode(problem: TeacherStudent, m, v) -> tuple[Float[Array, "L P"], Mode]:
    """The mode at the initial state: the sign of `m`, and `resolve_mode` where `m == 0`."""
    mode = Mode(side=(m > 0).astype(m.dtype), slide=jnp.zeros(m.shape, dtype=bool))
    return resolve_mode(problem, m, v, mode, m == 0)


# --- the hybrid driver: one diffrax solve per mode, events between them ------------------


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

    cond_fns = [entry_fn(i) for i in range(L * P)] + [divergence_event_fn]
    directions = [False] * (L * P) + [None]
    return diffrax.Event(cond_fns, ROOT_FINDER, direction=directions)


def integrate_filippov(problem, m0, v0, t0, t1, ts, dt0, rtol, atol, *, solver_name, max_steps, max_segments):
    """The Filippov solution from `(m0, v0)`: smooth segments per mode, `resolve_mode` between.

    Returns `(m, v, status, num_steps, num_segments, t_end)` with `m`, `v` at `ts`.
    Traceable (a `lax.while_loop` over segments).
    """
    L, P = m0.shape
    T = ts.shape[0]
    solver = DIFFRAX_SOLVERS[solver_name]()
    step_control = controller(solver_name, rtol, atol)
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
            saveat=saveat(jnp.clip(ts, t, t1)),
            stepsize_controller=step_control,
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
        status = status_from_result(result, diverged(m_end, v_end))
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
