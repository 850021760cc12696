r"""The result of a solve: `Trajectory`, the `Status` codes and the errors a failure raises.

Conventions follow `scipy.integrate.solve_ivp`: `t`, the state at the saved times,
`status` (0 is success) and a `message` saying what happened and where. `Status` is
shared with `cnntheory.simulate.Simulation`; every error the package raises for a failed
run derives from `CnnTheoryError`, and `raise_for_status` is the one place that turns a
failed status into one.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, ClassVar, TypeVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

#: A state component beyond this magnitude counts as divergence.
DIVERGENCE_BOUND = 1e100


class Status(enum.IntEnum):
    """The outcome of a solve or a simulation (cf. diffrax's `RESULTS`).

    Results store these codes as integer arrays (`Trajectory.status`,
    `Simulation.status`), so they work under `jax.jit` / `jax.vmap`; compare them with
    the members (`traj.status == Status.MAX_STEPS`). `describe` words a failure.

    - `SUCCESS` (0): the run reached its end.
    - `MAX_STEPS` (1): `max_steps` solver steps were taken first.
    - `MAX_SEGMENTS` (2): more than `max_segments` relu mode switches.
    - `DIVERGED` (3): the state or the loss became non-finite or huge.
    - `FAILED` (4): any other solver failure.
    """

    SUCCESS = 0
    MAX_STEPS = 1
    MAX_SEGMENTS = 2
    DIVERGED = 3
    FAILED = 4

    def describe(
        self,
        t_end: float = float("nan"),
        *,
        method: str = "",
        t1: float | None = None,
        max_steps: int | None = None,
        max_segments: int | None = None,
        detail: str = "",
    ) -> str:
        """What this outcome means for a solve that stopped at `t_end`, and the fix.

        `t1` (the end of the interval) may be `None` when it is not known; `method`,
        `max_steps`, `max_segments` and `detail` (the solver's own words) fill in the
        message where it names them.
        """
        te = float(t_end)
        before = "the end of the interval" if t1 is None else f"t1={float(t1):.6g}"
        if self is Status.SUCCESS:
            return "The solver successfully reached the end of the integration interval."
        if self is Status.MAX_STEPS:
            return f"max_steps={max_steps} reached at t={te:.6g} before {before}: raise max_steps or loosen rtol/atol"
        if self is Status.MAX_SEGMENTS:
            return (
                f"more than max_segments={max_segments} relu mode switches before t={te:.6g}: "
                "the flow chatters on a surface m_lp = 0; raise max_segments"
            )
        if self is Status.DIVERGED:
            if method == "euler":
                return (
                    f"gradient descent diverged near t={te:.6g}: the loss rose above its starting value, or the state "
                    f"became non-finite or |state| > {DIVERGENCE_BOUND:g}; the Euler step dt0 is too large for this "
                    "problem (small-step gradient descent never raises the loss): reduce dt0"
                )
            return f"the solution diverged (non-finite or |state| > {DIVERGENCE_BOUND:g}) near t={te:.6g}"
        return f"the solver '{method}' failed at t={te:.6g}{': ' + detail if detail else ''}"


class CnnTheoryError(RuntimeError):
    """The base of the errors raised for a failed run (a solve or a simulation).

    Bad arguments raise `ValueError` instead, before anything runs.
    """

    @classmethod
    def from_result(cls, result) -> CnnTheoryError:
        """The error for a failed `result` (its `message` says why and where)."""
        return cls(result.message)


class SolverError(CnnTheoryError):
    """A solve that did not reach `t1`; the message says why and where."""


class _Result(eqx.Module):
    """A result with integer `status` codes (`Status`) and a `message`.

    Subclasses name the error a failure raises (`exception`).
    """

    exception: ClassVar[type[CnnTheoryError]] = CnnTheoryError
    if TYPE_CHECKING:  # every subclass has a `status` field; not a field here (it would come first)
        status: Int[Array, "*B"]

    @property
    def success(self) -> bool:
        """True when every run (every batch element or seed) succeeded."""
        return bool((np.asarray(self.status) == Status.SUCCESS).all())

    def traced_message(self) -> str:
        """The message of a failure found only when a traced result is computed."""
        return f"{type(self).__name__} status is not SUCCESS; read its status to see why"

    def raise_for_status(self):
        """Raise `exception` (a `CnnTheoryError`) when the run failed; else return `self`.

        Under `jax.jit` / `jax.vmap` the status is not known yet: the check then goes into
        the caller's program (`eqx.error_if`, as `diffrax.diffeqsolve` does), fires when
        the result is computed and says `traced_message()`; the returned result carries it.
        """
        if isinstance(self.status, jax.core.Tracer):
            return eqx.error_if(self, self.status != Status.SUCCESS, self.traced_message())
        if not self.success:
            raise self.exception.from_result(self)
        return self


R = TypeVar("R", bound=_Result)


def checked(result: R, throw: bool) -> R:
    """`result.raise_for_status()` when `throw`, else `result`: what every entry point returns.

    The common case (concrete statuses, all `SUCCESS`) is answered without looking the
    method up: an equinox Module builds a bound method on every lookup (~20 us, a tenth of
    a small solve).
    """
    if not throw or (not isinstance(result.status, jax.core.Tracer) and not np.asarray(result.status).any()):
        return result
    return result.raise_for_status()


#: Names of the relu mode-change kinds recorded in `Events.kind` (index = code).
EVENT_KINDS = ("cross", "slide", "exit", "repulsive", "step_dependent")
#: Names of an entry's mode after an event, `Events.to` (index = code).
EVENT_TARGETS = ("m<0", "m>0", "slide")


class Events(eqx.Module):
    """The relu (Filippov) mode changes of a solve, as a fixed-size record.

    Row `i < count` is one change of entry `(unit[i], atom[i])` at time `t[i]`:
    `kind[i]` indexes `EVENT_KINDS` (`"cross"`: a free entry crossed `m_lp = 0`;
    `"slide"`: it started sliding on the surface; `"exit"`: a slide ended through
    `theta_lp = 0` or `1`; `"repulsive"`: the surface repels on both sides, the
    Filippov continuation is not unique and the `repulsive` branch of `solve` was taken;
    `"step_dependent"`: the same, where gradient descent's own side depends on its step
    size, so it has no small-step limit there) and
    `to[i]` indexes `EVENT_TARGETS` (the entry's new mode). Rows past `count` are
    padding (`kind = -1`); a `count` above the row number means the record overflowed
    (raise `max_events`). Smooth solves carry an empty record. A batched solve adds a
    leading batch axis to every field.
    """

    t: Float[Array, "*B E"]
    unit: Int[Array, "*B E"]
    atom: Int[Array, "*B E"]
    kind: Int[Array, "*B E"]
    to: Int[Array, "*B E"]
    count: Int[Array, "*B"]

    @classmethod
    def empty(cls, size: int = 0, batch: tuple[int, ...] = ()) -> Events:
        """A record with no events and room for `size` (batch shape `batch`)."""
        ints = jnp.full((*batch, size), -1, dtype=int)
        return cls(jnp.full((*batch, size), jnp.nan), ints, ints, ints, ints, jnp.zeros(batch, dtype=int))

    @classmethod
    def concatenate(cls, records: list[Events]) -> Events:
        """One record of the events of consecutive unbatched solves, in order."""
        rows = [e for r in records for e in r.to_list()]
        out = cls.empty(max(len(rows), 1))
        codes = [(t, u, a, EVENT_KINDS.index(k), EVENT_TARGETS.index(to)) for t, u, a, k, to in rows]
        if codes:
            t, unit, atom, kind, to = (np.array(c) for c in zip(*codes, strict=True))
            ints = [jnp.asarray(x, int) for x in (unit, atom, kind, to)]
            out = cls(jnp.asarray(t, float), ints[0], ints[1], ints[2], ints[3], jnp.asarray(len(rows)))
        return out

    def to_list(self, index: int | None = None) -> list[tuple[float, int, int, str, str]]:
        """The record as `(t, unit, atom, kind, to)` tuples; `index` picks a batch element."""
        fields = [np.asarray(x) for x in (self.t, self.unit, self.atom, self.kind, self.to, self.count)]
        if index is not None:
            fields = [x[index] for x in fields]
        t, unit, atom, kind, to, count = fields
        if t.ndim != 1:
            raise ValueError(f"this Events record is batched (shape {t.shape}): pass index= to pick one solve")
        n = min(int(count), t.shape[0])
        return [(float(t[i]), int(unit[i]), int(atom[i]), EVENT_KINDS[kind[i]], EVENT_TARGETS[to[i]]) for i in range(n)]

    def of_kind(self, name: str, index: int | None = None) -> list[tuple[float, int, int, str, str]]:
        """The events of one kind (`"cross"`, `"slide"`, `"exit"`, `"repulsive"` or `"step_dependent"`)."""
        if name not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {name!r}; choose one of {EVENT_KINDS}")
        return [e for e in self.to_list(index) if e[3] == name]


class Trajectory(_Result):
    """The solution of the flow at the saved times (cf. `scipy.integrate.solve_ivp`).

    Fields (a batched solve adds a leading batch axis `B` to all but `t`):

    - `t`: `(T,)` save times; `m`: `(T, L, P)` order parameters; `v`: `(T, L)` head;
      `loss`: `(T,)` population loss.
    - `status`: a `Status` code: 0 success, 1 `max_steps` reached, 2 too many relu mode
      switches, 3 diverged, 4 other solver failure; the `message` property says which,
      and where; `raise_for_status()` raises `SolverError` with that message.
    - `num_steps`: accepted + rejected steps; `num_segments`: smooth pieces of a relu
      (Filippov) solve, 1 otherwise; `t_end`: the time the solver reached.
    - `method`: the solver's name; `fixed_message`: a message set by whoever assembled
      the trajectory (e.g. from several solves), else `None` and `message` is derived from
      `status` and `t_end`; `max_steps`, `max_segments`, `detail`: the limits of the solve
      and the solver's own words, for that message.

    `status` and `t_end` are arrays, so a `Trajectory` can be returned from a function
    under `jax.jit` / `jax.vmap`; `message` and `success` read their values and therefore
    need concrete (not traced) arrays.

    - `events`: the relu mode changes (`Events`; `events.to_list()` reads them), empty
      for smooth solves.
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
    events: Events | None = None

    exception: ClassVar[type[CnnTheoryError]] = SolverError

    @property
    def message(self) -> str:
        """What happened and where (scipy's `message`), derived from `status` and `t_end`."""
        if self.fixed_message is not None:
            return self.fixed_message
        return status_message(
            self.status, self.t_end, self.method, None, self.max_steps, self.max_segments, self.detail
        )

    def traced_message(self) -> str:
        """The message of `raise_for_status` under `jax.jit` / `jax.vmap` (status unknown)."""
        return (
            f"cnntheory.solve ({self.method}) did not reach t1: status 1 max_steps={self.max_steps} reached, "
            f"2 more than max_segments={self.max_segments} relu mode switches, 3 diverged, 4 solver failure; "
            "pass throw=False to get the Trajectory and read its status"
        )

    @property
    def y(self):
        """`(m, v)`, the state as a tuple (scipy's `y`)."""
        return self.m, self.v

    @classmethod
    def stack(cls, trajectories: list[Trajectory]) -> Trajectory:
        """Unbatched solves at the same save times as one batched `Trajectory`.

        Every array but `t` gets a leading batch axis; the message lists each distinct
        message once.
        """
        first = trajectories[0]
        batched = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trajectories)
        message = "; ".join(dict.fromkeys(tr.message for tr in trajectories))
        return dataclasses.replace(batched, t=first.t, fixed_message=message)


def diverged(*state) -> Array:
    """True when any component of the state is non-finite or beyond `DIVERGENCE_BOUND`."""
    return out_of_bounds(jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in state])))


