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
an adaptive solver integrates it. **One** event condition, the minimum over all entries of
their distance to leaving their mode, stops it (so the compiled program does not grow with
`L P`); the entries that reached their boundary are then read off the distances at the
event time, and *every* entry's side is checked against its mode, so that entries
reaching `m_lp = 0` within the same step are all resolved. `resolve_mode` chooses the
next mode of each from the one-sided normal velocities `F^-` (`sigma' = 0`) and `F^+`
(`sigma' = 1`) of `dm_lp/dt`:

| at `m_lp = 0`                         | next mode                                | event kind    |
|---------------------------------------|------------------------------------------|---------------|
| free, `F^- >= 0 >= F^+`               | slide (attractive surface)               | `"slide"`     |
| free, `F^-, F^+ > 0` (`< 0`)          | `m_lp > 0` (`m_lp < 0`)                  | `"cross"`     |
| free, `F^- < 0 < F^+`                 | `m_lp < 0` (gradient descent from 0)     | `"repulsive"` |
| several free entries of one unit      | the step-free map's joint choice         | per entry     |
| sliding, `theta -> 0` (`-> 1`)        | `m_lp < 0` (`m_lp > 0`)                  | `"exit"`      |
| sliding, `v_l r_p -> 0` (repulsive)   | `m_lp > 0` if `theta > 1/2`, else `< 0`  | `"repulsive"`, or `"step_dependent"` near `theta = 1/2` |

**The rule is gradient descent's own.** Near a unit's surfaces the flow is piecewise
constant: with the residual frozen (relu(0) = 0, so entries on their surfaces do not move
it) entry `(l, p)` moves by `f_lp(s) = -(eta_K / D) v_l sum_q s_q r_q G_qp`, `s_q =
1[m_lq > 0]` (`relu'(0) = 0`). Gradient descent with step `h` there is
`m <- m + h f(1[m > 0])`; in units of the step, `y = m / h`, it is the **step-free map**
`y <- y + f(1[y > 0])`, the same for every `h`. Its behaviour from the state gradient
descent is in decides the branch:

- *Entries exactly on their surfaces together* (`y = 0`, any step): the map is
  deterministic, so the small-step limit exists and is what the map does. Each entry
  either keeps one side (it leaves up or down, or rests) or chatters across 0 (it
  slides). This is a joint choice over the unit's entries (a complementarity
  problem: escaping entries have `theta = s`, sliding ones `theta in [0, 1]` with `f = 0`)
  that may have several Filippov solutions; the map picks gradient descent's, e.g. two
  entries with `F^- > 0` both leave up even when either alone, the other up, would sit on
  a repulsive surface. `_gd_map` runs it `GD_MAP_STEPS` times. A single entry reproduces
  the table's free rows. Only entries *exactly* at 0 join: one a distance `delta` away
  starts at `y = delta / h`, which is far from 0 as `h -> 0`, so in the limit it is a free
  entry reaching its surface later (gradient descent with `h |dm/dt| >~ delta` instead
  sees it at 0 with the others and may take another branch, converged-looking over a
  range of such coarse steps).
- *A sliding entry whose surface turns repulsive* (`v_l` or `r_p` crossing 0: `F^-` and
  `F^+` shrink to 0 together, in a fixed ratio, and change sign): gradient descent chatters
  with ever smaller steps, a share `theta` of them on the `m > 0` side, and after the
  moment leaves from the side it is on. Near the moment the map is `z <- z + kappa
  (theta if z <= 0 else theta - 1)` with `kappa` falling by one a step to 0: it ends on the
  side it spends most steps on with a probability (over the phase of the moment within a
  step, i.e. over step sizes) that grows with `|theta - 1/2|` (0.5 at `theta = 1/2`,
  about 0.95 at 0.2 / 0.8, 0.99 at 0.1 / 0.9; `tests/test_filippov_gd.py` measures it).
  So it leaves **up if `theta > 1/2`, down otherwise**, each sliding entry on its own
  (two entries of one unit may leave to opposite sides). Within `THETA_DECIDED` of 1/2
  the side depends on the step: gradient descent has no limit, the event is
  `"step_dependent"` (what decides it: the phase of gradient descent's chatter when the
  surface turns, i.e. the step), and the solver follows the more likely side.

