r"""Parameter sweeps: a grid of problems and initial conditions through batched solves,
sharded over every device JAX sees.

`sweep(problem_fn, grid, m0, v0, t1)` evaluates `problem_fn(**point)` at every point of
the Cartesian `grid` (name -> values), stacks the problems (`stack_problems`), and runs
`solve_batch(..., batch_problem=True)` in chunks whose batch axis is laid out over a
1-D device mesh (`NamedSharding(Mesh(devices, ("batch",)), PartitionSpec("batch"))`);
`jit` then runs each device's slice where it lives. Chunks are padded to one fixed size
(a multiple of the device count) so everything compiles once. On CPU, several host
devices can be forced with `XLA_FLAGS=--xla_force_host_platform_device_count=N` set
before JAX starts.
"""

from __future__ import annotations

import itertools
import json
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from typing_extensions import Unpack

from .._config import SolverConfig, SolverOptions, resolve_config
from .._distributed import gather_shares
from .._io import save_results
from .._solve import solve_batch, stack_problems
from .._trajectory import Status
from .._validate import require


class SweepResult(eqx.Module):
    """Labelled results: `coords` (name -> values, in grid order), `t` `(T,)`, and arrays of
    shape `grid_shape + (T, ...)`: `m`, `v`, `loss`; `status` of shape `grid_shape`."""

    coords: dict
    t: np.ndarray
    m: np.ndarray
    v: np.ndarray
    loss: np.ndarray
    status: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.coords.values())

    def final_loss(self) -> np.ndarray:
        return self.loss[..., -1]

    def map(self, fn) -> np.ndarray:
        """`fn(t, m, v, loss)` at every grid point, as an array of grid shape."""
        out = np.empty(self.shape)
        for idx in np.ndindex(*self.shape):
            out[idx] = fn(self.t, self.m[idx], self.v[idx], self.loss[idx])
        return out

    def save(self, out, stem: str = "sweep", *, params: dict | None = None, figure=None):
        """`<stem>.npz` (arrays + coords) and `<stem>.json` (coords, dims, params) via `save_results`."""
        arrays = {"t": self.t, "m": self.m, "v": self.v, "loss": self.loss, "status": self.status}
        arrays.update({f"coord_{k}": np.asarray(v) for k, v in self.coords.items()})
        meta = {
            "dims": list(self.coords) + ["t"],
            "coords": {k: np.asarray(v).tolist() for k, v in self.coords.items()},
            **(params or {}),
        }
        return save_results(out, stem, arrays=arrays, params=meta, figure=figure)

    @classmethod
    def load(cls, path) -> SweepResult:
        data = np.load(pathlib.Path(path))
        meta = json.loads(str(data["params"]))
        coords = {k: np.asarray(v) for k, v in meta["coords"].items()}
        return cls(coords, data["t"], data["m"], data["v"], data["loss"], data["status"])


def _initial(value, point):
    return jnp.asarray(value(**point) if callable(value) else value, dtype=float)


def _solve_points(points, problem_fn, m0, v0, t1, ts, chunk_size, devices, progress, config) -> dict[str, np.ndarray]:
    """`m`, `v`, `loss`, `status` at `points`, in chunks laid out over `devices`."""
    nd = len(devices)
    chunk = -(-min(chunk_size, len(points)) // nd) * nd
    sharding = NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))
    pieces = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        desc = "sweep" if jax.process_count() == 1 else f"sweep (process {jax.process_index()})"
        bar = tqdm(total=len(points), desc=desc, unit="point")
    for s in range(0, len(points), chunk):
        batch = points[s : s + chunk]
        padded = batch + [batch[-1]] * (chunk - len(batch))  # fixed shape: compile once
        problem = stack_problems([problem_fn(**p) for p in padded])
        m_init = jnp.stack([_initial(m0, p) for p in padded])
        v_init = jnp.stack([_initial(v0, p) for p in padded])
        problem, m_init, v_init = jax.device_put((problem, m_init, v_init), sharding)
        traj = solve_batch(problem, m_init, v_init, t1, ts=ts, batch_problem=True, throw=False, config=config)
        pieces.append(tuple(np.asarray(x)[: len(batch)] for x in (traj.m, traj.v, traj.loss, traj.status)))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return dict(zip(("m", "v", "loss", "status"), (np.concatenate(x) for x in zip(*pieces, strict=True)), strict=True))


def sweep(
    problem_fn,
    grid: dict,
    m0,
    v0,
    t1: float,
    *,
    ts=None,
    chunk_size: int = 256,
    devices=None,
    progress: bool = True,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> SweepResult:
    """Solve the flow at every point of `grid`.

    **Arguments:**

    - `problem_fn(**point)` -> `TeacherStudent`, for each `point = {name: value}` of the
      Cartesian product of `grid` (a dict of name -> 1-D values). All problems must differ
      only in numbers (same activations, pooling, sizes).
    - `m0`, `v0`: initial state `(L, P)`, `(L,)`, or callables `(**point) -> array`
      (sweeping initial conditions).
    - `t1`, `ts`: as for `solve_batch`; `chunk_size`: grid points per batched solve
      (rounded up to a multiple of the device count); `devices`: default `jax.local_devices()`
      (all of them in a single process).
    - `progress`: a tqdm bar over chunks.
    - `config`, `**options`: the solver options, as in `solve_batch`. Failed points keep
      `status != Status.SUCCESS` (no exception).

    **Across processes.** In a `jax.distributed` run (`cnntheory.initialize_distributed`),
    every process calls `sweep` with the same arguments; each solves its contiguous share of
    the grid (in grid order, sizes differing by at most one; a process may have none) on its
    local devices, and the whole `SweepResult` is assembled on every process (save it on
    process 0). A share that raised marks its points `Status.FAILED` (NaN arrays) with a
    `RuntimeWarning` naming the process, the points and the error.
    """
    config = resolve_config(config, options, caller="sweep")
    require(isinstance(grid, dict) and len(grid) >= 1, "grid must be a non-empty dict of name -> values")
    coords = {k: np.atleast_1d(np.asarray(v)) for k, v in grid.items()}
    require(
        all(v.ndim == 1 and v.size >= 1 for v in coords.values()),
        "every grid entry must be a non-empty 1-D sequence of values",
    )
    points = [dict(zip(coords, vals, strict=True)) for vals in itertools.product(*coords.values())]
    devices = list(jax.local_devices() if devices is None else devices)
    ts = np.linspace(0.0, t1, 101) if ts is None else np.asarray(ts, float)

    def share(start: int, stop: int) -> dict[str, np.ndarray]:
        return _solve_points(points[start:stop], problem_fn, m0, v0, t1, ts, chunk_size, devices, progress, config)

    arrays, _ = gather_shares(len(points), share, failed_status=int(Status.FAILED), what="grid points")
    m, v, loss, status = (arrays[k] for k in ("m", "v", "loss", "status"))
    shape = tuple(len(c) for c in coords.values())
    return SweepResult(
        coords,
        ts,
        m.reshape(shape + m.shape[1:]),
        v.reshape(shape + v.shape[1:]),
        loss.reshape(shape + loss.shape[1:]),
        status.reshape(shape),
    )
