r"""Patches and their PCA: the basis `u_i` and the patch energy `lambda_i`.

All `C x k x k` patches of an image, stride 1, no padding, flattened in (channel, row, col)
order, the order of a conv weight `(K, C, k, k)` flattened to `(K, D)`, `D = C k^2`.
With the mean patch `mu` removed, the patch covariance is

$$\Sigma = \frac{1}{N}\sum_{n=1}^{N} (p_n - \mu)(p_n - \mu)^\top
        = \sum_i \lambda_i^2\, u_i u_i^\top,\qquad \lambda_1 \ge \lambda_2 \ge \dots,$$

so `lambda_i = sqrt(mean_n ((p_n - mu) . u_i)^2)` is a standard deviation (the paper's
"patch energy"). The moments are accumulated in float64 over chunks of images, so tens of
millions of patches need only `O(chunk * D + D^2)` memory.
"""

from __future__ import annotations

from collections.abc import Iterable

import equinox as eqx
import numpy as np
from jaxtyping import Float

from .._validate import require


def as_images(images, name: str = "images") -> Float[np.ndarray, "n C H W"]:
    """Images as float64 `(n, C, H, W)`; a `(n, H, W)` array is one-channel."""
    images = np.asarray(images, dtype=float)
    require(
        images.ndim in (3, 4),
        f"{name} must have shape (n, C, H, W) or (n, H, W) for one channel, got rank {images.ndim} "
        f"(shape {images.shape}); stack single images with images[None]",
    )
    if images.ndim == 3:
        images = images[:, None]
    require(images.shape[0] >= 1 and images.shape[1] >= 1, f"{name} is empty (shape {images.shape})")
    require(np.all(np.isfinite(images)), f"{name} has non-finite entries")
    return images


def _check_patch_size(images: np.ndarray, k: int) -> int:
    require(isinstance(k, (int, np.integer)) and k >= 1, f"patch size k must be a positive integer, got {k!r}")
    H, W = images.shape[2:]
    require(k <= min(H, W), f"patch size k={k} is larger than the images ({H}x{W}): use k <= {min(H, W)}")
    return int(k)


def extract_all_patches(images, k: int) -> Float[np.ndarray, "N D"]:
    """Every `C x k x k` patch (stride 1) of `(n, C, H, W)` images as rows `(n (H-k+1)(W-k+1), C k^2)`.

    Row order: image, then row, then column of the patch's top-left corner. Not centred.
    """
    images = as_images(images)
    k = _check_patch_size(images, k)
    n, C = images.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(images, (k, k), axis=(2, 3))  # (n, C, H', W', k, k)
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, C * k * k)


def pooled_patches(images, k: int, mean: Float[np.ndarray, " D"] | None = None) -> Float[np.ndarray, "n D"]:
    r"""Per-image mean patch minus the data set's mean patch: `pbar(x) = mean_j p_j(x) - mu`.

    This is all a linear CNN with global average pooling sees of an image. `mean` defaults to
    the mean over the images given.
    """
    images = as_images(images)
    k = _check_patch_size(images, k)
    n, C, H, W = images.shape
    h, w = H - k + 1, W - k + 1
    # the (c, a, b) entry of the mean patch is the mean of the image shifted by (a, b)
    means = np.stack(
        [images[:, :, a : a + h, b : b + w].mean(axis=(2, 3)) for a in range(k) for b in range(k)], axis=-1
    )  # (n, C, k*k)
    pooled = means.reshape(n, C * k * k)
    mu = pooled.mean(axis=0) if mean is None else np.asarray(mean, dtype=float)
    require(mu.shape == (C * k * k,), f"mean must have shape (D,) = ({C * k * k},), got {mu.shape}")
    return pooled - mu


class PatchPCA(eqx.Module):
    """PCA of the patches of an image set.

    **Fields:**

    - `basis`: `(D, D)`, column `i` is `u_i`, sorted by decreasing variance; the sign is fixed
      so that the entry of largest magnitude of each `u_i` is positive.
    - `lambdas`: `(D,)` patch energies `lambda_i` (standard deviations, decreasing).
    - `mean`: `(D,)` the mean patch `mu` that was removed.
    - `count`: the number of patches `N`.
    - `patch_size`, `channels`: `k` and `C` (`D = C k^2`).
    """

    basis: Float[np.ndarray, "D D"]
    lambdas: Float[np.ndarray, " D"]
    mean: Float[np.ndarray, " D"]
    count: int = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)

    @property
    def covariance(self) -> Float[np.ndarray, "D D"]:
        """`Sigma = U diag(lambda^2) U^T`."""
        return (self.basis * self.lambdas**2) @ self.basis.T

    def coefficients(self, vectors: Float[np.ndarray, "... D"]) -> Float[np.ndarray, "... D"]:
        """Components `v . u_i` of vectors (patches or filters) in the PCA basis."""
        return np.asarray(vectors, dtype=float) @ self.basis


def _chunks(images, chunk_images: int) -> Iterable[np.ndarray]:
    if isinstance(images, (np.ndarray, list, tuple)) or hasattr(images, "__array__"):
        arr = as_images(images)
        for start in range(0, arr.shape[0], chunk_images):
            yield arr[start : start + chunk_images]
    else:
        yield from images  # an iterable of image chunks (e.g. a generator)


def patch_pca(images, k: int, *, chunk_images: int = 256) -> PatchPCA:
    r"""Streaming PCA of all `C x k x k` stride-1 patches of `images`.

    `images` is an `(n, C, H, W)` / `(n, H, W)` array or an iterable of such chunks (a generator,
    so that e.g. 10^7 patches never sit in memory at once). Sums are accumulated in float64
    around a shift (the first chunk's mean patch), which keeps `E[p p^T] - mu mu^T` free of
    cancellation when the mean is large against the spread.
    """
    count = 0
    shape: tuple[int, ...] = ()
    shift = total = outer = np.zeros(0)
    for chunk in _chunks(images, int(chunk_images)):
        chunk = as_images(chunk)
        patches = extract_all_patches(chunk, k)
        if not shape:
            shape = chunk.shape[1:]
            shift = patches.mean(axis=0)
            total = np.zeros_like(shift)
            outer = np.zeros((shift.size, shift.size))
        require(chunk.shape[1] == shape[0], f"all image chunks must have {shape[0]} channels, got {chunk.shape[1]}")
        centred = patches - shift
        count += centred.shape[0]
        total += centred.sum(axis=0)
        outer += centred.T @ centred
    require(count > 0, "images is empty: no patches to analyse")
    D = shift.size
    require(
        count > D,
        f"too few patches for the PCA: {count} patches of dimension D={D} (need more than D so the covariance "
        "can be full rank); use more or larger images, or a smaller patch size k",
    )
    centre = total / count
    cov = outer / count - np.outer(centre, centre)
    return pca_from_covariance(cov, shift + centre, count, int(k), shape[0])


def pca_from_covariance(cov, mean, count: int, k: int, channels: int) -> PatchPCA:
    """The `PatchPCA` of a given patch covariance (symmetrised, eigenvalues clipped at 0)."""
    cov = np.asarray(cov, dtype=float)
    cov = 0.5 * (cov + cov.T)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    signs = np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(evecs.shape[1])])
    evecs = evecs * np.where(signs == 0, 1.0, signs)
    return PatchPCA(evecs, np.sqrt(np.clip(evals, 0.0, None)), np.asarray(mean, dtype=float), int(count), k, channels)
