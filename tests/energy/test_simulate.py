"""The CNNs trained in `cnntheory.energy._simulate`: the linear CNN's output (im2col) against XLA's
direct convolution, and the small nonlinear CNN learning digits (loss below chance) while it
records its first-layer filters from their initial values. The linear CNN's GD trajectory is
held to the exact theory in test_theory.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnntheory.energy as E


def test_linear_cnn_output_is_a_real_convolution(colour_images):
    # the im2col implementation against XLA's direct convolution
    w = np.random.default_rng(4).standard_normal((4, 3, 3, 3))
    mu = np.random.default_rng(5).standard_normal(27)
    direct = jax.lax.conv_general_dilated(colour_images, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    ref = np.asarray(direct).mean(axis=(2, 3)).sum(axis=1) - (w.reshape(4, -1) @ mu).sum()
    np.testing.assert_allclose(E.linear_cnn_output(w, colour_images, mu), ref, rtol=1e-12)


@pytest.mark.slow
def test_small_cnn_learns_digits_and_records_its_first_layer():
    images, labels = E.digits(256)
    run = E.train_small_cnn(
        images, labels, widths=(8, 8), steps=300, record_every=100, lr=0.2, batch_size=32, num_seeds=2
    )
    assert run.filters.shape == (2, 4, 8, 9) and run.initial.shape == (2, 8, 9)
    np.testing.assert_array_equal(run.filters[:, 0], run.initial)
    assert np.all(run.loss[:, -1] < 0.8 * np.log(10))  # below chance-level cross-entropy
    assert not np.allclose(run.filters[:, -1], run.initial)


def brute_force_linear_cnn_loss(w, x, y, mu):
    """`mean_x (sum_k [mean_ij w_k . x[:, i:i+k, j:j+k] - w_k . mu] - y)^2` with explicit loops."""
    K, C, k, _ = w.shape
    n, _, H, W = x.shape
    yhat = np.zeros(n)
    for m in range(n):
        for f in range(K):
            pos = [np.sum(w[f] * x[m, :, i : i + k, j : j + k]) for i in range(H - k + 1) for j in range(W - k + 1)]
            yhat[m] += np.mean(pos) - w[f].ravel() @ mu
    return np.mean((yhat - y) ** 2), yhat


@pytest.mark.slow
def test_linear_cnn_loss_against_loops_and_its_gradient(colour_images):
    rng = np.random.default_rng(10)
    w, y, mu = rng.standard_normal((3, 3, 2, 2)), rng.standard_normal(5), rng.standard_normal(12)
    loss = E.linear_cnn_loss(w, colour_images, y, mu)
    ref, yhat = brute_force_linear_cnn_loss(w, colour_images, y, mu)
    assert loss.shape == () and float(loss) == pytest.approx(ref, rel=1e-12)  # float64 round-off
    # dL/dw_k = 2 mean_x (yhat - y) (mean patch of x - mu), the same for every filter (mean of squares)
    mean_patch = np.stack(
        [
            np.mean([x[:, i : i + 2, j : j + 2].ravel() for i in range(8) for j in range(6)], axis=0)
            for x in colour_images
        ]
    )
    g_ref = 2 * np.mean((yhat - y)[:, None] * (mean_patch - mu), axis=0)
    g = np.asarray(jax.grad(E.linear_cnn_loss)(jnp.asarray(w), colour_images, y, mu)).reshape(3, -1)
    np.testing.assert_allclose(g, np.broadcast_to(g_ref, g.shape), rtol=1e-11, atol=1e-13)


def brute_force_small_cnn(params, x):
    """The documented forward pass with explicit loops in numpy."""
    p = {name: np.asarray(a) for name, a in params.items()}
    relu = lambda a: np.maximum(a, 0.0)

    def conv(h, w, b, pad):
        h = np.pad(h, ((0, 0), (pad, pad), (pad, pad)))
        O, _, k, _ = w.shape
        Ho, Wo = h.shape[1] - k + 1, h.shape[2] - k + 1
        out = np.empty((O, Ho, Wo))
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    out[o, i, j] = np.sum(w[o] * h[:, i : i + k, j : j + k]) + b[o]
        return out

    logits = []
    for img in x:
        h = relu(conv(img, p["conv1"], p["b1"], 0))
        c, H, W = h.shape
        if H >= 2 and W >= 2:
            h = np.array(
                [[[h[ch, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean() for j in range(W // 2)] for i in range(H // 2)]
                 for ch in range(c)]
            )  # fmt: skip
        h = relu(conv(h, p["conv2"], p["b2"], 1))  # 3 x 3 'same': one pixel of zeros
        logits.append(h.mean(axis=(1, 2)) @ p["head"] + p["bh"])
    return np.array(logits)


# conv1 maps 6x7 (pooled to 3x3, odd width floored), 1x1 (no pool), 2x3 (pooled to 1x1)
@pytest.mark.slow
@pytest.mark.parametrize("side", [8, 3, 4])
def test_small_cnn_logits_against_a_loop_forward_pass(side):
    rng = np.random.default_rng(11)
    params = {
        "conv1": rng.standard_normal((4, 2, 3, 3)),
        "b1": rng.standard_normal(4) * 0.5,
        "conv2": rng.standard_normal((5, 4, 3, 3)),
        "b2": rng.standard_normal(5) * 0.5,
        "head": rng.standard_normal((5, 3)),
        "bh": rng.standard_normal(3),
    }
    params = {name: jnp.asarray(a) for name, a in params.items()}
    x = rng.standard_normal((2, 2, side, side + 1 if side > 3 else side))  # odd width: the floor of the pool
    logits = E.small_cnn_logits(params, x)
    assert logits.shape == (2, 3)
    np.testing.assert_allclose(logits, brute_force_small_cnn(params, x), rtol=1e-12, atol=1e-12)
    # with zero biases the network is positively homogeneous of degree 1 in the image (relu, pools, convs)
    zero_bias = {**params, "b1": jnp.zeros(4), "b2": jnp.zeros(5), "bh": jnp.zeros(3)}
    np.testing.assert_allclose(
        E.small_cnn_logits(zero_bias, 2.5 * x), 2.5 * np.asarray(E.small_cnn_logits(zero_bias, x)), rtol=1e-12
    )
