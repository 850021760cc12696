r"""The teacher–student problem on Gaussian patches: generalisation error and the exact
order-parameter flow of online SGD as `D -> infinity`.

## Model

An image is `N` non-overlapping patches `x_i ~ N(0, I_D)`, independent. With pooling
constant `c = 1` (`"sum"`) or `c = 1/N` (`"mean"`),

$$f(x) = c\sum_{l=1}^K v_l \sum_{i=1}^N g(\lambda_{li}),\quad \lambda_{li} = \frac{K_l\cdot x_i}{\sqrt D},\qquad
y = c\sum_{m=1}^M v^*_m\sum_{i=1}^N g^*(\nu_{mi}) + \sigma\xi,\quad \nu_{mi} = \frac{K^*_m\cdot x_i}{\sqrt D}.$$

Note the `1/sqrt(D)` pre-activation scaling of this model (the classic committee-machine
convention, pre-activations `O(1)` for kernels of norm `sqrt(D)`), against the `1/D` of the
Dirac-mixture model of `cnntheory.TeacherStudent`. Order parameters `Q = K K^T / D`,
`R = K K*^T / D`, `T = K* K*^T / D`. For each patch the fields `u_i = (lambda_.i, nu_.i)` are
centred Gaussian with covariance `C = [[Q, R], [R^T, T]]`, independent across patches.

Online SGD on `1/2 (f - y)^2`, one fresh image per step:
`K_l <- K_l - eta grad_{K_l}`, `v_l <- v_l - (eta / D) grad_{v_l}` (if the head is trained),
time `alpha = steps / D`.

## Per-patch quantities

With `h_i = sum_l v_l g(lambda_li) - sum_m v*_m g*(nu_mi)` (the committee error on patch
`i`, zero-mean only for odd activations) the error is `Delta = f - y = c sum_i h_i - sigma xi`.
Write `E h`, `E h^2`, `A_lp = E[h g'(lambda_l) u_p]`, `B_lk = E[h^2 g'(lambda_l) g'(lambda_k)]`,
`G_lk = E[h g'_l g'_k]`, `J_lk = E[g'_l g'_k]`, `M_lp = E[g'_l u_p]`, `mu_l = E g(lambda_l)`,
`S_l = E[h g(lambda_l)]`, all on one patch (`cnntheory.gaussian` integrals).

## What weight sharing adds

**Error.** Patches are independent, so `E(sum_i h_i)^2 = N E h^2 + N(N-1) (E h)^2`:

$$\epsilon = \tfrac12 E(f-y)^2 - \tfrac12\sigma^2 = \tfrac{c^2}2\big[N\,E h^2 + N(N-1)(E h)^2\big].$$

**First order.** `R_lm` moves by `-(eta/D) c v_l Delta sum_i g'(lambda_li) nu_mi`. In
`E[Delta g'(lambda_l1) nu_m1]` the other patches `j != 1` enter only through their mean:

$$\frac{dR_{lm}}{d\alpha} = -\eta\,N c^2 v_l\big[A_{l,K+m} + (N-1)\,E h\; M_{l,K+m}\big],$$

and the same with `u_p = lambda_k` plus `(l <-> k)` for the first-order part of `dQ_lk`. The
cross-patch term `(N-1) E h M` survives the limit but vanishes for odd activations
(`E h = 0`, and also `M = C E g'' = 0` for odd `g`). For odd activations the only effect is the
factor `N c^2`: a time rescaling by `N` (sum pooling) or `1/N` (mean pooling).

**Second order.** `Q_lk` also gains `(eta^2/D^2) c^2 v_l v_k Delta^2 sum_{i,j} g'_li g'_kj x_i . x_j`.
For `D -> infinity`, `x_i . x_j / D -> delta_ij` (the fluctuation `O(D^{-1/2})` averages out
over the `O(D)` steps of a unit of `alpha`, and the in-span part is `O(1/D)`), so **only the
diagonal `i = j` survives**: there are no `i != j` cross terms of the gradients. But `Delta^2`
still carries all patches. Expanding `(sum_j h_j)^2` around patch 1:

$$\frac{dQ_{lk}}{d\alpha}\Big|_{\eta^2} = \eta^2 N c^2 v_l v_k\Big\{c^2\big[B_{lk} + 2(N-1)E h\,G_{lk}
+ \big((N-1)E h^2 + (N-1)(N-2)(E h)^2\big)J_{lk}\big] + \sigma^2 J_{lk}\Big\}.$$

So even for odd activations the other `N - 1` patches act on the learning of patch 1 like
**an output noise of variance `c^2 (N-1) E h^2`** (proportional to the error itself): that term
survives for every activation and is what makes the `N`-patch flow more than a rescaled
committee machine. For non-odd activations the mean terms `E h` add the `G` and `(E h)^2` parts.

**Heads** (if trained): `dv_l/dalpha = -eta N c^2 [S_l + (N-1) E h mu_l]`.

With `N = 1` (so `c = 1` either way) every cross-patch term vanishes and the flow is
exactly the soft committee machine of Saad & Solla (1995) and Goldt et al. (2019).
"""

