r"""Sample paths of online SGD's Gaussian chain (and of its diffusion limit): `sample_paths`.

`discrete=True` (the default) draws the Gaussian approximation of the exact discrete chain,

$$y_{k+1} = y_k + \mathrm{lr}\,F(y_k) + \frac{\mathrm{lr}}{\sqrt B}\,\Gamma(y_k)\,\mathrm{Cov}(g)^{1/2}(y_k)\, z_k,
\qquad z_k \sim N(0, I_P),$$

the SGD step with the batch's gradient noise replaced by a Gaussian of the same covariance
`D / B`; its mean and covariance obey the discrete moment map of `moments` to second order.
`discrete=False` draws the Itô SDE with the same first two moments to first order,
`dY = (F - (lr/2) J F) dt + sqrt(lr/B) Γ(Y) Cov(g)^{1/2}(Y) dW`, by Euler–Maruyama on a
diffrax `VirtualBrownianTree` (the `lr -> 0` limit; Itô's formula supplies the
`1/2 F'':Sigma` drift).
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._deprecate import renamed_keywords
from .._problem import TeacherStudent, flatten_state
from .._typing import AnyArray
from .._validate import require
from ._noise import _fourth, _psd_sqrt, drift_map, residual_noise
from ._result import _check, _check_batch, _check_lr, _grid_ts, _record_steps, _whole_steps

# --- sample paths ------------------------------------------------------------------------


class SamplePaths(eqx.Module):
    """Sample paths: `t` `(T,)`, `m` `(S, T, L, P)`, `v` `(S, T, L)`.

    `discrete`: the Gaussian discrete chain (`dt = lr`) or the SDE (Euler–Maruyama step `dt`).
    """

    t: Float[Array, " T"]
    m: Float[Array, "S T L P"]
    v: Float[Array, "S T L"]
    lr: float = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    discrete: bool = eqx.field(static=True)


@eqx.filter_jit
def _paths_core(problem, y0, keys, t0, t1, ts, dt, lr, batch):
    P = problem.num_atoms
    fourth = _fourth(problem)
    F = problem.flat_rhs

    def drift(t, y, args):
        f, J = F(y), jax.jacfwd(F)(y)
        return f - 0.5 * lr * J @ f

    def diffusion(t, y, args):
        m, v = problem.unflatten(y)
        return jnp.sqrt(lr / batch) * drift_map(problem, m, v) @ _psd_sqrt(residual_noise(problem, m, v, fourth))

    def one(key):
        bm = diffrax.VirtualBrownianTree(t0, t1, tol=dt / 2, shape=(P,), key=key)
        terms: diffrax.MultiTerm = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        sol = diffrax.diffeqsolve(
            terms,
            diffrax.Euler(),
            t0,
            t1,
            dt,
            y0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=None,
        )
        return sol.ys

    return jax.vmap(one)(keys)


@eqx.filter_jit
def _chain_core(problem, y0, keys, record_steps, lr, batch):
    fourth = _fourth(problem)
    P = problem.num_atoms

    def one(key):
        def step(k, y):
            m, v = problem.unflatten(y)
            z = jax.random.normal(jax.random.fold_in(key, k), (P,))
            noise = drift_map(problem, m, v) @ (_psd_sqrt(residual_noise(problem, m, v, fourth)) @ z)
            return y + lr * problem.flat_rhs(y) + lr / jnp.sqrt(batch) * noise

        def record(carry, k_end):
            k, y = carry
            y = jax.lax.fori_loop(k, k_end, step, y)
            return (k_end, y), y

        return jax.lax.scan(record, (jnp.asarray(0, dtype=record_steps.dtype), y0), record_steps)[1]

    return jax.vmap(one)(keys)


@renamed_keywords(num_paths="num_seeds")
def sample_paths(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: float,
    *,
    lr: float,
    batch_size: int,
    key: PRNGKeyArray,
    num_seeds: int = 256,
    ts: Float[AnyArray, " T"] | None = None,
    t0: float = 0.0,
    discrete: bool = True,
    dt: float | None = None,
) -> SamplePaths:
    r"""Sample paths of online SGD's Gaussian chain, a cheap stand-in for online-SGD seeds.

    `discrete=True`: `y_{k+1} = y_k + lr F(y_k) + (lr / sqrt B) Γ Cov(g)^{1/2} z_k` step by
    step (module docstring); save times must be whole steps `t0 + k lr` (default: up to 101
    in `[t0, t1]`). `discrete=False`: the Itô SDE by Euler–Maruyama with step `dt` (default
    `lr / 4`) on a diffrax `VirtualBrownianTree`. `num_seeds` paths `vmap`ped (`num_paths` is the deprecated old name).
    """
    lr = _check_lr(lr)
    batch_size = _check_batch(batch_size)
    require(
        isinstance(num_seeds, (int, np.integer)) and num_seeds >= 1,
        f"num_seeds must be an integer >= 1, got {num_seeds!r}",
    )
    discrete = bool(discrete)
    if discrete:
        require(
            dt is None, f"dt is the Euler-Maruyama step of the SDE (discrete=False); the chain steps by lr, got dt={dt}"
        )
        ts = _grid_ts(t0, t1, ts, lr)
    m0, v0, t0, t1, ts, _ = _check("sample_paths", problem, m0, v0, t0, t1, ts, None, {})
    y0 = flatten_state(m0, v0)
    keys = jax.random.split(key, int(num_seeds))
    if discrete:
        _whole_steps("t1 - t0", t1 - t0, lr)
        ys = _chain_core(
            problem, y0, keys, jnp.asarray(_record_steps(t0, ts, lr)), jnp.asarray(lr), jnp.asarray(float(batch_size))
        )
        dt = lr
    else:
        dt = lr / 4 if dt is None else float(dt)
        require(np.isfinite(dt) and 0 < dt <= t1 - t0, f"dt must lie in (0, t1 - t0], got {dt}")
        ys = _paths_core(problem, y0, keys, *map(jnp.asarray, (t0, t1, ts, dt, lr, float(batch_size))))
    L, P = m0.shape
    return SamplePaths(
        t=jnp.asarray(ts),
        m=ys[..., : L * P].reshape(ys.shape[:2] + (L, P)),
        v=ys[..., L * P :],
        lr=lr,
        batch_size=batch_size,
        dt=dt,
        discrete=discrete,
    )
