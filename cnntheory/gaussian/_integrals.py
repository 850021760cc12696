r"""Gaussian expectations of activations: closed forms and a Gauss–Hermite quadrature.

The order-parameter flow of Gaussian patches needs averages of activations over the
local fields `u = (lambda_1..lambda_K, nu_1..nu_M)` of one patch, a centred Gaussian with
covariance `C` (`Q`, `R`, `T` blocks). With `phi_j` the activation of field `j` (student
`g` for `j < K`, teacher `g*` after) and `g'` the student derivative:

| name | expectation | used in |
|---|---|---|
| `mean`  | `E phi(a)` | cross-patch terms (zero for odd activations) |
| `I2`    | `E phi_1(a) phi_2(b)` | error |
| `I3`    | `E g'(a) b phi(c)` | first-order `dQ`, `dR` |
| `I4`    | `E g'(a) g'(b) phi_1(c) phi_2(d)` | second-order `dQ` |
| `J2`    | `E g'(a) g'(b)` | second-order `dQ` (noise, other patches) |
| `J3`    | `E g'(a) g'(b) phi(c)` | second-order `dQ`, non-odd, `N > 1` |
| `M1`    | `E g'(a) b` | first-order cross-patch, non-odd, `N > 1` |

Closed forms (`C_xy` the covariance entries of the variables named):

- **scaled_erf**, `g(x) = erf(x / sqrt 2)` (Saad & Solla 1995):
  `I2 = (2/pi) arcsin(C_ab / sqrt((1 + C_aa)(1 + C_bb)))`,
  `I3 = (2/pi) (C_bc (1 + C_aa) - C_ab C_ac) / ((1 + C_aa) sqrt(L3))`, `L3 = (1 + C_aa)(1 + C_cc) - C_ac^2`,
  `I4 = 4 / (pi^2 sqrt(L4)) arcsin(L0 / sqrt(L1 L2))` with `L4 = (1 + C_aa)(1 + C_bb) - C_ab^2`,
  `L0 = L4 C_cd - C_bc C_bd (1 + C_aa) - C_ac C_ad (1 + C_bb) + C_ab C_ac C_bd + C_ab C_ad C_bc`,
  `L1 = L4 (1 + C_cc) - C_bc^2 (1 + C_aa) - C_ac^2 (1 + C_bb) + 2 C_ab C_ac C_bc` (and `L2` the
  same with `d` for `c`), `J2 = (2/pi) ((1 + C_aa)(1 + C_bb) - C_ab^2)^{-1/2}`; odd, so `mean = 0`.
- **linear**: `I2 = C_ab`, `I3 = C_bc`, `I4 = C_cd`, `J2 = 1`, `J3 = 0`, `M1 = 0`, `mean = 0`.
- **relu** (arc-cosine kernels, `rho = C_ab / sqrt(C_aa C_bb)`):
  `mean = sqrt(C_aa / 2 pi)`, `I2 = sqrt(C_aa C_bb) (sqrt(1 - rho^2) + (pi - arccos rho) rho) / 2 pi`,
  `J2 = 1/4 + arcsin(rho) / 2 pi`, `M1 = C_ab / sqrt(2 pi C_aa)` (Stein), and by Stein's lemma on `b`,
  `I3 = C_ab p_a(0) E[relu(c) | a = 0] + C_bc J2(a, c)` with `p_a(0) = (2 pi C_aa)^{-1/2}` and
  `E[relu(c) | a = 0] = sqrt((C_cc - C_ac^2 / C_aa) / 2 pi)`. `J3` and `I4` are moments over
  orthants, reduced by Stein's lemma to bivariate orthant probabilities (closed forms) plus,
  for `I4`, one four-variate orthant probability written as a one-dimensional Plackett
  integral (48-point Gauss–Legendre, accurate to round-off); degenerate covariances
  (`a = b`, a student equal to a teacher) are handled exactly (`cnntheory.gaussian._relu`).

**Quadrature.** `E f(u)` for `u ~ N(0, C)` is a tensor Gauss–Hermite rule in whitened
coordinates, `u = V diag(sqrt(w)) z` with `C = V diag(w) V^T` (`eigh`, so singular
covariances such as `a = b` work), `z` standard normal on an `n^k` grid. It is exact for
polynomials of degree `< 2n` and converges fast for smooth activations; at relu's kink
it converges only algebraically (its error is measured in the tests), which is why relu
has closed forms for every kind.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._activations import Activation, get_activation
from ._relu import relu_I4, relu_J3

_PI = jnp.pi

#: Closed-form families (student and teacher must both be one of them).
CLOSED_FORMS = ("scaled_erf", "linear", "relu")


@functools.cache
def hermite_rule(dim: int, n: int):
    """Nodes `(n^dim, dim)` and weights `(n^dim,)` of the tensor Gauss–Hermite rule for `N(0, I_dim)`."""
    x, w = np.polynomial.hermite_e.hermegauss(n)  # weight exp(-x^2/2)
    w = w / np.sqrt(2 * np.pi)
    grids = np.meshgrid(*([x] * dim), indexing="ij")
    wgrids = np.meshgrid(*([w] * dim), indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=-1)
    weights = np.prod(np.stack([g.ravel() for g in wgrids], axis=-1), axis=-1)
    nodes.flags.writeable = weights.flags.writeable = False  # cached: shared by every caller
    return nodes, weights  # numpy: cached arrays must not be created inside a trace


def gaussian_expectation(f, cov, n: int = 16):
    """`E f(u)` for `u ~ N(0, cov)` by Gauss–Hermite quadrature; `f` maps `(..., k)` to `(...)`."""
    k = cov.shape[-1]
    w, V = jnp.linalg.eigh(cov)
    A = V * jnp.sqrt(jnp.maximum(w, 0.0))
    nodes, weights = hermite_rule(k, n)
    return jnp.sum(weights * f(nodes @ A.T))


def _sub(C, idx):
    idx = jnp.asarray(idx)
    return C[idx[:, None], idx[None, :]]


# --- scaled_erf closed forms -------------------------------------------------------


def _erf_I2(C):
    return (2 / _PI) * jnp.arcsin(C[0, 1] / jnp.sqrt((1 + C[0, 0]) * (1 + C[1, 1])))


def _erf_I3(C):
    L3 = (1 + C[0, 0]) * (1 + C[2, 2]) - C[0, 2] ** 2
    return (2 / _PI) * (C[1, 2] * (1 + C[0, 0]) - C[0, 1] * C[0, 2]) / ((1 + C[0, 0]) * jnp.sqrt(L3))


def _erf_I4(C):
    L4 = (1 + C[0, 0]) * (1 + C[1, 1]) - C[0, 1] ** 2
    L0 = (
        L4 * C[2, 3]
        - C[1, 2] * C[1, 3] * (1 + C[0, 0])
        - C[0, 2] * C[0, 3] * (1 + C[1, 1])
        + C[0, 1] * C[0, 2] * C[1, 3]
        + C[0, 1] * C[0, 3] * C[1, 2]
    )

    def L(c):
        return (
            L4 * (1 + C[c, c])
            - C[1, c] ** 2 * (1 + C[0, 0])
            - C[0, c] ** 2 * (1 + C[1, 1])
            + 2 * C[0, 1] * C[0, c] * C[1, c]
        )

    return 4 / (_PI**2 * jnp.sqrt(L4)) * jnp.arcsin(L0 / jnp.sqrt(L(2) * L(3)))


def _erf_J2(C):
    return (2 / _PI) / jnp.sqrt((1 + C[0, 0]) * (1 + C[1, 1]) - C[0, 1] ** 2)


def _erf_J3(C):
    # g'(a) g'(b) phi(c), phi odd: the integrand is odd in (a, b, c) -> -(a, b, c).
    return jnp.zeros((), C.dtype)


def _erf_M1(C):
    # E g'(a) b = C_ab E g''(a) = 0 (g'' odd).
    return jnp.zeros((), C.dtype)


def _zero_mean(c):
    return jnp.zeros((), jnp.result_type(c))


# --- linear closed forms ------------------------------------------------------------

_LINEAR = {
    "mean": _zero_mean,
    "I2": lambda C: C[0, 1],
    "I3": lambda C: C[1, 2],
    "I4": lambda C: C[2, 3],
    "J2": lambda C: jnp.ones((), C.dtype),
    "J3": lambda C: jnp.zeros((), C.dtype),
    "M1": lambda C: jnp.zeros((), C.dtype),  # C_ab E g''(a) = 0
}

# --- relu closed forms --------------------------------------------------------------


def _rho(C, i, j):
    return jnp.clip(C[i, j] / jnp.sqrt(C[i, i] * C[j, j]), -1.0, 1.0)


# The relu forms meet `rho = +-1` and conditional variances 0 exactly (a field paired with
# itself, `l = k`); there `arcsin`, `arccos` and `sqrt` have infinite slopes, and the flow's
# Jacobian (`jax.jacfwd`) would turn them into NaN. The safe versions give the same values
# and a zero slope at the edge: the edge is reached along directions that keep it (the
# same field twice stays the same field), where the exact derivative has no such term.
def _asin(r):
    inside = jnp.abs(r) < 1
    return jnp.where(inside, jnp.arcsin(jnp.where(inside, r, 0.0)), jnp.sign(r) * _PI / 2)


def _sqrt0(x):
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _relu_I2(C):
    rho = _rho(C, 0, 1)
    return jnp.sqrt(C[0, 0] * C[1, 1]) * (_sqrt0(1 - rho**2) + (_PI / 2 + _asin(rho)) * rho) / (2 * _PI)


def _relu_J2(C):
    return 0.25 + _asin(_rho(C, 0, 1)) / (2 * _PI)


def _relu_I3(C):
    density0 = 1 / jnp.sqrt(2 * _PI * C[0, 0])
    cond_var = C[2, 2] - C[0, 2] ** 2 / C[0, 0]
    j2 = 0.25 + _asin(_rho(C, 0, 2)) / (2 * _PI)
    return C[0, 1] * density0 * _sqrt0(cond_var / (2 * _PI)) + C[1, 2] * j2


_CLOSED: dict[str, dict[str, Callable]] = {
    "scaled_erf": {
        "mean": _zero_mean,
        "I2": _erf_I2,
        "I3": _erf_I3,
        "I4": _erf_I4,
        "J2": _erf_J2,
        "J3": _erf_J3,
        "M1": _erf_M1,
    },
    "linear": _LINEAR,
    "relu": {
        "mean": lambda c: jnp.sqrt(c / (2 * _PI)),
        "I2": _relu_I2,
        "I3": _relu_I3,
        "J2": _relu_J2,
        "M1": lambda C: C[0, 1] / jnp.sqrt(2 * _PI * C[0, 0]),
        "I4": relu_I4,
        "J3": relu_J3,
    },
}


def closed_form(name: str, kind: str):
    """The closed form of expectation `kind` for activation `name`, or `None` if there is none."""
    return _CLOSED.get(name, {}).get(kind)


# --- quadrature versions (any activation) ------------------------------------------


def quadrature(kind: str, g: Activation, phi1: Activation, phi2: Activation | None = None, n: int = 16):
    """The quadrature version of expectation `kind` as a function of the sub-covariance.

    `g` supplies `g'` (the student derivative); `phi1`, `phi2` the activations of the
    last one or two variables (see the module table).
    """
    dg = g.derivative
    phi2 = phi1 if phi2 is None else phi2
    integrands = {
        "mean": lambda u: phi1.fn(u[..., 0]),
        "I2": lambda u: phi1.fn(u[..., 0]) * phi2.fn(u[..., 1]),
        "I3": lambda u: dg(u[..., 0]) * u[..., 1] * phi1.fn(u[..., 2]),
        "I4": lambda u: dg(u[..., 0]) * dg(u[..., 1]) * phi1.fn(u[..., 2]) * phi2.fn(u[..., 3]),
        "J2": lambda u: dg(u[..., 0]) * dg(u[..., 1]),
        "J3": lambda u: dg(u[..., 0]) * dg(u[..., 1]) * phi1.fn(u[..., 2]),
        "M1": lambda u: dg(u[..., 0]) * u[..., 1],
    }
    f = integrands[kind]
    if kind == "mean":
        return lambda c: gaussian_expectation(f, jnp.reshape(c, (1, 1)), n)
    return lambda C: gaussian_expectation(f, C, n)


def expectation(kind: str, student, teacher=None, *, which=(), n: int = 16, method: str = "auto"):
    """One expectation of the module table as a function of its sub-covariance.

    `which` names, for the `phi` slots of `kind`, whether each is the student (`"s"`) or
    the teacher (`"t"`) activation. `method="auto"` uses the closed form when every
    activation involved has one, `"quadrature"` forces the quadrature.
    """
    g = get_activation(student)
    gs = g if teacher is None else get_activation(teacher)
    acts = [g if w == "s" else gs for w in which]
    names = {g.name} | {a.name for a in acts} if kind not in ("J2", "M1") else {g.name}
    if method == "auto" and len(names) == 1:
        fn = closed_form(names.pop(), kind)
        if fn is not None:
            return fn
    phis = acts or [g]
    return quadrature(kind, g, phis[0], phis[1] if len(phis) > 1 else None, n=n)


def vmapped(fn, C, index_array):
    """`fn(C[idx, idx])` for every row `idx` of `index_array` (an integer `(n, k)` array)."""
    return jax.vmap(lambda idx: fn(_sub(C, idx)))(jnp.asarray(index_array))