from __future__ import annotations

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._activations import get_activation
from .._deprecate import keyword_only_now
from .._typing import AnyArray
from .._validate import require, require_finite
from ._integrals import expectation, vmapped

POOLINGS = ("sum", "mean")

# Slot layout of each expectation: "d" a student index carrying g', "x" any field used
# linearly, "p" a field carrying its own activation (student or teacher). "p" slots are last.
_SLOTS = {"I2": "pp", "I3": "dxp", "I4": "ddpp", "J2": "dd", "J3": "ddp", "M1": "dx"}


class GaussianTeacherStudent(eqx.Module):
    """Teacher–student problem on `N` Gaussian patches (module docstring for the equations).

    - `num_patches`: `N`; `pooling`: `"sum"` (`c = 1`) or `"mean"` (`c = 1/N`).
    - `teacher_head`: `(M,)` `v*`; `teacher_overlaps`: `(M, M)` `T = K* K*^T / D`.
    - `teacher_activation`, `student_activation`: registry names (`"scaled_erf"` is the
      Saad–Solla `erf(x / sqrt 2)`). These and everything after them are keyword-only (the
      old positional order, student first, still works for one release with a warning).
    - `lr`: `eta`; `noise_std`: `sigma` of the label noise; `train_head`: learn `v` too.
    - `quadrature_points`: Gauss–Hermite points per dimension where no closed form exists
      (smooth activations converge exponentially; at relu's kink only like `1/n`, about 1e-2
      at 16 points, which is why relu has closed forms for every integral); `method`:
      `"auto"` (closed forms where they exist: `scaled_erf`, `linear`, `relu`) or `"quadrature"`.
    """

    num_patches: int = eqx.field(static=True)
    teacher_head: Float[Array, " M"]
    teacher_overlaps: Float[Array, "M M"]
    student_activation: str = eqx.field(static=True)
    teacher_activation: str = eqx.field(static=True)
    lr: Float[Array, ""]
    noise_std: Float[Array, ""]
    train_head: bool = eqx.field(static=True)
    pooling: str = eqx.field(static=True)
    quadrature_points: int = eqx.field(static=True)
    method: str = eqx.field(static=True)

    # Until 0.4 the activations came positionally as (student, teacher), against
    # `TeacherStudent`'s (teacher, student): keyword-only now, the old order honoured with a warning.
    @keyword_only_now("student_activation", "teacher_activation", "lr", "noise_std", "train_head", "pooling", after=4)
    def __init__(
        self,
        num_patches: int,
        teacher_head,
        teacher_overlaps,
        *,
        teacher_activation: str = "scaled_erf",
        student_activation: str = "scaled_erf",
        lr: float = 0.1,
        noise_std: float = 0.0,
        train_head: bool = False,
        pooling: str = "sum",
        quadrature_points: int = 16,
        method: str = "auto",
    ):
        require(
            isinstance(num_patches, (int, np.integer)) and num_patches >= 1,
            f"num_patches must be an integer >= 1, got {num_patches!r}",
        )
        require(pooling in POOLINGS, f"pooling must be one of {POOLINGS}, got {pooling!r}")
        require(method in ("auto", "quadrature"), f"method must be 'auto' or 'quadrature', got {method!r}")
        head = jnp.atleast_1d(jnp.asarray(teacher_head, dtype=jnp.float64))
        T = jnp.atleast_2d(jnp.asarray(teacher_overlaps, dtype=jnp.float64))
        M = head.shape[0]
        require(head.ndim == 1, f"teacher_head must be a vector (M,), got shape {head.shape}")
        require(T.shape == (M, M), f"teacher_overlaps must have shape ({M}, {M}) to match teacher_head, got {T.shape}")
        require_finite("teacher_head", head)
        require_finite("teacher_overlaps", T)
        require(bool(jnp.allclose(T, T.T)), "teacher_overlaps must be symmetric (it is K* K*^T / D)")
        require(
            float(jnp.min(jnp.linalg.eigvalsh(T))) > -1e-12,
            "teacher_overlaps must be positive semi-definite (it is K* K*^T / D)",
        )
        require(float(lr) > 0, f"lr must be > 0, got {lr}")
        require(float(noise_std) >= 0, f"noise_std must be >= 0, got {noise_std}")
        self.num_patches = int(num_patches)
        self.teacher_head = head
        self.teacher_overlaps = T
        self.student_activation = get_activation(student_activation).name
        self.teacher_activation = get_activation(teacher_activation).name
        self.lr = jnp.asarray(lr, dtype=jnp.float64)
        self.noise_std = jnp.asarray(noise_std, dtype=jnp.float64)
        self.train_head = bool(train_head)
        self.pooling = pooling
        self.quadrature_points = int(quadrature_points)
        self.method = method

    @property
    def num_teachers(self) -> int:
        return self.teacher_head.shape[0]

    @property
    def pool_constant(self) -> float:
        """`c`: 1 for sum pooling, `1/N` for mean pooling."""
        return 1.0 if self.pooling == "sum" else 1.0 / self.num_patches

    def covariance(self, Q: Float[AnyArray, "K K"], R: Float[AnyArray, "K M"]) -> Float[Array, "K+M K+M"]:
        """`C = [[Q, R], [R^T, T]]`, the covariance of one patch's local fields."""
        return jnp.block([[Q, R], [R.T, self.teacher_overlaps]])

    def _expectation(self, kind, which=()):
        return expectation(
            kind,
            self.student_activation,
            self.teacher_activation,
            which=which,
            n=self.quadrature_points,
            method=self.method,
        )

    def _tensor(self, kind, C, K):
        """The expectation `kind` for every index tuple, as an array (slot layout `_SLOTS`)."""
        slots = _SLOTS[kind]
        M = C.shape[0] - K
        n_p = slots.count("p")
        blocks = {}
        for combo in itertools.product("st", repeat=n_p):
            ranges = [np.arange(K) if s == "d" else np.arange(K + M) for s in slots[: len(slots) - n_p]]
            ranges += [np.arange(K) if w == "s" else K + np.arange(M) for w in combo]
            shape = tuple(len(r) for r in ranges)
            idx = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, len(slots))
            blocks[combo] = vmapped(self._expectation(kind, combo), C, idx).reshape(shape)
        if n_p == 0:
            return blocks[()]
        if n_p == 1:
            return jnp.concatenate([blocks[("s",)], blocks[("t",)]], axis=-1)
        return jnp.block([[blocks[("s", "s")], blocks[("s", "t")]], [blocks[("t", "s")], blocks[("t", "t")]]])

    def _means(self, C, K):
        mean_s = self._expectation("mean", ("s",))
        mean_t = self._expectation("mean", ("t",))
        d = jnp.diag(C)
        return jnp.concatenate([jax.vmap(mean_s)(d[:K]), jax.vmap(mean_t)(d[K:])])

    def _heads(self, v):
        return jnp.concatenate([v, -self.teacher_head])

    def error(self, Q: Float[AnyArray, "K K"], R: Float[AnyArray, "K M"], v: Float[AnyArray, " K"]) -> Float[Array, ""]:
        """Generalisation error `1/2 E (f - y)^2` without the label noise (module docstring)."""
        K, N, c = Q.shape[0], self.num_patches, self.pool_constant
        C = self.covariance(Q, R)
        w = self._heads(v)
        Eh = w @ self._means(C, K)
        Eh2 = w @ self._tensor("I2", C, K) @ w
        return 0.5 * c**2 * (N * Eh2 + N * (N - 1) * Eh**2)

    def rhs(self, Q: Float[AnyArray, "K K"], R: Float[AnyArray, "K M"], v: Float[AnyArray, " K"]):
        """`(dQ, dR, dv)` per unit `alpha = steps / D`, including the `eta^2` terms."""
        K, N, c = Q.shape[0], self.num_patches, self.pool_constant
        eta, sigma2 = self.lr, self.noise_std**2
        C = self.covariance(Q, R)
        w = self._heads(v)
        mean = self._means(C, K)
        Eh = w @ mean
        I2 = self._tensor("I2", C, K)
        Eh2 = w @ I2 @ w
        A = self._tensor("I3", C, K) @ w  # (K, K+M): E[h g'_l u_p]
        B = jnp.einsum("lkab,a,b->lk", self._tensor("I4", C, K), w, w)
        J = self._tensor("J2", C, K)
        first = A
        second = c**2 * (B + (N - 1) * Eh2 * J) + sigma2 * J
        if N > 1:
            # Cross-patch means: zero for odd activations, kept in general.
            first = first + (N - 1) * Eh * self._tensor("M1", C, K)
            G = self._tensor("J3", C, K) @ w
            second = second + c**2 * (2 * (N - 1) * Eh * G + (N - 1) * (N - 2) * Eh**2 * J)
        pref = N * c**2
        dR = -eta * pref * v[:, None] * first[:, K:]
        grad_Q = v[:, None] * first[:, :K]
        dQ = -eta * pref * (grad_Q + grad_Q.T) + eta**2 * N * c**2 * jnp.outer(jnp.asarray(v), jnp.asarray(v)) * second
        if self.train_head:
            S = (I2 @ w)[:K]
            dv = -eta * pref * (S + (N - 1) * Eh * mean[:K])
        else:
            dv = jnp.zeros_like(v)
        return dQ, dR, dv


