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

The options of a solve are one `SolverConfig` (`cnntheory._config`), passed as `config=`
or built from the same names given as keywords. This module holds the entry points and their
checks; the result type is in `cnntheory._trajectory`, the shared diffrax pieces in
`cnntheory._integrate`, the relu hybrid driver in `cnntheory._filippov` and the scipy
backend in `cnntheory._scipy`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float
from typing_extensions import Unpack

from ._config import SolverConfig, SolverOptions, resolve_config
from ._filippov import REPULSIVE_BRANCHES, integrate_filippov
from ._integrate import integrate, integrate_lanes, times_checked
from ._methods import DIFFRAX_SOLVERS
from ._problem import TeacherStudent, flatten_state, unflatten_state
from ._scipy import scipy_solve
from ._trajectory import Events, Status, Trajectory, checked
from ._typing import AnyArray, Scalar, Times
from ._validate import check_real, check_times, is_concrete, is_traced, require

__all__ = [
    "solve",
    "solve_batch",
    "stack_problems",
]


def _smooth_vector_field(t, y, problem):
    return problem.rhs(*y)


def _custom_vector_field(t, y, problem, *, rhs):
    return rhs(*y)


def _solve_one(problem, m0, v0, t0, t1, ts, config, branch, *, hybrid, rhs):
    """One solve and the population loss along it, all inside the compiled function.

    Returns what the solve computed: `(m, v, loss, status, num_steps, t_end)`, and for relu
    `num_segments` and `events` after `num_steps`. A smooth solve's constant fields are no
    program outputs: each output costs microseconds on every call (`_assemble`).
    """
    if hybrid:
        m, v, status, nsteps, nseg, t_end, events = integrate_filippov(problem, m0, v0, t0, t1, ts, config, branch)
    else:
        field = _smooth_vector_field if rhs is None else functools.partial(_custom_vector_field, rhs=rhs)
        (m, v), status, nsteps, t_end = integrate(field, (m0, v0), problem, t0, t1, ts, config)
    loss = jax.vmap(problem.loss)(m, v)
    if config.method == "euler" and rhs is None:  # a custom rhs need not be the loss's gradient flow
        status, t_end = _euler_rise(loss, ts, status, t_end)
    if hybrid:
        return m, v, loss, status, nsteps, nseg, t_end, events
    return m, v, loss, status, nsteps, t_end


def _euler_rise(loss, ts, status, t_end):
    """`DIVERGED` (at the first such save) when gradient descent ended above its starting loss.

    Explicit Euler on the gradient flow is gradient descent with step `dt0`. A step small
    enough to approximate the flow (`dt0 < 2 / beta`, `beta` the Lipschitz constant of the
    preconditioned gradient along the path) lowers the loss at every step, and the saves
    between steps lie on segments along which the loss stays below the segment's starting
    value, so no save of such a run exceeds the loss at `t0`. A run that does is not
    small-step gradient descent, whatever its later values. The margin `1e-9` (relative)
    covers round-off. relu's kinks do not change this: across `m_lp = 0` the loss's
    derivatives in the other entries and the head stay continuous, and it does not depend
    on `m_lp < 0` at all.
    """
    rose = loss > loss[0] + 1e-9 * jnp.abs(loss[0]) + jnp.finfo(loss.dtype).tiny
    first = jnp.argmax(rose)
    bad = (status == Status.SUCCESS) & jnp.any(rose)
    return jnp.where(bad, Status.DIVERGED, status), jnp.where(bad, ts[first], t_end)


@functools.partial(jax.jit, static_argnames=("hybrid", "batch_problem", "batched", "rhs"))
def _compiled(problem, m0, v0, t0, t1, ts, config: SolverConfig, branch, *, hybrid, batch_problem, batched, rhs):
    """The whole solve, loss included, as one XLA program: `_solve_one`'s outputs (`_assemble`
    makes them a `Trajectory`).

    Every number (times, save times, the tolerances and `dt0` of `config`, the problem's
    arrays, the initial state, the relu branch index `branch`) is a traced argument:
    new values reuse the compiled program. The static fields of `config` (method, limits)
    fix the program. The callers check `t0`, `t1` and `ts` (`_checked_times`), so the
    program leaves out diffrax's own checks of them (`times_checked`): a program
    without host callbacks, which the persistent compilation cache can keep.
    """

    def one(problem, m0, v0):
        return _solve_one(problem, m0, v0, t0, t1, ts, config, branch, hybrid=hybrid, rhs=rhs)

    if batched:
        one = jax.vmap(one, in_axes=(0 if batch_problem else None, 0, 0))
    with times_checked():
        return one(problem, m0, v0)


