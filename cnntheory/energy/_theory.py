r"""The energy-profile theory of a linear CNN (Chowers & Weiss, ICML 2023).

**The network.** `K` filters `w_k in R^D`, global average pooling, sum over the filters,
scalar output. On an image `x` with centred pooled patch `pbar(x) = mean_j p_j(x) - mu`,

$$\hat y(x) = \sum_k w_k\cdot \bar p(x) = K\,\bar w\cdot \bar p(x).$$

**Loss convention (fixed here, proved by the tests).** `L(W) = mean_x (yhat(x) - y(x))^2`, the
mean of squares (PyTorch's `MSELoss`), so `grad_{w_k} L = 2 (K A wbar - b)` with
`A = mean_x pbar pbar^T`, `b = mean_x pbar y`. Every filter receives the same gradient, so
full-batch GD with step `eta` (`lr` in the code: `ExactLinearCNN`, `train_linear_cnn`) moves every filter by the same `Delta(t)`. Along each
eigenpair `(alpha_i, v_i)` of `A`,

$$v_i\cdot\Delta(t) = \frac{g_i(t)}{K\alpha_i}\,v_i\cdot b - g_i(t)\,v_i\cdot\bar w(0),\qquad
g_i(t) = 1 - (1 - 2\eta K\alpha_i)^t.$$

(With the `1/2`-mean-of-squares convention the `2` disappears.) The gradient flow
`dW/dtau = -grad L` gives the same with `g_i = 1 - exp(-2 K alpha_i tau)`; GD with step
`eta` is its Euler map, `tau = eta t`.

**The theorem.** For random labels (or labels uncorrelated with the patch PCA coefficients)
and a small zero-mean initialisation, `E|v_i . b| ~ sqrt(alpha_i)`; identifying `v_i ~ u_i`
and `alpha_i ~ lambda_i^2 / J` (`J` patches per image) gives the energy profile

$$e_i(t) \approx c\,\frac{1 - (1 - \eta\lambda_i^2)^t}{\eta\lambda_i^2}\,\lambda_i + \xi_i,$$

with the theorem's `eta` standing for `2 eta K / J` of the network (so `theorem_profile`,
`whitening_limit` and `fit_steps` keep the paper's `eta`: an effective rate, not the step `lr`). The printed paper has
`eta^2` in the denominator; the derivation gives `eta`. Either is a global constant, invisible
to a correlation. Limits: `e_i -> c / (eta lambda_i)` as `t -> inf` (whitening) and
`e_i ~ c t lambda_i` for `t eta lambda_i^2 << 1`. The statement holds in expectation over
the labels and the initialisation: one draw of `v_i . Delta` is a Gaussian, its modulus a
folded Gaussian whose spread is about 76% of its mean.
"""

from __future__ import annotations

import equinox as eqx
import numpy as np
from jaxtyping import Float

from .._deprecate import renamed_keywords
from .._validate import require


def _lambdas(lambdas) -> np.ndarray:
    lambdas = np.asarray(lambdas, dtype=float)
    require(
        lambdas.ndim == 1 and lambdas.size >= 1, f"lambdas must be a non-empty vector (D,), got shape {lambdas.shape}"
    )
    require(
        np.all(np.isfinite(lambdas)) and np.all(lambdas >= 0), "lambdas must be finite and >= 0 (standard deviations)"
    )
    return lambdas


def _growth(rate, t) -> np.ndarray:
    """`(1 - (1 - rate)^t) / rate`, continuous in `rate -> 0` (value `t`)."""
    rate = np.asarray(rate, dtype=float)
    t = np.asarray(t, dtype=float)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if np.all(rate < 1):
            g = -np.expm1(t * np.log1p(-rate))  # (1 - (1-rate)^t) accurately for small rate
        else:
            g = 1.0 - np.power(1.0 - rate, t)  # integer t only when 1 <= rate < 2
        return np.where(rate > 1e-300, g / np.where(rate > 1e-300, rate, 1.0), t)


