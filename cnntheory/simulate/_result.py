"""The record of a simulated run (`Simulation`) and its error (`SimulationDiverged`)."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._deprecate import renamed_attribute, renamed_keywords
from .._trajectory import CnnTheoryError, Status, _Result


class SimulationDiverged(CnnTheoryError):
    """A simulated run blew up (non-finite or huge loss or parameters).

    Attributes: `step` (first diverged step), `seed_index` (which of the `num_seeds` runs;
    `seed` is its deprecated old name), `lr`.
    """

    @renamed_keywords(seed="seed_index")
    def __init__(self, message: str, *, step: int, seed_index: int, lr: float):
        super().__init__(message)
        self.step = step
        self.seed_index = seed_index
        self.lr = lr

    seed = renamed_attribute("seed", "seed_index")

    @classmethod
    def from_result(cls, result: Simulation) -> SimulationDiverged:
        """The error for a `Simulation` with a diverged seed: the first to diverge."""
        seed, step, _ = _first_divergence(result.status, result.diverged_at)
        return cls(result.message, step=step, seed_index=seed, lr=result.lr)


def _first_divergence(status, diverged_at) -> tuple[int, int, int]:
    """`(seed, step, count)`: the seed that diverged first, at which step, and how many did."""
    bad = np.flatnonzero(np.asarray(status) != Status.SUCCESS)
    seed = int(bad[np.argmin(np.asarray(diverged_at)[bad])])
    return seed, int(np.asarray(diverged_at)[seed]), bad.size


class Simulation(_Result):
    """Recorded simulated training: `Trajectory`-like fields with a leading seed axis `S`.

    - `t`: `(T,)` ODE times `lr * step` of the records (steps `0, r, 2r, ...`).
    - `m`: `(S, T, L, P)` measured order parameters `K mu^T / D`; `v`: `(S, T, L)`.
    - `kernels`: `(S, T, L, D)` the first-layer kernels themselves (in-span part plus the
      out-of-span part, which never moves).
    - `loss`: `(S, T)` the exact population loss `problem.loss(m, v)` at the measured state,
      directly comparable with `Trajectory.loss`.
    - `train_loss`: `(S, T)` the loss being descended, at the recorded parameters: the
      population loss (`population`), the training-set loss (`fullbatch`), the loss on the
      next SGD batch of `B` fresh images (`online`).
    - `test_loss`: `(S, T)` loss on the held-out test set (shared by the seeds), or `None`.
    - `label_values`: `(V,)` the distinct teacher labels of the test set;
      `label_counts`: `(V, P)` the mean pooled counts `n~` of the test images with that
      label; `predictions`: `(S, T, V)` the student's mean prediction on them (the seed's
      "not just classification" view). Theory: `label_counts @ a(t)`, see
      `cnntheory.compare.theory_predictions`. `None` without a test set.
    - `train_moments`: `(S, P, P)` the empirical `C_hat` of each seed's training set
      (`fullbatch` only, else `None`).
    - `status`: `(S,)` `Status` codes: `Status.SUCCESS` (0) finished,
      `Status.DIVERGED` (3) diverged; `diverged_at`: `(S,)` first diverged step (-1 if
      none). Records at and after it are NaN. `message`: a summary line; `success`:
      no seed diverged; `raise_for_status()` raises `SimulationDiverged` otherwise.
    - `mode`, `lr`, `batch_size`, `num_train`, `num_test`, `record_every`, `steps`: the
      parameters of the run.
    """

    t: Float[Array, " T"]
    m: Float[Array, "S T L P"]
    v: Float[Array, "S T L"]
    kernels: Float[Array, "S T L D"]
    loss: Float[Array, "S T"]
    train_loss: Float[Array, "S T"]
    test_loss: Float[Array, "S T"] | None
    label_values: Float[Array, " V"] | None
    label_counts: Float[Array, "V P"] | None
    predictions: Float[Array, "S T V"] | None
    train_moments: Float[Array, "S P P"] | None
    status: Int[Array, " S"]
    diverged_at: Int[Array, " S"]
    message: str = eqx.field(static=True)
    mode: str = eqx.field(static=True)
    lr: float = eqx.field(static=True)
    batch_size: int | None = eqx.field(static=True)
    num_train: int | None = eqx.field(static=True)
    num_test: int = eqx.field(static=True)
    record_every: int = eqx.field(static=True)
    steps: int = eqx.field(static=True)

    exception: ClassVar[type[CnnTheoryError]] = SimulationDiverged

    @property
    def num_seeds(self) -> int:
        """`S`."""
        return self.m.shape[0]

    def seed_mean(self, name: str) -> Array:
        """Mean over seeds of field `name` (e.g. `"m"`), shape without the seed axis."""
        return jnp.mean(getattr(self, name), axis=0)

    def seed_std(self, name: str) -> Array:
        """Standard deviation over seeds (`ddof=1`; zeros for one seed)."""
        x = getattr(self, name)
        return jnp.std(x, axis=0, ddof=1) if x.shape[0] > 1 else jnp.zeros_like(x[0])
