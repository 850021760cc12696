r"""Image sets that ship with the package's dependencies (nothing is downloaded).

Every loader returns images as a float64 array `(n, C, H, W)` (channel first, the layout of
a conv weight `(K, C, k, k)`), scaled to roughly unit range, and labels where they exist.

- `photo_crops`: square crops of scikit-learn's two sample photographs (`china.jpg`,
  `flower.jpg`, shipped inside the scikit-learn wheel). The label is the photograph a crop
  came from: a genuine (if easy) "true label".
- `digits`: scikit-learn's 1797 handwritten digits, `8 x 8`, one channel, labels 0-9.
- `power_law_images`: Gaussian random fields whose amplitude spectrum falls as `1/f^a`
  (`a = 1` is the classic natural-image statistic), optionally coloured by a fixed
  channel-mixing matrix. No labels: train on random labels.
"""

from __future__ import annotations

import functools

import numpy as np
from jaxtyping import Float, Int, PRNGKeyArray

from .._deprecate import renamed_keywords
from .._keys import as_rng
from .._validate import require

DATASETS = ("photos", "digits", "powerlaw")


@functools.cache
def _sample_photographs() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    # (H, W, 3) uint8 -> (3, H, W) in [0, 1]
    return tuple(np.asarray(im, dtype=float).transpose(2, 0, 1) / 255.0 for im in load_sample_images().images)


@renamed_keywords(seed="key")
def photo_crops(
    num_images: int, size: int = 32, *, key: int | PRNGKeyArray = 0, grey: bool = False
) -> tuple[Float[np.ndarray, "n C size size"], Int[np.ndarray, " n"]]:
    """`num_images` random `size x size` crops of the scikit-learn sample photographs.

    Crop positions are drawn from `key` (an int seed or a JAX key). Crops alternate between the two photographs; the label is the photograph's index (0 =
    china, 1 = flower). `grey=True` averages the channels (`C = 1`), otherwise `C = 3`.
    """
    require(int(num_images) >= 1, f"num_images must be >= 1, got {num_images}")
    photos = _sample_photographs()
    H, W = photos[0].shape[1:]
    require(
        1 <= int(size) <= min(H, W), f"size must be between 1 and {min(H, W)} (the photographs are {H}x{W}), got {size}"
    )
    rng = as_rng(key)
    labels = np.arange(num_images) % len(photos)
    rows = rng.integers(0, H - size + 1, num_images)
    cols = rng.integers(0, W - size + 1, num_images)
    crops = np.stack([photos[l][:, r : r + size, c : c + size] for l, r, c in zip(labels, rows, cols, strict=True)])
    if grey:
        crops = crops.mean(axis=1, keepdims=True)
    return crops, labels


def digits(num_images: int | None = None) -> tuple[Float[np.ndarray, "n 1 8 8"], Int[np.ndarray, " n"]]:
    """scikit-learn's handwritten digits as `(n, 1, 8, 8)` in `[0, 1]`, and their classes."""
    from sklearn.datasets import load_digits

    data = load_digits()
    n = len(data.target) if num_images is None else int(num_images)
    require(1 <= n <= len(data.target), f"num_images must be between 1 and {len(data.target)}, got {num_images}")
    return data.images[:n, None].astype(float) / 16.0, data.target[:n].astype(int)


@renamed_keywords(seed="key")
def power_law_images(
    num_images: int, size: int = 32, *, channels: int = 1, exponent: float = 1.0, key: int | PRNGKeyArray = 0
) -> Float[np.ndarray, "n C size size"]:
    r"""Gaussian random fields with amplitude spectrum `|F(f)| ~ 1/|f|^exponent`.

    White noise is filtered in Fourier space by `1/|f|^a` (the DC term set to zero), then each
    image is scaled to unit pixel variance. With `channels = 3` the channels are mixed by a fixed
    matrix with inter-channel correlation 0.8, as in colour photographs where luminance dominates.
    """
    require(int(num_images) >= 1, f"num_images must be >= 1, got {num_images}")
    require(int(size) >= 2, f"size must be >= 2, got {size}")
    require(int(channels) in (1, 3), f"channels must be 1 or 3, got {channels}")
    require(exponent >= 0, f"exponent must be >= 0, got {exponent}")
    rng = as_rng(key)
    f = np.fft.fftfreq(size)
    radius = np.hypot(f[:, None], f[None, :])
    filt = np.where(radius > 0, 1.0 / np.maximum(radius, 1e-12) ** exponent, 0.0)
    noise = rng.standard_normal((num_images, channels, size, size))
    fields = np.fft.ifft2(np.fft.fft2(noise) * filt).real
    fields /= fields.std(axis=(2, 3), keepdims=True)
    if channels == 3:
        corr = 0.8 * np.ones((3, 3)) + 0.2 * np.eye(3)
        fields = np.einsum("ij,njhw->nihw", np.linalg.cholesky(corr), fields)
    return fields


@renamed_keywords(seed="key")
def load_dataset(
    name: str, num_images: int, size: int = 32, *, key: int | PRNGKeyArray = 0
) -> tuple[Float[np.ndarray, "n C H W"], Int[np.ndarray, " n"] | None]:
    """One of `DATASETS` by name: `(images, labels)`; labels are `None` for `"powerlaw"`.

    `size` is ignored for `"digits"` (always `8 x 8`); `"powerlaw"` is coloured (`C = 3`).
    """
    require(name in DATASETS, f"dataset must be one of {DATASETS}, got {name!r}")
    if name == "photos":
        return photo_crops(num_images, size, key=key)
    if name == "digits":
        return digits(num_images)
    return power_law_images(num_images, size, channels=3, key=key), None