**Repulsive surfaces.** In a sliding entry, `dm_lp/dt` is affine in `theta_lp` with slope
`-(eta_K / D) v_l r_p G_pp`, so `F^- - F^+ = (eta_K / D) v_l r_p G_pp`: the surface
attracts while `v_l r_p > 0`. When the head `v_l` (or `r_p`) changes sign, `F^-` and `F^+`
change sign together and the surface repels; `theta_lp` stays in `(0, 1)`, so the `theta`
events never see it. A separate distance, `v_l r_p`, watches it; a slide whose `r_p` and
`x_p = theta_lp r_p` reach 0 together (`theta` finite) turns repulsive the same way and is
caught as the entry whose distance fired. There the Filippov continuation is not unique
(staying, or leaving to either side, are all solutions): every such moment is an event,
`"repulsive"` where gradient descent's branch is definite and `"step_dependent"` where it
is not. The `repulsive=` option of `solve` overrides the rule: `"gd"` (default) is the
rule above, `"minus"` leaves every repulsive surface to `m_lp < 0` and settles entries one
at a time, `"plus"` to `m_lp > 0`, and `"stay"` keeps sliding on the repelling surface
(then repulsion is not watched and not recorded).

The mode changes are recorded in a fixed-size `Events` record (time, unit, atom, kind,
new mode) that lives inside the jitted driver and batches under `vmap`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Bool, Float

from ._integrate import controller, diffrax_solver, divergence_event_fn, saveat
from ._problem import TeacherStudent
from ._trajectory import EVENT_KINDS, Events, Status, diverged, status_from_result

if TYPE_CHECKING:
    from ._config import SolverConfig

#: Denominators below this are treated as zero when solving for `theta`.
_TINY = 1e-300
#: Slack of the sliding-exit event (in units of the residual `r`): far below any physical
#: residual, far above the rounding noise of a converged state.
SLIDE_SLACK = 1e-14
#: Slack of a free entry's event (in units of `m`): an entry leaving `m_lp = 0`
#: tangentially (after a slide's exit, `dm_lp/dt = 0` there) may first round to the wrong
#: side; far below any accuracy the solver is asked for.
FREE_SLACK = 1e-12
#: Locates relu events in time, within the step that brackets them. Bisection, not Newton:
#: the event condition is a minimum over entries, flat where a sliding entry's slack is
#: the minimum and kinked where two distances cross, which stalls Newton. `flip=True`: the
#: condition decreases through the root (positive before, <= 0 after), and a fixed flip
#: skips optimistix's bracket check (which would raise on vmapped lanes without an event).
ROOT_FINDER: optx.Bisection = optx.Bisection(rtol=1e-13, atol=1e-13, flip=True)  # type: ignore[call-arg]  # mypy reads equinox's ClassVar `norm` as a field


class Mode(NamedTuple):
    """Which side of `m_lp = 0` each entry is on (`side` in {0, 1}), or whether it slides."""

    side: Float[Array, "L P"]
    slide: Bool[Array, "L P"]


def _sliding_solve(G: Float[Array, "P P"], S: Bool[Array, "L P"], b: Float[Array, "L P"]) -> Float[Array, "L P"]:
    """`x` with `G_SS x_S = b_S` on each unit's sliding set `S`, and `x = b` elsewhere.

    Differentiable in both modes (`lax.custom_linear_solve`: the derivative of `x` is
    another solve with the same matrix, `dx = A^{-1} (db - dA x)`), although the
    elimination itself is a loop of traced length.
    """
    A = _masked_gram(G, S)

    def matvec(x):
        return jnp.einsum("lpq,lq->lp", A, x)

    def solve(_, rhs):
        return _eliminate(jax.lax.stop_gradient(A), S, rhs)

    return jax.lax.custom_linear_solve(matvec, b, solve, symmetric=True)


