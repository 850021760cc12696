"""Plain gradient descent on the order-parameter loss, written apart from the package's solvers.

The reference for the relu (Filippov) solver: explicit Euler on the closed-form flow with
`relu'(0) = 0` (what `jax.grad` of the loss gives), in its own small JAX loop, at several
steps `h_k = t1 / (n 2^k)` (so that every save time is a whole number of steps), and the
Richardson limit `2 E(h/2) - E(h)` of the two finest (Euler's error is first order in `h`
away from the non-smooth moments). One compiled program per shape serves every problem,
step and start (`vmap`).

A start with entries *near* their surfaces (`|m_lp| = 1e-6`) needs steps that resolve
that distance: a step moving an entry by more than its distance from 0 sees it on the
surface together with the entries exactly at 0, and gradient descent then takes the joint
start of those entries (`_filippov`'s step-free map), a different branch from the limit's,
where such an entry reaches 0 only after the others have left (at `t ~ |m_lp| / |dm_lp/dt|`).
Richardson over steps that are all too coarse then "converges" to the wrong branch.
`fine_start=(t_fine, factor)` takes the first `t_fine` (a whole number of steps) in steps
`factor` times smaller.
"""

import jax
import jax.numpy as jnp
import numpy as np


def problem_arrays(problem):
    """`(G, C, b, eta_K / D, eta_v)`: all gradient descent needs of a `TeacherStudent`."""
    return (
        jnp.asarray(problem.gram),
        jnp.asarray(problem.moments),
        jnp.asarray(problem.teacher_outputs()),
        jnp.asarray(problem.kernel_lr_multiplier / problem.patch_dim),
        jnp.asarray(problem.head_lr_multiplier),
    )


def _gd_step(arrays, h, state):
    G, C, b, ck, cv = arrays
    m, v = state
    relu, step = jnp.maximum(m, 0.0), (m > 0).astype(m.dtype)  # relu'(0) = 0
    r = C @ (v @ relu - b)
    dm = -ck * ((v[:, None] * step * r[None, :]) @ G)
    dv = -cv * (relu @ r)
    return m + h * dm, v + h * dv


def _gd_saved(arrays, m0, v0, h, n_per_save, num_saves, n_fine, factor):
    # The first `n_fine` steps are each `factor` steps of `h / factor` (a fine start).
    fine = jax.lax.fori_loop(0, n_fine * factor, lambda _, s: _gd_step(arrays, h / factor, s), (m0, v0))
    counts = jnp.full(num_saves, n_per_save).at[0].add(-n_fine)

    def interval(state, count):
        state = jax.lax.fori_loop(0, count, lambda _, s: _gd_step(arrays, h, s), state)
        return state, state

    _, (ms, vs) = jax.lax.scan(interval, fine, counts)
    return ms, vs


_gd_batch = jax.jit(
    jax.vmap(
        jax.vmap(_gd_saved, in_axes=(None, None, None, 0, 0, None, 0, None)),
        in_axes=(0, 0, 0, None, None, None, None, None),
    ),
    static_argnums=(5,),
)


def gradient_descent(arrays, m0, v0, t1, num_saves, n, levels=3, fine_start=(0.0, 1)):
    """Gradient descent from a batch of starts at `levels` steps `t1 / (n 2^k)`.

    `arrays` are stacked `problem_arrays` (leading batch axis `B`), `m0`: `(B, L, P)`,
    `v0`: `(B, L)`. Saves at `t1 j / num_saves`, `j = 1..num_saves` (`n` a multiple of
    `num_saves`). `fine_start=(t_fine, factor)`: the first `t_fine` (before the first save)
    in steps `factor` times smaller (module docstring). Returns `m`: `(B, levels, num_saves,
    L, P)` and `v`: `(B, levels, num_saves, L)`.
    """
    assert n % num_saves == 0
    t_fine, factor = fine_start
    n_fine = round(t_fine * n / t1)
    assert abs(n_fine * t1 / n - t_fine) < 1e-12 * t1 and n_fine <= n // num_saves
    steps = jnp.asarray([t1 / (n * 2**k) for k in range(levels)])
    per_save = jnp.asarray([n * 2**k // num_saves for k in range(levels)])
    fines = jnp.asarray([n_fine * 2**k for k in range(levels)])
    ms, vs = _gd_batch(arrays, jnp.asarray(m0), jnp.asarray(v0), steps, per_save, num_saves, fines, factor)
    return np.asarray(ms), np.asarray(vs)


def richardson(x):
    """`2 E(h/2) - E(h)` of the two finest levels (axis 1), and of the two coarsest."""
    return 2 * x[:, -1] - x[:, -2], 2 * x[:, 1] - x[:, 0]


def stack_arrays(problems):
    """`problem_arrays` of several problems, stacked on a leading axis."""
    return tuple(jnp.stack(a) for a in zip(*(problem_arrays(p) for p in problems), strict=True))
