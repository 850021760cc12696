r"""When a fluctuation prediction holds: the indicators every `Fluctuations` carries.

The moment maps close the seed mean and covariance by expanding the drift to second order
around the mean (linear noise). Three computable numbers say when that stops being true:

- **`lr_rho`** `= lr * max_i |lambda_i(J)|`, `J = dF/dy` at the predicted mean: how close the
  step is to the stability edge (gradient descent's map `I + lr J` is unstable past
  `lr_rho = 2` for a real spectrum). The discrete map is exact in `lr` for the linearised
  chain, but the terms it drops (`O(Sigma^{3/2})`, the step's third cumulant) are multiplied
  by the propagator and grow towards the edge; the continuous equations (`discrete=False`)
  err by about `0.7 lr_rho` in the spread, so for them this is the leading error.
- **`curvature`** `= sqrt(sum_{ijkl} F''_{ijk} F''_{ijl} Sigma_{kl}) / ||J||_F`: the RMS change
  of the Jacobian across one predicted standard deviation, relative to the Jacobian. Linear
  noise needs it small; it is large on plateaus and near saddles (where `J` is small and the
  spread is not) and once the spread is comparable to the scale on which the flow bends.
- **`kink_proximity`** (relu students) `= max_lp sigma_lp / |mu_lp|`: the predicted spread
  against the distance to the nearest kink `m_lp = 0`. Through a transversal crossing the
  saltation matrix carries the mean and covariance to first order, but while the band
  straddles the kink the seeds are a mixture of those that have crossed and those that have
  not, which no Gaussian describes; the prediction holds again once the band has passed.
  Contact with a sliding or repulsive kink is not an indicator but a failure (status
  `FAILED`, naming the time and the entry). `0` for smooth students.

Thresholds (`THRESHOLDS`), calibrated against 256-512-seed online-SGD simulations
(`benchmarks/fluctuations.py`, stored results): a saved time is flagged (`valid` is False),
and `moments` warns (`ValidityWarning`), where an indicator exceeds its threshold.

- `lr_rho <= 1.0` (half the stability edge), conservative: on the stiff softplus problem of
  the benchmark (edge `lr ~ 1.05`) the discrete map keeps every spread within 15% and every
  mean within 4 SE up to `lr = 0.4` (`lr_rho = 0.74`) for `B` = 1 to 64, and still at
  `lr = 0.6` (`lr_rho` up to 1.09, flagged); the continuous equations already fail the
  targets at `lr_rho ~ 0.4`.
- `curvature <= 0.5`: no prediction of the benchmark's grid misses with `curvature` up to
  0.41 (shape counting, tanh, `lr = 0.1`, `B = 1`); it grows like `sqrt(lr / B)` and flags
  large `lr / B`. It does **not** flag the plateau start (`v(0) = 0.01` on shape counting
  reads 0.08 while 12% of its spreads miss by more than 15%): there the linear-noise error
  comes from the slow unstable direction, which a norm over all of `J` does not see.
- `kink_proximity <= 0.5` (the kink at least 2 predicted standard deviations away): on the
  relu crossing of the benchmark the saved times closer than that carry the spread errors
  beyond 15% and the mean misses beyond 3 SE; the others are predicted.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._noise import SKEW_DIRECTIONS, _fourth, _step_skewness

#: Largest value of each indicator at which a prediction counts as valid (module docstring).
THRESHOLDS: dict[str, float] = {"lr_rho": 1.0, "curvature": 0.5, "kink_proximity": 0.5}
#: Reported with every prediction, not yet calibrated (no threshold): `escape`, `skewness`.
#: Eigenvalues of `J` with a real part above this fraction of the spectral radius count as unstable (`escape`).
_UNSTABLE = 1e-6
#: At most this many leading noise directions enter `skewness`.
_NUM_DIRECTIONS = 3

_WHY = {
    "lr_rho": "the step is close to the stability edge (lr * max|eig J| = 2)",
    "curvature": "the spread is not small against the scale on which the flow bends (a plateau, a saddle, "
    "or a large lr / B): the linear-noise approximation does not hold",
    "kink_proximity": "the predicted band straddles a relu kink m = 0: the seeds are a mixture of both sides "
    "of it, which no Gaussian describes (the prediction holds again once the band has passed the kink)",
    "escape": "the spread along an unstable direction of J is not small against the mean's distance from the "
    "saddle along it: the seeds leave the saddle at different times (a noise-driven escape), which no Gaussian "
    "describes",
    "skewness": "the step noise summed over a unit of time is skewed (the mean of B / lr images' gradients): "
    "the first non-Gaussian correction is not small; raise B or lower lr",
}


class ValidityWarning(UserWarning):
    """A fluctuation prediction left the range where its approximations hold (`Validity`)."""


class Validity(eqx.Module):
    """The validity indicators of a prediction at its saved times (module docstring).

    `lr_rho`, `curvature`, `kink_proximity`: `(T,)` (`lr_rho` is 0 for the `lr -> 0` limit
    of `training_set_spread`, `kink_proximity` 0 for smooth students). `valid` is `True` where every indicator is within `THRESHOLDS`.
    """

    lr_rho: Float[Array, " T"]
    curvature: Float[Array, " T"]
    kink_proximity: Float[Array, " T"]
    escape: Float[Array, " T"]
    skewness: Float[Array, " T"]

    thresholds: ClassVar[dict[str, float]] = THRESHOLDS

    @property
    def valid(self) -> np.ndarray:
        """`(T,)` booleans: every indicator within its threshold (NaN, after a failure, is not valid)."""
        ok = np.ones(np.shape(self.lr_rho), dtype=bool)
        for name, limit in THRESHOLDS.items():
            ok &= np.asarray(getattr(self, name)) <= limit
        return ok

    def describe(self, t) -> str | None:
        """The first indicator past its threshold, when and why; `None` when all hold."""
        t = np.asarray(t)
        for name, limit in THRESHOLDS.items():
            value = np.asarray(getattr(self, name))
            bad = np.flatnonzero(value > limit)
            if bad.size:
                i = bad[0]
                return (
                    f"{name} = {value[i]:.3g} > {limit:g} from t={t[i]:.6g} ({bad.size} of {t.size} saved times): "
                    f"{_WHY[name]}"
                )
        return None

    def warn(self, t, caller: str) -> None:
        """Issue a `ValidityWarning` when some saved time is past a threshold."""
        why = self.describe(t)
        if why is not None:
            warnings.warn(
                f"{caller}: the prediction is outside its validity range: {why}", ValidityWarning, stacklevel=3
            )


def state_indicators(problem, mu: Float[Array, " n"], Sigma: Float[Array, "n n"], lr) -> tuple[Array, Array, Array]:
    """`(lr_rho, curvature, escape)` at one predicted state (module docstring)."""
    F = problem.flat_rhs
    f, J = F(mu), jax.jacfwd(F)(mu)
    H = jax.jacfwd(jax.jacfwd(F))(mu)  # (n, n, n): H_ijk = d^2 F_i / dy_j dy_k
    lam, U = jnp.linalg.eig(J)
    rho = jnp.max(jnp.abs(lam))
    dJ2 = jnp.einsum("ijk,ijl,kl->", H, H, Sigma)
    norm = jnp.sqrt(jnp.sum(J**2))
    curvature = jnp.sqrt(jnp.clip(dJ2, 0.0, None)) / jnp.where(norm > 0, norm, 1.0)
    curvature = jnp.where(norm > 0, curvature, jnp.where(dJ2 > 0, jnp.inf, 0.0))
    return lr * rho, curvature, _escape(lam, U, f, Sigma)


def _escape(lam, U, f, Sigma) -> Array:
    """`max over Re lambda > 0 of |lambda| sd(w . y) / |w . F|` (`w` the left eigenvectors, `U^-1`'s rows)."""
    W = jnp.linalg.inv(U)
    sd = jnp.sqrt(jnp.clip(jnp.real(jnp.einsum("ij,jk,ik->i", W, Sigma.astype(W.dtype), jnp.conj(W))), 0.0, None))
    offset = jnp.abs(W @ f.astype(W.dtype))  # |w . F| = |lambda| x the mean's distance from the saddle along u
    unstable = jnp.real(lam) > _UNSTABLE * jnp.max(jnp.abs(lam))
    ratio = jnp.abs(lam) * sd / jnp.where(offset > 0, offset, 1.0)
    ratio = jnp.where(offset > 0, ratio, jnp.where(sd > 0, jnp.inf, 0.0))
    return jnp.max(jnp.where(unstable, ratio, 0.0))


def _kink_proximity(problem, mu: Float[Array, " n"], Sigma: Float[Array, "n n"]) -> Array:
    """`max_lp sigma_lp / |mu_lp|` (0 for a smooth student; a point mass at a kink is not a spread)."""
    if problem.sigma.smooth:
        return jnp.asarray(0.0)
    LP = problem.num_atoms * (mu.shape[0] // (problem.num_atoms + 1))
    sd = jnp.sqrt(jnp.clip(jnp.diagonal(Sigma)[:LP], 0.0, None))
    x = jnp.abs(mu[:LP])
    return jnp.max(jnp.where(sd > 0, sd / jnp.where(x > 0, x, 1.0), 0.0) + jnp.where((sd > 0) & (x == 0), jnp.inf, 0.0))


def _skewness(problem, mu: Float[Array, " n"], fourth, noise_scale) -> Array:
    """`sqrt(noise_scale) max_u |gamma_1(u)|` over the leading noise directions (module docstring)."""
    m, v = problem.unflatten(mu)
    skew, lam = _step_skewness(problem, m, v, fourth, min(_NUM_DIRECTIONS, mu.shape[0]))
    lead = lam >= SKEW_DIRECTIONS * lam[0]
    return jnp.sqrt(noise_scale) * jnp.max(jnp.where(lead & (lam[0] > 0), skew, 0.0))


def record_indicators(problem, mu: Float[Array, "T n"], Sigma: Float[Array, "T n n"], lr, noise_scale) -> Validity:
    """The `Validity` of a prediction from its saved means and covariances; NaN rows (after a failure) stay NaN.

    `noise_scale`: `lr / B` for online SGD, `1 / num_train` for training sets (the skewness's scale).
    """
    good = jnp.all(jnp.isfinite(mu), axis=1) & jnp.all(jnp.isfinite(Sigma), axis=(1, 2))
    safe_mu = jnp.where(good[:, None], mu, mu[0][None])
    safe_S = jnp.where(good[:, None, None], Sigma, 0.0)
    fourth = _fourth(problem)

    def one(m, S):
        lr_rho, curvature, escape = state_indicators(problem, m, S, lr)
        return lr_rho, curvature, _kink_proximity(problem, m, S), escape, _skewness(problem, m, fourth, noise_scale)

    values = jax.vmap(one)(safe_mu, safe_S)
    return Validity(*(jnp.where(good, x, jnp.nan) for x in values))
