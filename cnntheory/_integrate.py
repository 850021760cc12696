r"""The diffrax machinery shared by every flow of the package: solvers, step control, saving.

`integrate` solves `dy/dt = field(t, y, args)` for a pytree state `y` with the diffrax
solver a `SolverConfig` names, saving at the times `ts` only (never dense output: diffrax allocates dense output
for `max_steps` steps up front) and stopping at divergence. It is the smooth path of
`cnntheory.solve` and the integrator of every other flow the package defines (moment
equations, Gaussian-patch order parameters); the relu (Filippov) driver builds its
segments from the same pieces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import diffrax
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import optimistix as optx
from jax import Array
from jax.flatten_util import ravel_pytree

from ._methods import DIFFRAX_SOLVERS
from ._trajectory import Status, diverged, out_of_bounds, status_from_result

if TYPE_CHECKING:
    from ._config import SolverConfig


def saveat(ts):
    """Save at `ts` and at the end of the solve (the second tells how far it got)."""
    return diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts), diffrax.SubSaveAt(t1=True)])


def controller(config: SolverConfig, norm=optx.rms_norm):
    """PID step control, or constant steps for `"euler"` (the gradient-descent map).

    `norm` measures the scaled error of a step (diffrax's default: the RMS over the state).
    """
    if config.method == "euler":
        return diffrax.ConstantStepSize()
    return diffrax.PIDController(rtol=config.rtol, atol=config.atol, dtmin=None, norm=norm)


def diffrax_solver(config: SolverConfig):
    """The diffrax solver `config.method` names."""
    return DIFFRAX_SOLVERS[config.method]()


#: The beginnings of diffrax's run-time checks of the times (`diffeqsolve`: the save times of
#: `SaveAt` / `SubSaveAt` sorted and within `[t0, t1]`, and `(t1 - t0) * dt0 >= 0`).
TIME_CHECKS = (
    "saveat.ts must be increasing or decreasing.",
    "saveat.ts must lie between t0 and t1.",
    "Must have (t1 - t0) * dt0 >= 0",
)


@contextlib.contextmanager
def times_checked(checked: bool = True) -> Iterator[None]:
    """Trace diffrax solves without their run-time checks of the times (when `checked`).

    Use it only around the tracing of a program whose times the caller checks itself, for
    every call that runs the program (the conditions of `TIME_CHECKS`: in Python when the
    values are concrete, else in the caller's program). diffrax makes those checks with
    `equinox.error_if` on traced times: each puts a host callback into the program, and
    JAX never writes a program with host callbacks to its persistent compilation cache
    (`cnntheory._cache`), so every new process would compile the solve again. Dropping them
    changes no number (an `error_if` whose condition is false returns its input). Every
    other run-time check stays.
    """
    if not checked:
        yield
        return
    original = eqxi.error_if

    def error_if(x, pred, msg, *args, **kwargs):
        return x if msg.startswith(TIME_CHECKS) else original(x, pred, msg, *args, **kwargs)

    eqxi.error_if = error_if  # diffrax looks `eqxi.error_if` up on each call: this reaches it
    try:
        yield
    finally:
        eqxi.error_if = original


def divergence_event_fn(t, y, args, **kwargs):
    """A diffrax event condition that fires when the state diverges."""
    return diverged(*y)


def integrate(field, y0, args, t0, t1, ts, config: SolverConfig):
    """Solve `dy/dt = field(t, y, args)` from `y0` at `t0` to `t1`, saved at `ts`, as
    `config` says (method, tolerances, first step, `max_steps`).

    Returns `(ys, status, num_steps, t_end)`: `ys` the state at `ts` (a pytree with a
    leading time axis), `status` a `Trajectory` status code, `t_end` where it stopped.
    Traceable: call it under `jit` / `vmap` / `grad`; every number may be traced.

    The solver steps one flat vector (the leaves of `y0` raveled together): for the small
    states of these flows the cost of a step is its number of operations, and a tuple
    state multiplies them. The error norm (RMS over all components) is the same either way.
    """
    flat0, unravel = ravel_pytree(y0)

    def flat_field(t, y, args):
        return ravel_pytree(field(t, unravel(y), args))[0]

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(flat_field),
        diffrax_solver(config),
        t0,
        t1,
        config.dt0,
        flat0,
        args=args,
        saveat=saveat(ts),
        stepsize_controller=controller(config),
        max_steps=config.max_steps,
        event=diffrax.Event(_flat_divergence_event_fn),
        throw=False,
    )
    ys, y_end = sol.ys
    status = status_from_result(sol.result, diverged(y_end[0]))
    return jax.vmap(unravel)(ys), status, sol.stats["num_steps"], sol.ts[1][0]


def _flat_divergence_event_fn(t, y, args, **kwargs):
    return diverged(y)


def lane_diverged(y: Array) -> Array:
    """`(B,)`: which lanes (last axis) of a stacked state `(n, B)` diverged (`diverged`)."""
    return out_of_bounds(jnp.max(jnp.abs(y), axis=0))


def lane_rms_max(scaled_error: Array) -> Array:
    """The error norm of a stack of lanes `(n, B)`: each lane's RMS, then the largest.

    A step accepted under it has every lane's error within what the lane's own solve
    (RMS norm) would accept.
    """
    return jnp.max(jnp.sqrt(jnp.mean(scaled_error**2, axis=0)))


def integrate_lanes(field, y0, args, t0, t1, ts, config: SolverConfig):
    """Solve `B` independent flows as one system with a shared step: `y0` is `(n, B)`, lane last.

    `field(t, y, args)` maps `(n, B)` to `(n, B)` lane by lane. The step size satisfies
    every lane's error control (`lane_rms_max`); a lane that diverges is frozen (its
    velocity set to 0) and the solve stops only when every lane has. Returns
    `(ys, status, num_steps, t_end)`: `ys` `(T, n, B)` at `ts`; `status` `(B,)`,
    `DIVERGED` for the lanes that diverged, else the solve's outcome; `num_steps` and
    `t_end` of the shared solve.
    """

    def guarded(t, y, args):
        return jnp.where(lane_diverged(y)[None, :], 0.0, field(t, y, args))

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(guarded),
        diffrax_solver(config),
        t0,
        t1,
        config.dt0,
        y0,
        args=args,
        saveat=saveat(ts),
        stepsize_controller=controller(config, norm=lane_rms_max),
        max_steps=config.max_steps,
        event=diffrax.Event(_all_lanes_diverged),
        throw=False,
    )
    ys, y_end = sol.ys
    status = jnp.where(lane_diverged(y_end[0]), Status.DIVERGED, status_from_result(sol.result, False))
    return ys, status, sol.stats["num_steps"], sol.ts[1][0]


def _all_lanes_diverged(t, y, args, **kwargs):
    return jnp.all(lane_diverged(y))