def require_realisable(T: Float[AnyArray, "M M"], Q: Float[AnyArray, "K K"], R: Float[AnyArray, "K M"]) -> None:
    r"""Raise a `ValueError` unless `Q`, `R` (with the teacher's `T`) are the overlaps of real kernels.

    Kernels `K (K, D)`, `K* (M, D)` exist with `Q = K K^T / D`, `R = K K*^T / D`, `T = K* K*^T / D`
    exactly when the joint covariance `C = [[Q, R], [R^T, T]]` is positive semi-definite (a Gram
    matrix). The necessary conditions are checked first, for a message that names the broken one:
    `Q` symmetric, `Q_ll >= 0`, `|R_ln| <= sqrt(Q_ll T_nn)` (Cauchy-Schwarz), `Q` PSD. The
    tolerance is `1e-10` relative to the largest entry of `C` (round-off of overlaps that were
    computed from kernels). The flow and the simulation start from these overlaps, so this runs
    before any step: unrealisable overlaps would otherwise integrate (slowly) into nonsense.
    """
    T, Q, R = (np.asarray(x, dtype=np.float64) for x in (T, Q, R))
    require(Q.ndim == 2 and Q.shape[0] == Q.shape[1], f"Q0 must be a square (K, K) matrix, got shape {Q.shape}")
    require(
        R.shape == (Q.shape[0], T.shape[0]),
        f"R0 must have shape ({Q.shape[0]}, {T.shape[0]}) (students x teachers), got {R.shape}",
    )
    C = np.block([[Q, R], [R.T, T]])
    tol = 1e-10 * max(1.0, float(np.max(np.abs(C))))
    require(np.allclose(Q, Q.T, rtol=0.0, atol=tol), "Q0 must be symmetric (it is K K^T / D)")
    diag = np.diag(Q)
    require(
        bool(np.all(diag >= -tol)),
        f"Q0 has a negative diagonal entry {diag.min():.6g}: Q0_ll = |K_l|^2 / D must be >= 0",
    )
    bound = np.sqrt(np.maximum(diag, 0.0)[:, None] * np.maximum(np.diag(T), 0.0)[None, :])
    excess = np.abs(R) - bound
    if np.any(excess > tol):
        l, n = np.unravel_index(int(np.argmax(excess)), R.shape)
        require(
            False,
            f"R0[{l}, {n}] = {R[l, n]:.6g} exceeds sqrt(Q0[{l}, {l}] T[{n}, {n}]) = {bound[l, n]:.6g}: an overlap "
            "of real kernels obeys |R_ln| <= sqrt(Q_ll T_nn) (Cauchy-Schwarz: [[Q0, R0], [R0^T, T]] is a Gram matrix, "
            "positive semi-definite); lower |R0| or raise Q0's diagonal",
        )
    require(
        float(np.linalg.eigvalsh(Q).min()) >= -tol,
        f"Q0 is not positive semi-definite (smallest eigenvalue {np.linalg.eigvalsh(Q).min():.6g}): "
        "it is K K^T / D, a Gram matrix",
    )
    smallest = float(np.linalg.eigvalsh(C).min())
    require(
        smallest >= -tol,
        f"Q0, R0 and the teacher overlaps T are not the overlaps of real kernels: [[Q0, R0], [R0^T, T]] has the "
        f"eigenvalue {smallest:.6g} < 0 (it must be a Gram matrix; equivalently Q0 - R0 T^+ R0^T must be positive "
        "semi-definite): lower |R0| or raise Q0",
    )