def _masked_gram(G: Float[Array, "P P"], S: Bool[Array, "L P"]) -> Float[Array, "L P P"]:
    """Each unit's system: the Gram matrix on its sliding entries, the identity elsewhere."""
    Sf = S.astype(G.dtype)
    P = G.shape[0]
    return G[None] * Sf[:, :, None] * Sf[:, None, :] + jnp.eye(P, dtype=G.dtype)[None] * (1 - Sf)[:, :, None]


def _eliminate(A: Float[Array, "L P P"], S: Bool[Array, "L P"], b: Float[Array, "L P"]) -> Float[Array, "L P"]:
    """Solve the masked systems `A x = b` (`_masked_gram`) by Gauss-Jordan elimination.

    No pivoting: the masked system is positive definite whenever the atoms are linearly
    independent, where elimination without pivoting is as stable as Cholesky. Only the sliding
    entries are pivots (a pivot off `S` is a no-op on that system), so a step of the flow costs
    as many elimination rounds as the largest sliding set, usually none.

    Written in jax.numpy, not with `jnp.linalg.solve`: jaxlib's batched LAPACK LU (`getrf`) on
    the CPU splits its batch over the XLA thread pool and waits for it, and two such calls that
    XLA runs at the same time (the one-sided flows `F^-`, `F^+` are independent) can take every
    pool thread and wait for each other for ever (it did at `L P >= 800` on two cores).
    """
    L, P = S.shape
    order = jnp.argsort(~S, axis=1, stable=True)  # each unit's sliding entries first
    counts = S.sum(axis=1)
    units = jnp.arange(L)

    def eliminate(j, carry):
        A, b = carry
        k = order[:, j]
        active = (j < counts)[:, None]
        pivot = A[units, k, k]
        row, bk = A[units, k, :] / pivot[:, None], b[units, k] / pivot
        factor = jnp.where(active & (jnp.arange(P)[None, :] != k[:, None]), A[units, :, k], 0.0)
        A = A - factor[:, :, None] * row[:, None, :]
        A = A.at[units, k, :].set(jnp.where(active, row, A[units, k, :]))
        b = b - factor * bk[:, None]
        b = b.at[units, k].set(jnp.where(active[:, 0], bk, b[units, k]))
        return A, b

    return jax.lax.fori_loop(0, jnp.max(counts, initial=0), eliminate, (A, b))[1]


def _sliding_theta(problem: TeacherStudent, r: Float[Array, " P"], mode: Mode) -> Float[Array, "L P"]:
    """`theta_lp` of the sliding entries (the other entries are returned as their side)."""
    G = problem.gram
    S = mode.slide.astype(G.dtype)
    rhs = -S * ((mode.side * (1 - S) * r[None, :]) @ G)
    x = _sliding_solve(G, mode.slide, rhs)
    safe_r = jnp.where(jnp.abs(r) > _TINY, r, 1.0)
    theta = jnp.where(jnp.abs(r) > _TINY, x / safe_r, 0.5)
    return jnp.where(mode.slide, theta, mode.side)


def _mode_residual(problem: TeacherStudent, m, v, mode: Mode):
    """Activations of the mode (relu on its fixed side, 0 on the surface) and `r = C (a - b)`."""
    activ = jnp.where(mode.slide, 0.0, mode.side * m)
    return activ, problem.residual(m, v, activ)


def mode_flow(problem: TeacherStudent, m, v, mode: Mode):
    """The smooth flow of one mode: `(dm/dt, dv/dt)` and the effective `sigma'` (`theta` where sliding)."""
    activ, r = _mode_residual(problem, m, v, mode)
    dsig = _sliding_theta(problem, r, mode)
    dm, dv = problem.velocities(v, activ, dsig, r)
    return jnp.where(mode.slide, 0.0, dm), dv, dsig