@functools.cache
def _smooth_fields(batch: tuple[int, ...], weak: bool) -> tuple:
    """`num_segments` (1; weakly typed as `jnp.asarray(1)` when `weak`) and the leaves of the
    empty `events` of a smooth solve with batch shape `batch`.

    Made once and shared (jax arrays are immutable), eagerly even when the first call is
    traced (`ensure_compile_time_eval`: no tracer is kept).
    """
    with jax.ensure_compile_time_eval():
        events = Events.empty(0, batch)
        return (jnp.full(batch, 1) if weak else jnp.ones(batch, dtype=int)), jax.tree_util.tree_leaves(events)


@functools.cache
def _structure(method: str, max_steps: int, max_segments: int):
    """The pytree structure of a `Trajectory` with these static fields (the method and the limits)."""
    with jax.ensure_compile_time_eval():
        scalar, ints, vector = jnp.zeros(()), jnp.zeros((), dtype=int), jnp.zeros(1)
        template = Trajectory(
            t=vector,
            m=jnp.zeros((1, 1, 1)),
            v=jnp.zeros((1, 1)),
            loss=vector,
            status=ints,
            num_steps=ints,
            num_segments=ints,
            t_end=scalar,
            method=method,
            max_steps=max_steps,
            max_segments=max_segments,
            events=Events.empty(0),
        )
    return jax.tree_util.tree_structure(template)


def _assemble(ts, out: tuple, config: SolverConfig, batch: tuple[int, ...], shared: bool = False) -> Trajectory:
    """The `Trajectory` of a compiled solve's outputs `out` (`_solve_one`, or `_compiled_shared`'s
    when `shared`), saved at `ts`.

    A pytree unflatten with a cached structure: `Trajectory(...)` would run the dataclass
    `__init__` and its checks on every solve, about ten times slower.
    """
    if len(out) == 6:
        m, v, loss, status, nsteps, t_end = out
        nseg, event_leaves = _smooth_fields(batch, not shared)
    else:
        m, v, loss, status, nsteps, nseg, t_end, events = out
        event_leaves = jax.tree_util.tree_leaves(events)
    leaves = [ts, m, v, loss, status, nsteps, nseg, t_end, *event_leaves]
    return _structure(config.method, config.max_steps, config.max_segments).unflatten(leaves)


def _device_times(given, ts):
    """The save times as a jax array: the caller's own when it is a float64 one (no copy)."""
    if is_traced(ts):
        return ts
    if isinstance(given, jax.Array) and given.dtype == jnp.float64 and given.shape == ts.shape:
        return given
    return jnp.asarray(ts)


#: Lanes integrated as one system by `solve_batch(shared_steps=True)`; more go in chunks
#: of this size one after another (a larger stack falls out of cache; a stiff lane slows
#: only its chunk).
LANES_PER_STACK = 1024


def _lane_field(t, y, problem, *, batch_problem):
    """`problem.flat_rhs` on every lane (last axis) of a stacked state `(n, B)`.

    One problem: `TeacherStudent.lane_rhs` evaluates all lanes at once (the flow formula
    broadcasts over trailing lanes; ~20% faster than `vmap` here). Stacked problems: `vmap`.
    """
    if batch_problem:
        return jax.vmap(lambda p, y: p.flat_rhs(y), in_axes=(0, -1), out_axes=-1)(problem, y)
    return flatten_state(*problem.lane_rhs(*problem.unflatten(y)))


def _shared_stack(problem, m0, v0, t0, t1, ts, config, *, batch_problem):
    """One stack of lanes, one shared step: `(m, v, loss, status, num_steps, t_end)`, lanes first."""
    B, _, P = m0.shape
    y0 = flatten_state(jnp.moveaxis(m0, 0, -1), jnp.moveaxis(v0, 0, -1))  # (n, B): lanes last
    field = functools.partial(_lane_field, batch_problem=batch_problem)
    ys, status, nsteps, t_end = integrate_lanes(field, y0, problem, t0, t1, ts, config)
    unflatten = functools.partial(unflatten_state, num_atoms=P)
    m, v = jax.vmap(jax.vmap(unflatten))(jnp.moveaxis(ys, -1, 0))  # ys (T, n, B) -> (B, T, ...)
    loss = jax.vmap(lambda p, m, v: jax.vmap(p.loss)(m, v), in_axes=(0 if batch_problem else None, 0, 0))(problem, m, v)
    t_end = jnp.broadcast_to(t_end, (B,))
    if config.method == "euler":
        status, t_end = jax.vmap(_euler_rise, in_axes=(0, None, 0, 0))(loss, ts, status, t_end)
    return m, v, loss, status, jnp.broadcast_to(nsteps, (B,)), t_end


