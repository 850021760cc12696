r"""Symbolic order-parameter equations: derived with sympy, printed, compiled to JAX.

The numeric `TeacherStudent.rhs` is a closed form written by hand. This module gets the
same flow a second, independent way: it builds the population loss from symbols and
**differentiates** it,

$$\mathcal L(m, v) = \tfrac12 (a - b)^\top C\,(a - b),\qquad
a_p = \sum_l v_l\,\sigma(m_{lp}),\qquad b_p = \sum_{l^*} v^*_{l^*}\,\phi(m^*_{l^*p}),$$

$$\dot m = -\frac{\eta_K}{D}\,\frac{\partial\mathcal L}{\partial m}\,G,\qquad
\dot v = -\eta_v\,\frac{\partial\mathcal L}{\partial v}.$$

The Gram preconditioning `G` is the chain rule `m_lp = K_l . mu_p / D` applied to
`dK/dt = -eta_K grad_K L`; nothing here copies the closed form of `_problem.py`.

```python
from cnntheory import symbolic
flow = symbolic.derive(2, 2, teacher_activation=None, student_activation=None,
                       kernel_lr_multiplier=symbolic.D, head_lr_multiplier=1)   # Lovig's (2025) equations (1)-(4)
print(symbolic.latex(flow))
f = symbolic.to_jax(symbolic.from_problem(cnntheory.shape_counting(), L=2))
dm, dv = f(m, v)                                           # == problem.rhs(m, v)
```

**Sizes.** Every entry of the RHS is a separate scalar expression, so derivation,
printing and above all `jax.jit` compilation grow fast with the number of states
`n = L P + L` (`benchmarks/symbolic.py`, relu, 2 CPU cores): about 1 s up to 12 states,
~5 s at 20, ~25 s at 42, ~50 s at 56, and minutes at 100. The generated function is also
slower per call than the vectorised RHS. Above `SLOW_STATES` states use
`TeacherStudent.rhs` and keep this module as a checker on small sizes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from sympy.printing.numpy import JaxPrinter

from ._activations import Activation, get_activation
from ._deprecate import keyword_only_now, renamed_attribute, renamed_keywords
from ._validate import require

__all__ = [
    "D",
    "ETA_K",
    "ETA_V",
    "SLOW_STATES",
    "SymbolicFlow",
    "derive",
    "dirichlet_multinomial_moments",
    "from_problem",
    "jacobian",
    "latex",
    "pretty",
    "stationary_points_linear",
    "to_jax",
]

#: Patch dimension and learning rates as symbols. Lovig's conventions are
#: `kernel_lr_multiplier=D, head_lr_multiplier=1` (then the prefactor `eta_K / D` is 1).
D = sp.Symbol("D", positive=True)
ETA_K = sp.Symbol("eta_K", positive=True)
ETA_V = sp.Symbol("eta_v", positive=True)

#: Number of states `L P + L` above which derivation + compilation of the generated code
#: takes most of a minute or more on 2 CPU cores: use `TeacherStudent.rhs` there.
SLOW_STATES = 50


# --- abstract activations: sigma, sigma', sigma'', ... printed the way a paper does ------
class _Abstract(sp.Function):
    """An undefined activation (or one of its derivatives) with a paper-style name."""

    nargs = 1
    letter = "sigma"
    order = 0

    def fdiff(self, argindex=1):
        return _abstract(self.letter, self.order + 1)(self.args[0])

    def _eval_evalf(self, prec):
        return None  # undefined: stays symbolic, also at numeric arguments

    def _name(self, unicode: bool) -> str:
        base = {"sigma": "σ", "phi": "φ"}[self.letter] if unicode else self.letter
        return base + "'" * self.order

    def _latex(self, printer, exp=None):
        s = rf"\{self.letter}{chr(39) * self.order}\left({printer._print(self.args[0])}\right)"
        # sympy hands `exp` over already printed.
        return s if exp is None else rf"{s}^{{{exp}}}"

    def _sympystr(self, printer):
        return f"{self._name(False)}({printer._print(self.args[0])})"

    def _pretty(self, printer):
        return printer._print_Function(self, func_name=self._name(True))


#: A matrix index: sympy's matrix constructors pass `sp.Integer`s to their entry function.
_Index: TypeAlias = int | sp.Integer


@functools.cache
def _abstract(letter: str, order: int) -> sp.FunctionClass:
    # A subclass of _Abstract (typed by its metaclass: beartype cannot check type[_Abstract],
    # whose repr sympy shortens). Not named "phi": sympy's evalf would look the name up in
    # mpmath (the golden ratio).
    return type(f"Abstract_{letter}_{order}", (_Abstract,), {"letter": letter, "order": order})


def _activation_builder(activation, letter: str) -> tuple[str | None, Callable]:
    """`(name, x -> sympy expression)`; `None` gives the undefined function `letter`."""
    if activation is None:
        return None, _abstract(letter, 0)
    act: Activation = get_activation(activation)
    return act.name, act.sympy


def _kink_convention(expr):
    """`Heaviside(x) -> Heaviside(x, 0)`: sympy's `d Max(0, x)/dx` is `Heaviside(x)` with
    `H(0) = 1/2`; the numeric registry (and `jax.grad` of relu) uses `relu'(0) = 0`."""
    return expr.replace(sp.Heaviside, lambda arg, *_: sp.Heaviside(arg, 0))


# --- exact numbers ---------------------------------------------------------------------
def _exact(x, exact: bool = True) -> sp.Expr:
    """A sympy number: a small-denominator rational when `x` is one to round-off, else
    the float itself (symbols and sympy numbers pass through)."""
    if isinstance(x, sp.Basic):
        return x
    if isinstance(x, (int, np.integer)):
        return sp.Integer(int(x))
    x = float(x)
    require(np.isfinite(x), f"cannot use the non-finite number {x} in a symbolic flow")
    if exact:
        q = sp.Rational(x).limit_denominator(10**6)
        if abs(float(q) - x) <= 1e-13 * max(1.0, abs(x)):
            return q
    return sp.Float(x)


def _matrix(value, shape: tuple[int, int], name: str, exact: bool = True) -> sp.ImmutableMatrix:
    if isinstance(value, sp.MatrixBase):
        mat = sp.ImmutableMatrix(value)
    else:
        arr = np.asarray(value, dtype=object)
        require(arr.ndim in (1, 2), f"{name} must be a vector or a matrix, got {arr.ndim} dimensions")
        arr = arr.reshape(shape) if arr.size == shape[0] * shape[1] else arr
        mat = sp.ImmutableMatrix(
            arr.shape[0], arr.shape[1] if arr.ndim == 2 else 1, [_exact(x, exact) for x in arr.ravel()]
        )
    require(mat.shape == shape, f"{name} must have shape {shape}, got {mat.shape}")
    return mat


def _symmetric_symbols(name: str, P: int) -> sp.ImmutableMatrix:
    """`name_pq = name_qp` symbols (one per unordered pair), so `diff` sees the symmetry."""
    return sp.ImmutableMatrix(P, P, lambda p, q: sp.Symbol(_indexed(name, min(p, q), max(p, q)), real=True))


def _indexed(name: str, *idx: _Index) -> str:
    """`m_12` for one-digit indices, `m_1,12` otherwise (sympy prints both as subscripts)."""
    parts = [str(i + 1) for i in idx]
    return f"{name}_{''.join(parts) if all(len(s) == 1 for s in parts) else ','.join(parts)}"


def dirichlet_multinomial_moments(
    alpha: Sequence | np.ndarray, num_patches: int | sp.Expr | None, pooling: str = "sum"
) -> sp.ImmutableMatrix:
    r"""The loss matrix `C` exactly, as a sympy matrix (rationals for rational `alpha`).

    Derived from the general Dirichlet moment `E[prod_p rho_p^{k_p}] =
    prod_p (alpha_p)^{(k_p)} / (a_0)^{(K)}` (rising factorials, `K = sum k`) and the
    multinomial factorial moments `E[n_p n_q | rho] = N(N-1) rho_p rho_q + N delta_pq rho_p`:

    $$E[n_p n_q] = N(N-1)\,E[\rho_p\rho_q] + N\,\delta_{pq}\,E[\rho_p].$$

    `pooling="mean"` divides by `N^2`; `num_patches=None` is the continuum limit
    `E[rho rho^T]` (mean pooling only). Entries of `alpha` and `num_patches` may be symbols.
    """
    require(pooling in ("sum", "mean"), f"pooling must be 'sum' or 'mean', got {pooling!r}")
    alpha = [_exact(a) for a in alpha]
    require(len(alpha) >= 1, "alpha must have at least one entry")
    require(all(not a.is_number or a > 0 for a in alpha), f"Dirichlet parameters alpha must be > 0, got {alpha}")
    a0 = sum(alpha)
    P = len(alpha)

    def rho_moment(powers: dict[_Index, int]) -> sp.Expr:
        K = sum(powers.values())
        return sp.Mul(*(sp.rf(alpha[p], k) for p, k in powers.items())) / sp.rf(a0, K)

    def pair(p: _Index, q: _Index) -> dict[_Index, int]:
        return {p: 2} if p == q else {p: 1, q: 1}

    second = sp.ImmutableMatrix(P, P, lambda p, q: sp.simplify(rho_moment(pair(p, q))))
    if num_patches is None:
        require(pooling == "mean", "num_patches=None (continuum moments) needs pooling='mean'")
        return second
    N = _exact(num_patches)
    require(
        not N.is_number or bool(N.is_integer and N >= 1), f"num_patches must be a positive integer, got {num_patches}"
    )
    mean = [rho_moment({p: 1}) for p in range(P)]
    counts = sp.ImmutableMatrix(
        P, P, lambda p, q: sp.simplify(N * (N - 1) * second[p, q] + (N * mean[p] if p == q else 0))
    )
    return counts if pooling == "sum" else sp.ImmutableMatrix(counts / N**2).applyfunc(sp.simplify)


# --- the flow ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SymbolicFlow:
    """The order-parameter gradient flow as sympy expressions (built by `derive`).

    - `m` `(L, P)`, `v` `(L, 1)`: the state symbols `m_lp`, `v_l`.
    - `gram` `G`, `moments` `C` `(P, P)`; `teacher_head` `v*` `(L*, 1)`,
      `teacher_overlaps` `m*` `(L*, P)`; `kernel_lr_multiplier`, `head_lr_multiplier`, `patch_dim`: symbols or numbers.
    - `teacher_outputs` `b` `(P, 1)`, `loss`, and the derived velocities `dm` `(L, P)`, `dv` `(L, 1)`.
    - `teacher_activation`, `student_activation`: registry names, or `None` for the undefined
      functions `sigma`, `phi`.
    """

    m: sp.ImmutableMatrix
    v: sp.ImmutableMatrix
    gram: sp.ImmutableMatrix
    moments: sp.ImmutableMatrix
    teacher_head: sp.ImmutableMatrix
    teacher_overlaps: sp.ImmutableMatrix
    kernel_lr_multiplier: sp.Expr
    head_lr_multiplier: sp.Expr
    patch_dim: sp.Expr
    teacher_outputs: sp.ImmutableMatrix
    loss: sp.Expr
    dm: sp.ImmutableMatrix
    dv: sp.ImmutableMatrix
    teacher_activation: str | None
    student_activation: str | None

    activation = renamed_attribute("activation", "student_activation")

    @property
    def sizes(self) -> tuple[int, int, int]:
        """`(L, P, L*)`."""
        return self.m.shape[0], self.m.shape[1], self.teacher_overlaps.shape[0]

    @property
    def state(self) -> tuple[sp.Symbol, ...]:
        """The state symbols, `m` row-major then `v` (the order of `rhs` and `jacobian`)."""
        return tuple(self.m) + tuple(self.v)

    @property
    def rhs(self) -> sp.ImmutableMatrix:
        """`(dm/dt, dv/dt)` stacked as one column, in the order of `state`."""
        return sp.ImmutableMatrix(list(self.dm) + list(self.dv))

    @property
    def parameters(self) -> set[sp.Symbol]:
        """Free symbols other than the state (moments, Gram, teacher, learning rates)."""
        return set(self.rhs.free_symbols) - set(self.state)

    def subs(self, mapping: dict) -> SymbolicFlow:
        """The flow with parameters replaced (e.g. `{symbolic.D: 25}`); the state stays symbolic."""
        require(not set(mapping) & set(self.state), "subs: substitute parameters only, not the state symbols m, v")
        mapping = {k: _exact(x) for k, x in mapping.items()}
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).subs(mapping)
                for f in dataclasses.fields(self)
                if f.name not in ("m", "v", "student_activation", "teacher_activation")
            },
        )


def _gradient_flow(m, v, b, C, G, eta_K, eta_v, D_, sigma):
    """Loss and its preconditioned gradient flow, by differentiation (module docstring)."""
    L, P = m.shape
    a = sp.ImmutableMatrix(P, 1, lambda p, _: sum(v[l] * sigma(m[l, p]) for l in range(L)))
    e = a - b
    loss = (e.T * C * e)[0, 0] / 2
    grad_m = sp.ImmutableMatrix(L, P, lambda l, p: _kink_convention(sp.diff(loss, m[l, p])))
    grad_v = sp.ImmutableMatrix(L, 1, lambda l, _: _kink_convention(sp.diff(loss, v[l])))
    # dK/dt = -eta_K grad_K L and m = K mu^T / D: dm_lr/dt = -(eta_K/D) sum_p dL/dm_lp G_pr.
    dm = sp.ImmutableMatrix(-(eta_K / D_) * grad_m * G)
    dv = sp.ImmutableMatrix(-eta_v * grad_v)
    return loss, dm, dv


@keyword_only_now("activation", "teacher_activation", after=3)
@renamed_keywords(activation="student_activation")
def derive(
    L: int,
    P: int,
    Lstar: int | None = None,
    *,
    teacher_activation: str | Activation | None = "indicator",
    student_activation: str | Activation | None = "relu",
    moments=None,
    gram=None,
    teacher_head=None,
    teacher_overlaps=None,
    kernel_lr_multiplier=ETA_K,
    head_lr_multiplier=ETA_V,
    patch_dim=D,
) -> SymbolicFlow:
    r"""Derive the gradient flow of `L = 1/2 (a - b)^T C (a - b)` for sizes `(L, P, L*)`.

    Every parameter left as `None` is a symbol: `moments` `C_pq`, `gram` `G_pq` (both
    symmetric), `teacher_head` `v*_l`, `teacher_overlaps` `m*_lp`; a given value (array,
    sympy matrix, e.g. `dirichlet_multinomial_moments(...)`) is used as is, floats turned
    into exact rationals when they are ones to round-off. `L*` defaults to `P`.
    `student_activation=None` (`teacher_activation=None`) keeps `sigma` (`phi`) undefined, as
    Lovig (2025) writes them. Learning rates default to the symbols `ETA_K`, `ETA_V`; Lovig's
    conventions are `kernel_lr_multiplier=D, head_lr_multiplier=1`.

    $$\dot m = -\frac{\eta_K}{D}\frac{\partial\mathcal L}{\partial m}\,G,\qquad
    \dot v = -\eta_v \frac{\partial\mathcal L}{\partial v}.$$
    """
    Lstar = P if Lstar is None else Lstar
    for name, n in (("L", L), ("P", P), ("Lstar", Lstar)):
        require(isinstance(n, (int, np.integer)) and n >= 1, f"{name} must be a positive integer, got {n!r}")
    act_name, sigma = _activation_builder(student_activation, "sigma")
    teacher_name, phi = _activation_builder(teacher_activation, "phi")
    m = sp.ImmutableMatrix(L, P, lambda l, p: sp.Symbol(_indexed("m", l, p), real=True))
    v = sp.ImmutableMatrix(L, 1, lambda l, _: sp.Symbol(_indexed("v", l), real=True))
    C = _symmetric_symbols("C", P) if moments is None else _matrix(moments, (P, P), "moments")
    G = _symmetric_symbols("G", P) if gram is None else _matrix(gram, (P, P), "gram")
    vstar = (
        sp.ImmutableMatrix(Lstar, 1, lambda l, _: sp.Symbol(_indexed("v^*", l), real=True))
        if teacher_head is None
        else _matrix(teacher_head, (Lstar, 1), "teacher_head")
    )
    mstar = (
        sp.ImmutableMatrix(Lstar, P, lambda l, p: sp.Symbol(_indexed("m^*", l, p), real=True))
        if teacher_overlaps is None
        else _matrix(teacher_overlaps, (Lstar, P), "teacher_overlaps")
    )
    eta_K, eta_v, D_ = _exact(kernel_lr_multiplier), _exact(head_lr_multiplier), _exact(patch_dim)
    b = sp.ImmutableMatrix(P, 1, lambda p, _: sum(vstar[l] * phi(mstar[l, p]) for l in range(Lstar)))
    loss, dm, dv = _gradient_flow(m, v, b, C, G, eta_K, eta_v, D_, sigma)
    return SymbolicFlow(m, v, G, C, vstar, mstar, eta_K, eta_v, D_, b, loss, dm, dv, teacher_name, act_name)


def from_problem(problem, L: int, *, exact: bool = True) -> SymbolicFlow:
    """The flow of a `TeacherStudent` with `L` student units, its numbers substituted.

    With `exact=True` the moments are the exact Dirichlet-multinomial rationals when they
    match `problem.moments` (i.e. unless the problem carries other moments, such as
    empirical ones), and the other numbers are rationals where they are ones to round-off
    (an overlap of `0.8000000000000002` becomes `4/5`). `exact=False` keeps every float.
    """
    mix = problem.mixture
    P, Lstar = problem.num_atoms, problem.teacher_head.shape[0]
    numeric = np.asarray(problem.moments, dtype=float)
    moments = _matrix(numeric, (P, P), "moments", exact)
    if exact:
        candidate = dirichlet_multinomial_moments(np.asarray(mix.alpha), mix.num_patches, mix.pooling)
        if np.allclose(np.asarray(candidate, dtype=float), numeric, rtol=1e-13, atol=0):
            moments = candidate
    return derive(
        L,
        P,
        Lstar,
        teacher_activation=problem.teacher_activation,
        student_activation=problem.student_activation,
        moments=moments,
        gram=_matrix(np.asarray(problem.gram), (P, P), "gram", exact),
        teacher_head=_matrix(np.asarray(problem.teacher_head), (Lstar, 1), "teacher_head", exact),
        teacher_overlaps=_matrix(np.asarray(problem.teacher_overlaps), (Lstar, P), "teacher_overlaps", exact),
        kernel_lr_multiplier=_exact(float(problem.kernel_lr_multiplier), exact),
        head_lr_multiplier=_exact(float(problem.head_lr_multiplier), exact),
        patch_dim=problem.patch_dim,
    )


def jacobian(flow: SymbolicFlow) -> sp.ImmutableMatrix:
    """`d rhs / d state`, `(n, n)` with `n = L P + L`, state ordered as `flow.state`.

    For relu it contains `DiracDelta(m_lp)` terms (the kink); `to_jax` evaluates them as 0,
    the derivative almost everywhere (and what `jax.jacfwd` gives).
    """
    return _jacobian(flow)


def _jacobian(flow: SymbolicFlow) -> sp.ImmutableMatrix:
    return sp.ImmutableMatrix(flow.rhs.jacobian(sp.Matrix(flow.state)))


# --- printing ----------------------------------------------------------------------------
def _split_teacher_student(flow: SymbolicFlow):
    """Each velocity as `(lhs, teacher part, student part)`, velocity = teacher - student.

    Re-derives with undefined `sigma`, `phi` (named activations are printed as separate
    definitions, `_definitions`, the way a paper does) and `b -> tau b`: the teacher part
    (Lovig's (1), (3)) is the coefficient of `tau`, the student part ((2), (4)) the rest.
    """
    tau = sp.Dummy("tau")
    phi = _abstract("phi", 0)
    L, P, Lstar = flow.sizes
    b = sp.ImmutableMatrix(
        P, 1, lambda p, _: sum(flow.teacher_head[l] * phi(flow.teacher_overlaps[l, p]) for l in range(Lstar))
    )
    if flow.teacher_activation is not None:  # phi at numbers is a number: print it
        concrete = get_activation(flow.teacher_activation).sympy
        b = b.replace(lambda a: isinstance(a, _Abstract) and a.args[0].is_number, lambda a: concrete(a.args[0]))
    _, dm, dv = _gradient_flow(
        flow.m,
        flow.v,
        tau * b,
        flow.moments,
        flow.gram,
        flow.kernel_lr_multiplier,
        flow.head_lr_multiplier,
        flow.patch_dim,
        _abstract("sigma", 0),
    )
    lhs = [f"m_{{{s.name[2:]}}}" for s in flow.m] + [f"v_{{{s.name[2:]}}}" for s in flow.v]
    rows = []
    for name, expr in zip(lhs, list(dm) + list(dv), strict=True):
        expr = sp.expand(expr)
        rows.append((name, expr.coeff(tau, 1), sp.expand(-expr.coeff(tau, 0))))
    return rows


def _definitions(flow: SymbolicFlow) -> list[tuple[sp.Expr, sp.Expr]]:
    """`(sigma(x), its expression)`, `(sigma'(x), ...)`, `(phi(x), ...)` for named activations."""
    x = sp.Symbol("x", real=True)
    out = []
    for letter, name, orders in (("sigma", flow.student_activation, (0, 1)), ("phi", flow.teacher_activation, (0,))):
        if name is not None:
            expr = get_activation(name).sympy(x)
            out += [(_abstract(letter, k)(x), _kink_convention(sp.diff(expr, x, k))) for k in orders]
    return out


def _seed_names(flow: SymbolicFlow) -> dict:
    """LaTeX names of Lovig (2025): `C_pq = E_pi[pi_p pi_q]` (continuum mean pooling)."""
    P = flow.sizes[1]
    names = {}
    for p in range(P):
        for q in range(p, P):
            s = flow.moments[p, q]
            if isinstance(s, sp.Symbol):
                names[s] = rf"\mathbb{{E}}_{{\pi}}\left[\pi_{{{p + 1}}} \pi_{{{q + 1}}}\right]"
    return names


def latex(flow: SymbolicFlow | Sequence[int], *, notation: str = "seed") -> str:
    r"""The equations as a LaTeX `aligned` block, one line per velocity.

    Each velocity is printed as Lovig (2025) prints (1)–(4): the teacher term minus the
    student term, expanded into monomials such as
    `v_l v^*_{l*} E_pi[pi_p pi_q] phi(m^*_{l*p}) sigma'(m_lq) G_qr`. `flow` may be a
    `SymbolicFlow` or sizes `(L, P, L*)` (then Lovig's abstract equations are derived:
    undefined `sigma`, `phi`, symbolic moments, `eta_K = D`, `eta_v = 1`).
    `notation="seed"` writes symbolic moments `C_pq` as `E_pi[pi_p pi_q]`; `"plain"` as `C_{pq}`.
    """
    require(notation in ("seed", "plain"), f"notation must be 'seed' or 'plain', got {notation!r}")
    flow = _as_flow(flow)
    names = _seed_names(flow) if notation == "seed" else {}

    def tex(e):
        return sp.latex(e, symbol_names=names)

    lines = []
    for lhs, teacher, student in _split_teacher_student(flow):
        rhs = tex(teacher) if teacher != 0 else ""
        if student != 0:
            rhs = rf"{rhs} - \left({tex(student)}\right)" if rhs else rf"- \left({tex(student)}\right)"
        lines.append(rf"\dot{{{lhs[0]}}}{lhs[1:]} &= {rhs or '0'}")
    lines += [rf"{tex(f)} &= {tex(e)}" for f, e in _definitions(flow)]
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


def pretty(flow: SymbolicFlow | Sequence[int], *, notation: str = "plain", width: int | None = None) -> str:
    """The equations as unicode text (`sympy.pretty`), teacher term minus student term.

    `notation="seed"` writes symbolic moments `C_pq` as `E[π_p π_q]` (as `latex` does);
    `width` wraps each equation at that many columns (`None`: one line per equation).
    """
    require(notation in ("seed", "plain"), f"notation must be 'seed' or 'plain', got {notation!r}")
    flow = _as_flow(flow)
    # `v^*_1` is LaTeX-friendly; sympy.pretty renders it `v_1__*`, so write `v*_1` (-> v*₁).
    starred = {
        s: sp.Symbol(s.name.replace("^*", "*"), real=True)
        for s in flow.teacher_head.free_symbols | flow.teacher_overlaps.free_symbols
    }
    if notation == "seed":
        sub = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
        P = flow.sizes[1]
        for p in range(P):
            for q in range(p, P):
                if isinstance(flow.moments[p, q], sp.Symbol):
                    starred[flow.moments[p, q]] = sp.Symbol(
                        f"E[π{str(p + 1).translate(sub)}π{str(q + 1).translate(sub)}]"
                    )
    options = {"use_unicode": True, "wrap_line": width is not None, "num_columns": width}
    out = []
    for lhs, teacher, student in _split_teacher_student(flow):
        name = lhs.replace("{", "").replace("}", "")
        teacher, student = teacher.xreplace(starred), student.xreplace(starred)
        expr = sp.Add(teacher, sp.Mul(-1, sp.UnevaluatedExpr(student), evaluate=False), evaluate=False)
        out.append(sp.pretty(sp.Eq(sp.Symbol(f"d{name}/dt"), expr, evaluate=False), **options))
    out += [sp.pretty(sp.Eq(f, e, evaluate=False), **options) for f, e in _definitions(flow)]
    return "\n\n".join(out)


def _as_flow(flow) -> SymbolicFlow:
    if isinstance(flow, SymbolicFlow):
        return flow
    sizes = tuple(flow)
    require(len(sizes) in (2, 3), f"sizes must be (L, P) or (L, P, Lstar), got {sizes}")
    L, P, *rest = sizes
    return derive(
        L,
        P,
        rest[0] if rest else None,
        teacher_activation=None,
        student_activation=None,
        kernel_lr_multiplier=D,
        head_lr_multiplier=1,
    )


# --- code generation ----------------------------------------------------------------------
class _Printer(JaxPrinter):
    """sympy's JAX printer with the gaps that matter here filled: it prints `erf` as
    `math.erf` (fails on tracers) and cannot print `DiracDelta` at all."""

    def _print_erf(self, expr):
        return f"jax.scipy.special.erf({self._print(expr.args[0])})"

    def _print_DiracDelta(self, expr):
        # Zero almost everywhere: the derivative of relu' that jax.jacfwd also gives.
        return f"jax.numpy.zeros_like({self._print(expr.args[0])})"

    def _print_Max(self, expr):
        # sympy prints functools.reduce(...), but lambdify's namespace has no functools.
        return functools.reduce(lambda a, b: f"jax.numpy.maximum({a}, {b})", map(self._print, expr.args))

    def _print_Min(self, expr):
        return functools.reduce(lambda a, b: f"jax.numpy.minimum({a}, {b})", map(self._print, expr.args))


def _compile(flow: SymbolicFlow, exprs: list[sp.Expr]) -> Callable:
    """Lambdify `exprs` of the state symbols into one function of the flat state."""
    free = set().union(*(e.free_symbols for e in exprs)) - set(flow.state)
    require(
        not free,
        f"to_jax: the flow still has free parameters {sorted(map(str, free))}; substitute numbers "
        "with flow.subs({...}) or build it with symbolic.from_problem(problem, L)",
    )
    abstract = [f for e in exprs for f in e.atoms(sp.Function) if isinstance(f, _Abstract)]
    require(
        not abstract, "to_jax: the flow uses an undefined activation (sigma or phi); derive it with a named activation"
    )
    import jax.scipy.special  # noqa: F401  (the generated code refers to jax.scipy.special.erf)

    return sp.lambdify(flow.state, exprs, modules="jax", printer=_Printer({"fully_qualified_modules": True}), cse=True)


def _stack(values) -> jax.Array:
    return jnp.stack([jnp.asarray(x, dtype=float) for x in values])


def to_jax(flow: SymbolicFlow, *, jacobian: bool = False) -> Callable:
    """Compile the symbolic RHS into a jitted `f(m, v) -> (dm, dv)` (shapes `(L, P)`, `(L,)`).

    The signature is that of `TeacherStudent.rhs`, so `solve(problem, m0, v0, t1,
    rhs=to_jax(flow))` integrates the generated code. With `jacobian=True` it returns
    `f(m, v) -> J`, the `(n, n)` Jacobian of `symbolic.jacobian(flow)`. The flow must have
    numbers for every parameter (see `from_problem`, `SymbolicFlow.subs`).
    """
    L, P, _ = flow.sizes
    if jacobian:
        J = _jacobian(flow)
        raw = _compile(flow, list(J))
        n = len(flow.state)

        @jax.jit
        def jac(m, v):
            return _stack(raw(*jnp.ravel(m), *v)).reshape(n, n)

        return jac
    raw = _compile(flow, list(flow.rhs))

    @jax.jit
    def rhs(m, v):
        flat = _stack(raw(*jnp.ravel(m), *v))
        return flat[: L * P].reshape(L, P), flat[L * P :]

    return rhs


# --- stationary points -------------------------------------------------------------------
def stationary_points_linear(flow: SymbolicFlow) -> list[dict]:
    """All stationary points of a linear-activation flow, solved exactly.

    With `sigma(x) = x` the RHS is polynomial (cubic) in `(m, v)`, and `sympy.solve` gives
    the solution families as dicts `{state symbol: expression}`; symbols of the state that
    a dict leaves out are free (the set of minima `v^T m = b` is a manifold, not a point).
    Float parameters are replaced by their exact binary rationals first. The list is what
    `sympy.solve` returns (families on which it divides by a state variable are generic).
    """
    require(
        flow.student_activation == "linear",
        f"stationary_points_linear needs student_activation='linear', got {flow.student_activation!r}",
    )

    # Floats make sympy.solve drop solution families (rounded products such as C G b make
    # the equations inconsistent): re-derive with the parameters' exact binary values.
    def q(x):
        return (
            x.applyfunc(lambda e: sp.nsimplify(e, rational=True))
            if isinstance(x, sp.MatrixBase)
            else sp.nsimplify(x, rational=True)
        )

    fields = (
        "moments",
        "gram",
        "teacher_head",
        "teacher_overlaps",
        "kernel_lr_multiplier",
        "head_lr_multiplier",
        "patch_dim",
    )
    exact = derive(
        *flow.sizes,
        teacher_activation=flow.teacher_activation,
        student_activation=flow.student_activation,
        **{f: q(getattr(flow, f)) for f in fields},
    )
    return sp.solve(list(exact.rhs), list(exact.state), dict=True)
