r"""relu's four- and three-field Gaussian integrals `I4` and `J3` in closed form.

With `theta = relu'` (the step; `theta(0) = 0`) and a centred Gaussian `u` of covariance `C`,

$$J_3 = E[\theta(a)\theta(b)\,\mathrm{relu}(c)] = E[x_c\,\theta(a)\theta(b)\theta(c)],\qquad
I_4 = E[\theta(a)\theta(b)\,\mathrm{relu}(c)\,\mathrm{relu}(d)] = E[x_c x_d\,\theta(a)\theta(b)\theta(c)\theta(d)],$$

moments of `x_c`, `x_d` over the orthant `S = {a, b, c, d > 0}` (`relu(x) = x theta(x)`).

**Stein's lemma** `E[x_k h(u)] = sum_j C_kj E[d_j h(u)]`, with `d theta = delta` and
`E[delta(y_j) F] = p_j(0) E[F | y_j = 0]` (`p_j` the density of `y_j`), gives for a constraint
set `S` of centred Gaussians `y_j` and linear fields `x_k`, `x_l`:

$$E\Big[x_k\prod_{s\in S}\theta(y_s)\Big] = \sum_{j\in S} C_{kj}\,p_j(0)\,P(S\setminus j > 0 \mid y_j = 0),$$
$$E\Big[x_k x_l\prod_{s\in S}\theta(y_s)\Big] = C_{kl}\,P(S > 0) + \sum_{j\in S}\sum_{i\in S, i\ne j}
C_{kj}\,\big(C_{li} - C_{lj}C_{ji}/C_{jj}\big)\,p_{ij}(0,0)\,P(S\setminus\{i,j\} > 0\mid y_i = y_j = 0),$$

with `p_ij(0, 0) = 1 / (2 pi sqrt(C_ii C_jj - C_ij^2))`. For `J3` (`|S| = 3`) and `I4`
(`|S| = 4`) every conditional probability is a **bivariate orthant**
`P(y, w > 0) = 1/4 + arcsin(rho) / 2 pi` with `rho` the partial correlation of the
conditional (Schur-complement) covariance: a closed form. The remaining `P(S > 0)` of four
fields has no elementary closed form; **Plackett's identity**
`dP/dR_ij = phi_2(0, 0; R_ij) P(other two > 0 | y_i = y_j = 0)` integrated along
`R(s) = I + s (R - I)` from the independent orthant `1/16` gives

$$P(S > 0) = \frac1{16} + \int_0^1 \sum_{i<j}\frac{R_{ij}}{2\pi\sqrt{1 - s^2R_{ij}^2}}\,
P_{R(s)}(\text{other two} > 0 \mid y_i = y_j = 0)\,ds,$$

a smooth one-dimensional integral, done by Gauss–Legendre in `t` with `s = 1 - t^2`: the
substitution turns the `(1 - s)^{-1/2}` endpoint singularity of a singular `R` (`R_ij = 1`)
and the `sqrt(1 - s)` behaviour of `arcsin` near `+-1` into smooth functions of `t`.

**Degenerate covariances** occur in the flow (the same field twice, `a = b` when `l = k`; a
student equal to a teacher; zero-variance fields) and are handled exactly:

- two constraint fields with correlation `+1` are the same field, `theta(y)^2 = theta(y)`: the
  second is replaced by an **independent** standard field and the result multiplied by 2
  (an independent constraint only halves the probability), which keeps the formulas above
  at fixed size and non-singular;
- correlation `-1`: `theta(y) theta(-y) = 0`, the integral is 0; a zero-variance constraint
  field gives 0 (`theta(0) = 0`);
- a conditional variance that vanishes (a field in the span of the conditioned ones) makes
  that field 0 given the condition, and the formula's terms are then limits that depend on
  the direction of approach (their sum does not: the integral is continuous in `C`). All
  of them are taken along the same direction `C + eps I`, `eps -> 0`: a conditional
  correlation with one vanishing variance tends to 0; with both vanishing (four fields in a
  plane, `y_p = alpha_p y_i + beta_p y_j`) to
  `(alpha_y alpha_w + beta_y beta_w) / sqrt((1 + alpha_y^2 + beta_y^2)(1 + alpha_w^2 + beta_w^2))`
  (checked against Monte Carlo).

Everything is `jit`/`vmap`-able and free of NaNs for every positive semi-definite `C`.

**Derivatives.** At a correlation of exactly `+-1` orthant probabilities have a square-root
cusp (`arcsin` near 1). For the same field twice (`l = k`) every perturbation keeps the
fields equal and the derivative is finite; `jax` returns it (the `arcsin`/`sqrt` used have
zero slope at the edge). Where two *different* fields coincide (a student exactly equal to
a teacher, e.g. the perfect-learning fixed point) the true derivative in directions that
separate them is infinite; `jax` then returns the derivative along directions that keep
them equal, so a Jacobian there (`reduced_flow_jacobian`) is one-sided, not the linearisation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._typing import AnyArray

_PI = jnp.pi
#: Two constraint fields with `|rho| > 1 - _SAME` are treated as the same (or opposite) field.
_SAME = 1e-12
#: A (conditional) variance below `_TINY` times the scale of `C` counts as zero.
_TINY = 1e-13
#: Gauss–Legendre points of Plackett's integral (in `t`, `s = 1 - t^2`).
PLACKETT_POINTS = 48


@functools.cache
def _legendre(n: int):
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1), 0.5 * w  # nodes and weights on [0, 1] (numpy: safe to cache)


def _orthant2(c_yy, c_ww, c_yw, scale, rho_both_zero=0.0):
    """`P(y > 0, w > 0)` of a centred pair. A vanishing variance is the limit of an independent
    perturbation (module docstring): correlation 0 if one variance vanishes, `rho_both_zero`
    if both do."""
    ok_y, ok_w = c_yy > _TINY * scale, c_ww > _TINY * scale
    ok = ok_y & ok_w
    rho = jnp.where(ok, c_yw / jnp.sqrt(jnp.where(ok, c_yy * c_ww, 1.0)), 0.0)
    rho = jnp.where(~ok_y & ~ok_w, rho_both_zero, rho)
    inside = jnp.abs(rho) < 1  # arcsin with a zero slope at +-1 (see `_integrals._asin`)
    asin = jnp.where(inside, jnp.arcsin(jnp.where(inside, rho, 0.0)), jnp.sign(rho) * _PI / 2)
    return 0.25 + asin / (2 * _PI)


def _given_one(C, j, rest, scale):
    """Bivariate orthant of `rest` (two indices) given `y_j = 0`."""
    y, w = rest
    s = lambda p, q: C[p, q] - C[p, j] * C[j, q] / C[j, j]
    return _orthant2(s(y, y), s(w, w), s(y, w), scale)


def _given_two(C, i, j, rest, scale):
    """Bivariate orthant of `rest` (two indices) given `y_i = y_j = 0` (Schur complement).

    If both remaining fields lie in the span of `y_i`, `y_j` (`y_p = alpha_p y_i + beta_p y_j`,
    conditional variances 0), the limit under `C + eps I` is taken: the conditional pair is
    `eps (z_p - alpha_p z_i - beta_p z_j)`, correlation
    `(alpha_y alpha_w + beta_y beta_w) / sqrt((1 + alpha_y^2 + beta_y^2)(1 + alpha_w^2 + beta_w^2))`.
    """
    det = C[i, i] * C[j, j] - C[i, j] ** 2
    det = jnp.where(det > 0, det, 1.0)  # only reached for a deduplicated, non-parallel pair

    def coef(p):  # regression of y_p on (y_i, y_j)
        return (C[j, j] * C[p, i] - C[i, j] * C[p, j]) / det, (C[i, i] * C[p, j] - C[i, j] * C[p, i]) / det

    def s(p, q):
        a, b = coef(q)
        return C[p, q] - a * C[p, i] - b * C[p, j]

    y, w = rest
    (ay, by), (aw, bw) = coef(y), coef(w)
    rho_lim = (ay * aw + by * bw) / jnp.sqrt((1 + ay**2 + by**2) * (1 + aw**2 + bw**2))
    return _orthant2(s(y, y), s(w, w), s(y, w), scale, rho_lim)


def _pairs(n):
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def orthant4(R: Float[AnyArray, "4 4"], n: int = PLACKETT_POINTS) -> Float[Array, ""]:
    """`P(y > 0)` for `y ~ N(0, R)`, `R` a 4x4 correlation matrix, by Plackett's integral."""
    t, w = _legendre(n)
    s = 1.0 - t**2
    total = jnp.zeros((), R.dtype)
    Rs = (1.0 - s)[:, None, None] * jnp.eye(4) + s[:, None, None] * R  # R(s) at the nodes
    for i in range(4):
        for j in range(i + 1, 4):
            rest = tuple(k for k in range(4) if k not in (i, j))
            cond = jax.vmap(functools.partial(_given_two, i=i, j=j, rest=rest, scale=1.0))(Rs)
            dens = R[i, j] / (2 * _PI * jnp.sqrt(jnp.maximum(1.0 - (s * R[i, j]) ** 2, 1e-300)))
            total = total + jnp.sum(w * 2 * t * dens * cond)
    return 1.0 / 16 + total


