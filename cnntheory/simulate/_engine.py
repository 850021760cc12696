"""The compiled training loop: one seed's setup, its steps in `lax.fori_loop`, its records, seeds in `vmap` or `lax.map`."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._problem import TeacherStudent
from ._modes import Mode, Online
from ._networks import _init_kernels, patch_network


class _TestSet(eqx.Module):
    """The held-out images shared by the seeds, grouped by teacher label for `predictions`."""

    patches: Int[Array, "nt M M"]
    labels: Float[Array, " nt"]
    group_ids: Int[Array, " nt"]
    group_sizes: Float[Array, " V"]


class _Setup(eqx.Module):
    """Everything a seed's run needs that is not its state (`test`: `None` without a test set)."""

    problem: TeacherStudent
    teacher: Float[Array, "Lstar D"]
    gram_pinv: Float[Array, "P P"]
    lr: Float[Array, ""]
    max_loss: Float[Array, ""]
    test: _TestSet | None
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
        eta_K = self.problem.kernel_lr_multiplier.astype(self.dtype)
        eta_v = self.problem.head_lr_multiplier.astype(self.dtype)
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
        test = self.test
        if test is not None:
            pred = self.student((K, v), test.patches)
            rec["test_loss"] = 0.5 * jnp.mean((pred - test.labels) ** 2)
            rec["predictions"] = jax.ops.segment_sum(pred, test.group_ids, test.group_sizes.shape[0]) / test.group_sizes
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
    per_seed = lambda x: x[num_test:].reshape((num_seeds, num_train) + x.shape[1:])
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
