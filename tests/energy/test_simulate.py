"""The CNNs trained in `cnntheory.energy._simulate`: the linear CNN's output (im2col) against XLA's
direct convolution, and the small nonlinear CNN learning digits (loss below chance) while it
records its first-layer filters from their initial values. The linear CNN's GD trajectory is
held to the exact theory in test_theory.py."""

import jax
import numpy as np

import cnntheory.energy as E


def test_linear_cnn_output_is_a_real_convolution(colour_images):
    # the im2col implementation against XLA's direct convolution
    w = np.random.default_rng(4).standard_normal((4, 3, 3, 3))
    mu = np.random.default_rng(5).standard_normal(27)
    direct = jax.lax.conv_general_dilated(colour_images, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    ref = np.asarray(direct).mean(axis=(2, 3)).sum(axis=1) - (w.reshape(4, -1) @ mu).sum()
    np.testing.assert_allclose(E.linear_cnn_output(w, colour_images, mu), ref, rtol=1e-12)


def test_small_cnn_learns_digits_and_records_its_first_layer():
    images, labels = E.digits(256)
    run = E.train_small_cnn(images, labels, widths=(8, 8), steps=300, record_every=100, lr=0.2, batch=32, seeds=2)
    assert run.filters.shape == (2, 4, 8, 9) and run.initial.shape == (2, 8, 9)
    np.testing.assert_array_equal(run.filters[:, 0], run.initial)
    assert np.all(run.loss[:, -1] < 0.8 * np.log(10))  # below chance-level cross-entropy
    assert not np.allclose(run.filters[:, -1], run.initial)