def _distance_parts(problem: TeacherStudent, m, v, mode: Mode):
    """The three ways out of a mode, each positive while the entry stays in it.

    `free = (2 side - 1) m + FREE_SLACK` (a free entry reaching `m_lp = 0`; the slack
    keeps an entry that was just put on the surface, and leaves it tangentially, from
    reading as already past it, which would hide every later event); `exit =
    min(theta, 1 - theta) |r_p| + SLIDE_SLACK` (a sliding `theta` reaching 0 or 1: the
    weight `|r_p|` keeps it continuous where `theta = x / r_p` is 0/0 at a minimum, and
    the slack keeps rounding noise there from ending the slide); `repel = v_l r_p +
    SLIDE_SLACK` (a sliding surface turning repulsive). Also returns `theta` and `r`.
    """
    _, r = _mode_residual(problem, m, v, mode)
    theta = _sliding_theta(problem, r, mode)
    free = (2 * mode.side - 1) * m + FREE_SLACK
    exit_ = jnp.minimum(theta, 1 - theta) * jnp.abs(r)[None, :] + SLIDE_SLACK
    repel = v[:, None] * r[None, :] + SLIDE_SLACK
    return free, exit_, repel, theta, r


def event_distances(problem: TeacherStudent, m, v, mode: Mode, watch_repulsion=True) -> Float[Array, "L P"]:
    """Positive while every entry stays in its mode; the first zero is an event."""
    free, exit_, repel, _, _ = _distance_parts(problem, m, v, mode)
    sliding = jnp.where(watch_repulsion, jnp.minimum(exit_, repel), exit_)
    return jnp.where(mode.slide, sliding, free)


def event_condition(problem: TeacherStudent, m, v, mode: Mode, watch_repulsion=True) -> Float[Array, ""]:
    """The single event condition of a segment: the smallest distance over all entries.

    It is continuous, and smooth except where two distances tie; its first zero is the
    first entry to leave its mode (the root finder works within the step that brackets it).
    """
    return jnp.min(event_distances(problem, m, v, mode, watch_repulsion))


def _normal_velocities(problem, m, v, mode, l, p):
    """`F^-` and `F^+`: `dm_lp/dt` with entry `(l, p)` free on the side `sigma' = 0` / `= 1`."""
    off = mode.slide.at[l, p].set(False)
    f_minus = mode_flow(problem, m, v, Mode(mode.side.at[l, p].set(0.0), off))[0][l, p]
    f_plus = mode_flow(problem, m, v, Mode(mode.side.at[l, p].set(1.0), off))[0][l, p]
    return f_minus, f_plus


# --- the record of mode changes -------------------------------------------------------------

CROSS, SLIDE, EXIT, REPULSIVE, STEP_DEPENDENT = range(len(EVENT_KINDS))
_NO_EVENT = -1
#: The `repulsive=` branches of `solve`, by code: `"gd"` (gradient descent's own branch, the
#: default) or an explicit side for every repulsive moment.
REPULSIVE_BRANCHES = ("minus", "plus", "stay", "gd")
MINUS, PLUS, STAY, GD = range(len(REPULSIVE_BRANCHES))


def _record(events: Events, t, l, p, kind, to) -> Events:
    """Append one row (dropped past the record's size; `count` still counts it)."""
    i = jnp.where(kind == _NO_EVENT, events.t.shape[0], events.count)

    def put(a, x):
        return a.at[i].set(jnp.asarray(x, a.dtype), mode="drop")

    return Events(
        put(events.t, t),
        put(events.unit, l),
        put(events.atom, p),
        put(events.kind, kind),
        put(events.to, to),
        events.count + (kind != _NO_EVENT).astype(events.count.dtype),
    )


# --- choosing the next mode -------------------------------------------------------------------

#: An entry within this distance of its boundary at an event is resolved with it.
EVENT_TOL = 1e-9
#: A sliding entry exits when `theta` is within this of 0 or 1 (and its distance is ~0).
THETA_TOL = 1e-8
#: Where a sliding surface turns repulsive with `|theta - 1/2| >= THETA_DECIDED - 1/2`,
#: gradient descent leaves to its majority side for at least 95% of step sizes (module
#: docstring): the `"gd"` branch is recorded as `"repulsive"`; closer to 1/2 the side
#: depends on the step and the event is `"step_dependent"`.
THETA_DECIDED = 0.8


