r"""Patch data: atoms, the Dirichlet-multinomial patch mixture, its moments, a sampler.

An image is `d x d`, cut into `M x M` non-overlapping patches of side `k` (`d = k M`,
patch dimension `D = k^2`, flattened row-major). Each patch equals one of `P` atoms
`mu_p`. Per image `rho ~ Dirichlet(alpha)`, then every one of the `N = M^2` patches picks
atom `p` with probability `rho_p`, so the counts are `n ~ Multinomial(N, rho)`.

With `a0 = sum(alpha)`:

$$E[\rho_p] = \alpha_p / a_0,\qquad
E[\rho_p\rho_q] = \frac{\alpha_p\alpha_q + \delta_{pq}\alpha_p}{a_0(a_0+1)},$$

$$E[n_p n_q] = N(N-1)\,E[\rho_p\rho_q] + N\,\delta_{pq}\,E[\rho_p].$$

The loss matrix is `C = E[n n^T]` for sum pooling and `E[n n^T] / N^2` for mean
pooling; `patches_per_side=None` is the continuum limit `C = E[rho rho^T]` (mean pooling
only).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray, Real

from ._deprecate import renamed_keywords
from ._keys import as_rng
from ._random import categorical, dirichlet
from ._typing import AnyArray
from ._validate import check_real, is_concrete, require

POOLINGS = ("sum", "mean")


def check_gram(gram, *, name: str = "gram", unit_diagonal: bool = False, tol: float = 1e-10):
    """Validate a Gram matrix: square, symmetric, positive semi-definite (and unit diagonal)."""
    gram = np.asarray(gram, dtype=float)
    require(
        gram.ndim == 2 and gram.shape[0] == gram.shape[1],
        f"{name} must be a square (P, P) matrix, got shape {gram.shape}",
    )
    require(np.all(np.isfinite(gram)), f"{name} has non-finite entries")
    require(np.allclose(gram, gram.T, atol=tol), f"{name} must be symmetric")
    scale = max(1.0, float(np.max(np.abs(gram))))
    lam_min = float(np.linalg.eigvalsh(gram).min())
    require(
        lam_min >= -tol * scale,
        f"{name} is not positive semi-definite (smallest eigenvalue {lam_min:.3g}); "
        "a Gram matrix of real atoms must be PSD",
    )
    if unit_diagonal:
        require(
            np.allclose(np.diag(gram), 1.0, atol=1e-8),
            f"{name} must have unit diagonal (atoms normalised to |mu|^2 / D = 1), got diagonal {np.diag(gram)}",
        )
    return gram


@renamed_keywords(seed="key")
def atoms_from_gram(gram, k: int, key: int | PRNGKeyArray = 0) -> Float[Array, "P D"]:
    """Atoms `(P, k*k)` whose Gram matrix `atoms @ atoms.T / (k*k)` is exactly `gram`.

    The atoms span a random `rank(gram)`-dimensional subspace of `R^D` (drawn from `key`, an
    int seed or a JAX key).
    """
    gram = check_gram(gram)
    require(isinstance(k, (int, np.integer)) and k >= 1, f"k must be a positive integer, got {k!r}")
    P, D = gram.shape[0], int(k) * int(k)
    require(P <= D, f"cannot place P={P} atoms in patch dimension D=k*k={D}: increase k")
    lam, U = np.linalg.eigh(gram)
    factor = U * np.sqrt(np.clip(lam, 0.0, None))  # gram = factor @ factor.T
    rng = as_rng(key)
    basis, _ = np.linalg.qr(rng.standard_normal((D, P)))  # orthonormal columns
    return jnp.asarray(math.sqrt(D) * factor @ basis.T)


def _x_pattern(k: int) -> np.ndarray:
    i = np.arange(k)
    return ((i[:, None] == i[None, :]) | (i[:, None] + i[None, :] == k - 1)).astype(float)


def _o_pattern(k: int) -> np.ndarray:
    c = (k - 1) / 2
    i = np.arange(k)
    dist = np.hypot(i[:, None] - c, i[None, :] - c)
    return (np.abs(dist - c) < 0.5).astype(float)


def shape_atoms(k: int = 5, overlap: float | None = None) -> Float[Array, "2 D"]:
    """Pixel "X" and "O" patterns of side `k`, flattened row-major, as two atoms.

    Normalised so that `|mu|^2 / D = 1`. Without `overlap` the Gram entry is whatever the
    pixel patterns share (the X's corners lie on the O for odd `k`). With `overlap = c`,
    the O is blended towards the X so that the Gram off-diagonal is exactly `c`:
    `mu_O = sqrt(D) (c x + sqrt(1 - c^2) o_perp)`, with `x` the unit X and `o_perp` the
    unit part of the O orthogonal to it.
    """
    require(isinstance(k, (int, np.integer)) and k >= 3, f"k must be an integer >= 3 for X/O shapes, got {k!r}")
    D = k * k
    x = _x_pattern(k).ravel()
    o = _o_pattern(k).ravel()
    x_unit = x / np.linalg.norm(x)
    o_unit = o / np.linalg.norm(o)
    if overlap is None:
        return jnp.asarray(math.sqrt(D) * np.stack([x_unit, o_unit]))
    overlap = float(overlap)
    require(-1.0 < overlap < 1.0, f"overlap must lie strictly between -1 and 1, got {overlap}")
    o_perp = o_unit - (o_unit @ x_unit) * x_unit
    o_perp /= np.linalg.norm(o_perp)
    o_blend = overlap * x_unit + math.sqrt(1 - overlap**2) * o_perp
    return jnp.asarray(math.sqrt(D) * np.stack([x_unit, o_blend]))


def gram_pseudo_inverse(gram: Float[AnyArray, "P P"]) -> Float[Array, "P P"]:
    """`G^+`, eagerly in numpy when `gram` is concrete (an SVD inside jit costs compile time)."""
    return jnp.asarray(np.linalg.pinv(np.asarray(gram))) if is_concrete(gram) else jnp.linalg.pinv(gram)


def dirichlet_moments(alpha: Float[AnyArray, " P"]) -> tuple[Float[Array, " P"], Float[Array, "P P"]]:
    """`E[rho]` and `E[rho rho^T]` for `rho ~ Dirichlet(alpha)`."""
    if is_concrete(alpha):
        check_real("alpha", alpha)
        require(bool(np.all(np.asarray(alpha) > 0)), f"Dirichlet parameters alpha must be > 0, got {np.asarray(alpha)}")
    alpha = jnp.asarray(alpha)
    a0 = jnp.sum(alpha)
    mean = alpha / a0
    second = (jnp.outer(alpha, alpha) + jnp.diag(alpha)) / (a0 * (a0 + 1))
    return mean, second


def count_moments(alpha: Float[AnyArray, " P"], num_patches: int) -> Float[Array, "P P"]:
    """`E[n n^T]` for `n ~ Multinomial(N, rho)`, `rho ~ Dirichlet(alpha)`, `N = num_patches`."""
    mean, second = dirichlet_moments(alpha)
    N = num_patches
    return N * (N - 1) * second + N * jnp.diag(mean)


class PatchMixture(eqx.Module):
    """Images made of `P` atoms mixed by a Dirichlet-multinomial law.

    **Arguments:**

    - `atoms`: `(P, D)` array, `D = k*k`; row `p` is the flattened `k x k` patch `mu_p`.
    - `alpha`: `(P,)` Dirichlet parameters, all `> 0`.
    - `patches_per_side`: `M` (images are `d x d`, `d = k M`, `N = M^2` patches), or `None`
      for the continuum limit `M -> inf` (only with `pooling="mean"`).
    - `pooling`: `"sum"` (Lovig's formula) or `"mean"` (global average pooling).
    """

    atoms: Float[Array, "P D"]
    alpha: Float[Array, " P"]
    patches_per_side: int | None = eqx.field(static=True)
    pooling: str = eqx.field(static=True)

    def __init__(self, atoms, alpha, patches_per_side: int | None, pooling: str = "sum"):
        require(pooling in POOLINGS, f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if patches_per_side is None:
            require(
                pooling == "mean",
                "patches_per_side=None (continuum moments E[rho rho^T]) needs pooling='mean': "
                "with sum pooling the loss grows like N^2 and has no continuum limit",
            )
        else:
            require(
                isinstance(patches_per_side, (int, np.integer)) and patches_per_side >= 1,
                f"patches_per_side must be a positive integer or None, got {patches_per_side!r}",
            )
            patches_per_side = int(patches_per_side)
        check_real("atoms", atoms)
        check_real("alpha", alpha)
        atoms = jnp.asarray(atoms, dtype=float)
        alpha = jnp.asarray(alpha, dtype=float)
        require(atoms.ndim == 2, f"atoms must be a (P, D) array, got shape {atoms.shape}")
        P, D = atoms.shape
        k = math.isqrt(D)
        require(k * k == D, f"atoms must have D = k*k columns (square patches), got D={D}")
        require(alpha.shape == (P,), f"alpha must have shape (P,) = ({P},) to match atoms, got {alpha.shape}")
        if is_concrete(alpha):
            require(
                bool(jnp.all(jnp.isfinite(alpha)) & jnp.all(alpha > 0)),
                f"Dirichlet parameters alpha must be finite and > 0, got {np.asarray(alpha)}",
            )
        if is_concrete(atoms):
            require(bool(jnp.all(jnp.isfinite(atoms))), "atoms contain non-finite values")
        self.atoms = atoms
        self.alpha = alpha
        self.patches_per_side = patches_per_side
        self.pooling = pooling

    @property
    def num_atoms(self) -> int:
        """`P`."""
        return self.atoms.shape[0]

    @property
    def patch_dim(self) -> int:
        """`D = k*k`."""
        return self.atoms.shape[1]

    @property
    def patch_size(self) -> int:
        """`k`, the patch side."""
        return math.isqrt(self.patch_dim)

    @property
    def num_patches(self) -> int | None:
        """`N = M^2` (`None` in the continuum limit)."""
        M = self.patches_per_side
        return None if M is None else M * M

    @property
    def image_size(self) -> int | None:
        """`d = k M` (`None` in the continuum limit)."""
        M = self.patches_per_side
        return None if M is None else self.patch_size * M

    @property
    def gram(self) -> Float[Array, "P P"]:
        """`G_pq = mu_p . mu_q / D`."""
        return self.atoms @ self.atoms.T / self.patch_dim

    def overlaps(self, kernels: Float[AnyArray, "*B L D"]) -> Float[Array, "*B L P"]:
        """Order parameters of kernels: `m_lp = K_l . mu_p / D`."""
        kernels = jnp.asarray(kernels)
        return kernels @ self.atoms.astype(kernels.dtype).T / self.patch_dim

    def in_span_kernels(
        self, m: Float[AnyArray, "*B L P"], gram_pinv: Float[AnyArray, "P P"] | None = None
    ) -> Float[Array, "*B L D"]:
        """The kernels in the atoms' span with order parameters `m`: `K = m G^+ mu`.

        The exact inverse of `overlaps` on the span (when the rows of `m` lie in the row
        space of `G`, always for independent atoms). `gram_pinv` passes a precomputed `G^+`.
        """
        gram_pinv = gram_pseudo_inverse(self.gram) if gram_pinv is None else gram_pinv
        return jnp.asarray(m) @ gram_pinv @ self.atoms

    @property
    def moments(self) -> Float[Array, "P P"]:
        """The loss matrix `C`: `E[n n^T]` (sum), `E[n n^T]/N^2` (mean), `E[rho rho^T]` (continuum)."""
        N = self.num_patches
        if N is None:
            return dirichlet_moments(self.alpha)[1]
        C = count_moments(self.alpha, N)
        return C if self.pooling == "sum" else C / N**2

    def pooled_counts(self, counts: Real[AnyArray, "... P"]) -> Float[Array, "... P"]:
        """Counts `n` as they enter the pooled output: `n` (sum) or `n / N` (mean)."""
        counts = jnp.asarray(counts, dtype=float)
        if self.pooling == "sum":
            return counts
        N = self.num_patches
        if N is None:
            raise ValueError(
                "pooled_counts: the continuum limit (patches_per_side=None) has no patch counts; use a finite patches_per_side"
            )
        return counts / N

    def sample_counts(self, key: PRNGKeyArray, num_images: int) -> tuple[Int[Array, "n M M"], Int[Array, "n P"]]:
        """Atom index of every patch `(n, M, M)` and the counts `(n, P)`.

        Each image draws `rho ~ Dirichlet(alpha)`, then each patch's atom from `rho`
        (the exact samplers of `cnntheory._random`).
        """
        M = self.patches_per_side
        if M is None:
            raise ValueError("cannot sample images in the continuum limit (patches_per_side=None)")
        require(int(num_images) >= 1, f"num_images must be >= 1, got {num_images}")
        k_rho, k_patch = jax.random.split(key)
        rho = dirichlet(k_rho, self.alpha, int(num_images))
        labels = categorical(k_patch, rho, (M, M))
        return labels, atom_counts(labels, self.num_atoms)

    def images_from_labels(self, labels: Int[AnyArray, "n M M"]) -> Float[Array, "n d d"]:
        """Assemble `d x d` images from per-patch atom indices."""
        n, M, _ = labels.shape
        k = self.patch_size
        patches = self.atoms[labels].reshape(n, M, M, k, k)
        return patches.transpose(0, 1, 3, 2, 4).reshape(n, M * k, M * k)

    def sample(self, key: PRNGKeyArray, num_images: int) -> tuple[Float[Array, "n d d"], Int[Array, "n P"]]:
        """Draw `num_images` images `(n, d, d)` and their patch counts `(n, P)`."""
        labels, counts = self.sample_counts(key, num_images)
        return self.images_from_labels(labels), counts


def atom_counts(labels: Int[AnyArray, "n M M"], num_atoms: int) -> Int[Array, "n P"]:
    """How many patches of each image are each atom, `(n, P)`, from the atom index of every patch."""
    return jax.nn.one_hot(labels, num_atoms, dtype=int).sum(axis=(1, 2))


@runtime_checkable
class _HasMixture(Protocol):
    """A problem of the Dirac-mixture model (e.g. `TeacherStudent`): anything with a `mixture`."""

    mixture: PatchMixture


def empirical_moments(problem: _HasMixture, counts: Int[AnyArray, "n P"]) -> Float[Array, "P P"]:
    """`C_hat = mean_i n~_i n~_i^T` of a training set (`n~`: pooled counts of `problem.mixture`).

    The finite-data stand-in for the population `C = E[n~ n~^T]`: with it the order-parameter
    loss `1/2 (a - b)^T C_hat (a - b)` is exactly the training-set loss
    (`cnntheory.simulate.empirical_problem`).
    """
    pooled = problem.mixture.pooled_counts(counts)
    return pooled.T @ pooled / pooled.shape[0]


def extract_patches(images: Float[AnyArray, "n d d"], k: int) -> Float[Array, "n N D"]:
    """Non-overlapping `k x k` patches of `(n, d, d)` images, row-major: `(n, N, k*k)`."""
    images = jnp.asarray(images)
    require(images.ndim == 3, f"images must have shape (n, d, d), got {images.shape}")
    n, d, d2 = images.shape
    require(d == d2 and d % k == 0, f"images must be square with side divisible by k={k}, got {images.shape[1:]}")
    M = d // k
    return images.reshape(n, M, k, M, k).transpose(0, 1, 3, 2, 4).reshape(n, M * M, k * k)
