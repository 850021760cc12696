r"""The continuous-time (gradient-flow) form of the linear-CNN theory, integrated with diffrax.

`dW/dtau = -grad_W L(W)` with `L(W) = mean_x (sum_k w_k . pbar(x) - y(x))^2`. Its exact
solution is `ExactLinearCNN.flow_delta`; GD with step `eta` is its Euler map at `tau = eta t`,
and the discrete closed form tends to it as `eta -> 0` with error `O(eta)`.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from .._typing import AnyArray
from .._validate import require


def _pooled_loss(w, pooled, labels):
    return jnp.mean((pooled @ w.sum(axis=0) - labels) ** 2)


@eqx.filter_jit
def _solve(w0, pooled, labels, times, rtol, atol):
    field = lambda tau, w, args: -jax.grad(_pooled_loss)(w, *args)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        diffrax.Tsit5(),
        t0=jnp.zeros_like(times[0]),
        t1=times[-1],
        dt0=None,
        y0=w0,
        args=(pooled, labels),
        saveat=diffrax.SaveAt(ts=times),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=100_000,
    )
    return sol.ys


def gradient_flow(
    pooled: Float[AnyArray, "n D"],
    labels: Float[AnyArray, " n"],
    w0: Float[AnyArray, "K D"],
    times: Float[AnyArray, " T"],
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> Float[np.ndarray, "T K D"]:
    """Filters `W(tau)` `(T, K, D)` of the linear CNN's gradient flow at `times` (Tsit5, adaptive steps)."""
    pooled = jnp.asarray(pooled, dtype=float)
    labels = jnp.asarray(labels, dtype=float)
    w0 = jnp.asarray(w0, dtype=float)
    times = jnp.asarray(times, dtype=float)
    require(
        times.ndim == 1 and times.size >= 1 and bool(jnp.all(times >= 0)) and bool(jnp.all(jnp.diff(times) >= 0)),
        "times must be a non-decreasing vector of tau >= 0",
    )
    require(
        w0.ndim == 2 and w0.shape[1] == pooled.shape[1], f"w0 must have shape (K, D={pooled.shape[1]}), got {w0.shape}"
    )
    return np.asarray(_solve(w0, pooled, labels, times, jnp.asarray(rtol), jnp.asarray(atol)))
