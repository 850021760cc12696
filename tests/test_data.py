"""Patch data: atoms, Dirichlet-multinomial moments (exact enumeration, Monte Carlo, continuum)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from helpers_checks import raises_unchecked
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import gammaln

from cnntheory import (
    PatchMixture,
    atoms_from_gram,
    count_moments,
    dirichlet_moments,
    extract_patches,
    shape_atoms,
)

# --- atoms_from_gram ----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    P=st.integers(1, 4),
    k=st.integers(2, 4),
    rank_drop=st.integers(0, 2),
    scale=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_atoms_from_gram_reproduces_gram(P, k, rank_drop, scale, seed):
    rng = np.random.default_rng(seed)
    r = max(1, P - rank_drop)  # possibly rank-deficient Grams
    A = rng.standard_normal((P, r))
    gram = scale * A @ A.T
    atoms = np.asarray(atoms_from_gram(gram, k, key=seed % 1000))
    assert atoms.shape == (P, k * k)
    # Eigen-factorisation in float64: error ~ eps * cond-free scale |G|, far below 1e-12 |G|.
    np.testing.assert_allclose(atoms @ atoms.T / (k * k), gram, rtol=0, atol=1e-12 * max(1.0, np.abs(gram).max()))


def test_atoms_from_gram_seed_changes_subspace_not_gram():
    gram = np.array([[1.0, 0.3], [0.3, 1.0]])
    a, b = np.asarray(atoms_from_gram(gram, 3, key=0)), np.asarray(atoms_from_gram(gram, 3, key=1))
    assert not np.allclose(a, b)
    np.testing.assert_allclose(b @ b.T / 9, gram, atol=1e-14)  # round-off only


@pytest.mark.parametrize(
    "gram, k, words",
    [
        (np.array([[1.0, 0.5], [0.2, 1.0]]), 3, "symmetric"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), 3, "positive semi-definite"),
        (np.eye(5), 2, "P=5"),  # P > D = 4
        (np.ones((2, 3)), 3, "square"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), 3, "non-finite"),
        (np.eye(2), 0, "k must be"),
    ],
)
def test_atoms_from_gram_rejects(gram, k, words):
    with pytest.raises(ValueError, match=words):
        atoms_from_gram(gram, k)


# --- shape_atoms --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 5, 7, 8])
def test_shape_atoms_pixels(k):
    atoms = np.asarray(shape_atoms(k))
    D = k * k
    assert atoms.shape == (2, D)
    G = atoms @ atoms.T / D
    np.testing.assert_allclose(np.diag(G), 1.0, atol=1e-14)  # normalisation, round-off only
    x, o = atoms.reshape(2, k, k)
    # Binary before normalisation: every pixel is 0 or one common positive value.
    for img in (x, o):
        vals = np.unique(np.round(img, 12))
        assert len(vals) == 2 and vals[0] == 0.0 and vals[1] > 0
    # The X is exactly the two diagonals.
    i = np.arange(k)
    x_mask = (i[:, None] == i[None, :]) | (i[:, None] + i[None, :] == k - 1)
    np.testing.assert_array_equal(x > 0, x_mask)
    # The O is a ring: symmetric under the square's symmetries, empty centre, touches all sides.
    ring = o > 0
    for t in (ring.T, ring[::-1], ring[:, ::-1]):
        np.testing.assert_array_equal(t, ring)
    assert not ring[k // 2, k // 2]
    assert ring[0].any() and ring[-1].any() and ring[:, 0].any() and ring[:, -1].any()
    # The natural overlap is what the pixels share.
    expected = (x_mask & ring).sum() / math.sqrt(x_mask.sum() * ring.sum())
    np.testing.assert_allclose(G[0, 1], expected, atol=1e-14)


@pytest.mark.parametrize("overlap", [0.8, 0.0, -0.3, 0.99])
def test_shape_atoms_exact_overlap(overlap):
    k = 5
    atoms = np.asarray(shape_atoms(k, overlap))
    G = atoms @ atoms.T / (k * k)
    # Unit vectors blended with sqrt(1 - c^2): exact up to round-off.
    np.testing.assert_allclose(G, [[1.0, overlap], [overlap, 1.0]], atol=1e-14)
    # The X is unchanged by the blending.
    np.testing.assert_allclose(atoms[0], np.asarray(shape_atoms(k))[0], atol=1e-15)


@pytest.mark.parametrize(
    "kw, words", [(dict(k=2), "k must be"), (dict(k=5, overlap=1.0), "overlap"), (dict(k=5, overlap=-1.5), "overlap")]
)
def test_shape_atoms_rejects(kw, words):
    with pytest.raises(ValueError, match=words):
        shape_atoms(**kw)


# --- moments: exact enumeration of the Dirichlet-multinomial ------------------------------


def compositions(N, P):
    """All count vectors n in N^P with sum N."""
    for cut in itertools.combinations(range(N + P - 1), P - 1):
        bounds = (-1,) + cut + (N + P - 1,)
        yield np.array([bounds[i + 1] - bounds[i] - 1 for i in range(P)])


def log_beta(a):
    return np.sum(gammaln(a)) - gammaln(np.sum(a))


def dirichlet_multinomial_pmf(n, alpha):
    """P(n) = N! / prod n_p! * B(alpha + n) / B(alpha): the multinomial integrated over Dirichlet(alpha)."""
    N = n.sum()
    log_coef = gammaln(N + 1) - np.sum(gammaln(n + 1))
    return np.exp(log_coef + log_beta(alpha + n) - log_beta(alpha))


def enumerated_count_moments(alpha, N):
    alpha = np.asarray(alpha, float)
    total, second = 0.0, np.zeros((len(alpha), len(alpha)))
    for n in compositions(N, len(alpha)):
        w = dirichlet_multinomial_pmf(n, alpha)
        total += w
        second += w * np.outer(n, n)
    return total, second


@pytest.mark.parametrize(
    "alpha, M",
    [
        ((1.0, 1.0), 1),
        ((1.0, 1.0), 2),
        ((2.0, 1.0), 2),
        ((2.0, 1.0), 3),
        ((0.5, 1.5, 3.0), 2),
        ((0.3, 0.7, 1.0, 2.0), 3),
        ((4.0,), 2),
    ],
)
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_moments_exact_enumeration(alpha, M, pooling):
    N = M * M
    total, Enn = enumerated_count_moments(alpha, N)
    assert abs(total - 1.0) < 1e-13  # the pmf sums to one (sanity of the reference)
    P = len(alpha)
    atoms = atoms_from_gram(np.eye(P), 2 if P <= 4 else 3)
    mix = PatchMixture(atoms, alpha, M, pooling)
    expected = Enn if pooling == "sum" else Enn / N**2
    # Sums of O(N^2) terms, each exact to a few ulps: 1e-12 relative to the largest entry.
    np.testing.assert_allclose(np.asarray(mix.moments), expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(
        np.asarray(count_moments(jnp.asarray(alpha), N)), Enn, rtol=0, atol=1e-12 * np.abs(Enn).max()
    )


@pytest.mark.parametrize("alpha", [(1.0, 1.0), (2.0, 1.0), (0.5, 1.5, 3.0)])
def test_dirichlet_moments_vs_scipy(alpha):
    d = scipy.stats.dirichlet(np.asarray(alpha))
    mean_ref = d.mean()
    second_ref = d.cov() + np.outer(mean_ref, mean_ref)
    mean, second = dirichlet_moments(jnp.asarray(alpha))
    # Closed forms on both sides: round-off only.
    np.testing.assert_allclose(np.asarray(mean), mean_ref, atol=1e-15)
    np.testing.assert_allclose(np.asarray(second), second_ref, atol=1e-15)


# --- moments: Monte Carlo through the real image sampler ----------------------------------


@pytest.mark.slow
def test_sampled_images_contain_their_counts_and_match_moments():
    P, k, M = 3, 2, 3
    N = M * M
    gram = np.array([[1.0, 0.3, -0.2], [0.3, 1.0, 0.5], [-0.2, 0.5, 1.0]])
    atoms = np.asarray(atoms_from_gram(gram, k, key=3))
    alpha = np.array([0.7, 1.3, 2.0])
    mix = PatchMixture(atoms, alpha, M, "sum")
    key = jax.random.PRNGKey(7)
    n_img = 20_000
    images, counts = mix.sample(key, n_img)
    labels, counts2 = mix.sample_counts(key, n_img)
    assert images.shape == (n_img, k * M, k * M) and counts.shape == (n_img, P)
    np.testing.assert_array_equal(np.asarray(counts), np.asarray(counts2))

    # The images really are made of atoms, in the places the labels say.
    patches = np.asarray(extract_patches(images, k))  # (n, N, D)
    dist = ((patches[:, :, None, :] - atoms[None, None]) ** 2).sum(-1)  # (n, N, P)
    matched = dist.argmin(-1)
    assert dist.min(-1).max() == 0.0  # patches are copies of atoms, bit for bit
    np.testing.assert_array_equal(matched, np.asarray(labels).reshape(n_img, N))
    recount = np.stack([(matched == p).sum(1) for p in range(P)], axis=1)
    np.testing.assert_array_equal(recount, np.asarray(counts))
    assert np.all(recount.sum(1) == N)

    # E[n n^T] by Monte Carlo. Each entry is a mean of n_img iid draws of n_p n_q: with the
    # sample standard deviation s, |estimate - truth| < 5 s / sqrt(n_img) fails with
    # probability ~6e-7 per entry under the CLT (and the key is fixed, so no flakiness).
    c = np.asarray(counts, float)
    prods = c[:, :, None] * c[:, None, :]
    est = prods.mean(0)
    se = prods.std(0, ddof=1) / math.sqrt(n_img)
    err = np.abs(est - np.asarray(mix.moments))
    assert np.all(err < 5 * se), err / se
    # ... and the first moment, same criterion.
    se1 = c.std(0, ddof=1) / math.sqrt(n_img)
    assert np.all(np.abs(c.mean(0) - N * alpha / alpha.sum()) < 5 * se1)


def test_images_from_labels_layout():
    """Patch (i, j) of the image is atom labels[i, j]; extract_patches is row-major."""
    k, M = 3, 2
    atoms = np.asarray(atoms_from_gram(np.eye(3), k, key=0))
    mix = PatchMixture(atoms, (1.0, 1.0, 1.0), M)
    labels = np.array([[[0, 2], [1, 1]]])
    img = np.asarray(mix.images_from_labels(jnp.asarray(labels)))[0]
    for i in range(M):
        for j in range(M):
            np.testing.assert_array_equal(
                img[i * k : (i + 1) * k, j * k : (j + 1) * k], atoms[labels[0, i, j]].reshape(k, k)
            )
    np.testing.assert_array_equal(np.asarray(extract_patches(img[None], k))[0], atoms[labels[0].ravel()])


# --- moments: continuum limit -------------------------------------------------------------


@pytest.mark.parametrize("alpha", [(1.0, 1.0), (2.0, 1.0), (0.5, 1.5, 3.0)])
def test_continuum_limit_rate(alpha):
    alpha = np.asarray(alpha)
    P = len(alpha)
    atoms = atoms_from_gram(np.eye(P), 2)
    d = scipy.stats.dirichlet(alpha)
    rho2 = d.cov() + np.outer(d.mean(), d.mean())  # E[rho rho^T], independent of cnntheory
    cont = np.asarray(PatchMixture(atoms, alpha, None, "mean").moments)
    np.testing.assert_allclose(cont, rho2, atol=1e-15)  # closed forms on both sides
    errs = []
    for M in (2, 4, 8, 16, 32):
        N = M * M
        err = np.asarray(PatchMixture(atoms, alpha, M, "mean").moments) - cont
        errs.append(np.abs(err).max())
        # The O(1/N) term is exactly (diag E[rho] - E[rho rho^T]) / N.
        np.testing.assert_allclose(N * err, np.diag(d.mean()) - rho2, atol=1e-12)
    errs = np.array(errs)
    assert np.all(errs > 0)
    # Doubling M quadruples N: the error falls by 4 (first order in 1/N), to round-off.
    np.testing.assert_allclose(errs[:-1] / errs[1:], 4.0, rtol=1e-9)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(alpha=(1.0, 0.0)), "alpha"),
        (dict(alpha=(1.0, -2.0)), "alpha"),
        (dict(alpha=(1.0, np.nan)), "alpha"),
        (dict(alpha=(1.0, np.inf)), "alpha"),
        (dict(alpha=(1.0, 1.0, 1.0)), "alpha"),
        (dict(patches_per_side=None, pooling="sum"), "patches_per_side=None"),
        (dict(pooling="max"), "pooling"),
        (dict(patches_per_side=0), "patches_per_side"),
        (dict(patches_per_side=2.5), "patches_per_side"),
        (dict(atoms=np.ones((2, 5))), "square patches"),
        (dict(atoms=np.ones(4)), "atoms"),
        (dict(atoms=np.array([[1.0, np.nan, 0, 0], [0, 1.0, 0, 0]])), "atoms"),
    ],
)
def test_patch_mixture_rejects(kwargs, words):
    args = dict(atoms=np.eye(2, 4) * 2.0, alpha=(1.0, 1.0), patches_per_side=2, pooling="mean")
    args.update(kwargs)
    with raises_unchecked(ValueError, match=words):
        PatchMixture(**args)


def test_sampling_bad_input():
    atoms = np.eye(2, 4) * 2.0
    with pytest.raises(ValueError, match="continuum"):
        PatchMixture(atoms, (1.0, 1.0), None, "mean").sample(jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match="num_images"):
        PatchMixture(atoms, (1.0, 1.0), 2).sample(jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="divisible by k"):
        extract_patches(np.zeros((1, 5, 5)), 2)
    with raises_unchecked(ValueError, match="images"):
        extract_patches(np.zeros((4, 4)), 2)


def test_properties():
    mix = PatchMixture(shape_atoms(5, 0.8), (2.0, 1.0), 3, "mean")
    assert (mix.num_atoms, mix.patch_dim, mix.patch_size, mix.num_patches, mix.image_size) == (2, 25, 5, 9, 15)
    np.testing.assert_allclose(np.asarray(mix.gram), [[1.0, 0.8], [0.8, 1.0]], atol=1e-14)
    np.testing.assert_allclose(np.asarray(mix.pooled_counts(jnp.array([3, 6]))), [1 / 3, 2 / 3], atol=1e-16)
    cont = PatchMixture(shape_atoms(5, 0.8), (2.0, 1.0), None, "mean")
    assert cont.num_patches is None and cont.image_size is None


def test_pooled_counts_in_the_continuum_limit_is_a_value_error():
    # It divided by num_patches = None (a TypeError) before.
    cont = PatchMixture(shape_atoms(5, 0.8), (2.0, 1.0), None, "mean")
    with pytest.raises(ValueError, match="continuum"):
        cont.pooled_counts(jnp.array([3.0, 6.0]))