def _dedup(C, m):
    """Constraint fields `0..m-1` of `C`: returns `(C', factor, zero)` where parallel duplicates
    are replaced by independent unit fields (`factor = 2^{#replaced}`) and `zero` flags an
    anti-parallel pair or a zero-variance field (integral 0)."""
    d = jnp.diag(C)[:m]
    scale = jnp.max(jnp.abs(jnp.diag(C))) + 1e-300
    dead = d <= _TINY * scale
    safe_d = jnp.where(dead, 1.0, d)
    rho = C[:m, :m] / jnp.sqrt(safe_d[:, None] * safe_d[None, :])
    zero = jnp.any(dead)
    factor = jnp.ones((), C.dtype)
    for j in range(m):
        for i in range(j):
            zero = zero | (rho[i, j] < -1 + _SAME)
        same = jnp.any(jnp.stack([rho[i, j] > 1 - _SAME for i in range(j)])) if j else jnp.zeros((), bool)
        e = jnp.zeros(C.shape[0], C.dtype).at[j].set(1.0)
        C = jnp.where(same, C.at[j, :].set(e).at[:, j].set(e), C)
        factor = factor * jnp.where(same, 2.0, 1.0)
    # Zero-variance fields: a harmless stand-in so that nothing below divides by zero.
    e_safe = jnp.eye(C.shape[0], dtype=C.dtype)
    C = jnp.where(zero, e_safe, C)
    return C, factor, zero


