r"""Spread of full-batch training across finite training sets: `response`, `training_set_spread`.

Full-batch GD on `num_train` images follows the flow with `C_hat = mean_i ñ_i ñ_i^T` in
place of `C`. To first order in `1/num_train` the trajectory moves by `S vec(C_hat - C)`
with the linear response `S = dy / d vec C`, so `Cov y = S Cov(vec C_hat) S^T`. At a finite
step `lr` (the default once `lr` is given) `S` is the exact derivative of the gradient-descent
map `y_{k+1} = y_k + lr F(y_k; C)`:

$$S_{k+1} = (I + \mathrm{lr}\,J_k)\,S_k + \mathrm{lr}\,\partial F/\partial\,\mathrm{vec}\,C,\qquad S_0 = 0,$$

and the predicted mean is that map (population GD); `lr=None` (or `discrete=False`) is the
`lr -> 0` limit, forward-mode sensitivity of the flow, `dS/dt = J S + dF/d vec C`.
"""

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
from ._result import Fluctuations, _check, _check_lr, _grid_ts, _record_steps, _result, _whole_steps
from ._validity import record_indicators

# --- finite training sets ------------------------------------------------------------------


def moment_covariance(problem: TeacherStudent) -> Float[Array, "PP PP"]:
    r"""`Cov(vec ñ ñ^T)`, `(P^2, P^2)`: one image's contribution to the spread of `C_hat`.

    `Cov(vec C_hat) = moment_covariance(problem) / n_train` over training sets of `n_train`
    images (fourth count moments minus `vec C vec C^T`).
    """
    P = problem.num_atoms
    C = problem.mixture.moments.reshape(-1)
    return _fourth(problem).reshape(P * P, P * P) - jnp.outer(C, C)


def _F_C(problem, y, C):
    return problem.with_moments(C).flat_rhs(y)


def _sensitivity_field(t, state, problem):
    y, S = state
    P = problem.num_atoms
    C = problem.moments
    J = jax.jacfwd(_F_C, argnums=1)(problem, y, C)
    dFdC = jax.jacfwd(_F_C, argnums=2)(problem, y, C).reshape(y.shape[0], P * P)
    return _F_C(problem, y, C), J @ S + dFdC


@eqx.filter_jit
def _sensitivity_core(problem, y0, t0, t1, ts, config):
    P = problem.num_atoms
    state0 = (y0, jnp.zeros((y0.shape[0], P * P)))
    return integrate(_sensitivity_field, state0, problem, t0, t1, ts, config)


@eqx.filter_jit
def _sensitivity_map_core(problem, y0, record_steps, lr):
    P = problem.num_atoms

    def step(k, state):
        f, dS = _sensitivity_field(None, state, problem)
        y, S = state
        return y + lr * f, S + lr * dS  # the GD map and its exact derivative in vec C

    def record(carry, k_end):
        k, state = carry
        state = jax.lax.fori_loop(k, k_end, step, state)
        return (k_end, state), state

    state0 = (y0, jnp.zeros((y0.shape[0], P * P)))
    return jax.lax.scan(record, (jnp.asarray(0, dtype=record_steps.dtype), state0), record_steps)[1]


def response(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: float,
    *,
    ts: Float[AnyArray, " T"] | None = None,
    t0: float = 0.0,
    lr: float | None = None,
    discrete: bool = True,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> tuple[Float[Array, "T n"], Float[Array, "T n PP"]]:
    r"""The path `y(t)` and its linear response `S(t) = dy(t) / d vec C`, `(T, n, P^2)`.

    With `lr` (and `discrete=True`): gradient descent with step `lr` and the exact
    derivative of its map, `S_{k+1} = (I + lr J) S_k + lr dF/d vec C` (save times whole
    steps `t0 + k lr`). With `lr=None` or `discrete=False`: the flow and forward-mode
    sensitivity `dS/dt = J S + dF/d vec C`, `S(0) = 0`. The solver options are as in `moments`.
    """
    if lr is not None:
        lr = _check_lr(lr)
    discrete = bool(discrete) and lr is not None
    if lr is not None and discrete:
        ts = _grid_ts(t0, t1, ts, lr)
    m0, v0, t0, t1, ts, config = _check("response", problem, m0, v0, t0, t1, ts, config, options)
    y0 = flatten_state(m0, v0)
    if lr is not None and discrete:
        _whole_steps("t1 - t0", t1 - t0, lr)
        y, S = _sensitivity_map_core(problem, y0, jnp.asarray(_record_steps(t0, ts, lr)), jnp.asarray(lr))
        if not bool(jnp.all(jnp.isfinite(y))):
            raise SolverError(status_message(Status.DIVERGED, t1, "gradient descent", t1, None, 0))
        return y, S
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
    lr: float | None = None,
    discrete: bool = True,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> Fluctuations:
    r"""Spread of full-batch training across training sets of `num_train` images.

    To first order in `1/num_train`, `Cov y(t) = S(t) Cov(vec ñ ñ^T) S(t)^T / num_train`
    with `S` from `response` (module docstring): of gradient descent's map with step `lr`
    when `lr` is given (the default then, `discrete=True`), else of the flow (`lr -> 0`).
    The mean is gradient descent (or the flow) with `C`: its shift is `O(1/num_train)`.
    Returns a `Fluctuations` (`kind="training_set"`), its `validity` indicators. The solver options are as in `moments`.
    """
    require(
        isinstance(num_train, (int, np.integer)) and num_train >= 1,
        f"num_train must be an integer >= 1, got {num_train!r}",
    )
    if lr is not None:
        lr = _check_lr(lr)
    discrete = bool(discrete) and lr is not None
    if lr is not None and discrete:
        ts = _grid_ts(t0, t1, ts, lr)
    config = resolve_config(config, options, caller="training_set_spread")
    t0, t1, ts = check_times(float(t0), float(t1), ts)
    y, S = response(problem, m0, v0, t1, ts=ts, t0=t0, lr=lr, discrete=discrete, config=config)
    K = moment_covariance(problem)
    cov = jnp.einsum("tia,ab,tjb->tij", S, K, S) / num_train
    flow = y
    if discrete:  # the flow, for the bias of gradient descent
        flow, _ = response(problem, m0, v0, t1, ts=ts, t0=t0, config=config)
    validity = record_indicators(problem, y, cov, 0.0 if lr is None else lr, 1.0 / num_train)
    result = _result(
        problem,
        ts,
        jnp.asarray(m0, dtype=float),
        (flow, y, cov),
        jnp.asarray(Status.SUCCESS),
        Status.SUCCESS.describe(),
        True,
        kind="training_set",
        lr=lr,
        batch_size=None,
        num_train=int(num_train),
        discrete=discrete,
        validity=validity,
    )
    validity.warn(ts, "fluctuations.training_set_spread")
    return result
