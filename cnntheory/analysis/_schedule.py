r"""Piecewise problems: the data or the learning rates change at given times.

A `Schedule` is a list of problems and the times at which each takes over:
problem `i` drives the flow on `[times[i], times[i+1])`, the last one up to `t1`. The
state is continuous across a switch, the loss is not (it is the new problem's loss):
saved values at a switch time belong to the new segment. Switching the moment matrix
`C` is a change of data mixture (Dirichlet `alpha`, atoms revealed or removed), switching
`kernel_lr_multiplier`/`head_lr_multiplier` a learning-rate schedule. Problems must share `L`, `P` and the
student activation; the atoms (hence `G`) may change.

The "live ablation" of Lovig (2025) in this model: `restrict_atoms(problem, [0])` (only the first
shape present) until `t_s`, then `problem` (both shapes).
"""

from __future__ import annotations

import itertools

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float
from typing_extensions import Unpack

from .._config import SolverConfig, SolverOptions, resolve_config
from .._data import PatchMixture
from .._problem import TeacherStudent
from .._solve import solve
from .._trajectory import Events, Status, Trajectory, checked
from .._typing import AnyArray
from .._validate import require


class Schedule(eqx.Module):
    """`problems[i]` rules from `times[i]` (increasing; `times[0]` is the start time)."""

    times: tuple[float, ...]
    problems: tuple[TeacherStudent, ...]

    def __init__(self, times, problems):
        times = tuple(float(t) for t in np.atleast_1d(times))
        problems = tuple(problems)
        require(
            len(times) == len(problems) >= 1,
            f"need one start time per problem, got {len(times)} times and {len(problems)} problems",
        )
        require(all(b > a for a, b in itertools.pairwise(times)), f"times must be strictly increasing, got {times}")
        require(
            all(isinstance(p, TeacherStudent) for p in problems), "every entry of problems must be a TeacherStudent"
        )
        self.times = times
        self.problems = problems

    def problem_at(self, t: float) -> TeacherStudent:
        """The problem in force at time `t`."""
        return self.problems[max(int(np.searchsorted(self.times, t, side="right")) - 1, 0)]


def restrict_atoms(problem: TeacherStudent, present) -> TeacherStudent:
    """`problem` with only the atoms `present` in the data: the Dirichlet-multinomial moments
    of `alpha[present]` (same pooling and patch count), embedded in `P x P` with zeros for
    the absent atoms. The teacher and the student are unchanged."""
    present = np.atleast_1d(np.asarray(present, int))
    P = problem.num_atoms
    require(
        present.size >= 1 and np.all((present >= 0) & (present < P)),
        f"present must index atoms 0..{P - 1}, got {present}",
    )
    mix = problem.mixture
    sub = PatchMixture(mix.atoms[present], mix.alpha[present], mix.patches_per_side, mix.pooling)
    C = jnp.zeros((P, P)).at[np.ix_(present, present)].set(sub.moments)
    return problem.with_moments(C)


def solve_schedule(
    schedule: Schedule,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: float,
    *,
    ts=None,
    throw: bool = True,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> Trajectory:
    """Integrate the flow through the schedule: one `cnntheory.solve` per segment, chained.

    `ts` (default 101 points on `[times[0], t1]`) are the save times; the solver options
    (`config`, or its fields as keywords) are those of every `solve`. Returns one
    `Trajectory` (`num_steps`, `num_segments` summed; `status` the first failure, where the
    chain stops: the later saves are not reached). A failure raises `SolverError` unless
    `throw=False`, as in `cnntheory.solve`.
    """
    config = resolve_config(config, options, caller="solve_schedule")
    t0 = schedule.times[0]
    require(t1 > t0, f"t1 must exceed the schedule's start time {t0}, got {t1}")
    ts = np.linspace(t0, t1, 101) if ts is None else np.asarray(ts, float)
    bounds = [t for t in schedule.times if t < t1] + [float(t1)]
    m, v = jnp.asarray(m0, float), jnp.asarray(v0, float)
    parts, counts, status, nsteps, nseg, t_end, message = [], [], int(Status.SUCCESS), 0, 0, t0, ""
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        last = i == len(bounds) - 2
        mine = ts[(ts >= a) & ((ts < b) | (last & (ts <= b)))]
        seg_ts = np.concatenate([mine, [b]]) if (mine.size == 0 or mine[-1] < b) else mine
        traj = solve(schedule.problems[i], m, v, b, t0=a, ts=seg_ts, throw=False, config=config)
        parts.append(traj)
        counts.append(mine.size)
        nsteps, nseg, t_end, message = (
            nsteps + int(traj.num_steps),
            nseg + int(traj.num_segments),
            float(traj.t_end),
            traj.message,
        )
        if int(traj.status) != Status.SUCCESS:
            status = int(traj.status)
            break
        m, v = traj.m[-1], traj.v[-1]
    # After a failure the later segments are not solved: their saves are inf, as a solve's
    # unreached saves are.
    rest = ts.size - sum(counts)

    def cat(name, fill=None):
        got = [getattr(p, name)[:n] for p, n in zip(parts, counts, strict=True)]
        pad = jnp.full((rest, *got[0].shape[1:]), jnp.inf) if fill is None else fill
        return jnp.concatenate(got + [pad])

    return checked(
        Trajectory(
            t=cat("t", jnp.asarray(ts[ts.size - rest :], dtype=float)),
            m=cat("m"),
            v=cat("v"),
            loss=cat("loss"),
            status=jnp.asarray(status),
            num_steps=jnp.asarray(nsteps),
            num_segments=jnp.asarray(nseg),
            t_end=jnp.asarray(t_end),
            method=parts[-1].method,
            fixed_message=message,
            events=Events.concatenate([p.events for p in parts if p.events is not None]),
        ),
        throw,
    )


def simulate_schedule(schedule: Schedule, m0, v0, *, lr: float, key, t1: float, **simulate_kwargs):
    """Chain `cnntheory.simulate.simulate` runs through the schedule, one seed.

    `simulate` takes initial order parameters, not kernels, so each segment restarts from
    the previous segment's final measured `(m, v)`; the in-span kernels are then identical
    and the out-of-span part is redrawn, which changes no output (every patch is an atom).
    Each segment must last a whole number of steps `lr`. Returns the list of `Simulation`s
    (their `t` shifted to absolute time is `schedule.times[i] + sim.t`).
    """
    import jax

    from ..simulate import simulate

    mode = simulate_kwargs.get("mode", "population")
    if getattr(mode, "name", mode) != "population":
        require(
            all(bool(jnp.allclose(p.moments, p.mixture.moments)) for p in schedule.problems),
            "a sampling mode (fullbatch/online) draws images from each problem's mixture, so every problem's moments "
            "must be its mixture's; problems made with with_moments/restrict_atoms need mode='population'",
        )
    bounds = [t for t in schedule.times if t < t1] + [float(t1)]
    m, v = jnp.asarray(m0, float), jnp.asarray(v0, float)
    sims = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        steps = (b - a) / lr
        require(abs(steps - round(steps)) < 1e-9, f"segment [{a}, {b}] is not a whole number of steps lr={lr}")
        key, sub = jax.random.split(key)
        sim = simulate(
            schedule.problems[i], m, v, lr=lr, key=sub, steps=int(round(steps)), num_seeds=1, **simulate_kwargs
        )
        sims.append(sim)
        m, v = sim.m[0, -1], sim.v[0, -1]
    return sims