def _settle(problem, m, v, mode: Mode, events: Events, t, l, p, branch):
    """Put entry `(l, p)` on the surface and choose its next mode (module table).

    `branch` indexes `REPULSIVE_BRANCHES` (traced: switching it does not recompile).
    """
    m = m.at[l, p].set(0.0)
    was_sliding, old_side = mode.slide[l, p], mode.side[l, p]
    _, r = _mode_residual(problem, m, v, mode)
    theta = _sliding_theta(problem, r, mode)[l, p]
    f_minus, f_plus = _normal_velocities(problem, m, v, mode, l, p)
    branch = jnp.asarray(branch)
    gd = branch == GD
    stay = branch == STAY
    # An explicit branch's side; "gd" from a point on the surface moves by F^- (relu'(0) = 0).
    branch_side = jnp.where(branch == PLUS, 1.0, 0.0)
    # A free entry at the surface.
    attractive = (f_minus >= 0) & (f_plus <= 0)
    repulsive_point = (f_minus < 0) & (f_plus > 0)
    cross_side = jnp.where((f_minus > 0) & (f_plus > 0), 1.0, jnp.where((f_minus < 0) & (f_plus < 0), 0.0, old_side))
    free_side = jnp.where(repulsive_point, branch_side, cross_side)
    free_slide = attractive | (repulsive_point & stay)
    free_kind = jnp.where(
        repulsive_point, REPULSIVE, jnp.where(attractive, SLIDE, jnp.where(free_side != old_side, CROSS, _NO_EVENT))
    )
    # A sliding entry that reached a boundary: theta -> 0, 1 (exit), else v_l r_p -> 0
    # (through v_l -> 0, or r_p -> 0 with theta = x_p / r_p finite): the surface repels.
    # Gradient descent leaves to the side it spent the larger share `theta` of its steps on
    # (module docstring); near theta = 1/2 that depends on the step.
    repelled = ~stay & (jnp.minimum(theta, 1 - theta) > THETA_TOL)
    gd_side = jnp.where(theta > 0.5, 1.0, 0.0)
    undecided = gd & (jnp.abs(theta - 0.5) < THETA_DECIDED - 0.5)
    slide_side = jnp.where(repelled, jnp.where(gd, gd_side, branch_side), jnp.where(theta > 0.5, 1.0, 0.0))
    slide_kind = jnp.where(repelled, jnp.where(undecided, STEP_DEPENDENT, REPULSIVE), EXIT)

    new_slide = jnp.where(was_sliding, False, free_slide)
    new_side = jnp.where(was_sliding, slide_side, free_side)
    kind = jnp.where(was_sliding, slide_kind, free_kind)
    to = jnp.where(new_slide, 2, new_side.astype(int))
    events = _record(events, t, l, p, kind, to)
    return m, Mode(mode.side.at[l, p].set(new_side), mode.slide.at[l, p].set(new_slide)), events


def _settle_all(problem, m, v, mode, events, t, pending, branch):
    """`_settle` the `pending` entries one at a time (a loop as long as their number)."""
    P = m.shape[1]

    def body(carry):
        m, mode, events, pending = carry
        i = jnp.argmax(pending.reshape(-1))
        l, p = i // P, i % P
        m, mode, events = _settle(problem, m, v, mode, events, t, l, p, branch)
        return m, mode, events, pending.at[l, p].set(False)

    m, mode, events, _ = jax.lax.while_loop(lambda c: jnp.any(c[3]), body, (m, mode, events, pending))
    return m, mode, events


#: Iterations of the step-free gradient-descent map that decide a joint start (module
#: docstring); its second half tells chattering entries from those that keep a side.
GD_MAP_STEPS = 512