@functools.partial(jax.jit, static_argnames=("batch_problem",))
def _compiled_shared(problem, m0, v0, t0, t1, ts, config: SolverConfig, *, batch_problem):
    """`solve_batch(shared_steps=True)` as one XLA program: stacks of `LANES_PER_STACK`
    lanes, integrated one after another (`lax.map`): `(m, v, loss, status, num_steps, t_end)`
    (`_assemble` makes them a `Trajectory`); the times checked as for `_compiled`."""
    with times_checked():
        return _shared_program(problem, m0, v0, t0, t1, ts, config, batch_problem=batch_problem)


def _shared_program(problem, m0, v0, t0, t1, ts, config: SolverConfig, *, batch_problem):
    B = m0.shape[0]

    def stack(problem, m0, v0):
        return _shared_stack(problem, m0, v0, t0, t1, ts, config, batch_problem=batch_problem)

    if B <= LANES_PER_STACK:
        out = stack(problem, m0, v0)
    else:
        chunks = -(-B // LANES_PER_STACK)

        def split(x):  # pad with copies of the last lane, then (chunks, LANES_PER_STACK, ...)
            x = jnp.concatenate([x, jnp.repeat(x[-1:], chunks * LANES_PER_STACK - B, axis=0)])
            return x.reshape(chunks, LANES_PER_STACK, *x.shape[1:])

        problems = jax.tree.map(split, problem) if batch_problem else None
        parts = jax.lax.map(
            lambda a: stack(a[0] if batch_problem else problem, a[1], a[2]), (problems, split(m0), split(v0))
        )
        out = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:])[:B], parts)
    return out  # (m, v, loss, status, num_steps, t_end), lanes first


def _trajectory(ts, m, v, loss, status, nsteps, nseg, t_end, config: SolverConfig, events, detail="") -> Trajectory:
    return Trajectory(
        t=ts,
        m=m,
        v=v,
        loss=loss,
        status=status,
        num_steps=nsteps,
        num_segments=nseg,
        t_end=t_end,
        method=config.method,
        max_steps=config.max_steps,
        max_segments=config.max_segments,
        detail=detail,
        events=events,
    )


# --- public API ---------------------------------------------------------------------------


def _check_common(problem, t0, t1, ts):
    """Check the problem and the times (`check_times`) and return `(t0, t1, ts)`.

    The solver options are checked by `SolverConfig`.
    """
    if not isinstance(problem, TeacherStudent):
        require(False, f"problem must be a TeacherStudent, got {type(problem).__name__}")
    return check_times(t0, t1, ts)


def _check_state(name, x):
    """`check_real`: real numbers (no bool, complex), finite when concrete; cheap when good."""
    check_real(name, x)


def _check_branch(repulsive):
    """The relu branch where a surface repels, checked, as a traced index (no recompile)."""
    if repulsive not in REPULSIVE_BRANCHES:
        require(False, f"repulsive must be one of {REPULSIVE_BRANCHES}, got {repulsive!r}")
    return np.int32(REPULSIVE_BRANCHES.index(repulsive))


def _with_euler_steps(config, t0, t1):
    """Euler needs `(t1 - t0) / dt0` steps: raise `max_steps` to that when it is known."""
    if config.method == "euler" and is_concrete(t0, t1, config.dt0):
        steps = max(config.max_steps, math.ceil((t1 - t0) / float(config.dt0)) + 16)
        if steps != config.max_steps:
            return dataclasses.replace(config, max_steps=steps)
    return config


def _float_array(x):
    """`x` as a float64 array (without a copy or a dispatch when it already is one)."""
    return x if isinstance(x, jax.Array) and x.dtype == jnp.float64 else jnp.asarray(x, dtype=float)


def _prepare(caller, problem, t0, t1, ts, config, options, repulsive):
    """The checks and the `SolverConfig` shared by `solve` and `solve_batch`.

    Returns `(t0, t1, ts, config, branch, hybrid)`: `branch` the relu branch index and
    `hybrid` whether the Filippov scheme integrates (a relu student, any method but Euler).
    """
    t0, t1, ts = _check_common(problem, t0, t1, ts)
    config = _with_euler_steps(resolve_config(config, options, caller=caller), t0, t1)
    hybrid = not problem.sigma.smooth and config.method != "euler"
    return t0, t1, _checked_times(t0, t1, ts, config.dt0), config, _check_branch(repulsive), hybrid


