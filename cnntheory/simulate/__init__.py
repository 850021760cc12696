r"""Finite-sample simulation: the student CNN trained for real, in JAX.

The student of a `TeacherStudent` problem, as an actual network on `d x d` images:

$$f(S) = \sum_l v_l \,\mathrm{POOL}_{ij}\, \sigma\!\big(K_l \cdot \wp_{ij}(S) / D\big),$$

with the patch products computed by a strided convolution
(`jax.lax.conv_general_dilated`, stride `k`, no padding: `network`), and the labels `y(S)`
from the teacher network (kernels `K*`, activation `phi`, head `v*`) on the same images.
Training evaluates the same function faster: every patch is an atom, so
`K_l . patch_ij / D` is entry `(a_ij, l)` of the `(P, L)` table `atoms K^T / D`, with
`a_ij` the atom index of the patch, and pooling groups the patches by atom: the pooled
activation is `sum_p c_p sigma(T_pl)` with `c_p` the image's atom counts (`patch_network`:
a matrix product and a counts-weighted table, equal to the convolution to round-off,
gradients included; XLA:CPU runs a convolution inside a compiled loop many times slower
than on its own). Squared
loss `1/2 mean_i (f_i - y_i)^2`, plain gradient descent with the problem's multipliers:

$$K \leftarrow K - \mathrm{lr}\,\eta_K\,\nabla_K \mathcal{L},\qquad
v \leftarrow v - \mathrm{lr}\,\eta_v\,\nabla_v \mathcal{L},$$

so one step is one explicit Euler step of the order-parameter flow with `dt = lr`, and the
ODE time after `s` steps is `t = lr * s` (the learning rates `eta_K`, `eta_v` of the flow
multiply the gradients, `lr` is the time step). Three modes, three levels of
exactness; each is an object that owns its objective (`Population()`,
`FullBatch(num_train)`, `Online(batch_size)`), or its name as a string:

- `"population"`: descent on the exact population loss
  `1/2 (a - b)^T C (a - b)`, where the per-atom outputs `a_p`, `b_p` are the real student
  and teacher networks evaluated on single-atom images and `C` is
  `problem.moments`. Nothing is shared with the closed-form `problem.rhs` except `C`: the
  gradient is `jax.grad` of the network. Equals the ODE's Euler map to round-off.
- `"fullbatch"`: descent on `num_train` sampled images. Because every patch is an atom,
  the empirical loss is exactly `1/2 (a - b)^T C_hat (a - b)` with
  `C_hat = mean_i n~_i n~_i^T` (`n~` the pooled counts): `empirical_problem` gives the
  finite-data ODE that this mode follows to round-off.
- `"online"`: SGD with a fresh batch of `batch_size` images every step. The seed mean
  tends to the ODE as `lr -> 0`, with bias `O(lr)` and fluctuations `O(sqrt(lr / B))`.

The order parameters are measured from the kernels, `m = K mu^T / D`. Initial kernels are
built from the requested `(m0, v0)` plus a random part orthogonal to the atoms (which never
moves and never matters: every patch is an atom), so theory and simulation start at the
same point. Steps run in a compiled loop (`lax.scan` over records, `lax.fori_loop` over
the steps between them), seeds in `vmap` or `lax.map` (`simulate(seeds_by=...)`).
"""

from .._data import empirical_moments
from ._modes import MODES, FullBatch, Mode, Online, Population
from ._networks import init_kernels, network, patch_network, teacher_kernels
from ._result import Simulation, SimulationDiverged
from ._simulate import simulate
from ._theory import empirical_problem

__all__ = [
    "MODES",
    "FullBatch",
    "Mode",
    "Online",
    "Population",
    "Simulation",
    "SimulationDiverged",
    "empirical_moments",
    "empirical_problem",
    "init_kernels",
    "network",
    "patch_network",
    "simulate",
    "teacher_kernels",
]