def _gd_map(problem, m, v, mode: Mode, joint: Bool[Array, "L P"]):
    """Gradient descent's own choice for the entries `joint`, on their surfaces together.

    Iterates the step-free map `y <- y + f(1[y > 0])` (module docstring) from `y = 0` on
    the entries `joint` and the sliding ones, with the residual frozen (relu(0) = 0, so it
    does not see them). An entry on both sides of 0 in the second half of the run chatters
    (it slides); one on a single side keeps it (it escapes, or rests there, e.g. in a unit
    whose every entry is 0, which gradient descent never moves). Returns `(slides, up)`.
    """
    surface = joint | mode.slide
    _, r = _mode_residual(problem, m, v, Mode(mode.side, surface))
    scale = -(problem.kernel_lr_multiplier / problem.patch_dim) * v[:, None]

    def step(_, carry):
        y, above, below = carry
        s = jnp.where(surface, (y > 0).astype(m.dtype), mode.side)
        y = y + jnp.where(surface, scale * ((s * r[None, :]) @ problem.gram), 0.0)
        return y, above | (y > 0), below | (y <= 0)

    half = GD_MAP_STEPS // 2
    no = jnp.zeros(m.shape, dtype=bool)
    y, _, _ = jax.lax.fori_loop(0, half, step, (jnp.zeros_like(m), no, no))
    _, above, below = jax.lax.fori_loop(0, half, step, (y, no, no))
    return joint & above & below, above & ~below


def _settle_joint(problem, m, v, mode: Mode, events: Events, t, joint):
    """Put the entries `joint` on their surfaces and give them gradient descent's joint choice.

    Each is recorded as a `"slide"`, a `"cross"` (a new side), or `"repulsive"` where,
    the others in their new modes, its own surface repels (`F^- < 0 < F^+`): the Filippov
    continuation is not unique there, gradient descent's from the surface is.
    """
    m = jnp.where(joint, 0.0, m)
    slides, up = _gd_map(problem, m, v, mode, joint)
    new = Mode(
        jnp.where(joint & ~slides, up.astype(m.dtype), mode.side),
        jnp.where(joint, slides, mode.slide),
    )
    P = m.shape[1]

    def body(carry):
        events, pending = carry
        i = jnp.argmax(pending.reshape(-1))
        l, p = i // P, i % P
        f_minus, f_plus = _normal_velocities(problem, m, v, new, l, p)
        slides = new.slide[l, p]
        kind = jnp.where(
            slides,
            SLIDE,
            jnp.where(
                (f_minus < 0) & (f_plus > 0), REPULSIVE, jnp.where(new.side[l, p] != mode.side[l, p], CROSS, _NO_EVENT)
            ),
        )
        to = jnp.where(slides, 2, new.side[l, p].astype(int))
        return _record(events, t, l, p, kind, to), pending.at[l, p].set(False)

    events, _ = jax.lax.while_loop(lambda c: jnp.any(c[1]), body, (events, joint))
    return m, new, events


def resolve_mode(
    problem: TeacherStudent,
    m,
    v,
    mode: Mode,
    at_surface: Bool[Array, "L P"],
    events: Events | None = None,
    t=0.0,
    branch=0,
):
    """Choose the next mode for the entries `at_surface` (processed one at a time).

    Returns the state with those entries set exactly to 0, the new mode and the event
    record. A new mode can push a neighbouring sliding entry's `theta` out of `[0, 1]`;
    such entries are re-decided until none is left (at most `L P` rounds).
    """
    record = Events.empty(0) if events is None else events
    # Free entries of one unit that reach their surfaces together: gradient descent's joint
    # choice (the "gd" branch); one at a time otherwise.
    free = at_surface & ~mode.slide
    joint = (jnp.asarray(branch) == GD) & free & (free.sum(axis=1, keepdims=True) >= 2)
    m, mode, events = jax.lax.cond(
        jnp.any(joint),
        lambda: _settle_joint(problem, m, v, mode, record, t, joint),
        lambda: (m, mode, record),
    )
    m, mode, events = _settle_all(problem, m, v, mode, events, t, at_surface & ~joint, branch)

    def outside(mode):
        theta = mode_flow(problem, m, v, mode)[2]
        return mode.slide & ((theta < 0) | (theta > 1))

    def rescan(carry):
        m, mode, events, k = carry
        m, mode, events = _settle_all(problem, m, v, mode, events, t, outside(mode), branch)
        return m, mode, events, k + 1

    m, mode, events, _ = jax.lax.while_loop(
        lambda c: jnp.any(outside(c[1])) & (c[3] < m.size), rescan, (m, mode, events, jnp.asarray(0))
    )
    return m, mode, events


