"""Activation functions by name: one registry for the numeric and symbolic code.

Each entry carries the function, its derivative (written out, not autodiffed, so
that tests can check it against `jax.grad`), a sympy builder for the symbolic layer
and whether it is smooth. `relu` is the one non-smooth student activation: its kink
at 0 is what makes Filippov sliding possible (see `cnntheory.solve`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp

_SQRT2 = 1.4142135623730951
_SQRT_2_OVER_PI = 0.7978845608028654

#: Default tolerance of the `indicator` activation, `1{|x - 1| < tol}`.
INDICATOR_TOL = 1e-6


@dataclasses.dataclass(frozen=True)
class Activation:
    """A named scalar activation `sigma` with its derivative.

    - `fn(x)`, `derivative(x)`: elementwise JAX functions.
    - `sympy(x)`: builds the sympy expression of `sigma(x)` for a sympy symbol `x`.
    - `smooth`: `False` for activations with a kink (only `relu`, kink at 0).
    - `homogeneous`: `True` when `sigma(c x) = c sigma(x)` for `c > 0` (relu, linear):
      then the kernel/head balance `D m_l G^{-1} m_l^T / eta_K - v_l^2 / eta_v` is
      conserved for each unit `l`.
    """

    name: str
    fn: Callable
    derivative: Callable
    sympy: Callable
    smooth: bool = True
    homogeneous: bool = False

    def __call__(self, x):
        return self.fn(x)


def _sympy_relu(x):
    import sympy as sp

    return sp.Max(0, x)


def _sympy_sigmoid(x):
    import sympy as sp

    return 1 / (1 + sp.exp(-x))


def _sympy_tanh(x):
    import sympy as sp

    return sp.tanh(x)


def _sympy_swish(x):
    import sympy as sp

    return x / (1 + sp.exp(-x))


def _sympy_gelu(x):
    import sympy as sp

    return x * (1 + sp.erf(x / sp.sqrt(2))) / 2


def _sympy_softplus(x):
    import sympy as sp

    return sp.log(1 + sp.exp(x))


def _sympy_erf(x):
    import sympy as sp

    return sp.erf(x)


def _sympy_scaled_erf(x):
    import sympy as sp

    return sp.erf(x / sp.sqrt(2))


def _sympy_linear(x):
    return x


def _sympy_quadratic(x):
    return x**2


def _sympy_indicator(x, tol=INDICATOR_TOL):
    import sympy as sp

    return sp.Piecewise((1, sp.Abs(x - 1) < tol), (0, True))


def _sigmoid(x):
    return 1 / (1 + jnp.exp(-x))


def _dsigmoid(x):
    s = _sigmoid(x)
    return s * (1 - s)


def _gelu(x):
    return 0.5 * x * (1 + jsp.erf(x / _SQRT2))


def _dgelu(x):
    return 0.5 * (1 + jsp.erf(x / _SQRT2)) + x * 0.5 * _SQRT_2_OVER_PI * jnp.exp(-0.5 * x**2)


def _indicator(x, tol=INDICATOR_TOL):
    return jnp.where(jnp.abs(x - 1) < tol, 1.0, 0.0).astype(jnp.result_type(x, float))


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation(
            "relu",
            jax.nn.relu,
            # relu'(0) = 0: the convention of `jax.nn.relu`, so the Euler map of the flow
            # is gradient descent exactly as JAX differentiates it.
            lambda x: jnp.where(x > 0, 1.0, 0.0).astype(jnp.result_type(x, float)),
            _sympy_relu,
            smooth=False,
            homogeneous=True,
        ),
        Activation("sigmoid", _sigmoid, _dsigmoid, _sympy_sigmoid),
        Activation("tanh", jnp.tanh, lambda x: 1 - jnp.tanh(x) ** 2, _sympy_tanh),
        Activation(
            "swish",
            lambda x: x * _sigmoid(x),
            lambda x: _sigmoid(x) + x * _dsigmoid(x),
            _sympy_swish,
        ),
        Activation("gelu", _gelu, _dgelu, _sympy_gelu),
        Activation("softplus", lambda x: jnp.logaddexp(x, 0.0), _sigmoid, _sympy_softplus),
        Activation(
            "erf",
            jsp.erf,
            lambda x: 2 / jnp.sqrt(jnp.pi) * jnp.exp(-(x**2)),
            _sympy_erf,
        ),
        # Saad & Solla's g(x) = erf(x / sqrt 2): its Gaussian integrals have closed forms
        # (see `cnntheory.gaussian`); g'(x) = sqrt(2/pi) exp(-x^2/2).
        Activation(
            "scaled_erf",
            lambda x: jsp.erf(x / _SQRT2),
            lambda x: _SQRT_2_OVER_PI * jnp.exp(-0.5 * x**2),
            _sympy_scaled_erf,
        ),
        Activation(
            "linear",
            lambda x: x,
            lambda x: jnp.ones_like(x, dtype=jnp.result_type(x, float)),
            _sympy_linear,
            homogeneous=True,
        ),
        Activation("quadratic", lambda x: x**2, lambda x: 2 * x, _sympy_quadratic),
        Activation(
            "indicator",
            _indicator,
            lambda x: jnp.zeros_like(x, dtype=jnp.result_type(x, float)),
            _sympy_indicator,
        ),
    ]
}


def get_activation(name: str | Activation) -> Activation:
    """Look an activation up by name (an `Activation` passes through).

    Raises `ValueError` naming the known activations for an unknown name.
    """
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; choose one of: {known}") from None
