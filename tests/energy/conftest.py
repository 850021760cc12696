"""Fixtures shared by the tests of `cnntheory.energy`."""

import numpy as np
import pytest

import cnntheory.energy as E


@pytest.fixture(scope="module")
def colour_images():
    """Five random 3-channel 9 x 7 images with an offset (patches and the convolution of the linear CNN)."""
    return np.random.default_rng(0).standard_normal((5, 3, 9, 7)) + 0.5


@pytest.fixture(scope="module")
def data():
    """24 photo crops (10 x 10), their labels as floats, their pooled 3 x 3 patches and the patch PCA:
    the linear CNN of the theory and gradient-flow tests."""
    k = 3
    images, labels = E.photo_crops(24, 10, key=3)
    return images, labels.astype(float), E.pooled_patches(images, k), E.patch_pca(images, k)


@pytest.fixture(scope="session")
def tiny_report():
    """`run_experiment` on 64 digits with every size at its smallest (a few seconds): the
    experiment and plot tests. Returns `(images, labels, config, report)`."""
    images, labels = E.digits(64)
    config = E.EnergyConfig(
        k=3,
        linear_filters=2,
        linear_steps=8,
        linear_records=2,
        linear_seeds=3,
        linear_images=32,
        small_steps=4,
        small_seeds=2,
        small_widths=(4, 4),
        small_batch=8,
        control_draws=3,
    )
    return images, labels, config, E.run_experiment(images, labels, config=config, progress=False)