def _checked_times(t0, t1, ts, dt0):
    """`ts`, with the checks `check_times` could not make (traced values) put into the caller's program.

    Concrete times are checked in Python already (and `dt0 > 0` by `SolverConfig`). Under
    `jit` / `vmap` / `grad` the same conditions (`t0 < t1`, `dt0 > 0`, `ts` sorted and
    within `[t0, t1]`: what diffrax checks, `times_checked`) become an `eqx.error_if` in the
    caller's program, outside the compiled solve, so that the solve is one program however
    it is called.
    """
    if not (is_traced(t0) or is_traced(t1) or is_traced(ts) or is_traced(dt0)):
        return ts
    ts = jnp.asarray(ts)
    bad = ~(t0 < t1) | jnp.any(ts[1:] < ts[:-1]) | jnp.any((ts < t0) | (ts > t1))
    if dt0 is not None:
        bad = bad | ~(dt0 > 0)
    return eqx.error_if(ts, bad, "need t0 < t1, dt0 > 0 and ts sorted in increasing order within [t0, t1]")


def solve(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: Scalar,
    *,
    ts: Times | None = None,
    t0: Scalar = 0.0,
    throw: bool = True,
    rhs: Callable | None = None,
    repulsive: str = "gd",
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> Trajectory:
    """Integrate the population gradient flow of `problem` from `(m0, v0)` to `t1`.

    **Arguments:**

    - `problem`: a `TeacherStudent`; `m0`: `(L, P)`; `v0`: `(L,)`.
    - `t1`, `t0`: the interval; `ts`: save times in `[t0, t1]` (default 101 equally
      spaced). Nothing else is stored.
    - `throw`: raise `SolverError` when the solve fails (else check `status`).
    - `rhs`: an alternative right-hand side `rhs(m, v) -> (dm/dt, dv/dt)` (e.g. generated
      by `cnntheory.symbolic.to_jax`) used instead of `problem.rhs`; smooth flows and
      `"euler"` only (relu's Filippov scheme integrates the problem's own mode flows).
    - `repulsive`: relu only, the branch where the Filippov continuation is not unique (a
      sliding surface turning repulsive, entries starting on repulsive surfaces):
      `"gd"` (default) follows gradient descent's own branch (several entries of a unit on
      their surfaces at once are decided jointly, by gradient descent's step-free map; a
      repelled sliding entry leaves to `m_lp > 0` if its sliding weight `theta > 1/2`, else
      to `m_lp < 0`), `"minus"` (leave to `m_lp < 0`, entries one at a time), `"plus"`
      (leave to `m_lp > 0`) or `"stay"` (keep sliding). Each such moment is an event of kind
      `"repulsive"`, or `"step_dependent"` where gradient descent's side depends on its step
      (`theta` near 1/2) and the `"gd"` branch took the more likely side.
    - `config`: the solver options as one `SolverConfig`: `method` (a diffrax solver
      name, `"euler"` with fixed step `dt0` — saves should be multiples of `dt0` for the
      exact gradient-descent map — or a scipy method), `rtol`, `atol`, `dt0`,
      `max_steps` (per smooth segment), `max_segments` (relu mode switches) and
      `max_events` (rows of the relu `events` record).
    - `**options`: the same fields as keywords instead (`solve(..., method="dopri8",
      rtol=1e-10)`); one that disagrees with a given `config` is a `ValueError`.

    Relu students are integrated as Filippov solutions (module docstring).
    `throw=True` is `Trajectory.raise_for_status()`.
    """
    given = ts
    t0, t1, ts, config, branch, hybrid = _prepare("solve", problem, t0, t1, ts, config, options, repulsive)
    _check_state("m0", m0)  # before the conversion to float, which would take bools and drop imaginary parts
    _check_state("v0", v0)
    m0, v0 = _float_array(m0), _float_array(v0)
    if not (m0.ndim == 2 and v0.shape == (m0.shape[0],) and m0.shape[1] == problem.mixture.atoms.shape[0]):
        P = problem.mixture.atoms.shape[0]
        require(m0.ndim == 2 and m0.shape[1] == P, f"m0 must have shape (L, P) with P = {P} atoms, got {m0.shape}")
        require(False, f"v0 must have shape (L,) = ({m0.shape[0]},), one head weight per unit of m0, got {v0.shape}")
    if rhs is not None:
        require(
            not hybrid,
            "a custom rhs cannot be combined with the Filippov integration of a relu student: use method='euler' or a smooth activation",
        )
        require(callable(rhs), f"rhs must be a callable rhs(m, v) -> (dm, dv), got {type(rhs).__name__}")
    if config.is_scipy:
        traj = _solve_scipy(problem, m0, v0, t0, t1, ts, config, hybrid, rhs, repulsive)
    else:
        ts = _device_times(given, ts)
        out = _compiled(
            problem, m0, v0, t0, t1, ts, config, branch, hybrid=hybrid, batch_problem=False, batched=False, rhs=rhs
        )
        traj = _assemble(ts, out, config, ())
    return checked(traj, throw)


def _solve_scipy(problem, m0, v0, t0, t1, ts, config, hybrid, rhs, repulsive) -> Trajectory:
    require(
        is_concrete(problem, m0, v0, t0, t1, ts, config),
        f"method={config.method!r} (scipy) needs concrete inputs: use a diffrax method under jit / vmap / grad",
    )
    m, v, status, nsteps, nseg, t_end, detail, events = scipy_solve(
        problem, m0, v0, t0, t1, ts, config, hybrid, rhs, repulsive=repulsive
    )
    loss = jax.vmap(problem.loss)(m, v)
    status, nsteps, nseg, t_end = (jnp.asarray(x) for x in (status, nsteps, nseg, t_end))
    return _trajectory(jnp.asarray(ts), m, v, loss, status, nsteps, nseg, t_end, config, events, detail)


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
    batch_problem: bool = False,
    shared_steps: bool = False,
    throw: bool = True,
    repulsive: str = "gd",
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> Trajectory:
    """Solve many initial conditions (and problems) at once.

    `m0` is `(B, L, P)`, `v0` is `(B, L)`. With `batch_problem=True`, `problem` carries a
    leading batch axis `B` on its arrays (build it with `stack_problems`). Diffrax methods
    only. The result has a leading batch axis on every field but `t`. `ts`, `t0`,
    `throw`, `repulsive`, `config` and the solver `**options` are as in `solve`.

    How the lanes are integrated:

    - `shared_steps=False` (default): `jit(vmap(solve))`, every lane with its own steps
      (and, for relu, its own events): lane `i` equals `solve` of lane `i` to round-off.
    - `shared_steps=True` (smooth flows and `"euler"`): the lanes, in stacks of
      `LANES_PER_STACK`, are one system with one step size chosen so that every lane's
      error meets `rtol`/`atol` (the error norm is the largest lane RMS). Each lane is at
      least as accurate as its own solve, but not equal to it bit for bit; `num_steps` is
      the stack's. On a CPU this is several times faster for hundreds of lanes (the
      vmapped loop carries and selects every lane's solver state at every step). A lane
      that diverges is frozen and marked `DIVERGED`; a stiff lane makes its whole stack
      take small steps, and a lane that exhausts `max_steps` fails its stack.
    """
    method = options.get("method", config.method if isinstance(config, SolverConfig) else "tsit5")
    # Before the config is built: an unknown method gets this message, not the config's.
    require(
        method in DIFFRAX_SOLVERS,
        f"solve_batch needs a diffrax method ({', '.join(sorted(DIFFRAX_SOLVERS))}), got {method!r}",
    )
    given = ts
    t0, t1, ts, config, branch, hybrid = _prepare("solve_batch", problem, t0, t1, ts, config, options, repulsive)
    _check_state("m0", m0)
    _check_state("v0", v0)
    ts = _device_times(given, ts)
    m0, v0 = _float_array(m0), _float_array(v0)
    require(
        m0.ndim == 3 and v0.ndim == 2 and m0.shape[0] == v0.shape[0],
        f"m0 must be (B, L, P) and v0 (B, L) with the same B, got {m0.shape} and {v0.shape}",
    )
    if batch_problem:
        sizes = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree_util.tree_leaves(problem)}
        require(
            sizes == {m0.shape[0]},
            f"batch_problem=True needs a stacked problem (ct.stack_problems) whose arrays all have leading axis B={m0.shape[0]}; "
            f"got leading sizes {sizes} (None: a scalar, i.e. an unstacked problem)",
        )
    first_problem = jax.tree_util.tree_map(lambda x: x[0], problem) if batch_problem else problem
    first_problem.check_state(m0[0], v0[0])
    if shared_steps:
        require(
            not hybrid,
            "shared_steps=True needs a smooth student activation (or method='euler'): relu lanes switch modes at their own events",
        )
        out = _compiled_shared(problem, m0, v0, t0, t1, ts, config, batch_problem=batch_problem)
    else:
        out = _compiled(
            problem,
            m0,
            v0,
            t0,
            t1,
            ts,
            config,
            branch,
            hybrid=hybrid,
            batch_problem=batch_problem,
            batched=True,
            rhs=None,
        )
    return checked(_assemble(ts, out, config, (m0.shape[0],), shared=shared_steps), throw)
