r"""The teacher-student problem in order parameters: loss and gradient-flow right-hand side.

Student `f(S) = sum_l v_l POOL_ij sigma(K_l . patch_ij / D)`, teacher `y(S)` the same with
`v*`, `K*`, `phi`. Order parameters `m_lp = K_l . mu_p / D` and the head `v`; the teacher
enters through its fixed overlaps `m*_lp`. Per-atom outputs

$$a_p = \sum_l v_l\,\sigma(m_{lp}),\qquad b_p = \sum_l v^*_l\,\phi(m^*_{lp}),$$

and the exact population loss is `L = 1/2 (a - b)^T C (a - b)` with `C` the moment
matrix of the `PatchMixture`. Gradient flow `dK/dt = -eta_K grad_K L`,
`dv/dt = -eta_v grad_v L` closes in `(m, v)`: with `r = C (a - b)`,

$$\dot m_{lr} = -\frac{\eta_K}{D}\, v_l \sum_p \sigma'(m_{lp})\, r_p\, G_{pr},\qquad
\dot v_l = -\eta_v \sum_p \sigma(m_{lp})\, r_p,$$

i.e. `dm/dt = -(eta_K / D) (dL/dm) G`, `dv/dt = -eta_v dL/dv`.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._activations import Activation, get_activation
from ._data import PatchMixture, check_gram, shape_atoms
from ._deprecate import renamed_attribute, renamed_keywords
from ._typing import AnyArray
from ._validate import check_real, is_concrete, require


class TeacherStudent(eqx.Module):
    """A two-layer CNN teacher-student problem on patch data, in order parameters.

    **Arguments:**

    - `mixture`: the `PatchMixture` (atoms, Dirichlet `alpha`, patch count, pooling).
    - `teacher_head`: `v*`, shape `(L*,)`.
    - `teacher_overlaps`: `m*`, shape `(L*, P)`; default the Gram matrix (teacher kernels
      equal the atoms, `L* = P`).
    - `teacher_activation`, `student_activation`: names from `cnntheory.ACTIVATIONS`.
    - `kernel_lr_multiplier`, `head_lr_multiplier`: `eta_K`, `eta_v` (Lovig's conventions are `eta_K = D`,
      `eta_v = 1`).

    The moment matrix `C` and the Gram matrix `G` are stored as fields (`moments`, `gram`),
    so a problem with other moments (e.g. the empirical moments of a training set) is
    `problem.with_moments(C_hat)`.
    """

    mixture: PatchMixture
    teacher_head: Float[Array, " Lstar"]
    teacher_overlaps: Float[Array, "Lstar P"]
    kernel_lr_multiplier: Float[Array, ""]
    head_lr_multiplier: Float[Array, ""]
    moments: Float[Array, "P P"]
    gram: Float[Array, "P P"]
    teacher_activation: str = eqx.field(static=True)
    student_activation: str = eqx.field(static=True)

    @renamed_keywords(lr_kernel="kernel_lr_multiplier", lr_head="head_lr_multiplier")
    def __init__(
        self,
        mixture: PatchMixture,
        teacher_head,
        teacher_overlaps=None,
        teacher_activation: str = "indicator",
        student_activation: str = "relu",
        kernel_lr_multiplier=1.0,
        head_lr_multiplier=1.0,
        moments=None,
    ):
        require(isinstance(mixture, PatchMixture), f"mixture must be a PatchMixture, got {type(mixture).__name__}")
        self.teacher_activation = get_activation(teacher_activation).name
        self.student_activation = get_activation(student_activation).name
        P = mixture.num_atoms
        gram = mixture.gram
        check_real("teacher_head", teacher_head)
        teacher_head = jnp.asarray(teacher_head, dtype=float)
        require(teacher_head.ndim == 1, f"teacher_head must be a vector (L*,), got shape {teacher_head.shape}")
        if teacher_overlaps is None:
            require(
                teacher_head.shape == (P,),
                f"teacher_head has {teacher_head.shape[0]} units but the default teacher (kernels = atoms) "
                f"has L* = P = {P}; pass teacher_overlaps of shape (L*, {P}) or a head of length {P}",
            )
            if is_concrete(gram):
                check_gram(gram, name="atom Gram matrix", unit_diagonal=self.teacher_activation == "indicator")
            teacher_overlaps = gram
        check_real("teacher_overlaps", teacher_overlaps)
        teacher_overlaps = jnp.asarray(teacher_overlaps, dtype=float)
        require(
            teacher_overlaps.shape == (teacher_head.shape[0], P),
            f"teacher_overlaps must have shape (L*, P) = ({teacher_head.shape[0]}, {P}), got {teacher_overlaps.shape}",
        )
        if moments is not None:
            check_real("moments", moments)
        moments = mixture.moments if moments is None else jnp.asarray(moments, dtype=float)
        require(moments.shape == (P, P), f"moments must have shape (P, P) = ({P}, {P}), got {moments.shape}")
        check_real("kernel_lr_multiplier", kernel_lr_multiplier)
        check_real("head_lr_multiplier", head_lr_multiplier)
        kernel_lr_multiplier = jnp.asarray(kernel_lr_multiplier, dtype=float)
        head_lr_multiplier = jnp.asarray(head_lr_multiplier, dtype=float)
        if is_concrete(kernel_lr_multiplier, head_lr_multiplier):
            require(
                bool(np.all(np.asarray(kernel_lr_multiplier) > 0)),
                f"kernel_lr_multiplier must be > 0, got {kernel_lr_multiplier}",
            )
            require(
                bool(np.all(np.asarray(head_lr_multiplier) > 0)),
                f"head_lr_multiplier must be > 0, got {head_lr_multiplier}",
            )
        if is_concrete(moments):
            check_gram(moments, name="moments")
        self.mixture = mixture
        self.teacher_head = teacher_head
        self.teacher_overlaps = teacher_overlaps
        self.kernel_lr_multiplier = kernel_lr_multiplier
        self.head_lr_multiplier = head_lr_multiplier
        self.moments = moments
        self.gram = gram

    lr_kernel = renamed_attribute("lr_kernel", "kernel_lr_multiplier")
    lr_head = renamed_attribute("lr_head", "head_lr_multiplier")

    # --- sizes and activations -------------------------------------------------------
    @property
    def num_atoms(self) -> int:
        """`P`."""
        return self.mixture.num_atoms

    @property
    def patch_dim(self) -> int:
        """`D`."""
        return self.mixture.patch_dim

    @property
    def sigma(self) -> Activation:
        """The student activation."""
        return get_activation(self.student_activation)

    @property
    def phi(self) -> Activation:
        """The teacher activation."""
        return get_activation(self.teacher_activation)

    def with_moments(self, moments) -> TeacherStudent:
        """The same problem with another moment matrix `C` (e.g. empirical `C_hat`)."""
        return TeacherStudent(
            self.mixture,
            self.teacher_head,
            self.teacher_overlaps,
            self.teacher_activation,
            self.student_activation,
            self.kernel_lr_multiplier,
            self.head_lr_multiplier,
            moments=moments,
        )

    def check_state(self, m, v) -> None:
        """Raise `ValueError` unless `m` is `(L, P)` and `v` is `(L,)` for this problem."""
        P = self.num_atoms
        require(jnp.ndim(m) == 2 and jnp.shape(m)[1] == P, f"m must have shape (L, P) with P = {P}, got {jnp.shape(m)}")
        require(
            jnp.shape(v) == (jnp.shape(m)[0],),
            f"v must have shape (L,) = ({jnp.shape(m)[0]},) to match m, got {jnp.shape(v)}",
        )

    # --- the theory -------------------------------------------------------------------
    def teacher_outputs(self) -> Float[Array, " P"]:
        """`b_p = sum_l v*_l phi(m*_lp)`: the teacher's output on a patch equal to atom `p`."""
        return self.teacher_head @ self.phi(self.teacher_overlaps)

    def student_outputs(self, m: Float[AnyArray, "L P *B"], v: Float[AnyArray, " L *B"]) -> Float[Array, " P *B"]:
        """`a_p = sum_l v_l sigma(m_lp)`.

        Here and in `residual`, `velocities` and `lane_rhs`, trailing axes `*B` are
        independent lanes (`solve_batch(shared_steps=True)` stacks its lanes last).
        """
        return jnp.einsum("l...,lp...->p...", v, self.sigma(m))

    def residual(
        self,
        m: Float[AnyArray, "L P *B"],
        v: Float[AnyArray, " L *B"],
        activations: Float[AnyArray, "L P *B"] | None = None,
    ) -> Float[Array, " P *B"]:
        """`r = C (a - b)`, the moment-weighted per-atom error.

        `activations` replaces `sigma(m)` in `a = v @ sigma(m)` (the relu solver passes those
        of a fixed mode).
        """
        a = self.student_outputs(m, v) if activations is None else jnp.einsum("l...,lp...->p...", v, activations)
        b = self.teacher_outputs().reshape((-1,) + (1,) * (a.ndim - 1))
        return jnp.einsum("pq,q...->p...", self.moments, a - b)

    def loss(self, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"]) -> Float[Array, ""]:
        """Exact population loss `1/2 (a - b)^T C (a - b)`."""
        self.check_state(m, v)
        e = self.student_outputs(m, v) - self.teacher_outputs()
        return 0.5 * e @ self.moments @ e

    def rhs(
        self, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"]
    ) -> tuple[Float[Array, "L P"], Float[Array, " L"]]:
        """Gradient-flow velocities `(dm/dt, dv/dt)` (closed form, module docstring)."""
        self.check_state(m, v)
        return self.velocities(v, self.sigma(m), self.sigma.derivative(m), self.residual(m, v))

    def velocities(
        self,
        v: Float[AnyArray, " L *B"],
        activations: Float[AnyArray, "L P *B"],
        derivatives: Float[AnyArray, "L P *B"],
        r: Float[AnyArray, " P *B"],
    ) -> tuple[Float[Array, "L P *B"], Float[Array, " L *B"]]:
        r"""The flow formula of this problem (`rhs`, `lane_rhs` and the relu solver all call it):

        $$\dot m_{lp} = -\frac{\eta_K}{D} \sum_q v_l\, \sigma'_{lq}\, r_q\, G_{qp},\qquad
        \dot v_l = -\eta_v \sum_p \sigma_{lp}\, r_p,$$

        with `activations` `sigma_lp`, `derivatives` `sigma'_lp` and `r = C (a - b)`. `rhs`
        passes `sigma(m)`, `sigma'(m)`; the relu solver passes a mode's (`sigma'` replaced by
        the sliding `theta` on a surface).
        """
        scaled = v[:, None] * derivatives * r[None]
        dm = -(self.kernel_lr_multiplier / self.patch_dim) * jnp.einsum("lq...,qp->lp...", scaled, self.gram)
        return dm, -self.head_lr_multiplier * jnp.einsum("lp...,p...->l...", activations, r)

    def lane_rhs(
        self, m: Float[AnyArray, "L P B"], v: Float[AnyArray, "L B"]
    ) -> tuple[Float[Array, "L P B"], Float[Array, "L B"]]:
        """`rhs` of `B` independent states stacked on a last axis (no shape check per call)."""
        return self.velocities(v, self.sigma(m), self.sigma.derivative(m), self.residual(m, v))

    def unflatten(self, y: Float[AnyArray, " n *B"]) -> tuple[Float[AnyArray, "L P *B"], Float[AnyArray, " L *B"]]:
        """`(m, v)` from the flat state `y = (vec m, v)` (`flatten_state`)."""
        return unflatten_state(y, self.num_atoms)

    def flat_rhs(self, y: Float[AnyArray, " n"]) -> Float[Array, " n"]:
        """`rhs` on the flat state `y = (vec m, v)`: the field the analysis tools differentiate."""
        return flatten_state(*self.rhs(*self.unflatten(y)))


def shape_counting(
    overlap: float = 0.8,
    alpha=(1.0, 1.0),
    activation: str = "relu",
    patches_per_side: int | None = None,
    pooling: str = "mean",
    k: int = 5,
) -> TeacherStudent:
    """Lovig's (2025) shape-counting problem: `y = #X - #O` (up to pooling).

    Atoms are the "X" and "O" of `shape_atoms(k, overlap)`, the teacher's kernels are the
    atoms with `phi(m) = 1{m = 1}` and head `v* = (1, -1)`, and the learning rates follow
    Lovig (`eta_K = D`, `eta_v = 1`), so that `rhs` is literally equations (1)-(4) of
    Lovig (2025) (with `G` where the talk writes `m*`). Default: mean pooling and continuum
    moments `E[rho rho^T]`, as in the talk.
    """
    atoms = shape_atoms(k, overlap)
    mixture = PatchMixture(atoms, alpha, patches_per_side, pooling)
    return TeacherStudent(
        mixture,
        teacher_head=jnp.array([1.0, -1.0]),
        teacher_activation="indicator",
        student_activation=activation,
        kernel_lr_multiplier=float(k * k),
        head_lr_multiplier=1.0,
    )


def flatten_state(m: Float[AnyArray, "L P *B"], v: Float[AnyArray, " L *B"]) -> Float[Array, " n *B"]:
    """The flat state `y = (m_11, ..., m_LP, v_1, ..., v_L)`, `n = L P + L`.

    Trailing axes `*B` are independent lanes (`TeacherStudent.lane_rhs`), kept last.
    """
    return jnp.concatenate([m.reshape(-1, *m.shape[2:]), v])


def unflatten_state(
    y: Float[AnyArray, " n *B"], num_atoms: int
) -> tuple[Float[AnyArray, "L P *B"], Float[AnyArray, " L *B"]]:
    """Inverse of `flatten_state` for `P = num_atoms` (trailing lane axes kept)."""
    L = y.shape[0] // (num_atoms + 1)
    return y[: L * num_atoms].reshape(L, num_atoms, *y.shape[1:]), y[L * num_atoms :]
