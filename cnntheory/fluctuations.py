r"""Fluctuation theory of online SGD: the seed mean and the seed spread, not just the flow.

**The exact Markov chain.** One online-SGD step on a batch of `B` images moves the kernels
by `-lr eta_K grad_K` of `1/2 mean_i (f_i - y_i)^2`. Every patch is an atom, so the
gradient lies in the atoms' span and the order parameters `y = (m, v)` (flattened,
`n = L P + L`) form an exact Markov chain driven by the images' pooled counts `ñ`
(`n` for sum pooling, `n / N` for mean pooling). With `e = a - b` the per-atom error,
one image's loss is `1/2 (ñ . e)^2 = 1/2 e^T (ñ ñ^T) e`: the population loss with `C`
replaced by `ñ ñ^T`. The flow is linear in the residual `r = C e`,

$$F(y) = \Gamma(y)\, r,\qquad
\Gamma_{(l r), p} = -\frac{\eta_K}{D} v_l\,\sigma'(m_{lp})\,G_{pr},\qquad
\Gamma_{(v_l), p} = -\eta_v\,\sigma(m_{lp}),$$

so one image moves `y` by `lr Γ(y) g` with `g = ñ (ñ . e)` in place of `r`, and

$$y_{k+1} = y_k + \mathrm{lr}\,F(y_k) + \mathrm{lr}\,\xi_k,\qquad
E\,\xi_k = 0,\qquad \mathrm{Cov}\,\xi_k = D(y_k) / B,$$

$$D = \Gamma\,\mathrm{Cov}(g)\,\Gamma^T,\qquad
\mathrm{Cov}(g)_{pq} = \sum_{ij} e_i e_j\,E[ñ_i ñ_j ñ_p ñ_q] - (C e)_p (C e)_q .$$

**Count moments to fourth order.** Write `n = sum_s x_s` over the `N` patches (`x_s`
one-hot, i.i.d. given `rho`). A product of `k` components sums over `k` patch slots; group
the slots by which of them coincide (a set partition `pi` of `{1..k}` into `|pi|` blocks):
indices within a block must be equal, and distinct blocks are distinct patches, so

$$E[n_{i_1}\cdots n_{i_k}] = \sum_{\pi} N^{\underline{|\pi|}}\,
\Big(\prod_{\beta\in\pi} 1\{i \text{ constant on } \beta\}\Big)\,
E\Big[\prod_{\beta\in\pi}\rho_{i_\beta}\Big],$$

with the Dirichlet moments `E[rho_{c_1} ... rho_{c_b}] = prod_r (alpha_{c_r} + #{s < r:
c_s = c_r}) / (a0 (a0 + 1) ... (a0 + b - 1))` (rising factorials). Mean pooling divides by
`N^k`. The **continuum limit** (`patches_per_side=None`, mean pooling, `N -> inf`) keeps
only the singleton partition: `ñ -> rho` and the moments are the Dirichlet ones. The
gradient noise does not vanish there: images still differ in their composition `rho`;
only the multinomial patch-sampling noise (`O(1/N)`) is gone.

**Moment equations.** Let `mu_k = E y_k`, `Sigma_k = Cov y_k`, `h = lr`, and expand
`F(mu + delta) = F + J delta + 1/2 F''[delta, delta] + ...` with `J = dF/dy`. Then

$$\mu_{k+1} = \mu_k + h\big(F(\mu_k) + \tfrac12 F''(\mu_k):\Sigma_k\big) + \dots,\qquad
\Sigma_{k+1} = \Sigma_k + h (J\Sigma_k + \Sigma_k J^T) + h^2 D(\mu_k)/B + \dots$$

`Sigma` is `O(h/B)`. In ODE time `t = h k` the covariance obeys, to leading order,

$$\dot\Sigma = J\Sigma + \Sigma J^T + \frac{\mathrm{lr}}{B}\,D(\mu),\qquad \Sigma(0) = 0,$$

(dropped: `h^2 J Sigma J^T` and the `O(h)` change of `J`, relative `O(lr)`). The mean
follows an explicit-Euler map of the drift `F + 1/2 F'':Sigma`; the continuous flow whose
time-`h` map matches the Euler map to `O(h^2)` per step is its modified equation
`f - (h/2) f' f` (the Taylor terms `h^2/2 f' f` cancel). To first order in `lr` and
`lr/B`:

$$\dot\mu = F(\mu) - \frac{\mathrm{lr}}{2}\,J(\mu) F(\mu) + \frac12\,F''(\mu):\Sigma .$$

The second term is the discrete-step bias (`O(lr)`), the third the noise-induced drift
(`O(lr/B)`, the flow's curvature against the spread). Errors are `O(lr^2, lr^2/B,
(lr/B)^2)` in the mean and relative `O(lr)` in `Sigma`; the theory stops holding when `lr`
approaches the stability edge, and near plateaus (saddles), where `J` has unstable
directions and the linear-noise approximation breaks once `Sigma` is no longer small.
`F''` needs a smooth `sigma`: for relu it is a delta function on `m_lp = 0`, which this
expansion misses. For a relu student `moments` holds while no `m_lp` reaches 0; at a Filippov
sliding surface the (non-Filippov) moment equations chatter and the solve stops with
`status = 1`, while SGD jitters across the surface: on shape counting (lr = 0.05, B = 4)
about a third of the seeds sit on the `m_21 < 0` side at any time, the seed mean of `m_21`
tends to the Filippov value 0 from above (0.007 at t = 25, 0.002 at t = 40) and its spread
shrinks (0.019 to 0.011) instead of growing as the smooth theory would.

Measured (`benchmarks/fluctuations.py`, 256 seeds, shape counting and a random problem,
softplus/sigmoid/tanh): for `lr <= 0.025` the predicted spread is within 10% of the measured
one in 99% of components (ratios 0.89 to 1.15); at `lr = 0.1` in 91%, at `lr = 0.3` and `0.6`
(stability edge 1.4) it is 7-60% too small. On the plateau (`v(0) = 0.01`, where the head's
spread exceeds its mean) the spread of `m` is underestimated by up to 28% early on: the
linear-noise approximation needs the state's spread small against its mean. Across 256
training sets of 128 images, `training_set_spread` is within 8% of full-batch GD's spread.

**Sample paths** (`sample_paths`): the Itô SDE with the same first two moments,
`dY = (F - (lr/2) J F) dt + sqrt(lr/B) Γ(Y) Cov(g)^{1/2}(Y) dW` (a `P`-dimensional
Brownian motion; Itô's formula supplies the `1/2 F'':Sigma` drift), by Euler–Maruyama on
a diffrax `VirtualBrownianTree`.

**Finite training sets** (`training_set_spread`). Full-batch GD on `n_train` images follows
the flow with `C_hat = mean_i ñ_i ñ_i^T`. Across training sets
`Cov(vec C_hat) = Cov(vec ñ ñ^T) / n_train` with
`Cov(ñ_i ñ_j, ñ_p ñ_q) = E[ñ_i ñ_j ñ_p ñ_q] - C_ij C_pq`, and to first order in
`1/n_train` the trajectory moves by `S(t) vec(C_hat - C)` with the linear response
`S = dy(t)/d vec C`, integrated forward with the flow (forward-mode sensitivity,
`dS/dt = J S + dF/d vec C`, `S(0) = 0`):
`Cov y(t) = S Cov(vec C_hat) S^T`.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray
from typing_extensions import Unpack

from ._config import SolverConfig, SolverOptions, resolve_config
from ._integrate import DIFFRAX_SOLVERS, integrate
from ._problem import TeacherStudent, flatten_state
from ._trajectory import CnnTheoryError, SolverError, Status, _Result, checked, status_message
from ._typing import AnyArray
from ._validate import check_times, require, require_finite

__all__ = [
    "Fluctuations",
    "SamplePaths",
    "count_moment_tensor",
    "draw_band",
    "drift_map",
    "gradient_noise",
    "moment_covariance",
    "moments",
    "residual_noise",
    "response",
    "sample_paths",
    "training_set_spread",
]


# --- count moments ---------------------------------------------------------------------


@functools.cache
def _set_partitions(k: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """All set partitions of `{0, ..., k-1}` (Bell(k) of them), blocks in order of first element."""

    def parts(items):
        if not items:
            yield ()
            return
        first, rest = items[0], items[1:]
        for sub in parts(rest):
            yield ((first,),) + sub  # `first` alone
            for i, block in enumerate(sub):  # `first` joins an existing block
                yield sub[:i] + ((first,) + block,) + sub[i + 1 :]

    return tuple(tuple(sorted(p, key=min)) for p in parts(tuple(range(k))))


def _dirichlet_tensor(alpha: Float[Array, " P"], b: int) -> Float[Array, ...]:
    """`E[rho_{c_1} ... rho_{c_b}]` as a `(P,)*b` tensor (rising factorials of `alpha`)."""
    P = alpha.shape[0]
    idx = np.indices((P,) * b)
    num = jnp.ones((P,) * b)
    for r in range(b):
        repeats = sum((idx[s] == idx[r]).astype(float) for s in range(r)) if r else 0.0
        num = num * (alpha[idx[r]] + repeats)
    a0 = jnp.sum(alpha)
    return num / jnp.prod(a0 + jnp.arange(b, dtype=a0.dtype))


def count_moment_tensor(mixture, order: int) -> Float[Array, ...]:
    r"""`E[ñ_{i_1} ... ñ_{i_k}]`, a `(P,)*k` tensor, `k = order` in 1..4.

    `ñ` are the pooled counts (`n` for sum pooling, `n / N` for mean pooling, `rho` in the
    continuum limit): the sum over set partitions of the module docstring. `order=2` is
    `mixture.moments`.
    """
    require(order in (1, 2, 3, 4), f"order must be 1, 2, 3 or 4, got {order!r}")
    alpha = mixture.alpha
    P = alpha.shape[0]
    N = mixture.num_patches
    if N is None:  # continuum: only the all-distinct partition survives N^(b) / N^k
        return _dirichlet_tensor(alpha, order)
    idx = np.indices((P,) * order)
    total = jnp.zeros((P,) * order)
    for pi in _set_partitions(order):
        b = len(pi)
        falling = math.prod(N - j for j in range(b))
        if falling == 0:
            continue
        same = np.ones((P,) * order, dtype=bool)
        for block in pi:
            for s in block[1:]:
                same &= idx[s] == idx[block[0]]
        rho = _dirichlet_tensor(alpha, b)[tuple(idx[block[0]] for block in pi)]
        total = total + falling * jnp.where(same, rho, 0.0)
    return total if mixture.pooling == "sum" else total / float(N) ** order


# --- the noise of one SGD step ----------------------------------------------------------


def drift_map(problem: TeacherStudent, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"]) -> Float[Array, "n P"]:
    r"""`Γ(y)`, `(n, P)`: the flow is `F(y) = Γ(y) r` with `r = C (a - b)`.

    One image with pooled counts `ñ` moves `y` by `lr Γ(y) ñ (ñ . e)`.
    """
    sig = problem.sigma
    L, P = m.shape
    dm = -(problem.lr_kernel / problem.patch_dim) * (
        v[:, None, None] * sig.derivative(m)[:, :, None] * problem.gram[None, :, :]
    )
    dm = jnp.transpose(dm, (0, 2, 1)).reshape(L * P, P)  # rows (l, r), columns p
    dv = -problem.lr_head * sig(m)
    return jnp.concatenate([dm, dv], axis=0)


def _fourth(problem: TeacherStudent):
    return count_moment_tensor(problem.mixture, 4)


def residual_noise(
    problem: TeacherStudent, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"], fourth=None
) -> Float[Array, "P P"]:
    r"""`Cov(g)`, `g = ñ (ñ . e)`: the covariance of one image's residual, `(P, P)`.

    Uses the moment matrix of the mixture (`E[ñ ñ^T]`), i.e. fresh images (online SGD).
    `fourth` passes a precomputed `count_moment_tensor(mixture, 4)`.
    """
    fourth = _fourth(problem) if fourth is None else fourth
    e = problem.student_outputs(m, v) - problem.teacher_outputs()
    second = jnp.einsum("pqij,i,j->pq", fourth, e, e)
    mean = problem.mixture.moments @ e
    return second - jnp.outer(mean, mean)


def gradient_noise(problem: TeacherStudent, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"]) -> Float[Array, "n n"]:
    r"""`D(m, v) = Γ Cov(g) Γ^T`, `(n, n)`, `n = L P + L`: per-image covariance of the SGD step.

    One online-SGD step with batch `B` moves the flat state `(m.ravel(), v)` by
    `lr F(y) + lr xi` with `Cov(xi) = D / B` (module docstring). Needs a finite
    `patches_per_side` or the continuum limit (Dirichlet moments).
    """
    require(isinstance(problem, TeacherStudent), f"problem must be a TeacherStudent, got {type(problem).__name__}")
    m = jnp.asarray(m, dtype=float)
    v = jnp.asarray(v, dtype=float)
    problem.check_state(m, v)
    G = drift_map(problem, m, v)
    return G @ residual_noise(problem, m, v) @ G.T


# --- moment equations ------------------------------------------------------------------


class Fluctuations(_Result):
    """Predicted seed mean and covariance of `(m, v)` at the saved times.

    - `t`: `(T,)`; `mean_m`: `(T, L, P)`, `mean_v`: `(T, L)` the predicted mean;
      `cov`: `(T, n, n)` the covariance of the flat state `(m.ravel(), v)`.
    - `flow_m`, `flow_v`: the plain order-parameter flow at the same times (the `lr -> 0`
      mean); `mean_m - flow_m` is the predicted bias.
    - `status`, `message`, `success`, `raise_for_status()` (`SolverError`): as `Trajectory`.
    - `kind`: `"online"` (`moments`) or `"training_set"` (`training_set_spread`);
      `lr`, `batch_size`, `num_train`: the parameters (`None` where not applicable).
    """

    t: Float[Array, " T"]
    mean_m: Float[Array, "T L P"]
    mean_v: Float[Array, "T L"]
    cov: Float[Array, "T n n"]
    flow_m: Float[Array, "T L P"]
    flow_v: Float[Array, "T L"]
    status: Int[Array, ""]
    message: str = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    lr: float | None = eqx.field(static=True)
    batch_size: int | None = eqx.field(static=True)
    num_train: int | None = eqx.field(static=True)

    exception: ClassVar[type[CnnTheoryError]] = SolverError

    @property
    def std(self) -> Float[Array, "T n"]:
        """Predicted standard deviation of every flat component, `sqrt(diag cov)`."""
        return jnp.sqrt(jnp.clip(jnp.diagonal(self.cov, axis1=1, axis2=2), 0.0, None))

    @property
    def std_m(self) -> Float[Array, "T L P"]:
        """Predicted standard deviation of `m`."""
        return self.std[:, : self.mean_m[0].size].reshape(self.mean_m.shape)

    @property
    def std_v(self) -> Float[Array, "T L"]:
        """Predicted standard deviation of `v`."""
        return self.std[:, self.mean_m[0].size :]

    @property
    def mean(self) -> Float[Array, "T n"]:
        """The predicted mean of the flat state."""
        return jnp.concatenate([self.mean_m.reshape(self.t.shape[0], -1), self.mean_v], axis=1)


def _mean_drift(problem, y, Sigma, lr, discrete_step, noise_drift):
    """`F - (lr/2) J F + 1/2 F'':Sigma` at `y`, and `J`, `F`."""
    F = problem.flat_rhs
    f, J = F(y), jax.jacfwd(F)(y)
    drift = f
    if discrete_step:
        drift = drift - 0.5 * lr * J @ f
    if noise_drift:
        hess = jax.jacfwd(jax.jacfwd(F))(y)  # (n, n, n)
        drift = drift + 0.5 * jnp.einsum("ijk,jk->i", hess, Sigma)
    return drift, J, f


def _moment_field(t, state, args, discrete_step, noise_drift):
    problem, lr, batch, fourth = args
    y_flow, mu, Sigma = state
    drift, J, _ = _mean_drift(problem, mu, Sigma, lr, discrete_step, noise_drift)
    m, v = problem.unflatten(mu)
    G = drift_map(problem, m, v)
    D = G @ residual_noise(problem, m, v, fourth) @ G.T
    dSigma = J @ Sigma + Sigma @ J.T + (lr / batch) * D
    return problem.flat_rhs(y_flow), drift, 0.5 * (dSigma + dSigma.T)


@eqx.filter_jit
def _moments_core(problem, y0, t0, t1, ts, lr, batch, config, *, discrete_step, noise_drift):
    n = y0.shape[0]
    args = (problem, lr, batch, _fourth(problem))
    state0 = (y0, y0, jnp.zeros((n, n)))
    field = functools.partial(_moment_field, discrete_step=discrete_step, noise_drift=noise_drift)
    return integrate(field, state0, args, t0, t1, ts, config)


def _check(caller, problem, m0, v0, t0, t1, ts, config, options):
    """The checked `(m0, v0, t0, t1, ts)` and the `SolverConfig` of a call to `caller`."""
    config = resolve_config(config, options, caller=caller)
    require(isinstance(problem, TeacherStudent), f"problem must be a TeacherStudent, got {type(problem).__name__}")
    m0 = jnp.asarray(m0, dtype=float)
    v0 = jnp.asarray(v0, dtype=float)
    problem.check_state(m0, v0)
    require_finite("m0", m0)
    require_finite("v0", v0)
    t0, t1, ts = check_times(float(t0), float(t1), ts)
    require(
        config.method in DIFFRAX_SOLVERS and config.method != "euler",
        f"method must be an adaptive diffrax solver ({', '.join(sorted(set(DIFFRAX_SOLVERS) - {'euler'}))}), "
        f"got {config.method!r}",
    )
    return m0, v0, t0, t1, ts, config


def _result(problem, ts, m0, out, status, t_end, config, t1, throw, **params):
    message = status_message(status, t_end, config.method, t1, config.max_steps, 0)
    y_flow, mu, cov = out
    P = problem.num_atoms
    L = m0.shape[0]
    T = ts.shape[0]
    result = Fluctuations(
        t=jnp.asarray(ts),
        mean_m=mu[:, : L * P].reshape(T, L, P),
        mean_v=mu[:, L * P :],
        cov=cov,
        flow_m=y_flow[:, : L * P].reshape(T, L, P),
        flow_v=y_flow[:, L * P :],
        status=jnp.asarray(status),
        message=message,
        **params,
    )
    return checked(result, throw)


def moments(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: float,
    *,
    lr: float,
    batch_size: int,
    ts: Float[AnyArray, " T"] | None = None,
    t0: float = 0.0,
    discrete_step: bool = True,
    noise_drift: bool = True,
    throw: bool = True,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> Fluctuations:
    r"""Seed mean and covariance of online SGD with step `lr` and batch `B`, from `(m0, v0)`.

    Integrates, as one system with the package's diffrax integrator, the plain flow, the
    first-order mean `dmu/dt = F - (lr/2) J F + 1/2 F'':Sigma` and the covariance
    `dSigma/dt = J Sigma + Sigma J^T + (lr/B) D(mu)` (module docstring), in ODE time
    `t = lr * steps`, every run starting at `(m0, v0)`.

    **Arguments:** `problem` (a smooth student activation; its mixture gives the images'
    counts), `m0` `(L, P)`, `v0` `(L,)`, `t1`; `lr` the SGD step; `batch_size` `B`; `ts`
    save times (default 101 in `[t0, t1]`); `config` (or its fields as keywords: `method`,
    `rtol`, `atol`, `max_steps`, ...) as in `cnntheory.solve`, adaptive diffrax methods. `discrete_step=False` drops the `-(lr/2) J F` term,
    `noise_drift=False` the `1/2 F'':Sigma` term (to see each contribution).

    **Returns:** a `Fluctuations` (`kind="online"`).
    """
    m0, v0, t0, t1, ts, config = _check("moments", problem, m0, v0, t0, t1, ts, config, options)
    require(np.isfinite(lr) and lr > 0, f"lr must be a finite number > 0 (the SGD step in ODE time), got {lr}")
    require(
        isinstance(batch_size, (int, np.integer)) and batch_size >= 1,
        f"batch_size must be an integer >= 1, got {batch_size!r}",
    )
    out, status, _, t_end = _moments_core(
        problem,
        flatten_state(m0, v0),
        jnp.asarray(t0),
        jnp.asarray(t1),
        jnp.asarray(ts),
        jnp.asarray(float(lr)),
        jnp.asarray(float(batch_size)),
        config,
        discrete_step=bool(discrete_step),
        noise_drift=bool(noise_drift),
    )
    return _result(
        problem,
        ts,
        m0,
        out,
        status,
        t_end,
        config,
        t1,
        throw,
        kind="online",
        lr=float(lr),
        batch_size=int(batch_size),
        num_train=None,
    )


# --- sample paths ------------------------------------------------------------------------


class SamplePaths(eqx.Module):
    """Sample paths of the SGD diffusion: `t` `(T,)`, `m` `(S, T, L, P)`, `v` `(S, T, L)`."""

    t: Float[Array, " T"]
    m: Float[Array, "S T L P"]
    v: Float[Array, "S T L"]
    lr: float = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    dt: float = eqx.field(static=True)


def _psd_sqrt(X):
    lam, U = jnp.linalg.eigh(0.5 * (X + X.T))
    return (U * jnp.sqrt(jnp.clip(lam, 0.0, None))) @ U.T


@eqx.filter_jit
def _paths_core(problem, y0, keys, t0, t1, ts, dt, lr, batch):
    P = problem.num_atoms
    fourth = _fourth(problem)
    F = problem.flat_rhs

    def drift(t, y, args):
        f, J = F(y), jax.jacfwd(F)(y)
        return f - 0.5 * lr * J @ f

    def diffusion(t, y, args):
        m, v = problem.unflatten(y)
        return jnp.sqrt(lr / batch) * drift_map(problem, m, v) @ _psd_sqrt(residual_noise(problem, m, v, fourth))

    def one(key):
        bm = diffrax.VirtualBrownianTree(t0, t1, tol=dt / 2, shape=(P,), key=key)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        sol = diffrax.diffeqsolve(
            terms,
            diffrax.Euler(),
            t0,
            t1,
            dt,
            y0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=None,
        )
        return sol.ys

    return jax.vmap(one)(keys)


def sample_paths(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: float,
    *,
    lr: float,
    batch_size: int,
    key: PRNGKeyArray,
    num_paths: int = 256,
    ts: Float[AnyArray, " T"] | None = None,
    t0: float = 0.0,
    dt: float | None = None,
) -> SamplePaths:
    r"""Sample paths of the SGD diffusion, a cheap stand-in for online-SGD seeds.

    The Itô SDE `dY = (F - (lr/2) J F) dt + sqrt(lr/B) Γ(Y) Cov(g)^{1/2}(Y) dW` with a
    `P`-dimensional Brownian motion `W` (module docstring): its mean and covariance obey
    the equations of `moments` to first order. Euler–Maruyama with step `dt` (default
    `lr / 4`) on a diffrax `VirtualBrownianTree`, `num_paths` paths `vmap`ped.
    """
    m0, v0, t0, t1, ts, _ = _check("sample_paths", problem, m0, v0, t0, t1, ts, None, {})
    require(np.isfinite(lr) and lr > 0, f"lr must be a finite number > 0, got {lr}")
    require(
        isinstance(batch_size, (int, np.integer)) and batch_size >= 1,
        f"batch_size must be an integer >= 1, got {batch_size!r}",
    )
    require(
        isinstance(num_paths, (int, np.integer)) and num_paths >= 1,
        f"num_paths must be an integer >= 1, got {num_paths!r}",
    )
    dt = lr / 4 if dt is None else float(dt)
    require(np.isfinite(dt) and 0 < dt <= t1 - t0, f"dt must lie in (0, t1 - t0], got {dt}")
    ys = _paths_core(
        problem,
        flatten_state(m0, v0),
        jax.random.split(key, int(num_paths)),
        *map(jnp.asarray, (t0, t1, ts, dt, float(lr), float(batch_size))),
    )
    L, P = m0.shape
    return SamplePaths(
        t=jnp.asarray(ts),
        m=ys[..., : L * P].reshape(ys.shape[:2] + (L, P)),
        v=ys[..., L * P :],
        lr=float(lr),
        batch_size=int(batch_size),
        dt=dt,
    )


# --- finite training sets ------------------------------------------------------------------


def moment_covariance(problem: TeacherStudent) -> Float[Array, "PP PP"]:
    r"""`Cov(vec ñ ñ^T)`, `(P^2, P^2)`: one image's contribution to the spread of `C_hat`.

    `Cov(vec C_hat) = moment_covariance(problem) / n_train` over training sets of `n_train`
    images (fourth count moments minus `vec C vec C^T`).
    """
    P = problem.num_atoms
    C = problem.mixture.moments.reshape(-1)
    return _fourth(problem).reshape(P * P, P * P) - jnp.outer(C, C)


def _sensitivity_field(t, state, problem):
    y, S = state
    P = problem.num_atoms

    def F(y, C):
        return problem.with_moments(C).flat_rhs(y)

    C = problem.moments
    J = jax.jacfwd(F, argnums=0)(y, C)
    dFdC = jax.jacfwd(F, argnums=1)(y, C).reshape(y.shape[0], P * P)
    return F(y, C), J @ S + dFdC


@eqx.filter_jit
def _sensitivity_core(problem, y0, t0, t1, ts, config):
    P = problem.num_atoms
    state0 = (y0, jnp.zeros((y0.shape[0], P * P)))
    return integrate(_sensitivity_field, state0, problem, t0, t1, ts, config)


def response(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: float,
    *,
    ts: Float[AnyArray, " T"] | None = None,
    t0: float = 0.0,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> tuple[Float[Array, "T n"], Float[Array, "T n PP"]]:
    r"""The flow `y(t)` and its linear response `S(t) = dy(t) / d vec C`, `(T, n, P^2)`.

    Forward-mode sensitivity integrated with the flow: `dS/dt = J S + dF/d vec C`, `S(0) = 0`.
    The solver options are as in `moments`.
    """
    m0, v0, t0, t1, ts, config = _check("response", problem, m0, v0, t0, t1, ts, config, options)
    y0 = flatten_state(m0, v0)
    (y, S), status, _, t_end = _sensitivity_core(problem, y0, jnp.asarray(t0), jnp.asarray(t1), jnp.asarray(ts), config)
    if int(status) != Status.SUCCESS:
        raise SolverError(status_message(status, t_end, config.method, t1, config.max_steps, 0))
    return y, S


def training_set_spread(
    problem: TeacherStudent,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    t1: float,
    *,
    num_train: int,
    ts: Float[AnyArray, " T"] | None = None,
    t0: float = 0.0,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> Fluctuations:
    r"""Spread of full-batch training across training sets of `num_train` images.

    Full-batch GD follows the flow with `C_hat`; to first order in `1/num_train`,
    `Cov y(t) = S(t) Cov(vec ñ ñ^T) S(t)^T / num_train` with `S` from `response`
    (module docstring). The mean is the flow with `C` (its shift is `O(1/num_train)`).
    Returns a `Fluctuations` (`kind="training_set"`). The solver options are as in `moments`.
    """
    require(
        isinstance(num_train, (int, np.integer)) and num_train >= 1,
        f"num_train must be an integer >= 1, got {num_train!r}",
    )
    config = resolve_config(config, options, caller="training_set_spread")
    t0, t1, ts = check_times(float(t0), float(t1), ts)
    y, S = response(problem, m0, v0, t1, ts=ts, t0=t0, config=config)
    K = moment_covariance(problem)
    cov = jnp.einsum("tia,ab,tjb->tij", S, K, S) / num_train
    m0 = jnp.asarray(m0, dtype=float)
    return _result(
        problem,
        ts,
        m0,
        (y, y, cov),
        jnp.asarray(Status.SUCCESS),
        t1,
        config,
        t1,
        True,
        kind="training_set",
        lr=None,
        batch_size=None,
        num_train=int(num_train),
    )


# --- plotting ------------------------------------------------------------------------------


def draw_band(axes, fluct: Fluctuations, *, width: float = 2.0, color: str = "0.3"):
    """Draw the predicted mean (dotted) and a `+- width` sigma band of `fluct` on two axes.

    `axes[0]` gets every `m_lp`, `axes[1]` every `v_l` (the layout of
    `cnntheory.compare.plot_comparison`). Needs matplotlib axes; imports nothing itself.
    """
    t = np.asarray(fluct.t)
    L, P = fluct.mean_m.shape[1:]
    series = [(axes[0], fluct.mean_m[:, l, p], fluct.std_m[:, l, p]) for l in range(L) for p in range(P)]
    series += [(axes[1], fluct.mean_v[:, l], fluct.std_v[:, l]) for l in range(L)]
    for i, (ax, mean_j, std_j) in enumerate(series):
        mean, std = np.asarray(mean_j), np.asarray(std_j)
        first = i == 0 or (ax is axes[1] and i == L * P)
        ax.plot(t, mean, ":", color=color, lw=1.2, label="fluctuation theory" if first else None)
        ax.fill_between(
            t,
            mean - width * std,
            mean + width * std,
            color=color,
            alpha=0.15,
            lw=0,
            label=f"$\\pm{width:g}\\sigma$ (theory)" if first else None,
        )
    for ax in axes[:2]:
        ax.legend(fontsize=7, ncol=2)
