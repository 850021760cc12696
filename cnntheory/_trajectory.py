r"""The result of a solve: `Trajectory`, its status codes and the error a failed solve raises.

Conventions follow `scipy.integrate.solve_ivp`: `t`, the state at the saved times,
`status` (0 is success) and a `message` saying what happened and where.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

#: Status codes of a `Trajectory`.
SUCCESS, MAX_STEPS, MAX_SEGMENTS, DIVERGED, FAILED = 0, 1, 2, 3, 4
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
      3 diverged, 4 other solver failure; the `message` property says which, and where.
    - `num_steps`: accepted + rejected steps; `num_segments`: smooth pieces of a relu
      (Filippov) solve, 1 otherwise; `t_end`: the time the solver reached.
    - `method`: the solver's name; `fixed_message`: a message set by whoever assembled
      the trajectory (e.g. from several solves), else `None` and `message` is derived from
      `status` and `t_end`; `max_steps`, `max_segments`, `detail`: the limits of the solve
      and the solver's own words, for that message.

    `status` and `t_end` are arrays, so a `Trajectory` can be returned from a function
    under `jax.jit` / `jax.vmap`; `message` and `success` read their values and therefore
    need concrete (not traced) arrays.
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
    fixed_message: str | None = eqx.field(static=True, default=None)
    max_steps: int | None = eqx.field(static=True, default=None)
    max_segments: int | None = eqx.field(static=True, default=None)
    detail: str = eqx.field(static=True, default="")

    @property
    def message(self) -> str:
        """What happened and where (scipy's `message`), derived from `status` and `t_end`."""
        if self.fixed_message is not None:
            return self.fixed_message
        return status_message(self.status, self.t_end, self.method, None, self.max_steps, self.max_segments, self.detail)

    @property
    def success(self) -> bool:
        """True when every solve reached `t1`."""
        return bool((np.asarray(self.status) == SUCCESS).all())

    @property
    def y(self):
        """`(m, v)`, the state as a tuple (scipy's `y`)."""
        return self.m, self.v


def diverged(*state) -> Array:
    """True when any component of the state is non-finite or beyond `DIVERGENCE_BOUND`."""
    big = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in state]))
    return ~(jnp.isfinite(big) & (big < DIVERGENCE_BOUND))


def status_from_result(result, is_diverged) -> Array:
    """Map a diffrax `RESULTS` value (and a divergence flag) to a `Trajectory` status code."""
    R = diffrax.RESULTS
    ok = (result == R.successful) | (result == R.event_occurred)
    return jnp.where(
        is_diverged,
        DIVERGED,
        jnp.where(ok, SUCCESS, jnp.where(result == R.max_steps_reached, MAX_STEPS, FAILED)),
    )


def status_message(status, t_end, method, t1, max_steps, max_segments, detail="") -> str:
    """The human-readable message for (possibly batched) status codes: what failed, and where.

    `t1` (the end of the interval) may be `None` when it is not known.
    """
    status = np.atleast_1d(np.asarray(status))
    bad = np.flatnonzero(status != SUCCESS)
    if bad.size == 0:
        return "The solver successfully reached the end of the integration interval."
    i = bad[0]
    where = f" (first failing batch element {i}, {bad.size} of {status.size} failed)" if status.size > 1 else ""
    te = float(np.atleast_1d(np.asarray(t_end))[i])
    before = "the end of the interval" if t1 is None else f"t1={float(t1):.6g}"
    reasons = {
        MAX_STEPS: f"max_steps={max_steps} reached at t={te:.6g} before {before}: raise max_steps or loosen rtol/atol",
        MAX_SEGMENTS: f"more than max_segments={max_segments} relu mode switches before t={te:.6g}: the flow chatters on a surface m_lp = 0; raise max_segments",
        DIVERGED: f"the solution diverged (non-finite or |state| > {DIVERGENCE_BOUND:g}) near t={te:.6g}"
        + ("; the Euler step dt0 is too large for this problem: reduce dt0" if method == "euler" else ""),
        FAILED: f"the solver '{method}' failed at t={te:.6g}{': ' + detail if detail else ''}",
    }
    return reasons[int(status[i])] + where
