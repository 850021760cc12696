"""Sample paths of the SGD diffusion: `sample_paths`."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._problem import TeacherStudent, flatten_state
from .._typing import AnyArray
from .._validate import require
from ._noise import _fourth, drift_map, residual_noise
from ._result import _check

# --- sample paths ------------------------------------------------------------------------


class SamplePaths(eqx.Module):
    """Sample paths of the SGD diffusion: `t` `(T,)`, `m` `(S, T, L, P)`, `v` `(S, T, L)`."""

    t: Float[Array, " T"]
    m: Float[Array, "S T L P"]
    v: Float[Array, "S T L"]
    lr: float = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    dt: float = eqx.field(static=True)


def _psd_sqrt(X):
    lam, U = jnp.linalg.eigh(0.5 * (X + X.T))
    return (U * jnp.sqrt(jnp.clip(lam, 0.0, None))) @ U.T


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
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
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


def sample_paths(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: float,
    *,
    lr: float,
    batch_size: int,
    key: PRNGKeyArray,
    num_paths: int = 256,
    ts: Float[AnyArray, " T"] | None = None,
    t0: float = 0.0,
    dt: float | None = None,
) -> SamplePaths:
    r"""Sample paths of the SGD diffusion, a cheap stand-in for online-SGD seeds.

    The Itô SDE `dY = (F - (lr/2) J F) dt + sqrt(lr/B) Γ(Y) Cov(g)^{1/2}(Y) dW` with a
    `P`-dimensional Brownian motion `W` (module docstring): its mean and covariance obey
    the equations of `moments` to first order. Euler–Maruyama with step `dt` (default
    `lr / 4`) on a diffrax `VirtualBrownianTree`, `num_paths` paths `vmap`ped.
    """
    m0, v0, t0, t1, ts, _ = _check("sample_paths", problem, m0, v0, t0, t1, ts, None, {})
    require(np.isfinite(lr) and lr > 0, f"lr must be a finite number > 0, got {lr}")
    require(
        isinstance(batch_size, (int, np.integer)) and batch_size >= 1,
        f"batch_size must be an integer >= 1, got {batch_size!r}",
    )
    require(
        isinstance(num_paths, (int, np.integer)) and num_paths >= 1,
        f"num_paths must be an integer >= 1, got {num_paths!r}",
    )
    dt = lr / 4 if dt is None else float(dt)
    require(np.isfinite(dt) and 0 < dt <= t1 - t0, f"dt must lie in (0, t1 - t0], got {dt}")
    ys = _paths_core(
        problem,
        flatten_state(m0, v0),
        jax.random.split(key, int(num_paths)),
        *map(jnp.asarray, (t0, t1, ts, dt, float(lr), float(batch_size))),
    )
    L, P = m0.shape
    return SamplePaths(
        t=jnp.asarray(ts),
        m=ys[..., : L * P].reshape(ys.shape[:2] + (L, P)),
        v=ys[..., L * P :],
        lr=float(lr),
        batch_size=int(batch_size),
        dt=dt,
    )
