"""Patch extraction, pooled patches and the streaming patch PCA (`cnntheory.energy._patches`)
against direct references: patches against numpy slicing and XLA's convolution (the patch order
is the conv weight order), the PCA against `numpy.linalg.eigh` of the patch covariance and
against itself over chunks, generators and a large offset; argument checks."""

import jax
import numpy as np
import pytest

import cnntheory.energy as E


def test_patches_are_channel_row_col_rows_in_image_row_col_order(colour_images):
    k = 3
    patches = E.extract_all_patches(colour_images, k)
    n, C, H, W = colour_images.shape
    assert patches.shape == (n * (H - k + 1) * (W - k + 1), C * k * k)
    ref = [
        colour_images[i, :, r : r + k, c : c + k].ravel()
        for i in range(n)
        for r in range(H - k + 1)
        for c in range(W - k + 1)
    ]
    np.testing.assert_array_equal(patches, np.array(ref))


def test_patch_order_is_the_conv_weight_order(colour_images):
    # a conv weight (K, C, k, k) flattened to (K, D) dotted with the patches is the convolution
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
    out = jax.lax.conv_general_dilated(colour_images, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    via_patches = E.extract_all_patches(colour_images, 3) @ w.reshape(4, -1).T
    np.testing.assert_allclose(np.asarray(out).transpose(0, 2, 3, 1).reshape(-1, 4), via_patches, atol=1e-12)


def test_grey_images_of_rank_3_are_one_channel():
    x = np.random.default_rng(2).standard_normal((3, 6, 6))
    np.testing.assert_array_equal(E.extract_all_patches(x, 2), E.extract_all_patches(x[:, None], 2))


def test_pca_matches_eigh_of_the_patch_covariance(colour_images):
    k = 2
    pca = E.patch_pca(colour_images, k)
    patches = E.extract_all_patches(colour_images, k)
    cov = np.cov(patches, rowvar=False, bias=True)
    evals, evecs = np.linalg.eigh(cov)
    np.testing.assert_allclose(pca.lambdas**2, evals[::-1], rtol=1e-12, atol=1e-13)
    # eigenvectors up to sign (the spectrum is simple for random data)
    np.testing.assert_allclose(np.abs(pca.basis.T @ evecs[:, ::-1]), np.eye(cov.shape[0]), atol=1e-9)
    # lambda_i is the standard deviation of the centred patches along u_i
    coeffs = (patches - patches.mean(axis=0)) @ pca.basis
    np.testing.assert_allclose(pca.lambdas, np.sqrt(np.mean(coeffs**2, axis=0)), rtol=1e-12)
    np.testing.assert_allclose(pca.mean, patches.mean(axis=0), atol=1e-14)
    assert pca.count == patches.shape[0] and np.all(np.diff(pca.lambdas) <= 0)
    np.testing.assert_allclose(pca.covariance, cov, atol=1e-13)


def test_streaming_chunks_and_generators_agree(colour_images):
    whole = E.patch_pca(colour_images, 3, chunk_images=100)
    chunked = E.patch_pca(colour_images, 3, chunk_images=2)
    streamed = E.patch_pca((colour_images[i : i + 1] for i in range(5)), 3)
    for other in (chunked, streamed):
        np.testing.assert_allclose(other.lambdas, whole.lambdas, rtol=1e-12)
        np.testing.assert_allclose(other.basis, whole.basis, atol=1e-10)
        assert other.count == whole.count


def test_large_offset_does_not_cancel():
    # a mean 1e6 times the spread: the shifted accumulation keeps full relative accuracy
    x = np.random.default_rng(3).standard_normal((4, 1, 8, 8))
    a, b = E.patch_pca(x, 2, chunk_images=1), E.patch_pca(x + 1e6, 2, chunk_images=1)
    np.testing.assert_allclose(b.lambdas, a.lambdas, rtol=1e-6)


def test_pooled_patches_are_centred_mean_patches(colour_images):
    k = 3
    pooled = E.pooled_patches(colour_images, k)
    per_image = E.extract_all_patches(colour_images, k).reshape(colour_images.shape[0], -1, 27).mean(axis=1)
    np.testing.assert_allclose(pooled, per_image - per_image.mean(axis=0), atol=1e-13)


@pytest.mark.parametrize(
    "images, k, match",
    [
        (np.zeros((2, 1, 4, 4)), 5, "larger than the images"),
        (np.zeros((4, 4)), 2, "rank 2"),
        (np.zeros((1, 1, 1, 4, 4)), 2, "rank 5"),
        (np.random.default_rng(0).standard_normal((1, 1, 3, 3)), 2, "too few patches"),
        (np.zeros((2, 1, 4, 4)), 0, "positive integer"),
    ],
)
def test_bad_input(images, k, match):
    with pytest.raises(ValueError, match=match):
        E.patch_pca(images, k)


def test_non_finite_images_are_rejected():
    x = np.zeros((2, 1, 4, 4))
    x[0, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        E.extract_all_patches(x, 2)


def test_as_images_shapes_dtype_and_checks():
    grey = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # ints: converted to float64
    out = E.as_images(grey)
    assert out.shape == (2, 1, 3, 4) and out.dtype == np.float64
    np.testing.assert_array_equal(out[:, 0], grey)
    colour = np.random.default_rng(6).standard_normal((2, 3, 4, 5))
    np.testing.assert_array_equal(E.as_images(colour), colour)
    with pytest.raises(ValueError, match="my_images must have shape"):
        E.as_images(np.zeros((4, 4)), name="my_images")
    with pytest.raises(ValueError, match="empty"):
        E.as_images(np.zeros((0, 1, 4, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        E.as_images(np.full((1, 2, 2), np.inf))


def random_covariance(rng, D, n=200):
    """The biased sample covariance of `n` correlated Gaussian vectors, and the data."""
    X = rng.standard_normal((n, D)) @ rng.standard_normal((D, D)) + rng.standard_normal(D)
    return np.cov(X, rowvar=False, bias=True), X


def test_pca_from_covariance_against_eigh_and_sklearn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(7)
    cov, X = random_covariance(rng, 8)
    mean = X.mean(axis=0)
    pca = E.pca_from_covariance(cov, mean, X.shape[0], 2, 2)
    assert (pca.count, pca.patch_size, pca.channels) == (200, 2, 2)
    np.testing.assert_array_equal(pca.mean, mean)
    # eigenvalues: numpy eigh, decreasing; round-off of an 8 x 8 eigh relative to the largest eigenvalue
    evals = np.linalg.eigvalsh(cov)[::-1]
    np.testing.assert_allclose(pca.lambdas**2, evals, rtol=1e-12, atol=1e-13 * evals[0])
    # sklearn's PCA of the data (ddof = 1 variances); components agree up to sign (simple spectrum)
    sk = PCA().fit(X)
    np.testing.assert_allclose(pca.lambdas**2 * 200 / 199, sk.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(np.abs(pca.basis.T @ sk.components_.T), np.eye(8), atol=1e-9)
    # orthonormal basis, the covariance rebuilt, the sign convention (largest-magnitude entry positive)
    np.testing.assert_allclose(pca.basis.T @ pca.basis, np.eye(8), atol=1e-14)
    np.testing.assert_allclose(pca.covariance, cov, rtol=0, atol=1e-12 * evals[0])
    cols = np.arange(8)
    assert np.all(pca.basis[np.argmax(np.abs(pca.basis), axis=0), cols] > 0)


def test_pca_from_covariance_symmetrises_and_clips():
    rng = np.random.default_rng(8)
    cov, X = random_covariance(rng, 5)
    skew = rng.standard_normal((5, 5)) * 1e-3
    a = E.pca_from_covariance(cov + (skew - skew.T), X.mean(0), 200, 1, 5)  # only the symmetric part counts
    b = E.pca_from_covariance(cov, X.mean(0), 200, 1, 5)
    np.testing.assert_allclose(a.lambdas, b.lambdas, rtol=1e-12)
    np.testing.assert_allclose(a.basis, b.basis, atol=1e-10)
    # a rank-2 "covariance" with a negative eigenvalue: clipped at zero energy, never NaN
    u = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    c = E.pca_from_covariance((u * np.array([4.0, 1.0, 0.0, 0.0, -1e-3])) @ u.T, np.zeros(5), 10, 1, 5)
    np.testing.assert_allclose(c.lambdas, [2.0, 1.0, 0.0, 0.0, 0.0], atol=1e-7)
    assert np.all(c.lambdas >= 0) and np.all(np.isfinite(c.lambdas))


def test_coefficients_are_coordinates_in_an_orthonormal_basis(colour_images):
    pca = E.patch_pca(colour_images, 2)
    D = pca.lambdas.size
    v = np.random.default_rng(9).standard_normal((3, 4, D))  # any batch shape (..., D)
    c = pca.coefficients(v)
    assert c.shape == v.shape
    # the loop over components, the reconstruction, and Parseval (round-off of D = 12 dot products)
    ref = np.stack([v @ pca.basis[:, i] for i in range(D)], axis=-1)
    np.testing.assert_allclose(c, ref, atol=1e-13)
    np.testing.assert_allclose(c @ pca.basis.T, v, atol=1e-13)
    np.testing.assert_allclose(np.linalg.norm(c, axis=-1), np.linalg.norm(v, axis=-1), rtol=1e-13)
    # the coefficients of u_j are e_j
    np.testing.assert_allclose(pca.coefficients(pca.basis.T), np.eye(D), atol=1e-14)