def out_of_bounds(magnitude: Array) -> Array:
    """The divergence test on a largest magnitude (elementwise): non-finite or beyond `DIVERGENCE_BOUND`."""
    return ~(jnp.isfinite(magnitude) & (magnitude < DIVERGENCE_BOUND))


def status_from_result(result, is_diverged) -> Array:
    """Map a diffrax `RESULTS` value (and a divergence flag) to a `Status` code."""
    R = diffrax.RESULTS
    ok = (result == R.successful) | (result == R.event_occurred)
    return jnp.where(
        is_diverged,
        Status.DIVERGED,
        jnp.where(ok, Status.SUCCESS, jnp.where(result == R.max_steps_reached, Status.MAX_STEPS, Status.FAILED)),
    )


def status_message(status, t_end, method, t1, max_steps, max_segments, detail="") -> str:
    """The message for (possibly batched) status codes: the first failure, and where.

    `t1` (the end of the interval) may be `None` when it is not known.
    """
    status = np.atleast_1d(np.asarray(status))
    bad = np.flatnonzero(status != Status.SUCCESS)
    if bad.size == 0:
        return Status.SUCCESS.describe()
    i = bad[0]
    where = f" (first failing batch element {i}, {bad.size} of {status.size} failed)" if status.size > 1 else ""
    te = np.atleast_1d(np.asarray(t_end))[i]
    reason = Status(int(status[i])).describe(
        te, method=method, t1=t1, max_steps=max_steps, max_segments=max_segments, detail=detail
    )
    return reason + where
