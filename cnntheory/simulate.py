r"""Finite-sample simulation: the student CNN trained for real, in JAX.

The student of a `TeacherStudent` problem, as an actual network on `d x d` images:

$$f(S) = \sum_l v_l \,\mathrm{POOL}_{ij}\, \sigma\!\big(K_l \cdot \wp_{ij}(S) / D\big),$$

with the patch products computed by a strided convolution
(`jax.lax.conv_general_dilated`, stride `k`, no padding: `network`), and the labels `y(S)`
from the teacher network (kernels `K*`, activation `phi`, head `v*`) on the same images.
Training evaluates the same function faster: every patch is an atom, so
`K_l . patch_ij / D` is entry `(a_ij, l)` of the `(P, L)` table `atoms K^T / D`, with
`a_ij` the atom index of the patch, and pooling groups the patches by atom: the pooled
activation is `sum_p c_p sigma(T_pl)` with `c_p` the image's atom counts (`patch_network`:
a matrix product and a counts-weighted table, equal to the convolution to round-off,
gradients included; XLA:CPU runs a convolution inside a compiled loop many times slower
than on its own). Squared
loss `1/2 mean_i (f_i - y_i)^2`, plain gradient descent with the problem's multipliers:

$$K \leftarrow K - \mathrm{lr}\,\eta_K\,\nabla_K \mathcal{L},\qquad
v \leftarrow v - \mathrm{lr}\,\eta_v\,\nabla_v \mathcal{L},$$

so one step is one explicit Euler step of the order-parameter flow with `dt = lr`, and the
ODE time after `s` steps is `t = lr * s` (the learning rates `eta_K`, `eta_v` of the flow
multiply the gradients, `lr` is the time step). Three modes, three levels of
exactness; each is an object that owns its objective (`Population()`,
`FullBatch(num_train)`, `Online(batch_size)`), or its name as a string:

- `"population"`: descent on the exact population loss
  `1/2 (a - b)^T C (a - b)`, where the per-atom outputs `a_p`, `b_p` are the real student
  and teacher networks evaluated on single-atom images and `C` is
  `problem.moments`. Nothing is shared with the closed-form `problem.rhs` except `C`: the
  gradient is `jax.grad` of the network. Equals the ODE's Euler map to round-off.
- `"fullbatch"`: descent on `num_train` sampled images. Because every patch is an atom,
  the empirical loss is exactly `1/2 (a - b)^T C_hat (a - b)` with
  `C_hat = mean_i n~_i n~_i^T` (`n~` the pooled counts): `empirical_problem` gives the
  finite-data ODE that this mode follows to round-off.
- `"online"`: SGD with a fresh batch of `batch_size` images every step. The seed mean
  tends to the ODE as `lr -> 0`, with bias `O(lr)` and fluctuations `O(sqrt(lr / B))`.

The order parameters are measured from the kernels, `m = K mu^T / D`. Initial kernels are
built from the requested `(m0, v0)` plus a random part orthogonal to the atoms (which never
moves and never matters: every patch is an atom), so theory and simulation start at the
same point. Steps run in `lax.scan`, seeds in `vmap`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._activations import Activation
from ._data import atom_counts, gram_pseudo_inverse
from ._problem import TeacherStudent
from ._trajectory import CnnTheoryError, Status, _Result, checked
from ._typing import AnyArray
from ._validate import check_real, require, require_finite

__all__ = [
    "MODES",
    "FullBatch",
    "Mode",
    "Online",
    "Population",
    "Simulation",
    "SimulationDiverged",
    "empirical_moments",
    "empirical_problem",
    "init_kernels",
    "network",
    "patch_network",
    "simulate",
    "teacher_kernels",
]

MODES = ("population", "fullbatch", "online")


class Mode(eqx.Module):
    """What gradient descent descends: `Population()`, `FullBatch(num_train)` or `Online(batch_size)`.

    A mode owns its objective, the loss of one step (`objective`); `name` is its entry in
    `MODES`, the string `simulate(mode=...)` also accepts; `samples` says whether it
    draws images (and so needs a finite `patches_per_side`).
    """

    name: ClassVar[str]
    samples: ClassVar[bool] = True

    def training_images(self) -> int:
        """Images per seed drawn once before training (a training set): 0 but for `FullBatch`."""
        return 0

    def draw(self, setup, key):
        """This step's random data from its `key` (`None`: the mode draws nothing).

        Called for many steps at once (`vmap` over keys), outside the step loop: the
        sampler then runs once per block of steps, not once per step.
        """
        return None

    def objective(self, setup, params, data, train):
        """The loss gradient descent follows at this step (`data`: what `draw` gave for
        this step; `train`: the seed's training set, or `None`)."""
        raise NotImplementedError


class Population(Mode):
    """Descent on the exact population loss `1/2 (a - b)^T C (a - b)` (no images)."""

    name: ClassVar[str] = "population"
    samples: ClassVar[bool] = False

    def objective(self, setup, params, data, train):
        return setup.population_loss(params)


class FullBatch(Mode):
    """Descent on a training set of `num_train` images per seed, drawn once."""

    num_train: int = eqx.field(static=True)
    name: ClassVar[str] = "fullbatch"

    def __check_init__(self):
        require(
            isinstance(self.num_train, (int, np.integer))
            and not isinstance(self.num_train, bool)
            and self.num_train >= 1,
            f"fullbatch mode needs num_train >= 1 (training images), got {self.num_train!r}",
        )

    def training_images(self) -> int:
        return int(self.num_train)

    def objective(self, setup, params, data, train):
        return setup.image_loss(params, *train)


class Online(Mode):
    """SGD with a fresh batch of `batch_size` images every step."""

    batch_size: int = eqx.field(static=True)
    name: ClassVar[str] = "online"

    def __check_init__(self):
        require(
            isinstance(self.batch_size, (int, np.integer))
            and not isinstance(self.batch_size, bool)
            and self.batch_size >= 1,
            f"online mode needs batch_size >= 1 (images per SGD step), got {self.batch_size!r}",
        )

    def draw(self, setup, key):
        patches, _ = setup.problem.mixture.sample_counts(key, int(self.batch_size))
        return patches

    def objective(self, setup, params, data, train):
        return setup.image_loss(params, data, setup.labels(data))


def _plain_int(x):
    """A numpy integer as a Python `int` (the modes' fields are ints); anything else as it is, for their checks."""
    return int(x) if isinstance(x, np.integer) else x


def _as_mode(mode, batch_size, num_train) -> Mode:
    """The `Mode` of `simulate(mode=..., batch_size=..., num_train=...)`.

    A name takes its number from the keywords (the other one is ignored, as it always
    was); a `Mode` object carries its own, and a keyword that contradicts it is an error.
    """
    if isinstance(mode, Mode):
        for name, value in (("batch_size", batch_size), ("num_train", num_train)):
            if value is not None and getattr(mode, name, None) != value:
                require(
                    False,
                    f"{name}={value!r} contradicts mode={mode!r}: a Mode object carries its own numbers "
                    f"(Online(batch_size), FullBatch(num_train)); drop the {name} keyword",
                )
        return mode
    if not (isinstance(mode, str) and mode in MODES):
        require(
            False,
            f"mode must be one of {MODES} or a Mode (Population(), FullBatch(num_train), Online(batch_size)), got {mode!r}",
        )
    if mode == "online":
        return Online(_plain_int(batch_size))
    if mode == "fullbatch":
        return FullBatch(_plain_int(num_train))
    return Population()


class SimulationDiverged(CnnTheoryError):
    """A simulated run blew up (non-finite or huge loss or parameters).

    Attributes: `step` (first diverged step), `seed` (its seed index), `lr`.
    """

    def __init__(self, message: str, *, step: int, seed: int, lr: float):
        super().__init__(message)
        self.step = step
        self.seed = seed
        self.lr = lr

    @classmethod
    def from_result(cls, result: Simulation) -> SimulationDiverged:
        """The error for a `Simulation` with a diverged seed: the first to diverge."""
        seed, step, _ = _first_divergence(result.status, result.diverged_at)
        return cls(result.message, step=step, seed=seed, lr=result.lr)


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


# --- the networks ----------------------------------------------------------------------


def _with_registry_derivative(act: Activation):
    """`act` with `act.derivative` as its JAX derivative.

    Gradient descent must use the derivative the ODE uses, bit for bit (autodiff of `fn`
    agrees with `derivative` only to round-off, and at relu's kink by convention).
    """

    @jax.custom_jvp
    def fn(x):
        return act.fn(x)

    @fn.defjvp
    def _jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        return act.fn(x), act.derivative(x) * dx

    return fn


def network(
    kernels: Float[Array, "L D"],
    head: Float[Array, " L"],
    images: Float[Array, "n d d"],
    activation: Activation,
    pooling: str,
) -> Float[Array, " n"]:
    """`sum_l head_l POOL_ij act(kernels_l . patch_ij / D)` by a stride-`k` convolution.

    Images `(n, d, d)` with `d` a multiple of `k = sqrt(D)`; `pooling` `"sum"` or `"mean"`.
    """
    L, D = kernels.shape
    k = math.isqrt(D)
    weights = kernels.reshape(L, 1, k, k)  # OIHW
    x = images[:, None, :, :]  # NCHW
    pre = jax.lax.conv_general_dilated(x, weights, window_strides=(k, k), padding="VALID") / D
    act = _with_registry_derivative(activation)(pre)  # (n, L, M, M)
    pooled = jnp.sum(act, axis=(2, 3)) if pooling == "sum" else jnp.mean(act, axis=(2, 3))
    return pooled @ head


def patch_network(
    kernels: Float[Array, "L D"],
    head: Float[Array, " L"],
    patches: Int[Array, "n M M"],
    atoms: Float[Array, "P D"],
    activation: Activation,
    pooling: str,
) -> Float[Array, " n"]:
    r"""`network` on the images whose patch `(i, j)` is the atom `patches[:, i, j]`.

    Every patch is an atom, so the stride-`k` convolution is a matrix product and a lookup:
    `K_l . patch_ij / D = T[patches_ij, l]` with the `(P, L)` table `T = atoms K^T / D`,
    and pooling over patches groups them by atom:

    $$\mathrm{POOL}_{ij}\, \sigma(T_{p_{ij} l}) = \sum_p c_p\, \sigma(T_{pl}),$$

    with `c_p` the image's count of atom `p` (`sum` pooling) or its fraction (`mean`).
    The same function as `network(kernels, head, images_from_labels(patches), ...)` (equal
    to round-off, gradients included), at a fraction of the cost: the activation is
    evaluated on `P L` numbers, not `n M^2 L`, and its gradient needs no scatter over
    patches (XLA:CPU runs a convolution, or a gather's transpose, inside a compiled loop
    many times slower than on its own).
    """
    table = atoms @ kernels.T / kernels.shape[1]  # (P, L)
    counts = atom_counts(patches, atoms.shape[0]).astype(table.dtype)
    if pooling == "mean":
        counts = counts / (patches.shape[1] * patches.shape[2])
    return counts @ _with_registry_derivative(activation)(table) @ head


def teacher_kernels(problem: TeacherStudent) -> Float[Array, "Lstar D"]:
    """Teacher kernels `K*` realising `problem.teacher_overlaps` on the atoms.

    The default teacher (overlaps = Gram) has `K* = mu`, the atoms themselves. Custom
    overlaps only fix `K*` on the atoms' span; the in-span choice is
    `K* = m* G^+ mu` (minimum norm), which reproduces `m*` when its rows lie in the row
    space of `G` (always, for linearly independent atoms).
    """
    mixture = problem.mixture
    overlaps = problem.teacher_overlaps
    if overlaps.shape == problem.gram.shape and bool(jnp.all(overlaps == problem.gram)):
        return mixture.atoms
    K_star = mixture.in_span_kernels(overlaps)
    err = float(jnp.max(jnp.abs(mixture.overlaps(K_star) - overlaps)))
    require(
        err < 1e-8,
        f"teacher_overlaps cannot be realised by teacher kernels (residual {err:.2e}): "
        "their rows must lie in the row space of the atom Gram matrix",
    )
    return K_star


def init_kernels(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    key: PRNGKeyArray,
    scale: float = 1.0,
) -> Float[Array, "L D"]:
    """Kernels `K` with `K mu^T / D = m0` exactly (up to round-off).

    `K = scale Z + (m0 - scale Z mu^T / D) G^+ mu` with `Z` standard Gaussian `(L, D)`:
    the in-span part is `m0 G^+ mu` and the rest, `scale Z` minus its projection onto the
    atoms' span, is orthogonal to every atom (it never moves under training and never
    changes an output). Rows of `m0` must lie in the row space of `G`.
    """
    return _init_kernels(problem, m0, key, scale, gram_pseudo_inverse(problem.gram))


def _init_kernels(problem, m0, key, scale, gram_pinv):
    mixture = problem.mixture
    z = scale * jax.random.normal(key, (m0.shape[0], mixture.patch_dim), dtype=mixture.atoms.dtype)
    return z + mixture.in_span_kernels(m0 - mixture.overlaps(z), gram_pinv)


# --- finite-data theory ----------------------------------------------------------------


def empirical_moments(problem: TeacherStudent, counts: Int[AnyArray, "n P"]) -> Float[Array, "P P"]:
    """`C_hat = mean_i n~_i n~_i^T` of a training set (`n~`: pooled counts)."""
    pooled = problem.mixture.pooled_counts(counts)
    return pooled.T @ pooled / pooled.shape[0]


def empirical_problem(problem: TeacherStudent, counts: Int[AnyArray, "n P"]) -> TeacherStudent:
    """The finite-data problem: `problem` with `C_hat` of the training set `counts`.

    Its flow is what `fullbatch` gradient descent on those images follows (its Euler map
    with `dt = lr`, to round-off).
    """
    return problem.with_moments(empirical_moments(problem, counts))


# --- the simulation ----------------------------------------------------------------------


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


class _Setup(eqx.Module):
    """Everything a seed's run needs that is not its state."""

    problem: TeacherStudent
    teacher: Float[Array, "Lstar D"]
    gram_pinv: Float[Array, "P P"]
    lr: Float[Array, ""]
    max_loss: Float[Array, ""]
    test_patches: Int[Array, "nt M M"] | None
    test_labels: Float[Array, " nt"] | None
    group_ids: Int[Array, " nt"] | None
    group_sizes: Float[Array, " V"] | None
    mode: Mode
    dtype: np.dtype = eqx.field(static=True)
    seeds_by: str = eqx.field(static=True)

    # Networks are evaluated on patch atom indices `(n, M, M)` (`patch_network`): the same
    # function as the convolution `network` on the assembled images.
    def student(self, params, patches):
        K, v = params
        return patch_network(K, v, patches, self.atoms, self.problem.sigma, self.problem.mixture.pooling)

    def labels(self, patches):
        head = self.problem.teacher_head.astype(self.dtype)
        return patch_network(self.teacher, head, patches, self.atoms, self.problem.phi, self.problem.mixture.pooling)

    @property
    def atoms(self):
        return self.problem.mixture.atoms.astype(self.dtype)

    def image_loss(self, params, patches, labels):
        return 0.5 * jnp.mean((self.student(params, patches) - labels) ** 2)

    def population_loss(self, params):
        """`1/2 (a - b)^T C (a - b)`, `a`, `b` from the networks on single-atom images."""
        single = jnp.arange(self.problem.num_atoms).reshape(-1, 1, 1)
        e = self.student(params, single) - self.labels(single)
        return 0.5 * e @ self.problem.moments.astype(self.dtype) @ e

    def objective(self, params, data, train):
        """The loss gradient descent follows at this step (the mode's)."""
        return self.mode.objective(self, params, data, train)

    def step(self, state, train, data):
        """One gradient step on this step's `data`; returns the new state and the loss before it.

        The state's key is advanced by the caller, which drew `data` from it (`_run_steps`).
        """
        params, key, step, diverged_at = state
        loss, (gK, gv) = jax.value_and_grad(self.objective)(params, data, train)
        K, v = params
        eta_K = self.problem.lr_kernel.astype(self.dtype)
        eta_v = self.problem.lr_head.astype(self.dtype)
        new = (K - self.lr * eta_K * gK, v - self.lr * eta_v * gv)
        finite = jnp.all(jnp.isfinite(new[0])) & jnp.all(jnp.isfinite(new[1]))
        bad = ~(finite & jnp.isfinite(loss) & (loss < self.max_loss))
        diverged_at = jnp.where(bad & (diverged_at < 0), step, diverged_at)
        # A diverged run is frozen (and its records masked to NaN afterwards), so no NaN or
        # overflow propagates silently.
        params = jax.tree.map(lambda old, nw: jnp.where(diverged_at >= 0, old, nw), params, new)
        return (params, key, step + 1, diverged_at), loss

    def record(self, state):
        """Order parameters, exact population loss, test loss and predictions of a state."""
        (K, v), *_ = state
        m = self.problem.mixture.overlaps(K)
        rec = {"m": m, "v": v, "kernels": K, "loss": self.problem.loss(m.astype(float), v.astype(float))}
        if self.test_patches is not None:
            pred = self.student((K, v), self.test_patches)
            rec["test_loss"] = 0.5 * jnp.mean((pred - self.test_labels) ** 2)
            rec["predictions"] = jax.ops.segment_sum(pred, self.group_ids, self.group_sizes.shape[0]) / self.group_sizes
        return rec


@eqx.filter_jit
def _prepare(setup: _Setup, m0, v0, key, num_seeds: int, num_test: int, num_train: int, init_scale):
    """Initial states of the seeds, their training sets (`fullbatch`) and the test set.

    All images come from one sampler call (each call site of the Dirichlet sampler costs
    about a second of compilation): the test set first, then `num_train` per seed.
    """
    k_data, k_init, k_run = jax.random.split(key, 3)
    K = jax.vmap(lambda k: _init_kernels(setup.problem, m0, k, init_scale, setup.gram_pinv))(
        jax.random.split(k_init, num_seeds)
    )
    states = (
        (K.astype(setup.dtype), jnp.broadcast_to(v0.astype(setup.dtype), (num_seeds,) + v0.shape)),
        jax.random.split(k_run, num_seeds),
        jnp.zeros(num_seeds, dtype=int),
        jnp.full(num_seeds, -1),
    )
    total = num_test + num_seeds * num_train
    if total == 0:
        return states, None, None
    patches, counts = setup.problem.mixture.sample_counts(k_data, total)
    labels = setup.labels(patches)
    test = (patches[:num_test], labels[:num_test], counts[:num_test]) if num_test else None
    per_seed = lambda x: x[num_test:].reshape((num_seeds, num_train) + x.shape[1:])  # noqa: E731
    train = tuple(map(per_seed, (patches, labels, counts))) if num_train else None
    return states, train, test


def _key_chain(key, n: int):
    """`n` steps of `key, sub = split(key)`: the keys after each step and the subs."""

    def split(key, _):
        key, sub = jax.random.split(key)
        return key, (key, sub)

    _, (keys, subs) = jax.lax.scan(split, key, None, length=n)
    return keys, subs


def _run_steps(setup: _Setup, state, train, count, block: int):
    """`count` (traced) gradient steps of one seed, and the loss before the first.

    Step `i` uses the `i`-th `sub` of `key, sub = split(key)` iterated on the state's
    key, as a step-by-step loop would; the data of `block` steps are drawn together
    (`Mode.draw` under `vmap`), so the sampler's fixed cost (the Dirichlet rejection loop,
    the random bits) is paid once per block.
    """

    def run_block(b, carry):
        state, first = carry
        keys, subs = _key_chain(state[1], block)
        data = jax.vmap(lambda k: setup.mode.draw(setup, k))(subs)
        n = jnp.minimum(block, count - b * block)

        def body(i, carry):
            state, first = carry
            step_data = None if data is None else jax.tree.map(lambda x: x[i], data)
            state, loss = setup.step(state, train, step_data)
            return state, jnp.where((b == 0) & (i == 0), loss, first)

        (params, _, step, diverged_at), first = jax.lax.fori_loop(0, n, body, (state, first))
        return (params, keys[n - 1], step, diverged_at), first

    num_blocks = (count + block - 1) // block
    return jax.lax.fori_loop(0, num_blocks, run_block, (state, jnp.zeros((), setup.dtype)))


def _next_loss(setup: _Setup, state, train):
    """The objective at the state's parameters on the data its next step would draw."""
    params, key, *_ = state
    _, sub = jax.random.split(key)
    return setup.objective(params, setup.mode.draw(setup, sub), train)


#: Most patch indices drawn at once per seed (`block * batch * M * M`): 8 MiB of int64.
_DRAW_ENTRIES = 2**20


def _draw_block(mode: Mode, patches_per_side: int | None, record_every: int) -> int:
    """Steps whose data are drawn together: `record_every` split into equal blocks that fit
    `_DRAW_ENTRIES` (1 for modes that draw nothing)."""
    if not isinstance(mode, Online):
        return 1
    per_step = int(mode.batch_size) * int(patches_per_side or 1) ** 2
    most = max(1, _DRAW_ENTRIES // per_step)
    blocks = -(-record_every // most)
    return -(-record_every // blocks)


@eqx.filter_jit
def _advance(setup: _Setup, states, train, indices, num_records, record_every, block: int):
    """Records `indices` (global record numbers) for every seed, and the steps between them.

    Record `j` is taken at step `j r`, then `r` steps follow; the first of them gives
    `train_loss` (the objective at the recorded parameters, on that step's data). After the
    last record (`j = num_records`) no step is taken: that loss is evaluated on the data
    the next step would draw (`_next_loss`).
    """

    def one_seed(state, train):
        def chunk(state, j):
            rec = setup.record(state)

            def advance(state):
                return _run_steps(setup, state, train, record_every, block)

            def last(state):
                return state, _next_loss(setup, state, train)

            state, rec["train_loss"] = jax.lax.cond(j < num_records, advance, last, state)
            return state, rec

        return jax.lax.scan(chunk, state, indices)

    if setup.seeds_by == "map":
        return jax.lax.map(lambda args: one_seed(*args), (states, train))
    return jax.vmap(one_seed)(states, train)


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
        test_patches=None,
        test_labels=None,
        group_ids=None,
        group_sizes=None,
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
        setup = eqx.tree_at(
            lambda s: (s.test_patches, s.test_labels, s.group_ids, s.group_sizes),
            setup,
            (test[0], test[1], jnp.asarray(groups[0]), jnp.asarray(groups[3], dtype=dtype)),
            is_leaf=lambda x: x is None,
        )

    num_records = steps // record_every
    indices = np.arange(num_records + 1)
    chunks = np.array_split(indices, min(num_chunks, indices.size)) if progress else [indices]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"simulate ({mode.name})", unit="step")
    records = []
    # Numbers go in as arrays: a new steps does not recompile (a new record_every may: it
    # sets the block of steps whose images are drawn together).
    n_rec, r = jnp.asarray(num_records), jnp.asarray(record_every)
    block = _draw_block(mode, problem.mixture.patches_per_side, record_every)
    for chunk in chunks:
        states, rec = _advance(setup, states, train, jnp.asarray(chunk), n_rec, r, block)
        records.append(rec)
        if bar is not None:
            bar.update(int(np.sum(chunk < num_records)) * record_every)
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
