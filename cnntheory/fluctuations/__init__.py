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

**Moment maps** (`moments`, module `_moments`). Let `mu_k = E y_k`, `Sigma_k = Cov y_k`,
`h = lr`, and expand `F(mu + delta) = F + J delta + 1/2 F''[delta, delta] + ...` with
`J = dF/dy`. Taking the mean and covariance of one step over the seeds,

$$\mu_{k+1} = \mu_k + h\,E F(y_k) = \mu_k + h\big(F(\mu_k) + \tfrac12 F''(\mu_k):\Sigma_k\big),$$

$$\Sigma_{k+1} = (I + hJ_k)\,\Sigma_k\,(I + hJ_k)^T + h^2 D(\mu_k)/B .$$

This **discrete-step map** is the default at a finite `lr` (`discrete=True`): nothing in `h`
is expanded, so the `O(lr)` discrete-step bias of the mean and the `h^2 J Sigma J^T` term of
the covariance are exact for the linearised chain up to the stability edge; records are
whole steps, `t = t0 + k lr`. The **continuous equations** (`discrete=False`) are its
`lr -> 0` limit to first order in `lr` and `lr/B`:

$$\dot\mu = F(\mu) - \frac{\mathrm{lr}}{2}\,J F + \frac12\,F'':\Sigma,\qquad
\dot\Sigma = J\Sigma + \Sigma J^T + \frac{\mathrm{lr}}{B}\,D(\mu)$$

(`-(lr/2) J F`: the modified equation of the Euler map); their spread errs by about
`0.7 lr max|eig J|`. For a relu student the map carries the mean and covariance through
transversal crossings of `m_lp = 0` with the saltation matrix of piecewise-smooth systems,
and stops with status `FAILED`, naming the time and the entry, where the predicted band
touches a sliding or repulsive kink (`_moments`).

**Validity** (`Validity`, module `_validity`): every prediction carries, per saved time,
`lr_rho = lr max|eig J|`, a `curvature` (the Jacobian's RMS change across the predicted
spread) and, for relu, `kink_proximity = max sigma_lp / |mu_lp|`; `moments` warns
(`ValidityWarning`) past `THRESHOLDS`, calibrated against simulations.

Measured (`benchmarks/fluctuations.py`, against an online SGD written from the definitions,
512 seeds): on a stiff softplus problem (`P = 4`, 2x2 patches, `L = 3`, `eta_K = 9`,
stability edge `lr ~ 1.05`), `lr` from 0.0125 to 0.4 and `B` from 1 to 64, the discrete map
has every spread within 15% (at least 91% within 10% at every grid point) and every mean
within 4 SE; the continuous equations have 62-93% of spreads within 15% and means off by
16-2400 SE at `lr = 0.2, 0.4`. At the targets `(lr, B) = (0.2, 4)` and `(0.1, 1)`: spread
within 15% in 100% of component-times, mean within 3.9 and 3.0 SE at most. A relu student
crossing two kinks transversally: predicted within 15% at the saved times the indicators
call valid; the times while the band straddles a kink are flagged.

**Sample paths** (`sample_paths`, module `_paths`): the Gaussian approximation of the exact
discrete chain (`discrete=True`, the default), or the Itô SDE with the same first two
moments, `dY = (F - (lr/2) J F) dt + sqrt(lr/B) Γ(Y) Cov(g)^{1/2}(Y) dW`, by Euler–Maruyama
on a diffrax `VirtualBrownianTree`.

**Finite training sets** (`training_set_spread`, module `_training_set`). Full-batch GD on
`n_train` images follows the flow with `C_hat = mean_i ñ_i ñ_i^T`. Across training sets
`Cov(vec C_hat) = Cov(vec ñ ñ^T) / n_train` with
`Cov(ñ_i ñ_j, ñ_p ñ_q) = E[ñ_i ñ_j ñ_p ñ_q] - C_ij C_pq`, and to first order in
`1/n_train` the trajectory moves by `S vec(C_hat - C)` with the linear response
`S = dy/d vec C`: at a step `lr` the exact derivative of gradient descent's map,
`S_{k+1} = (I + lr J) S_k + lr dF/d vec C`, else forward-mode sensitivity of the flow,
`dS/dt = J S + dF/d vec C`, `S(0) = 0`; `Cov y = S Cov(vec C_hat) S^T`.
"""

from ._moments import moments
from ._noise import count_moment_tensor, drift_map, gradient_noise, linear_form_moment, noise_skewness, residual_noise
from ._paths import SamplePaths, sample_paths
from ._plots import draw_band
from ._result import Fluctuations
from ._training_set import moment_covariance, response, training_set_spread
from ._validity import THRESHOLDS, Validity, ValidityWarning

__all__ = [
    "Fluctuations",
    "SamplePaths",
    "THRESHOLDS",
    "Validity",
    "ValidityWarning",
    "count_moment_tensor",
    "draw_band",
    "drift_map",
    "gradient_noise",
    "linear_form_moment",
    "moment_covariance",
    "moments",
    "noise_skewness",
    "residual_noise",
    "response",
    "sample_paths",
    "training_set_spread",
]
