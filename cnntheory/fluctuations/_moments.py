"""The moment equations of online SGD: `moments`."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float
from typing_extensions import Unpack

from .._config import SolverConfig, SolverOptions
from .._integrate import integrate
from .._problem import TeacherStudent, flatten_state
from .._typing import AnyArray
from .._validate import require
from ._noise import _fourth, drift_map, residual_noise
from ._result import Fluctuations, _check, _result


# --- moment equations ------------------------------------------------------------------
def _mean_drift(problem, y, Sigma, lr, discrete_step, noise_drift):
    """`F - (lr/2) J F + 1/2 F'':Sigma` at `y`, and `J`, `F`."""
    F = problem.flat_rhs
    f, J = F(y), jax.jacfwd(F)(y)
    drift = f
    if discrete_step:
        drift = drift - 0.5 * lr * J @ f
    if noise_drift:
        hess = jax.jacfwd(jax.jacfwd(F))(y)  # (n, n, n)
        drift = drift + 0.5 * jnp.einsum("ijk,jk->i", hess, Sigma)
    return drift, J, f


def _moment_field(t, state, args, discrete_step, noise_drift):
    problem, lr, batch, fourth = args
    y_flow, mu, Sigma = state
    drift, J, _ = _mean_drift(problem, mu, Sigma, lr, discrete_step, noise_drift)
    m, v = problem.unflatten(mu)
    G = drift_map(problem, m, v)
    D = G @ residual_noise(problem, m, v, fourth) @ G.T
    dSigma = J @ Sigma + Sigma @ J.T + (lr / batch) * D
    return problem.flat_rhs(y_flow), drift, 0.5 * (dSigma + dSigma.T)


@eqx.filter_jit
def _moments_core(problem, y0, t0, t1, ts, lr, batch, config, *, discrete_step, noise_drift):
    n = y0.shape[0]
    args = (problem, lr, batch, _fourth(problem))
    state0 = (y0, y0, jnp.zeros((n, n)))
    field = functools.partial(_moment_field, discrete_step=discrete_step, noise_drift=noise_drift)
    return integrate(field, state0, args, t0, t1, ts, config)


def moments(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: float,
    *,
    lr: float,
    batch_size: int,
    ts: Float[AnyArray, " T"] | None = None,
    t0: float = 0.0,
    discrete_step: bool = True,
    noise_drift: bool = True,
    throw: bool = True,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> Fluctuations:
    r"""Seed mean and covariance of online SGD with step `lr` and batch `B`, from `(m0, v0)`.

    Integrates, as one system with the package's diffrax integrator, the plain flow, the
    first-order mean `dmu/dt = F - (lr/2) J F + 1/2 F'':Sigma` and the covariance
    `dSigma/dt = J Sigma + Sigma J^T + (lr/B) D(mu)` (module docstring), in ODE time
    `t = lr * steps`, every run starting at `(m0, v0)`.

    **Arguments:** `problem` (a smooth student activation; its mixture gives the images'
    counts), `m0` `(L, P)`, `v0` `(L,)`, `t1`; `lr` the SGD step; `batch_size` `B`; `ts`
    save times (default 101 in `[t0, t1]`); `config` (or its fields as keywords: `method`,
    `rtol`, `atol`, `max_steps`, ...) as in `cnntheory.solve`, adaptive diffrax methods. `discrete_step=False` drops the `-(lr/2) J F` term,
    `noise_drift=False` the `1/2 F'':Sigma` term (to see each contribution).

    **Returns:** a `Fluctuations` (`kind="online"`).
    """
    m0, v0, t0, t1, ts, config = _check("moments", problem, m0, v0, t0, t1, ts, config, options)
    require(np.isfinite(lr) and lr > 0, f"lr must be a finite number > 0 (the SGD step in ODE time), got {lr}")
    require(
        isinstance(batch_size, (int, np.integer)) and batch_size >= 1,
        f"batch_size must be an integer >= 1, got {batch_size!r}",
    )
    out, status, _, t_end = _moments_core(
        problem,
        flatten_state(m0, v0),
        jnp.asarray(t0),
        jnp.asarray(t1),
        jnp.asarray(ts),
        jnp.asarray(float(lr)),
        jnp.asarray(float(batch_size)),
        config,
        discrete_step=bool(discrete_step),
        noise_drift=bool(noise_drift),
    )
    return _result(
        problem,
        ts,
        m0,
        out,
        status,
        t_end,
        config,
        t1,
        throw,
        kind="online",
        lr=float(lr),
        batch_size=int(batch_size),
        num_train=None,
    )