def pending_entries(problem: TeacherStudent, m, v, mode: Mode, fired, watch_repulsion=True) -> Bool[Array, "L P"]:
    """The entries to resolve after a segment that ended at `(m, v)`.

    Every entry on the wrong side of its mode (a free entry past `m_lp = 0`, a sliding
    `theta` outside `[0, 1]`), every entry within `EVENT_TOL` of its boundary and moving
    towards it (several entries reaching it within one step), a sliding entry whose head
    `v_l` reached 0, and, if the event `fired`, the entry with the smallest distance (so
    that an event is never lost to a root find that stopped short; this is also how a
    slide whose `r_p` and `x_p` reach 0 together, turning the surface repulsive, is seen).
    """
    free, exit_, repel, theta, r = _distance_parts(problem, m, v, mode)
    dm = mode_flow(problem, m, v, mode)[0]
    approaching = (2 * mode.side - 1) * dm < 0
    free_hit = (free < 0) | ((free <= EVENT_TOL) & approaching)
    exit_hit = (jnp.minimum(theta, 1 - theta) <= THETA_TOL) & (exit_ <= EVENT_TOL)
    repel_hit = watch_repulsion & (v[:, None] * r[None, :] <= EVENT_TOL * jnp.abs(r)[None, :])
    hit = jnp.where(mode.slide, exit_hit | repel_hit, free_hit)
    dist = event_distances(problem, m, v, mode, watch_repulsion).reshape(-1)
    first = (jnp.arange(dist.size) == jnp.argmin(dist)).reshape(m.shape) & fired
    return hit | first


def initial_mode(problem: TeacherStudent, m, v, events: Events | None = None, t=0.0, branch=0):
    """The mode at the initial state: the sign of `m`, and `resolve_mode` where `m == 0`."""
    mode = Mode(side=(m > 0).astype(m.dtype), slide=jnp.zeros(m.shape, dtype=bool))
    return resolve_mode(problem, m, v, mode, m == 0, events, t, branch)


# --- the hybrid driver: one diffrax solve per mode, events between them ------------------


def _after_segment(problem, m, v, mode, fired, watch, events, t, branch):
    hit = pending_entries(problem, m, v, mode, fired, watch)
    return resolve_mode(problem, m, v, mode, hit, events, t, branch)


def _discrete(resolve, problem, m, v, *args):
    """`resolve(problem, m, v, *args) -> (m, mode, events)`, differentiable in `m`, `v`, `problem`.

    The choice of mode is discrete: it is made on stop-gradient copies (its loops need no
    derivative). The entries it puts on their surfaces are exactly 0 after it whatever the
    parameters (their event times carry the dependence, through diffrax's implicit
    differentiation of the root find), so they get a zero derivative; the rest keep `m`'s.
    """
    m_res, mode, events = resolve(*jax.lax.stop_gradient((problem, m, v)), *args)
    return jnp.where(m_res == 0, 0.0, m), mode, events


def _mode_vector_field(t, y, args):
    problem, mode = args
    m, v = y
    dm, dv, _ = mode_flow(problem, m, v, mode)
    return dm, dv


def _mode_vector_field_watched(t, y, args):
    return _mode_vector_field(t, y, args[:2])