def theorem_profile(lambdas: Float[np.ndarray, " D"], t, eta: float, c: float = 1.0) -> Float[np.ndarray, "... D"]:
    r"""The theorem's profile `e_i(t) = c (1 - (1 - eta lambda_i^2)^t) / (eta lambda_i^2) lambda_i` (`xi = 0`).

    `t` may be a scalar or an array of times (result `(..., D)`). Needs `eta lambda_max^2 < 1`
    for non-integer `t` (GD with that step is then monotone along every component).
    """
    lambdas = _lambdas(lambdas)
    require(eta > 0, f"eta must be > 0, got {eta}")
    rate = eta * lambdas**2
    require(
        np.max(rate) < 2,
        f"eta * lambda_max^2 = {np.max(rate):.3g} >= 2: gradient descent diverges; use eta < {2 / np.max(rate):.3g}",
    )
    return c * _growth(rate, t) * lambdas


def whitening_limit(lambdas: Float[np.ndarray, " D"], eta: float, c: float = 1.0) -> Float[np.ndarray, " D"]:
    """`t -> inf`: `e_i = c / (eta lambda_i)` (zero-energy components stay at 0 energy: `inf` is returned)."""
    lambdas = _lambdas(lambdas)
    with np.errstate(divide="ignore"):
        return c / (eta * lambdas)


def early_limit(lambdas: Float[np.ndarray, " D"], t, c: float = 1.0) -> Float[np.ndarray, "... D"]:
    """Early regime: `e_i = c t lambda_i`, exact at `t = 1`, and the limit for `t eta lambda_i^2 << 1` with `eta lambda_i^2 << 1`."""
    return c * np.asarray(t, dtype=float)[..., None] * _lambdas(lambdas)


def flow_profile(lambdas: Float[np.ndarray, " D"], tau, c: float = 1.0) -> Float[np.ndarray, "... D"]:
    r"""Gradient-flow form: `e_i(tau) = c (1 - exp(-lambda_i^2 tau)) / lambda_i^2 * lambda_i`, the `eta -> 0` limit at `tau = eta t`."""
    lambdas = _lambdas(lambdas)
    tau = np.asarray(tau, dtype=float)[..., None]
    lam2 = lambdas**2
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(lam2 > 0, -np.expm1(-lam2 * tau) / np.where(lam2 > 0, lam2, 1.0), tau)
    return c * g * lambdas


