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

from ._moments import moments
from ._noise import count_moment_tensor, drift_map, gradient_noise, residual_noise
from ._paths import SamplePaths, sample_paths
from ._plots import draw_band
from ._result import Fluctuations
from ._training_set import moment_covariance, response, training_set_spread

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
