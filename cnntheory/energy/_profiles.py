r"""Filter energy profiles, their comparison, and the fit of the theorem's `t`.

For `K` filters `w_k` (flattened `(K, D)` in (channel, row, col) order) and the patch PCA
basis `u_i`,

$$e_i = \sqrt{\frac{1}{K}\sum_{k=1}^{K} (w_k\cdot u_i)^2},$$

optionally of `w_k - w_k(0)`. Profiles are compared by the Pearson correlation (scale-free:
the theorem fixes a profile only up to the constant `c`).
"""

from __future__ import annotations

import equinox as eqx
import numpy as np
import scipy.optimize
from jaxtyping import Float

from .._validate import require
from ._theory import theorem_profile


def energy_profile(filters, basis, initial=None) -> Float[np.ndarray, "... D"]:
    """`e_i = sqrt(mean_k (w_k . u_i)^2)` of filters `(..., K, D)` or `(..., K, C, k, k)` in the basis `(D, D)`.

    `initial` (the shape of `filters`, or broadcasting to it) is subtracted first when given.
    """
    basis = np.asarray(basis, dtype=float)
    D = basis.shape[0]
    filters = np.asarray(filters, dtype=float)
    if initial is not None:
        initial = np.asarray(initial, dtype=float)
        try:
            filters = filters - initial
        except ValueError:
            require(
                False, f"initial must have (or broadcast to) the shape of filters {filters.shape}, got {initial.shape}"
            )
    require(basis.shape == (D, D), f"basis must be a square (D, D) matrix, got {basis.shape}")
    if filters.ndim >= 4 and int(np.prod(filters.shape[-3:])) == D:
        filters = filters.reshape(*filters.shape[:-3], D)  # conv weights (K, C, k, k)
    require(
        filters.ndim >= 2 and filters.shape[-1] == D,
        f"filters must have shape (..., K, D={D}) or (..., K, C, k, k) with C*k*k = {D}, got {filters.shape}",
    )
    return np.sqrt(np.mean((filters @ basis) ** 2, axis=-2))


def pearson(a, b) -> float | np.ndarray:
    """Pearson correlation of two profiles along the last axis (broadcasting)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1) / np.sqrt(np.sum(a * a, axis=-1) * np.sum(b * b, axis=-1))


def normalise(profile) -> np.ndarray:
    """A profile scaled to maximum 1 (along the last axis), as in the plots."""
    profile = np.asarray(profile, dtype=float)
    return profile / np.max(np.abs(profile), axis=-1, keepdims=True)


class StepFit(eqx.Module):
    """Result of `fit_steps`: the best `t`, its Pearson `correlation`, and the fitted `profile` (max 1)."""

    t: float
    correlation: float
    profile: Float[np.ndarray, " D"]
    eta: float


def fit_steps(
    profile, lambdas, eta: float | None = None, *, grid: int = 400, t_range: tuple[float, float] | None = None
) -> StepFit:
    r"""The `t` whose theorem profile has the highest Pearson correlation with `profile`.

    Searches a log grid of `grid` times (default from `1e-3 / (eta lambda_1^2)`, where every
    component is still in its early, `~ lambda_i` regime, to `1e3 / (eta lambda_min^2)`, where
    all have whitened), then refines the best bracket with a bounded scalar search in `log t`.
    Needs `eta lambda_1^2 < 1` so that real `t` are valid; the default `eta = 1 / (2 lambda_1^2)`.
    Only `eta t` matters once `eta lambda_1^2 << 1`, so `eta` is a convention, not a fit parameter.
    """
    profile = np.asarray(profile, dtype=float)
    lambdas = np.asarray(lambdas, dtype=float)
    if eta is None:
        eta = 0.5 / float(np.max(lambdas)) ** 2
    require(
        profile.ndim == 1 and profile.shape == lambdas.shape,
        f"profile and lambdas must be vectors of one length, got {profile.shape} and {lambdas.shape}",
    )
    require(profile.size >= 3, f"need at least 3 components to fit a profile, got {profile.size}")
    require(
        np.all(np.isfinite(profile)) and np.ptp(profile) > 0,
        "profile must be finite and not constant (a correlation needs spread)",
    )
    require(
        eta > 0 and eta * np.max(lambdas) ** 2 < 1,
        f"need 0 < eta < 1 / lambda_max^2 = {1 / np.max(lambdas) ** 2:.3g} for real t, got eta = {eta}",
    )
    positive = lambdas[lambdas > 0]
    require(positive.size >= 2, "lambdas need at least two positive entries")
    if t_range is None:
        t_range = (1e-3 / (eta * positive.max() ** 2), 1e3 / (eta * max(positive.min(), 1e-8 * positive.max()) ** 2))
    logs = np.linspace(np.log(t_range[0]), np.log(t_range[1]), int(grid))
    corr = pearson(profile, theorem_profile(lambdas, np.exp(logs), eta))
    corr = np.where(np.isfinite(corr), corr, -np.inf)
    best = int(np.argmax(corr))
    lo, hi = logs[max(best - 1, 0)], logs[min(best + 1, len(logs) - 1)]
    res = scipy.optimize.minimize_scalar(
        lambda s: -pearson(profile, theorem_profile(lambdas, np.exp(s), eta)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-10},
    )
    s, r = (res.x, -res.fun) if -res.fun >= corr[best] else (logs[best], corr[best])
    t = float(np.exp(s))
    return StepFit(t, float(r), normalise(theorem_profile(lambdas, t, eta)), float(eta))
