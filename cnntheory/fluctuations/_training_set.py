"""Spread of full-batch training across finite training sets: `training_set_spread`."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from typing_extensions import Unpack

from .._config import SolverConfig, SolverOptions, resolve_config
from .._integrate import integrate
from .._problem import TeacherStudent, flatten_state
from .._trajectory import SolverError, Status, status_message
from .._typing import AnyArray
from .._validate import check_times, require
from ._noise import _fourth
from ._result import Fluctuations, _check, _result

# --- finite training sets ------------------------------------------------------------------


def moment_covariance(problem: TeacherStudent) -> Float[Array, "PP PP"]:
    r"""`Cov(vec ñ ñ^T)`, `(P^2, P^2)`: one image's contribution to the spread of `C_hat`.

    `Cov(vec C_hat) = moment_covariance(problem) / n_train` over training sets of `n_train`
    images (fourth count moments minus `vec C vec C^T`).
    """
    P = problem.num_atoms
    C = problem.mixture.moments.reshape(-1)
    return _fourth(problem).reshape(P * P, P * P) - jnp.outer(C, C)


def _sensitivity_field(t, state, problem):
    y, S = state
    P = problem.num_atoms

    def F(y, C):
        return problem.with_moments(C).flat_rhs(y)

    C = problem.moments
    J = jax.jacfwd(F, argnums=0)(y, C)
    dFdC = jax.jacfwd(F, argnums=1)(y, C).reshape(y.shape[0], P * P)
    return F(y, C), J @ S + dFdC


@eqx.filter_jit
def _sensitivity_core(problem, y0, t0, t1, ts, config):
    P = problem.num_atoms
    state0 = (y0, jnp.zeros((y0.shape[0], P * P)))
    return integrate(_sensitivity_field, state0, problem, t0, t1, ts, config)


def response(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: float,
    *,
    ts: Float[AnyArray, " T"] | None = None,
    t0: float = 0.0,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> tuple[Float[Array, "T n"], Float[Array, "T n PP"]]:
    r"""The flow `y(t)` and its linear response `S(t) = dy(t) / d vec C`, `(T, n, P^2)`.

    Forward-mode sensitivity integrated with the flow: `dS/dt = J S + dF/d vec C`, `S(0) = 0`.
    The solver options are as in `moments`.
    """
    m0, v0, t0, t1, ts, config = _check("response", problem, m0, v0, t0, t1, ts, config, options)
    y0 = flatten_state(m0, v0)
    (y, S), status, _, t_end = _sensitivity_core(problem, y0, jnp.asarray(t0), jnp.asarray(t1), jnp.asarray(ts), config)
    if int(status) != Status.SUCCESS:
        raise SolverError(status_message(status, t_end, config.method, t1, config.max_steps, 0))
    return y, S


def training_set_spread(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: float,
    *,
    num_train: int,
    ts: Float[AnyArray, " T"] | None = None,
    t0: float = 0.0,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> Fluctuations:
    r"""Spread of full-batch training across training sets of `num_train` images.

    Full-batch GD follows the flow with `C_hat`; to first order in `1/num_train`,
    `Cov y(t) = S(t) Cov(vec ñ ñ^T) S(t)^T / num_train` with `S` from `response`
    (module docstring). The mean is the flow with `C` (its shift is `O(1/num_train)`).
    Returns a `Fluctuations` (`kind="training_set"`). The solver options are as in `moments`.
    """
    require(
        isinstance(num_train, (int, np.integer)) and num_train >= 1,
        f"num_train must be an integer >= 1, got {num_train!r}",
    )
    config = resolve_config(config, options, caller="training_set_spread")
    t0, t1, ts = check_times(float(t0), float(t1), ts)
    y, S = response(problem, m0, v0, t1, ts=ts, t0=t0, config=config)
    K = moment_covariance(problem)
    cov = jnp.einsum("tia,ab,tjb->tij", S, K, S) / num_train
    m0 = jnp.asarray(m0, dtype=float)
    return _result(
        problem,
        ts,
        m0,
        (y, y, cov),
        jnp.asarray(Status.SUCCESS),
        t1,
        config,
        t1,
        True,
        kind="training_set",
        lr=None,
        batch_size=None,
        num_train=int(num_train),
    )
