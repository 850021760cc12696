"""Brute-force reference for the order-parameter theory: real images, a real convolution.

Independent of `cnntheory` except for the activation functions: every configuration of
`N = M^2` patch labels is enumerated, its image assembled pixel by pixel, pushed through a
strided `jax.lax.conv_general_dilated` (stride k, kernels as OIHW), activated, pooled and
read out, and the population loss is the probability-weighted sum of squared errors. The
probability of one label sequence with counts `n` is `B(alpha + n) / B(alpha)` (the
Dirichlet-multinomial pmf without the multinomial coefficient).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import gammaln


def log_beta(a):
    return np.sum(gammaln(a)) - gammaln(np.sum(a))


def enumerate_images(atoms, alpha, M):
    """All `P^N` images `(P^N, d, d)` and their exact probabilities `(P^N,)`."""
    atoms = np.asarray(atoms, float)
    alpha = np.asarray(alpha, float)
    P, D = atoms.shape
    k = int(round(np.sqrt(D)))
    N = M * M
    images, probs = [], []
    for labels in itertools.product(range(P), repeat=N):
        img = np.zeros((k * M, k * M))
        for idx, p in enumerate(labels):
            i, j = divmod(idx, M)  # row-major patch order
            img[i * k : (i + 1) * k, j * k : (j + 1) * k] = atoms[p].reshape(k, k)
        n = np.bincount(labels, minlength=P)
        images.append(img)
        probs.append(np.exp(log_beta(alpha + n) - log_beta(alpha)))
    total = float(np.sum(probs))
    assert abs(total - 1.0) < 1e-13, total
    return jnp.asarray(np.stack(images)), jnp.asarray(np.array(probs))


def cnn_output(kernels, head, images, act, pool_scale):
    """`sum_l head_l POOL_ij act(kernels_l . patch_ij / D)` by a real strided convolution.

    `POOL` is the sum over patches times `pool_scale` (1 for sum pooling, 1/N for mean).
    """
    L, D = kernels.shape
    k = int(round(np.sqrt(D)))
    w = kernels.reshape(L, 1, k, k)  # OIHW
    x = images[:, None, :, :]  # NCHW
    pre = jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(k, k),
        padding="VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=jax.lax.Precision.HIGHEST,
    )  # (n, L, M, M)
    h = act(pre / D)
    pooled = h.sum(axis=(2, 3)) * pool_scale
    return pooled @ head


def brute_force_loss(K, v, Kstar, vstar, images, probs, sigma, phi, pool_scale):
    f = cnn_output(K, v, images, sigma, pool_scale)
    y = cnn_output(Kstar, vstar, images, phi, pool_scale)
    return jnp.sum(probs * 0.5 * (f - y) ** 2)


@functools.partial(jax.jit, static_argnames=("sigma", "phi"))
def _flow(K, v, Kstar, vstar, atoms, images, probs, sigma, phi, pool_scale, eta_K, eta_v):
    loss, (gK, gv) = jax.value_and_grad(brute_force_loss, argnums=(0, 1))(
        K, v, Kstar, vstar, images, probs, sigma, phi, pool_scale
    )
    D = atoms.shape[1]
    dK = -eta_K * gK
    dv = -eta_v * gv
    return loss, dK @ atoms.T / D, dv


def brute_force_flow(K, v, Kstar, vstar, atoms, images, probs, *, sigma, phi, pooling, eta_K, eta_v):
    """Exact loss and the projected gradient flow `(dm, dv)` with `dm = dK @ atoms.T / D`.

    `dK = -eta_K grad_K loss`, `dv = -eta_v grad_v loss` (`jax.grad` through the convolution).
    """
    n_patches = (images.shape[1] // int(round(np.sqrt(atoms.shape[1])))) ** 2
    pool_scale = {"sum": 1.0, "mean": 1.0 / n_patches}[pooling]
    return _flow(K, v, Kstar, vstar, atoms, images, probs, sigma, phi, pool_scale, eta_K, eta_v)
