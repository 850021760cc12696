"""Shared inputs and the literature reference of the tests in tests/gaussian.

- `Q0, R0, V0`: a generic start of two students against two teachers (overlaps of real kernels,
  unequal heads), used by the solve and simulation tests.
- Saad & Solla, "On-line learning in soft committee machines", Phys. Rev. E 52, 4225 (1995)
  and PRL 74, 4337 (1995): for K = M, T = I, unit heads, g = erf(x / sqrt 2), small eta, the
  symmetric (unspecialised) fixed point is `Q_ii = Q_ij = 1 / (2K - 1)`,
  `R_in = 1 / sqrt(K (2K - 1))`, with generalisation error
  `eps* = (K / pi) (pi / 6 - K arcsin(1 / (2K)))`: 0.011611, 0.020297, 0.028377 for
  K = 2, 3, 4 (computed here from that closed form, not read off a figure). Written out here
  rather than taken from `cnntheory.gaussian._committee`, so that the tests hold the package
  to the paper.
"""

import jax.numpy as jnp
import numpy as np

Q0, R0, V0 = np.array([[0.5, 0.1], [0.1, 0.4]]), np.array([[0.2, 0.0], [0.1, 0.3]]), np.array([0.5, 0.4])


def plateau_height(K):
    return K / np.pi * (np.pi / 6 - K * np.arcsin(1 / (2 * K)))


def symmetric_point(K):
    return jnp.full((K, K), 1 / (2 * K - 1)), jnp.full((K, K), 1 / np.sqrt(K * (2 * K - 1)))


def near_symmetric_point(K):
    """A start for `find_fixed_point` next to the symmetric point, `(Q, R, v)`.

    Off the invariant manifold of identical students (Q_ii = Q_ij exactly): at eta > 0 that
    manifold holds a second symmetric point with extra unstable directions.
    """
    Qs, Rs = symmetric_point(K)
    return Qs + 0.01 * jnp.eye(K), 1.02 * Rs, jnp.ones(K)