def _mode_event_condition(t, y, args, **kwargs):
    # One scalar condition (bisection needs one): the smallest distance, or -1 once the
    # state diverges.
    problem, mode, watch = args
    m, v = y
    return jnp.where(divergence_event_fn(t, y, args), -1.0, event_condition(problem, m, v, mode, watch))


MODE_EVENT = diffrax.Event(_mode_event_condition, ROOT_FINDER, direction=False)


def integrate_filippov(problem, m0, v0, t0, t1, ts, config: SolverConfig, repulsive="minus"):
    """The Filippov solution from `(m0, v0)`: smooth segments per mode, `resolve_mode` between.

    Returns `(m, v, status, num_steps, num_segments, t_end, events)` with `m`, `v` at
    `ts` and `events` the `Events` record (room for `config.max_events`). `config` gives
    the method and tolerances of each segment, `max_steps` per segment and the most
    segments (`max_segments`). `repulsive` names the branch taken where a surface repels
    (module docstring): a name, or its index in `REPULSIVE_BRANCHES` (may be traced).
    Traceable and reverse-differentiable in `m0`, `v0` and the problem's arrays (a bounded,
    checkpointed loop over segments, one compiled segment whatever `L P`; event times are
    differentiated implicitly by diffrax).
    """
    L, P = m0.shape
    T = ts.shape[0]
    branch = jnp.asarray(REPULSIVE_BRANCHES.index(repulsive) if isinstance(repulsive, str) else repulsive)
    watch = branch != STAY
    solver = diffrax_solver(config)
    step_control = controller(config)
    m0, mode0, events0 = _discrete(initial_mode, problem, m0, v0, Events.empty(config.max_events), t0, branch)

    def segment(carry):
        t, m, v, mode, events, out_m, out_v, saved, status, nsteps, nseg = carry
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_mode_vector_field_watched),
            solver,
            t,
            t1,
            config.dt0,
            (m, v),
            args=(problem, mode, watch),
            saveat=saveat(jnp.clip(ts, t, t1)),
            stepsize_controller=step_control,
            max_steps=config.max_steps,
            event=MODE_EVENT,
            throw=False,
        )
        (ms, vs), (m_end, v_end) = sol.ys
        t_end, m_end, v_end = sol.ts[1][0], m_end[0], v_end[0]
        new = ~saved & (ts <= t_end)
        out_m = jnp.where(new[:, None, None], ms, out_m)
        out_v = jnp.where(new[:, None], vs, out_v)
        fired = sol.event_mask
        m_next, mode_next, events = _discrete(
            _after_segment, problem, m_end, v_end, mode, fired, watch, events, t_end, branch
        )
        # An event stops the step at the located time even if the root find gave up.
        result = diffrax.RESULTS.where(fired, diffrax.RESULTS.event_occurred, sol.result)
        status = status_from_result(result, diverged(m_end, v_end))
        return (
            t_end,
            m_next,
            v_end,
            mode_next,
            events,
            out_m,
            out_v,
            saved | new,
            status,
            nsteps + sol.stats["num_steps"],
            nseg + 1,
        )

    def unfinished(carry):
        t, *_, status, _, nseg = carry
        return (t < t1) & (status == Status.SUCCESS) & (nseg < config.max_segments)

    init = (
        t0,
        m0,
        v0,
        mode0,
        events0,
        jnp.full((T, L, P), jnp.nan, m0.dtype),
        jnp.full((T, L), jnp.nan, v0.dtype),
        jnp.zeros(T, dtype=bool),
        jnp.asarray(Status.SUCCESS),
        jnp.asarray(0),
        jnp.asarray(0),
    )
    # Bounded and checkpointed (as diffrax runs its own step loop), so reverse mode works.
    t, _, _, _, events, out_m, out_v, _, status, nsteps, nseg = eqx.internal.while_loop(
        unfinished, segment, init, max_steps=config.max_segments, kind="checkpointed"
    )
    status = jnp.where((status == Status.SUCCESS) & (t < t1), Status.MAX_SEGMENTS, status)
    return out_m, out_v, status, nsteps, nseg, t, events
