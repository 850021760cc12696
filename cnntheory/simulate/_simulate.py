"""`simulate`: the entry point, its argument checks, and the `Simulation` it assembles."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, PRNGKeyArray

from .._data import empirical_moments, gram_pseudo_inverse
from .._problem import TeacherStudent
from .._trajectory import Status, checked
from .._typing import AnyArray
from .._validate import check_real, require, require_finite
from ._engine import _advance, _draw_block, _prepare, _Setup, _TestSet
from ._modes import FullBatch, Mode, Online, _as_mode
from ._networks import teacher_kernels
from ._result import Simulation, _first_divergence


def _check_args(
    problem, m0, v0, mode, lr, steps, t1, batch_size, num_train, num_test, record_every, num_seeds
) -> tuple[int, Mode]:
    """Returns the number of steps and the `Mode`."""
    require(isinstance(problem, TeacherStudent), f"problem must be a TeacherStudent, got {type(problem).__name__}")
    mode = _as_mode(mode, batch_size, num_train)
    problem.check_state(m0, v0)
    require_finite("m0", m0)
    require_finite("v0", v0)
    require(np.isfinite(lr) and lr > 0, f"lr must be a finite number > 0 (the ODE time step), got {lr}")
    require(
        (steps is None) != (t1 is None), "give exactly one of steps (number of updates) or t1 (ODE time = lr * steps)"
    )
    if steps is None:
        require(np.isfinite(t1) and t1 > 0, f"t1 must be > 0, got {t1}")
        steps = int(round(t1 / lr))
        require(
            abs(steps * lr - t1) <= 1e-9 * max(1.0, t1),
            f"t1={t1} is not a whole number of steps of lr={lr}: choose t1 a multiple of lr, or pass steps",
        )
    require(isinstance(steps, (int, np.integer)) and steps >= 1, f"steps must be a positive integer, got {steps!r}")
    require(
        isinstance(record_every, (int, np.integer)) and record_every >= 1,
        f"record_every must be a positive integer, got {record_every!r}",
    )
    require(steps % record_every == 0, f"steps={steps} must be a multiple of record_every={record_every}")
    require(isinstance(num_seeds, (int, np.integer)) and num_seeds >= 1, f"num_seeds must be >= 1, got {num_seeds!r}")
    require(isinstance(num_test, (int, np.integer)) and num_test >= 0, f"num_test must be >= 0, got {num_test!r}")
    if mode.samples or num_test > 0:
        require(
            problem.mixture.patches_per_side is not None,
            f"mode={mode.name!r} with num_test={num_test} samples images, which needs a finite patches_per_side "
            "(the continuum mixture has none); use mode='population' with num_test=0",
        )
    return int(steps), mode


def _label_groups(labels: np.ndarray, pooled: np.ndarray):
    """Group test images by label value: ids `(n,)`, values `(V,)`, mean counts `(V, P)`."""
    # Labels are sums of a few teacher outputs: distinct values are far apart, round-off is not.
    values, ids = np.unique(np.round(labels, 8), return_inverse=True)
    sizes = np.bincount(ids, minlength=len(values))
    mean_counts = np.stack([pooled[ids == g].mean(axis=0) for g in range(len(values))])
    return ids, values, mean_counts, sizes


def simulate(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    *,
    mode: str | Mode,
    lr: float,
    key: PRNGKeyArray,
    steps: int | None = None,
    t1: float | None = None,
    num_seeds: int = 1,
    batch_size: int | None = None,
    num_train: int | None = None,
    num_test: int = 1024,
    record_every: int = 1,
    init_scale: float = 1.0,
    dtype=jnp.float64,
    max_loss: float = 1e12,
    throw: bool = True,
    progress: bool = False,
    num_chunks: int = 20,
    seeds_by: str = "auto",
) -> Simulation:
    """Train the student CNN of `problem` from `(m0, v0)` and record it.

    **Arguments:**

    - `problem`: the `TeacherStudent` problem (its mixture must have a finite
      `patches_per_side` unless `mode="population"` and `num_test=0`).
    - `m0`, `v0`: initial order parameters `(L, P)` and head `(L,)`; every seed starts
      there exactly (`init_kernels`, random out-of-span part of size `init_scale`).
    - `mode`: `Population()`, `FullBatch(num_train)` or `Online(batch_size)`, or the
      name `"population"`, `"fullbatch"` or `"online"` with `num_train` / `batch_size`
      as keywords (module docstring).
    - `lr`: the step, in ODE time (`K -= lr eta_K grad_K`, `v -= lr eta_v grad_v`).
    - `key`: a JAX PRNG key; `num_seeds` independent runs (own out-of-span init, training
      set, SGD batches), `vmap`ped. The test set is shared by the seeds.
    - `steps` or `t1`: how long (`t1 = lr * steps`).
    - `batch_size`: `B` for `"online"`; `num_train`: training images for `"fullbatch"`
      (with a `Mode` object, leave them out: it carries them);
      `num_test`: held-out images for `test_loss` and `predictions` (0: none).
    - `record_every`: `r`, steps between records (records at steps `0, r, ..., steps`).
    - `dtype`: `jnp.float64` (default) or `jnp.float32` for the network and its
      parameters (labels included: the indicator teacher's tolerance absorbs float32
      round-off). `loss` is always evaluated in float64.
    - `max_loss`: a step whose loss exceeds it, or that makes anything non-finite, is a
      divergence. `throw=True` raises `SimulationDiverged` naming the step and `lr`
      (`Simulation.raise_for_status()`); `throw=False` returns with `status`,
      `diverged_at`, `message` set.
    - `progress`: show a tqdm bar over `num_chunks` chunks of the run.
    - `seeds_by`: `"vmap"` (seeds batched), `"map"` (`lax.map`, seeds one after the other
      in one compiled loop) or `"auto"`: `"vmap"` on accelerators and for float32,
      `"map"` for float64 on CPU (the two are within ~10% of each other there,
      `benchmarks/simulation_throughput.py`). Results agree to round-off.

    **Returns:** a `Simulation`.
    """
    check_real("m0", m0)  # before the conversion to float, which takes bools and drops imaginary parts
    check_real("v0", v0)
    m0 = jnp.asarray(m0, dtype=float)
    v0 = jnp.asarray(v0, dtype=float)
    steps, mode = _check_args(
        problem, m0, v0, mode, lr, steps, t1, batch_size, num_train, num_test, record_every, num_seeds
    )
    dtype = jnp.dtype(dtype)
    require(dtype in (jnp.float32, jnp.float64), f"dtype must be float32 or float64, got {dtype}")
    require(seeds_by in ("auto", "vmap", "map"), f"seeds_by must be 'auto', 'vmap' or 'map', got {seeds_by!r}")
    if seeds_by == "auto":
        seeds_by = "map" if dtype == jnp.float64 and jax.default_backend() == "cpu" else "vmap"
    setup = _Setup(
        problem=problem,
        teacher=teacher_kernels(problem).astype(dtype),
        gram_pinv=gram_pseudo_inverse(problem.gram),
        lr=jnp.asarray(lr, dtype=dtype),
        max_loss=jnp.asarray(max_loss, dtype=dtype),
        test=None,
        mode=mode,
        dtype=dtype,
        seeds_by=seeds_by,
    )
    states, train, test = _prepare(
        setup, m0, v0, key, int(num_seeds), int(num_test), mode.training_images(), init_scale
    )
    train_moments = None
    if train is not None:
        train_moments = jax.vmap(lambda c: empirical_moments(problem, c))(train[2])
        train = train[:2]
    groups = None
    if test is not None:
        groups = _label_groups(np.asarray(test[1], dtype=float), np.asarray(problem.mixture.pooled_counts(test[2])))
        test_set = _TestSet(test[0], test[1], jnp.asarray(groups[0]), jnp.asarray(groups[3], dtype=dtype))
        setup = eqx.tree_at(lambda s: s.test, setup, test_set, is_leaf=lambda x: x is None)

    num_records = steps // record_every
    indices = np.arange(num_records + 1)
    chunks = np.array_split(indices, min(num_chunks, indices.size)) if progress else [indices]
    bar = None
    records = []
    # Numbers go in as arrays: a new steps does not recompile (a new record_every may: it
    # sets the block of steps whose images are drawn together).
    n_rec, r = jnp.asarray(num_records), jnp.asarray(record_every)
    block = _draw_block(mode, problem.mixture.patches_per_side, record_every)
    for chunk in chunks:
        states, rec = _advance(setup, states, train, jnp.asarray(chunk), n_rec, r, block)
        records.append(rec)
        if not progress:
            continue
        # JAX dispatches asynchronously: without the wait the bar reaches 100 % at once and the
        # run then goes on silently behind it.
        jax.block_until_ready(rec)
        done = int(np.sum(chunk < num_records)) * record_every
        if bar is None:
            from tqdm.auto import tqdm

            # Drawn after the first chunk, whose time includes compiling the loop, so that the
            # bar's rate (and its estimate of the time left) is the training's alone.
            bar = tqdm(total=steps, initial=done, desc=f"simulate ({mode.name})", unit="step")
        else:
            bar.update(done)
    if bar is not None:
        bar.close()
    rec = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *records)
    return _finish(rec, states, groups, train_moments, mode, lr, steps, record_every, num_test, throw)


def _finish(rec, states, groups, train_moments, mode, lr, steps, record_every, num_test, throw):
    diverged_at = states[3]
    record_steps = jnp.arange(rec["m"].shape[1]) * record_every
    # A record at step s holds the state after s updates: NaN from the first bad update on.
    dead = (diverged_at[:, None] >= 0) & (record_steps[None, :] > diverged_at[:, None])

    def mask(x):
        shape = dead.shape + (1,) * (x.ndim - 2)
        return jnp.where(dead.reshape(shape), jnp.nan, x)

    rec = {name: mask(x) for name, x in rec.items()}
    status = jnp.where(diverged_at >= 0, Status.DIVERGED, Status.SUCCESS)
    if bool(jnp.any(diverged_at >= 0)):
        seed, step, count = _first_divergence(status, diverged_at)
        message = (
            f"{mode.name} simulation diverged in {count} of {status.shape[0]} seeds: first seed {seed} at step {step} "
            f"(t = {step * lr:g}) with lr={lr:g}; gradient descent is unstable at this step size, reduce lr"
        )
    else:
        message = f"{mode.name} simulation finished: {steps} steps of lr={lr:g} (t1 = {steps * lr:g})"
    has_test = "test_loss" in rec
    result = Simulation(
        t=jnp.asarray(record_steps, dtype=float) * lr,
        m=rec["m"],
        v=rec["v"],
        kernels=rec["kernels"],
        loss=rec["loss"],
        train_loss=rec["train_loss"],
        test_loss=rec["test_loss"] if has_test else None,
        label_values=jnp.asarray(groups[1]) if has_test else None,
        label_counts=jnp.asarray(groups[2]) if has_test else None,
        predictions=rec["predictions"] if has_test else None,
        train_moments=train_moments,
        status=status,
        diverged_at=diverged_at,
        message=message,
        mode=mode.name,
        lr=float(lr),
        batch_size=int(mode.batch_size) if isinstance(mode, Online) else None,
        num_train=int(mode.num_train) if isinstance(mode, FullBatch) else None,
        num_test=int(num_test),
        record_every=int(record_every),
        steps=int(steps),
    )
    return checked(result, throw)
