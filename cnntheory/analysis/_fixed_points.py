r"""Stationary points of the order-parameter flow and their stability.

A fixed point is a state `(m, v)` with `F(m, v) = 0`, `F = problem.rhs`. We find them as
zeros of the flattened field `y = (vec m, v) -> F` by Levenberg-Marquardt least squares
(`optimistix.least_squares`) from many random starts, `vmap`ped, polished by a few
pseudo-inverse Newton steps, then filtered (`max |F| < tol`) and deduplicated. Least
squares on `|F|^2` (rather than minimising the loss) finds saddles as readily as minima.

**Stability.** The Jacobian `J = dF/dy` (`jax.jacfwd`) classifies a hyperbolic point:
all `Re lambda < 0` *stable*, some `> 0` and some `< 0` *saddle* (the eigenvectors of the
positive eigenvalues are its unstable directions), all `> 0` *unstable*. Because
`F = -Lambda grad L` with a PSD metric, `J` is similar to `-Lambda^{1/2} H Lambda^{1/2}`
at a fixed point and its spectrum is real. Zero eigenvalues are common: for
1-homogeneous activations (relu, linear) the rescaling `m_l -> c m_l, v_l -> v_l / c`
(up to the metric) turns isolated minima into curves, and dead relu units form whole
regions. A point with no unstable direction but some `|lambda| < eig_tol` is *marginal*
(stable across a continuum of equilibria).

**Relu (Filippov).** The field is discontinuous on `m_lp = 0`, so we work per *mode*
(`cnntheory._filippov`): every start draws a side for each entry (`sigma' in {0, 1}`) or
puts it on the surface (sliding, `m_lp = 0` held fixed, `sigma'` replaced by the
`theta_lp in [0, 1]` that keeps it there). The root is sought for the smooth mode field
`mode_flow`, and accepted only if it is consistent with its mode (free entries on their
side, sliding `theta_lp in [0, 1]`): then it is a genuine Filippov equilibrium. Its
stability is that of the mode field restricted to the free coordinates (the dynamics on
the sliding surface); the normal direction of a sliding entry is attracting by
construction (`F^- >= 0 >= F^+`).

**Asymptotic (saturated) states.** A bounded activation such as sigmoid has
`sigma'(m) ~ e^{-|m|}`: at `|m_lp| ~ 20`, `sigma' ~ 1e-9`, and the `m`-velocity
`dm_lr/dt = -(eta_K / D) v_l sum_p sigma'(m_lp) r_p G_pr` passes any residual test there
although nothing balances the force `v_l r_p` on that entry. Such a state is stationary
only in the limit `|m_lp| -> infinity` (the flow drifts towards it for ever), not a fixed
point. The criterion, for smooth activations:

- entry `(l, p)` is *saturated* when `|sigma'|` stays below
  `saturation_tol * max_x |sigma'(x)|` on the whole window `[m_lp - 1, m_lp + 1]` (so an
  isolated zero of `sigma'`, like the quadratic's at 0, is not saturation);
- the state is *asymptotic* when some saturated entry's term of the flow, with `sigma'`
  restored to its peak value `s = max_x |sigma'(x)|`, would fail the acceptance test:
  `(eta_K / D) |v_l| s |r_p| max_r |G_pr| >= tol`. At a true fixed point every saturated
  entry carries no force (`v_l = 0` or `r_p = 0`), so its residual stays zero when the
  activation is not saturated.

Relu is exempt: its `sigma' = 0` on `m < 0` is exact, and dead units are genuine (Filippov)
equilibria at finite `m`. `FixedPoint.asymptotic` marks these states; they are kept in the
result (they are where the flow goes) but never grouped with true fixed points, and
`count_kinds` says how many of each were found.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float, PRNGKeyArray

from .._filippov import Mode, mode_flow
from .._problem import TeacherStudent
from .._problem import flatten_state as _flat
from .._typing import AnyArray
from .._validate import require

KINDS = ("stable", "marginal", "saddle", "unstable")
"""Stability kinds of a fixed point (from the Jacobian's spectrum)."""


class FixedPoint(eqx.Module):
    """A stationary point of the flow.

    - `m`: `(L, P)`, `v`: `(L,)`; `loss`: the population loss there.
    - `eigenvalues`: of the Jacobian of the flow (restricted to the free coordinates for a
      relu point on a sliding surface), sorted by decreasing real part.
    - `kind`: `"stable"`, `"marginal"` (no unstable direction, some zero eigenvalue),
      `"saddle"` or `"unstable"`.
    - `unstable_directions`: `(k, L*P + L)` unit eigenvectors of the `k` positive
      eigenvalues, in the flat coordinates `(vec m, v)`.
    - `residual`: `max |F|` of the field that vanishes there.
    - `sliding`: `(L, P)` bool, the relu entries held on `m_lp = 0` (all False otherwise).
    - `saturated`: `(L, P)` bool, entries where the activation is saturated (module docstring).
    - `asymptotic`: `True` for a saturated state that is stationary only in the limit
      `|m| -> infinity`, not a true fixed point (module docstring).
    """

    m: Float[Array, "L P"]
    v: Float[Array, " L"]
    loss: float
    eigenvalues: Array
    kind: str
    unstable_directions: Float[Array, "k n"]
    residual: float
    sliding: Array
    saturated: Array
    asymptotic: bool

    @property
    def num_unstable(self) -> int:
        """The Morse index: how many unstable directions."""
        return int(self.unstable_directions.shape[0])

    def row(self) -> dict:
        """A JSON-ready summary."""
        return {
            "m": np.asarray(self.m).tolist(),
            "v": np.asarray(self.v).tolist(),
            "loss": float(self.loss),
            "kind": self.kind,
            "eigenvalues": np.real(np.asarray(self.eigenvalues)).tolist(),
            "residual": float(self.residual),
            "sliding": np.asarray(self.sliding).tolist(),
            "asymptotic": bool(self.asymptotic),
        }


def _field(problem: TeacherStudent, y, side, slide, hybrid: bool):
    """The flat field of one mode (relu) or the plain flow (smooth activations)."""
    if not hybrid:
        return problem.flat_rhs(y)
    m, v = problem.unflatten(y)
    m = jnp.where(slide, 0.0, m)
    dm, dv, _ = mode_flow(problem, m, v, Mode(side, slide))
    return _flat(dm, dv)


def flow_jacobian(problem: TeacherStudent, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"]) -> Float[Array, "n n"]:
    """`dF/dy` of the smooth flow at `(m, v)` in flat coordinates `y = (vec m, v)` (`jax.jacfwd`)."""
    return jax.jacfwd(problem.flat_rhs)(_flat(m, v))


@eqx.filter_jit
def _solve_starts(problem, y0, side, slide, *, hybrid, max_steps, newton_steps):
    solver: optx.LevenbergMarquardt = optx.LevenbergMarquardt(rtol=1e-13, atol=1e-15)

    def one(y0, side, slide):
        fn = lambda y, args: _field(problem, y, side, slide, hybrid)
        y = optx.least_squares(fn, solver, y0, max_steps=max_steps, throw=False).value

        # Newton polish with the pseudo-inverse: equilibria are often non-isolated.
        def newton(_, y):
            F = fn(y, None)
            J = jax.jacfwd(fn)(y, None)
            step = jnp.linalg.pinv(J, rtol=1e-12) @ F
            return jnp.where(jnp.all(jnp.isfinite(step)), y - step, y)

        y = jax.lax.fori_loop(0, newton_steps, newton, y)
        F = fn(y, None)
        J = jax.jacfwd(fn)(y, None)
        m, v = problem.unflatten(y)
        theta = mode_flow(problem, m, v, Mode(side, slide))[2] if hybrid else jnp.zeros_like(side)
        return y, jnp.max(jnp.abs(F)), J, theta

    return jax.vmap(one)(y0, side, slide)


def _random_starts(problem, L, num_starts, key, m_scale, v_scale, slide_prob, hybrid):
    P = problem.num_atoms
    km, kv, ks = jax.random.split(key, 3)
    m = jax.random.uniform(km, (num_starts, L, P), minval=-m_scale, maxval=m_scale)
    v = jax.random.uniform(kv, (num_starts, L), minval=-v_scale, maxval=v_scale)
    slide = jax.random.bernoulli(ks, slide_prob, (num_starts, L, P)) if hybrid else jnp.zeros((num_starts, L, P), bool)
    m = jnp.where(slide, 0.0, m)
    return m, v, slide


def _canonical(m, v):
    """Sort the student units (rows) so that unit permutations deduplicate."""
    order = np.lexsort(np.concatenate([m, v[:, None]], axis=1).T[::-1])
    return m[order], v[order]


def _classify(eigenvalues, eig_tol):
    re = np.real(eigenvalues)
    pos, neg = np.sum(re > eig_tol), np.sum(re < -eig_tol)
    if pos == 0:
        return "stable" if neg == re.size else "marginal"
    return "saddle" if neg > 0 else "unstable"


def _peak_derivative(sigma) -> float:
    """`max_x |sigma'(x)|` on `[-10, 10]` (the peak of every registered smooth activation lies there)."""
    return float(jnp.max(jnp.abs(sigma.derivative(jnp.linspace(-10.0, 10.0, 2001)))))


def _saturation(problem, m, v, saturation_tol, tol):
    """`(saturated entries, asymptotic?)` of a state (module docstring)."""
    sigma = problem.sigma
    if not sigma.smooth:
        return np.zeros(m.shape, bool), False
    peak = _peak_derivative(sigma)
    window = np.stack([np.abs(np.asarray(sigma.derivative(jnp.asarray(m + h)))) for h in (-1.0, -0.5, 0.0, 0.5, 1.0)])
    saturated = np.all(window < saturation_tol * peak, axis=0)
    r = np.asarray(problem.residual(jnp.asarray(m), jnp.asarray(v)))
    gram = np.abs(np.asarray(problem.gram)).max(axis=1)
    force = (
        float(problem.kernel_lr_multiplier)
        / problem.patch_dim
        * np.abs(v)[:, None]
        * peak
        * (np.abs(r) * gram)[None, :]
    )
    return saturated, bool(np.any(saturated & (force >= tol)))


def _analyse(problem, y, J, residual, side, slide, eig_tol, saturation_tol, tol):
    L = side.shape[0]
    m, v = (np.asarray(a) for a in problem.unflatten(jnp.asarray(y)))
    m = np.where(slide, 0.0, m)
    free = np.concatenate([~slide.ravel(), np.ones(L, bool)])
    Jf = np.asarray(J)[np.ix_(free, free)]
    lam, vecs = np.linalg.eig(Jf)
    order = np.argsort(-np.real(lam))
    lam, vecs = lam[order], vecs[:, order]
    tol = eig_tol * max(1.0, float(np.max(np.abs(lam), initial=0.0)))
    kind = _classify(lam, tol)
    up = np.real(lam) > tol
    directions = np.zeros((int(up.sum()), free.size))
    directions[:, free] = np.real(vecs[:, up]).T
    directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-300)
    saturated, asymptotic = _saturation(problem, m, v, saturation_tol, tol)
    return FixedPoint(
        m=jnp.asarray(m),
        v=jnp.asarray(v),
        loss=float(problem.loss(jnp.asarray(m), jnp.asarray(v))),
        eigenvalues=jnp.asarray(lam),
        kind=kind,
        unstable_directions=jnp.asarray(directions),
        residual=float(residual),
        sliding=jnp.asarray(slide),
        saturated=jnp.asarray(saturated),
        asymptotic=asymptotic,
    )


def _consistent(side, slide, m, theta, tol):
    """A mode root is a Filippov equilibrium when every entry sits on its side of `m = 0`."""
    free_ok = np.where(side > 0, m >= -tol, m <= tol) | slide
    theta_ok = ~slide | ((theta >= -tol) & (theta <= 1 + tol))
    return bool(np.all(free_ok) & np.all(theta_ok))


def find_fixed_points(
    problem: TeacherStudent,
    L: int,
    *,
    num_starts: int = 256,
    key: PRNGKeyArray | None = None,
    starts: tuple[Float[AnyArray, "S L P"], Float[AnyArray, "S L"]] | None = None,
    m_scale: float = 1.5,
    v_scale: float = 2.0,
    slide_prob: float = 0.25,
    tol: float = 1e-10,
    dedupe_tol: float = 1e-6,
    eig_tol: float = 1e-8,
    saturation_tol: float = 1e-6,
    modulo_permutation: bool = True,
    max_steps: int = 512,
    newton_steps: int = 8,
) -> list[FixedPoint]:
    """All fixed points of the flow of `problem` with `L` student units reached from `starts`.

    **Arguments:**

    - `problem`: a `TeacherStudent`; `L`: the number of student units.
    - `num_starts`, `key`: random starts, `m ~ U[-m_scale, m_scale]`,
      `v ~ U[-v_scale, v_scale]`; for relu each entry is put on the surface `m_lp = 0`
      (sliding) with probability `slide_prob` and otherwise on the side of its sign.
      Or give `starts = (m0s, v0s)` explicitly (relu sides then follow their signs and
      exact zeros slide).
    - `tol`: accept a root when `max |F| < tol`; `dedupe_tol`: points closer than this
      (max-norm, after sorting units if `modulo_permutation`) are one point.
    - `eig_tol`: eigenvalues with `|Re| < eig_tol * max(1, max |lambda|)` count as zero.
    - `saturation_tol`: an entry is saturated where `|sigma'| < saturation_tol * max |sigma'|`
      around it; a root held only by saturated entries is marked `asymptotic` (module
      docstring).

    **Returns:** the stationary states, sorted by loss, each a `FixedPoint`: the true fixed
    points first, then the asymptotic states (`count_kinds` counts each kind).
    """
    require(int(L) >= 1, f"L must be a positive number of student units, got {L}")
    hybrid = not problem.sigma.smooth
    if starts is None:
        require(num_starts >= 1, f"num_starts must be >= 1, got {num_starts}")
        key = jax.random.PRNGKey(0) if key is None else key
        m0, v0, slide = _random_starts(problem, int(L), int(num_starts), key, m_scale, v_scale, slide_prob, hybrid)
    else:
        m0, v0 = (jnp.asarray(a, dtype=float) for a in starts)
        require(
            m0.ndim == 3 and m0.shape[1:] == (L, problem.num_atoms) and v0.shape == m0.shape[:2],
            f"starts must be (m0s, v0s) of shapes (S, {L}, {problem.num_atoms}) and (S, {L}), got {m0.shape}, {v0.shape}",
        )
        slide = (m0 == 0) & hybrid
    side = (m0 > 0).astype(m0.dtype)
    y0 = jax.vmap(_flat)(m0, v0)
    ys, res, Js, thetas = _solve_starts(
        problem, y0, side, slide, hybrid=hybrid, max_steps=max_steps, newton_steps=newton_steps
    )
    ys, res, Js, thetas, side, slide = map(np.asarray, (ys, res, Js, thetas, side, slide))
    points: list[FixedPoint] = []
    keys: list[np.ndarray] = []
    for i in np.argsort(res):
        if not np.isfinite(res[i]) or res[i] >= tol:
            continue
        m, v = (np.asarray(a) for a in problem.unflatten(jnp.asarray(ys[i])))
        if hybrid and not _consistent(side[i], slide[i], np.where(slide[i], 0.0, m), thetas[i], 1e-9):
            continue
        key_i = np.concatenate([a.ravel() for a in (_canonical(m, v) if modulo_permutation else (m, v))])
        if any(np.max(np.abs(key_i - k)) < dedupe_tol for k in keys):
            continue
        keys.append(key_i)
        points.append(_analyse(problem, ys[i], Js[i], res[i], side[i], slide[i], eig_tol, saturation_tol, tol))
    return sorted(points, key=lambda p: (p.asymptotic, p.loss))


def count_kinds(points: list[FixedPoint]) -> dict[str, int]:
    """How many true fixed points and how many asymptotic (saturated) states: `{"fixed": n, "asymptotic": k}`."""
    k = sum(bool(p.asymptotic) for p in points)
    return {"fixed": len(points) - k, "asymptotic": k}


def fixed_point_table(points: list[FixedPoint], digits: int = 4) -> str:
    """A plain-text table: index, loss, kind (`asympt.` for an asymptotic state), Morse index, m, v, eigenvalues."""
    lines = [f"{'#':>3}  {'loss':>10}  {'kind':<8}  {'idx':>3}  m / v / eigenvalues (Re, decreasing)"]
    for i, p in enumerate(points):
        fmt = lambda a: np.array2string(np.round(np.real(np.asarray(a)), digits), separator=", ", max_line_width=200)
        kind = p.kind if not p.asymptotic else "asympt."
        lines.append(
            f"{i:>3}  {p.loss:>10.4e}  {kind:<8}  {p.num_unstable:>3}  m={fmt(p.m).replace(chr(10), '')}  v={fmt(p.v)}  eig={fmt(p.eigenvalues)}"
        )
    return "\n".join(lines)


def fixed_point_families(points: list[FixedPoint], loss_decimals: int = 8) -> list[tuple[FixedPoint, int]]:
    """Group fixed points into families: same loss (to `loss_decimals`), kind, Morse index and
    whether asymptotic (an asymptotic state never shares a family with a true fixed point).

    Equilibria of these flows are rarely isolated (zero-loss manifolds of dimension
    `L (P + 1) - P`, rescaling curves, dead units), so the random starts land on many points
    of one family. Returns `(representative, count)` pairs: true fixed points first, then
    asymptotic states, each lowest loss first.
    """
    groups: dict = {}
    for p in points:
        key = (bool(p.asymptotic), round(p.loss, loss_decimals), p.kind, p.num_unstable)
        rep, n = groups.get(key, (p, 0))
        groups[key] = (rep, n + 1)
    return sorted(groups.values(), key=lambda rc: (bool(rc[0].asymptotic), rc[0].loss, rc[0].num_unstable))
