"""The student and teacher as real networks: a strided convolution, and its patch-atom shortcut."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._activations import Activation
from .._data import atom_counts, gram_pseudo_inverse
from .._problem import TeacherStudent
from .._typing import AnyArray
from .._validate import require


def _with_registry_derivative(act: Activation):
    """`act` with `act.derivative` as its JAX derivative.

    Gradient descent must use the derivative the ODE uses, bit for bit (autodiff of `fn`
    agrees with `derivative` only to round-off, and at relu's kink by convention).
    """

    @jax.custom_jvp
    def fn(x):
        return act.fn(x)

    @fn.defjvp
    def _jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        return act.fn(x), act.derivative(x) * dx

    return fn


def network(
    kernels: Float[Array, "L D"],
    head: Float[Array, " L"],
    images: Float[Array, "n d d"],
    activation: Activation,
    pooling: str,
) -> Float[Array, " n"]:
    """`sum_l head_l POOL_ij act(kernels_l . patch_ij / D)` by a stride-`k` convolution.

    Images `(n, d, d)` with `d` a multiple of `k = sqrt(D)`; `pooling` `"sum"` or `"mean"`.
    """
    L, D = kernels.shape
    k = math.isqrt(D)
    weights = kernels.reshape(L, 1, k, k)  # OIHW
    x = images[:, None, :, :]  # NCHW
    pre = jax.lax.conv_general_dilated(x, weights, window_strides=(k, k), padding="VALID") / D
    act = _with_registry_derivative(activation)(pre)  # (n, L, M, M)
    pooled = jnp.sum(act, axis=(2, 3)) if pooling == "sum" else jnp.mean(act, axis=(2, 3))
    return pooled @ head


def patch_network(
    kernels: Float[Array, "L D"],
    head: Float[Array, " L"],
    patches: Int[Array, "n M M"],
    atoms: Float[Array, "P D"],
    activation: Activation,
    pooling: str,
) -> Float[Array, " n"]:
    r"""`network` on the images whose patch `(i, j)` is the atom `patches[:, i, j]`.

    Every patch is an atom, so the stride-`k` convolution is a matrix product and a lookup:
    `K_l . patch_ij / D = T[patches_ij, l]` with the `(P, L)` table `T = atoms K^T / D`,
    and pooling over patches groups them by atom:

    $$\mathrm{POOL}_{ij}\, \sigma(T_{p_{ij} l}) = \sum_p c_p\, \sigma(T_{pl}),$$

    with `c_p` the image's count of atom `p` (`sum` pooling) or its fraction (`mean`).
    The same function as `network(kernels, head, images_from_labels(patches), ...)` (equal
    to round-off, gradients included), at a fraction of the cost: the activation is
    evaluated on `P L` numbers, not `n M^2 L`, and its gradient needs no scatter over
    patches (XLA:CPU runs a convolution, or a gather's transpose, inside a compiled loop
    many times slower than on its own).
    """
    table = atoms @ kernels.T / kernels.shape[1]  # (P, L)
    counts = atom_counts(patches, atoms.shape[0]).astype(table.dtype)
    if pooling == "mean":
        counts = counts / (patches.shape[1] * patches.shape[2])
    return counts @ _with_registry_derivative(activation)(table) @ head


def teacher_kernels(problem: TeacherStudent) -> Float[Array, "Lstar D"]:
    """Teacher kernels `K*` realising `problem.teacher_overlaps` on the atoms.

    The default teacher (overlaps = Gram) has `K* = mu`, the atoms themselves. Custom
    overlaps only fix `K*` on the atoms' span; the in-span choice is
    `K* = m* G^+ mu` (minimum norm), which reproduces `m*` when its rows lie in the row
    space of `G` (always, for linearly independent atoms).
    """
    mixture = problem.mixture
    overlaps = problem.teacher_overlaps
    if overlaps.shape == problem.gram.shape and bool(jnp.all(overlaps == problem.gram)):
        return mixture.atoms
    K_star = mixture.in_span_kernels(overlaps)
    err = float(jnp.max(jnp.abs(mixture.overlaps(K_star) - overlaps)))
    require(
        err < 1e-8,
        f"teacher_overlaps cannot be realised by teacher kernels (residual {err:.2e}): "
        "their rows must lie in the row space of the atom Gram matrix",
    )
    return K_star


def init_kernels(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    key: PRNGKeyArray,
    scale: float = 1.0,
) -> Float[Array, "L D"]:
    """Kernels `K` with `K mu^T / D = m0` exactly (up to round-off).

    `K = scale Z + (m0 - scale Z mu^T / D) G^+ mu` with `Z` standard Gaussian `(L, D)`:
    the in-span part is `m0 G^+ mu` and the rest, `scale Z` minus its projection onto the
    atoms' span, is orthogonal to every atom (it never moves under training and never
    changes an output). Rows of `m0` must lie in the row space of `G`.
    """
    return _init_kernels(problem, m0, key, scale, gram_pseudo_inverse(problem.gram))


def _init_kernels(problem, m0, key, scale, gram_pinv):
    mixture = problem.mixture
    z = scale * jax.random.normal(key, (m0.shape[0], mixture.patch_dim), dtype=mixture.atoms.dtype)
    return z + mixture.in_span_kernels(m0 - mixture.overlaps(z), gram_pinv)