class ExactLinearCNN(eqx.Module):
    r"""The exact finite-data solution of full-batch GD on the linear CNN.

    **Arguments:** `pooled`, the `(N, D)` centred pooled patches `pbar(x)` (see
    `pooled_patches`), `labels` `(N,)`, and `num_filters` `K`.

    **Fields:** `A = pooled^T pooled / N`, `b = pooled^T labels / N`, the eigenvalues `alphas`
    (decreasing) and eigenvectors `vectors` (columns `v_i`) of `A`.
    """

    A: Float[np.ndarray, "D D"]
    b: Float[np.ndarray, " D"]
    alphas: Float[np.ndarray, " D"]
    vectors: Float[np.ndarray, "D D"]
    num_images: int = eqx.field(static=True)
    num_filters: int = eqx.field(static=True)

    def __init__(self, pooled, labels, num_filters: int):
        pooled = np.asarray(pooled, dtype=float)
        labels = np.asarray(labels, dtype=float)
        require(pooled.ndim == 2, f"pooled must be a (N, D) array of pooled patches, got shape {pooled.shape}")
        require(
            labels.shape == (pooled.shape[0],),
            f"labels must have shape (N,) = ({pooled.shape[0]},), got {labels.shape}",
        )
        require(int(num_filters) >= 1, f"num_filters must be >= 1, got {num_filters}")
        N = pooled.shape[0]
        self.A = pooled.T @ pooled / N
        self.b = pooled.T @ labels / N
        evals, evecs = np.linalg.eigh(self.A)
        self.alphas, self.vectors = np.clip(evals[::-1], 0.0, None), evecs[:, ::-1]
        self.num_images = N
        self.num_filters = int(num_filters)

    def _gains(self, t, lr) -> tuple[np.ndarray, np.ndarray]:
        """`g_i(t)` and `g_i(t) / (K alpha_i)` (the latter `-> 2 lr t` as `alpha_i -> 0`), shapes `(T, D)`."""
        K = self.num_filters
        rate = 2 * lr * K * self.alphas
        require(
            np.max(rate) < 2,
            f"2 lr K alpha_max = {np.max(rate):.3g} >= 2: GD diverges; use lr < {1 / (K * np.max(self.alphas)):.3g}",
        )
        over = 2 * lr * _growth(rate, t)  # g / (K alpha)
        return over * K * self.alphas, over

    def _flow_gains(self, tau) -> tuple[np.ndarray, np.ndarray]:
        K = self.num_filters
        rate = 2 * K * self.alphas
        tau = np.asarray(tau, dtype=float)[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            over = np.where(rate > 0, -np.expm1(-rate * tau) / np.where(rate > 0, rate, 1.0), tau) * 2
        return over * K * self.alphas, over

    def _delta(self, gains, wbar0) -> np.ndarray:
        g, over = gains
        wbar0 = np.zeros(self.b.shape) if wbar0 is None else np.asarray(wbar0, dtype=float)
        require(
            wbar0.shape == self.b.shape,
            f"wbar0 must be the mean initial filter, shape {self.b.shape}, got {wbar0.shape}",
        )
        coeff = over * (self.vectors.T @ self.b) - g * (self.vectors.T @ wbar0)
        return coeff @ self.vectors.T

    @renamed_keywords(eta="lr")
    def delta(self, t, lr: float, wbar0=None) -> Float[np.ndarray, "... D"]:
        """`Delta(t) = w_k(t) - w_k(0)` (the same for every filter) after `t` GD steps of size `lr`."""
        return self._delta(self._gains(t, lr), wbar0)

    def flow_delta(self, tau, wbar0=None) -> Float[np.ndarray, "... D"]:
        """`Delta(tau)` of the gradient flow `dW/dtau = -grad L` (`g_i = 1 - exp(-2 K alpha_i tau)`)."""
        return self._delta(self._flow_gains(tau), wbar0)

    @renamed_keywords(eta="lr")
    def filters(self, t, lr: float, w0) -> Float[np.ndarray, "... K D"]:
        """All filters `w_k(t) = w_k(0) + Delta(t)` from initial filters `w0` `(K, D)`."""
        w0 = np.asarray(w0, dtype=float)
        return w0 + self.delta(t, lr, w0.mean(axis=0))[..., None, :]

    @renamed_keywords(eta="lr")
    def delta_std(
        self, t, lr: float, basis, label_std: float = 1.0, init_std: float = 0.0
    ) -> Float[np.ndarray, "... D"]:
        r"""Standard deviation of `Delta(t) . u_i` over i.i.d. labels `N(0, label_std^2)` and filters `N(0, init_std^2 I)`.

        Conditional on the images, `v_j . b ~ N(0, label_std^2 alpha_j / N)` and
        `v_j . wbar(0) ~ N(0, init_std^2 / K)`, all independent, so
        `Var(Delta . u_i) = sum_j (u_i . v_j)^2 g_j^2 [label_std^2 / (K^2 alpha_j N) + init_std^2 / K]`.
        Then `E|Delta . u_i| = sqrt(2 / pi)` times this: the expected energy profile of the learned part.
        """
        g, over = self._gains(t, lr)
        K, N = self.num_filters, self.num_images
        var_v = over**2 * label_std**2 * self.alphas / N + g**2 * init_std**2 / K
        overlap = (np.asarray(basis, dtype=float).T @ self.vectors) ** 2  # (i, j) = (u_i . v_j)^2
        return np.sqrt(var_v @ overlap.T)

    @renamed_keywords(eta="lr")
    def expected_energy(
        self, t, lr: float, basis, label_std: float = 1.0, init_std: float = 0.0
    ) -> Float[np.ndarray, "... D"]:
        """`E|Delta(t) . u_i|`: the expected energy profile of `W(t) - W(0)` (a folded-Gaussian mean)."""
        return np.sqrt(2 / np.pi) * self.delta_std(t, lr, basis, label_std, init_std)
