r"""The moment maps of online SGD: `moments`.

**The discrete-step map** (the default, `discrete=True`). With `h = lr`, one step is
`y_{k+1} = y_k + h F(y_k) + h xi_k`, `E xi_k = 0`, `Cov xi_k = D(y_k) / B`. Take the mean
and the covariance of both sides over the seeds, and expand `F` around the mean `mu_k` to
second order (`delta = y_k - mu_k`, `F(mu + delta) = F + J delta + 1/2 F''[delta, delta]`):

$$\mu_{k+1} = \mu_k + h\,E F(y_k) = \mu_k + h\Big(F(\mu_k) + \tfrac12 F''(\mu_k):\Sigma_k\Big),$$

$$\Sigma_{k+1} = \mathrm{Cov}\big(y_k + h F(y_k)\big) + h^2\,E D(y_k)/B
= (I + hJ_k)\,\Sigma_k\,(I + hJ_k)^T + \frac{h^2}{B}\,D(\mu_k),$$

with `J_k = dF/dy(mu_k)`. Nothing in `h` is expanded: the `O(lr)` discrete-step bias of
the mean (`-(lr/2) J F` per unit time, the modified equation of the Euler map) and the
`h^2 J Sigma J^T` term of the covariance are inside the map, so the map is exact for the
linearised chain at any step below the stability edge. Dropped: `O(Sigma^{3/2})` (the third
cumulant of `y` against `F'''`), the `O(Sigma)` change of `D`, and the third cumulant of the
step noise. A `lax.scan` over the records of a `fori_loop` over steps: every step costs one
`F`, `J`, `F''` and `D`, about what one stage of the continuous solve costs.

**The continuous equations** (`discrete=False`), the `lr -> 0` limit to first order in `lr`
and `lr/B` (ODE time `t = lr k`):

$$\dot\mu = F(\mu) - \frac{\mathrm{lr}}{2}\,J F + \frac12\,F'':\Sigma,\qquad
\dot\Sigma = J\Sigma + \Sigma J^T + \frac{\mathrm{lr}}{B}\,D(\mu),$$

integrated with the package's diffrax integrator. Their spread errs by about
`0.7 lr max|eig J|` (relative), which on stiff problems is 13% at a tenth of the stability
edge; they need a smooth student activation.

**relu kinks.** With relu, `F` is continuous and piecewise smooth: `sigma'(m_lp)` steps from
0 to 1 across `m_lp = 0`, which changes the rows `(l, .)` of the flow by
`Delta F_(l r) = -(eta_K / D) v_l r_p G_pr` (`r = C (a - b)`). Away from the kinks `F''` has
no kink terms and the smooth map applies. When the mean crosses `m_lp = 0` in a step, from
side `A` to side `B`, with both one-sided normal velocities `a = F^A_lp` and `b = F^B_lp`
of the same sign (a transversal crossing), every seed crosses once at a slightly different
time, and to first order its deviation is mapped by the **saltation matrix** of
piecewise-smooth systems,

$$S = I + \frac{(F^B - F^A)\, e_{lp}^T}{e_{lp}^T F^A},\qquad \Sigma \leftarrow S\,\Sigma\,S^T,$$

(the deviation along `m_lp` is rescaled by `b / a`, and the others pick up the field's jump
during the delay). The mean takes the crossing step with `F^A`, plus
`h q Delta F_{AB}` with `q = 1/2 - s - Z(s, tau)`, `s = mu_lp / (mu_lp - mu^A_lp)` the mean's
crossing phase and `Z = sum_n sin(2 pi n s) exp(-2 pi^2 n^2 tau^2) / (pi n)`,
`tau = sigma_lp / (h |a|)`: the average over the seeds of how many steps each spends on side
`A` (`q -> 1/2 - s` once the spread covers a step, `q -> 0` for a deterministic start).
Where the predicted band `|mu_lp| < 3 sigma_lp` (or the step) touches a kink whose one-sided
velocities point against each other (a sliding or repulsive surface, where SGD jitters
across the kink), the map stops with status `FAILED` and a message naming the time and the
entry; later records are NaN. The continuous equations refuse a relu student.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Float
from typing_extensions import Unpack

from .._config import SolverConfig, SolverOptions
from .._integrate import integrate
from .._problem import TeacherStudent, flatten_state
from .._trajectory import Status, out_of_bounds, status_message
from .._typing import AnyArray
from .._validate import require
from ._noise import _fourth, drift_map, residual_noise
from ._result import Fluctuations, _check, _check_batch, _check_lr, _grid_ts, _record_steps, _result, _whole_steps
from ._validity import record_indicators

#: Entries within this many predicted standard deviations of a kink count as touching it.
KINK_BAND = 3.0
#: Terms of the phase-average series `Z(s, tau)` of a kink crossing (module docstring).
_PHASE_TERMS = 64


def _noise(problem, mu, fourth):
    m, v = problem.unflatten(mu)
    G = drift_map(problem, m, v)
    return G @ residual_noise(problem, m, v, fourth) @ G.T


# --- continuous equations ---------------------------------------------------------------


def _moment_field(t, state, args, noise_drift):
    problem, lr, batch, fourth = args
    y_flow, mu, Sigma = state
    F = problem.flat_rhs
    f, J = F(mu), jax.jacfwd(F)(mu)
    drift = f - 0.5 * lr * J @ f
    if noise_drift:
        drift = drift + 0.5 * jnp.einsum("ijk,jk->i", jax.jacfwd(jax.jacfwd(F))(mu), Sigma)
    dSigma = J @ Sigma + Sigma @ J.T + (lr / batch) * _noise(problem, mu, fourth)
    return F(y_flow), drift, 0.5 * (dSigma + dSigma.T)


@eqx.filter_jit
def _continuous_core(problem, y0, t0, t1, ts, lr, batch, config, *, noise_drift):
    n = y0.shape[0]
    args = (problem, lr, batch, _fourth(problem))
    field = functools.partial(_moment_field, noise_drift=noise_drift)
    out, status, _, t_end = integrate(field, (y0, y0, jnp.zeros((n, n))), args, t0, t1, ts, config)
    return out, status, t_end, record_indicators(problem, out[1], out[2], lr, lr / batch)


# --- the discrete map ---------------------------------------------------------------------


def _kink_jumps(problem, mu):
    """`Delta F` of every entry `(l, p)`, `(LP, n)`: the field with `sigma'(m_lp) = 1` minus `= 0`."""
    m, v = problem.unflatten(mu)
    L, P = m.shape
    r = problem.residual(m, v)
    one_hot = jnp.eye(L * P).reshape(L * P, L, P)
    # sigma = 0 and sigma' = one-hot: the velocities of the sigma'(m_lp) terms alone (dv = 0)
    return jax.vmap(lambda E: flatten_state(*problem.velocities(v, jnp.zeros_like(m), E, r)))(one_hot)


def _phase(s, tau):
    """`q = 1/2 - s - Z(s, tau)`: the seed-averaged extra fraction of the crossing step on side `B`."""
    n = jnp.arange(1, _PHASE_TERMS + 1, dtype=float)
    Z = jnp.sum(
        jnp.sin(2 * jnp.pi * n * s[..., None]) * jnp.exp(-2 * (jnp.pi * n * tau[..., None]) ** 2) / (jnp.pi * n), -1
    )
    return 0.5 - s - Z


def _cross_kinks(problem, mu, mu1, Sigma, Sigma1, f, J, lr):
    """Propagate through the relu kinks met in the step `mu -> mu1` (module docstring).

    Returns the corrected `(mu1, Sigma1)`, whether a non-transversal kink was touched and
    which entry.
    """
    LP = problem.num_atoms * (mu.shape[0] // (problem.num_atoms + 1))
    x, x1 = mu[:LP], mu1[:LP]
    sd = jnp.sqrt(jnp.clip(jnp.diagonal(Sigma)[:LP], 0.0, None))
    side = x > 0  # relu'(x) = 1 iff x > 0 (jax.nn.relu's convention at 0)
    dF = jnp.where(side, -1.0, 1.0)[:, None] * _kink_jumps(problem, mu)  # (other side) - (this side)
    idx = jnp.arange(LP)
    a = f[:LP]
    b = a + dF[idx, idx]
    crossed = side != (x1 > 0)
    near = crossed | (jnp.abs(x) < KINK_BAND * sd)
    transversal = a * b > 0
    bad = near & ~transversal
    # the mean's crossing step, averaged over the seeds' crossing phases
    safe_a = jnp.where(crossed & (a != 0), a, 1.0)
    s = jnp.clip(-x / (lr * safe_a), 0.0, 1.0)
    tau = sd / (lr * jnp.abs(safe_a))
    q = jnp.where(crossed & transversal, _phase(s, tau), 0.0)
    mu1 = mu1 + lr * q @ dF
    n = mu.shape[0]

    def saltation(i, S_acc):
        S = jnp.eye(n) + jnp.where(crossed[i] & transversal[i], 1.0, 0.0) * jnp.outer(dF[i], jnp.eye(n)[i]) / safe_a[i]
        return S @ S_acc

    S = jax.lax.fori_loop(0, LP, saltation, jnp.eye(n))
    Sigma1 = S @ Sigma1 @ S.T
    return mu1, Sigma1, jnp.any(bad), jnp.argmax(bad)


def _discrete_step(problem, fourth, lr, batch, noise_drift, kinks, state):
    k, mu, Sigma, status, entry = state
    F = problem.flat_rhs
    f, J = F(mu), jax.jacfwd(F)(mu)
    drift = f
    if noise_drift:
        drift = drift + 0.5 * jnp.einsum("ijk,jk->i", jax.jacfwd(jax.jacfwd(F))(mu), Sigma)
    mu1 = mu + lr * drift
    A = jnp.eye(mu.shape[0]) + lr * J
    Sigma1 = A @ Sigma @ A.T + (lr**2 / batch) * _noise(problem, mu, fourth)
    touched, bad_entry = jnp.asarray(False), jnp.asarray(0)
    if kinks:
        mu1, Sigma1, touched, bad_entry = _cross_kinks(problem, mu, mu1, Sigma, Sigma1, f, J, lr)
    Sigma1 = 0.5 * (Sigma1 + Sigma1.T)
    diverged = out_of_bounds(jnp.maximum(jnp.max(jnp.abs(mu1)), jnp.max(jnp.abs(Sigma1))))
    new = jnp.where(touched, Status.FAILED, jnp.where(diverged, Status.DIVERGED, Status.SUCCESS))
    stop = new != Status.SUCCESS  # keep the last good state and the step where it stopped
    return (
        jnp.where(stop, k, k + 1),
        jnp.where(stop, mu, mu1),
        jnp.where(stop, Sigma, Sigma1),
        new,
        jnp.where(touched, bad_entry, entry),
    )


@eqx.filter_jit
def _discrete_core(problem, y0, record_steps, lr, batch, *, noise_drift, kinks):
    n = y0.shape[0]
    fourth = _fourth(problem)
    step = functools.partial(_discrete_step, problem, fourth, lr, batch, noise_drift, kinks)

    def record(state, k_end):
        state = jax.lax.while_loop(lambda s: (s[0] < k_end) & (s[3] == Status.SUCCESS), step, state)
        reached = state[0] == k_end
        return state, (state[1], state[2], reached)

    state0 = (jnp.asarray(0), y0, jnp.zeros((n, n)), jnp.asarray(Status.SUCCESS), jnp.asarray(0))
    final, (mu, Sigma, reached) = jax.lax.scan(record, state0, record_steps)
    mu = jnp.where(reached[:, None], mu, jnp.nan)
    Sigma = jnp.where(reached[:, None, None], Sigma, jnp.nan)
    return mu, Sigma, record_indicators(problem, mu, Sigma, lr, lr / batch), final[0], final[3], final[4], final[1]


@eqx.filter_jit
def _flow_core(problem, y0, t0, t1, ts, config):
    return integrate(lambda t, y, args: args.flat_rhs(y), y0, problem, t0, t1, ts, config)


def _kink_message(problem, k_stop, entry, mu, t0, lr):
    L = mu.shape[0] // (problem.num_atoms + 1)
    l, p = divmod(int(entry), problem.num_atoms)
    t = t0 + lr * int(k_stop)
    return (
        f"the discrete moment map stopped at t={t:.6g} (step {int(k_stop)}): the band of relu entry "
        f"m[{l}, {p}] = {float(mu[int(entry)]):.3g} touches its kink m = 0 where the one-sided velocities point "
        f"against each other (a sliding or repulsive surface; L = {L}): SGD jitters across the kink there and the "
        "linear-noise theory does not hold; records after it are NaN. Stop before this time, or use a smooth "
        "student activation"
    )


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
    discrete: bool = True,
    noise_drift: bool = True,
    throw: bool = True,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> Fluctuations:
    r"""Seed mean and covariance of online SGD with step `lr` and batch `B`, from `(m0, v0)`.

    `discrete=True` (the default): the discrete-step moment map of the module docstring,
    `mu_{k+1} = mu_k + lr (F + 1/2 F'':Sigma_k)`,
    `Sigma_{k+1} = (I + lr J) Sigma_k (I + lr J)^T + lr^2 D(mu_k) / B`, step by step in ODE
    time `t = t0 + lr k`, through relu kink crossings by the saltation matrix; save times
    must be whole steps (default: up to 101 of them in `[t0, t1]`). `discrete=False`: the
    continuous `lr -> 0` equations `dmu/dt = F - (lr/2) J F + 1/2 F'':Sigma`,
    `dSigma/dt = J Sigma + Sigma J^T + (lr/B) D(mu)` (smooth students only).

    **Arguments:** `problem` (its mixture gives the images' counts), `m0` `(L, P)`, `v0`
    `(L,)`, `t1`; `lr` the SGD step; `batch_size` `B`; `ts` save times; `noise_drift=False`
    drops the `1/2 F'':Sigma` term (to see its contribution); `config` (or its fields as
    keywords: `method`, `rtol`, `atol`, `max_steps`, ...) as in `cnntheory.solve`, adaptive
    diffrax methods, for the plain flow (and the continuous equations).

    **Returns:** a `Fluctuations` (`kind="online"`) with its `validity` indicators; a
    `ValidityWarning` is issued where they pass their thresholds. A relu band touching a
    sliding or repulsive kink gives status `FAILED` (raised as `SolverError` when `throw`).
    """
    lr = _check_lr(lr)
    batch_size = _check_batch(batch_size)
    discrete = bool(discrete)
    if discrete:
        ts = _grid_ts(t0, t1, ts, lr)
    m0, v0, t0, t1, ts, config = _check("moments", problem, m0, v0, t0, t1, ts, config, options)
    smooth = problem.sigma.smooth
    require(
        discrete or smooth,
        f"the continuous moment equations (discrete=False) need a smooth student activation (F'' is a delta "
        f"function at relu's kink), got {problem.student_activation!r}: use discrete=True, which carries the "
        "moments through transversal kink crossings, or a smooth activation (softplus)",
    )
    y0 = flatten_state(m0, v0)
    params = dict(kind="online", lr=lr, batch_size=batch_size, num_train=None, discrete=discrete)
    if not discrete:
        out, status, t_end, validity = _continuous_core(
            problem,
            y0,
            jnp.asarray(t0),
            jnp.asarray(t1),
            jnp.asarray(ts),
            jnp.asarray(lr),
            jnp.asarray(float(batch_size)),
            config,
            noise_drift=bool(noise_drift),
        )
        message = status_message(status, t_end, config.method, t1, config.max_steps, 0)
        return _finish(problem, ts, m0, out, status, message, throw, validity, params)
    _whole_steps("t1 - t0", t1 - t0, lr)
    steps = _record_steps(t0, ts, lr)
    flow, flow_status, _, flow_end = _flow_core(problem, y0, jnp.asarray(t0), jnp.asarray(t1), jnp.asarray(ts), config)
    mu, Sigma, validity, k_stop, status, entry, mu_stop = _discrete_core(
        problem,
        y0,
        jnp.asarray(steps),
        jnp.asarray(lr),
        jnp.asarray(float(batch_size)),
        noise_drift=bool(noise_drift),
        kinks=not smooth,
    )
    if int(status) == Status.FAILED:
        message = _kink_message(problem, k_stop, entry, mu_stop, t0, lr)
    elif int(status) != Status.SUCCESS:
        message = status_message(status, t0 + lr * int(k_stop), "discrete moment map", t1, None, 0)
    else:
        status = flow_status
        message = status_message(flow_status, flow_end, config.method, t1, config.max_steps, 0)
    return _finish(problem, ts, m0, (flow, mu, Sigma), status, message, throw, validity, params)


def _finish(problem, ts, m0, out, status, message, throw, validity, params):
    result = _result(problem, ts, m0, out, status, message, False, validity=validity, **params)
    if result.success:
        validity.warn(ts, "fluctuations.moments")
    return result.raise_for_status() if throw else result