# jit: the graphs are a few hundred small ops, slow to run eagerly (`rhs` called outside jit).
@jax.jit
def relu_J3(C: Float[AnyArray, "3 3"]) -> Float[Array, ""]:
    """`E[theta(a) theta(b) relu(c)]` for `(a, b, c) ~ N(0, C)` (module docstring)."""
    ext = C[jnp.ix_(jnp.array([0, 1, 2, 2]), jnp.array([0, 1, 2, 2]))]  # constraints a, b, c; linear c
    ext, factor, zero = _dedup(ext, 3)
    scale = jnp.max(jnp.diag(ext))
    k = 3
    val = sum(
        ext[k, j] / jnp.sqrt(2 * _PI * ext[j, j]) * _given_one(ext, j, tuple(r for r in range(3) if r != j), scale)
        for j in range(3)
    )
    return jnp.where(zero, 0.0, factor * val)


@functools.partial(jax.jit, static_argnames="n")
def relu_I4(C: Float[AnyArray, "4 4"], n: int = PLACKETT_POINTS) -> Float[Array, ""]:
    """`E[theta(a) theta(b) relu(c) relu(d)]` for `(a, b, c, d) ~ N(0, C)` (module docstring)."""
    idx = jnp.array([0, 1, 2, 3, 2, 3])  # constraints a, b, c, d; linear c, d
    ext = C[jnp.ix_(idx, idx)]
    ext, factor, zero = _dedup(ext, 4)
    scale = jnp.max(jnp.diag(ext))
    k, l = 4, 5
    sd = jnp.sqrt(jnp.diag(ext)[:4])
    P4 = orthant4(ext[:4, :4] / (sd[:, None] * sd[None, :]), n)
    val = ext[k, l] * P4
    for j, i in _pairs(4):
        rest = tuple(r for r in range(4) if r not in (i, j))
        det = ext[i, i] * ext[j, j] - ext[i, j] ** 2
        p_ij = 1 / (2 * _PI * jnp.sqrt(jnp.where(det > 0, det, 1.0)))
        cov_li_j = ext[l, i] - ext[l, j] * ext[j, i] / ext[j, j]
        val = val + ext[k, j] * cov_li_j * p_ij * _given_two(ext, i, j, rest, scale)
    return jnp.where(zero, 0.0, factor * val)
