r"""Training real CNNs in JAX and recording their first-layer filters.

- `train_linear_cnn`: the theorem's network. `K` filters, a stride-1 valid convolution, global
  average pooling, a sum over the filters, scalar output; the mean patch `mu` of the data set
  is subtracted (equivalently, each filter has the fixed bias `-w_k . mu`), so the network is
  `yhat(x) = sum_k w_k . (mean_j p_j(x) - mu)`. Loss `mean_x (yhat - y)^2`, full-batch GD
  with step `eta`, filters initialised `N(0, init_std^2)`, labels given or random `N(0, 1)`
  per seed. Vmapped over seeds, `lax.scan` over steps.
- `train_small_cnn`: a small nonlinear CNN (conv-relu-avgpool, conv-relu, global average
  pool, linear head; cross-entropy; minibatch SGD; He initialisation), whose first layer is
  profiled the same way.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._validate import require
from ._patches import as_images, pooled_patches

_DIMS = ("NCHW", "OIHW", "NCHW")


def _conv(x, w, padding="VALID"):
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_DIMS)


def linear_cnn_output(filters: Float[Array, "K C k k"], images: Float[Array, "n C H W"], mean_patch: Float[Array, " D"]) -> Float[Array, " n"]:
    """`yhat(x) = sum_k [mean_ij (w_k * x)_ij - w_k . mu]` through a real convolution."""
    pooled = _conv(images, filters).mean(axis=(2, 3))  # (n, K)
    return jnp.sum(pooled - filters.reshape(filters.shape[0], -1) @ mean_patch, axis=-1)


def linear_cnn_loss(filters, images, labels, mean_patch) -> Float[Array, ""]:
    """`L = mean_x (yhat(x) - y(x))^2` (mean of squares: the factor 2 in `g_i` comes from here)."""
    return jnp.mean((linear_cnn_output(filters, images, mean_patch) - labels) ** 2)


class CNNRun(eqx.Module):
    """First-layer filters recorded during training, for `S` seeds.

    **Fields:** `steps` `(T,)`; `filters` `(S, T, K, D)` (flattened in (channel, row, col)
    order); `initial` `(S, K, D)`; `labels` `(S, n)` used by each seed; `loss` `(S, T)` the
    training loss at each recorded step.
    """

    steps: Int[np.ndarray, " T"]
    filters: Float[np.ndarray, "S T K D"]
    initial: Float[np.ndarray, "S K D"]
    labels: np.ndarray
    loss: Float[np.ndarray, "S T"]


def _check_schedule(steps: int, record_every: int, seeds: int) -> np.ndarray:
    require(int(steps) >= 1, f"steps must be >= 1, got {steps}")
    require(int(record_every) >= 1 and int(steps) % int(record_every) == 0, f"record_every must divide steps={steps}, got {record_every}")
    require(int(seeds) >= 1, f"seeds must be >= 1, got {seeds}")
    return np.arange(0, int(steps) + 1, int(record_every))


def train_linear_cnn(
    images,
    labels=None,
    *,
    k: int,
    num_filters: int,
    eta: float,
    steps: int,
    seeds: int = 1,
    init_std: float = 1e-3,
    record_every: int = 1,
    seed: int = 0,
) -> CNNRun:
    """Full-batch GD on the linear CNN, one run per seed (vmapped), filters recorded every `record_every` steps.

    `labels=None` draws random labels `y ~ N(0, 1)` per seed; otherwise the given labels are
    used by every seed (only the initialisation differs). The recorded `loss` at step `t` is
    that of the filters at step `t`.
    """
    images = as_images(images)
    n, C = images.shape[:2]
    record = _check_schedule(steps, record_every, seeds)
    mean_patch = jnp.asarray(pooled_patches(images, k, mean=np.zeros(C * k * k)).mean(axis=0))
    x = jnp.asarray(images)
    keys = jax.random.split(jax.random.PRNGKey(seed), int(seeds))
    if labels is None:
        y = jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, 1), (n,)))(keys)
    else:
        labels = np.asarray(labels, dtype=float)
        require(labels.shape == (n,), f"labels must have shape (n,) = ({n},), got {labels.shape}")
        y = jnp.broadcast_to(jnp.asarray(labels), (int(seeds), n))
    w0 = init_std * jax.vmap(lambda key: jax.random.normal(key, (num_filters, C, k, k)))(keys)
    grad = jax.value_and_grad(linear_cnn_loss)

    def chunk(w, y_s):
        def step(w, _):
            return w - eta * grad(w, x, y_s, mean_patch)[1], None

        w_next = jax.lax.scan(step, w, None, length=int(record_every))[0]
        return w_next, (w_next, linear_cnn_loss(w_next, x, y_s, mean_patch))

    @jax.jit
    def run(w0, y):
        def one(w0_s, y_s):
            _, (ws, losses) = jax.lax.scan(lambda w, _: chunk(w, y_s), w0_s, None, length=len(record) - 1)
            return ws, losses, linear_cnn_loss(w0_s, x, y_s, mean_patch)

        return jax.vmap(one)(w0, y)

    ws, losses, loss0 = run(w0, y)
    filters = jnp.concatenate([w0[:, None], ws], axis=1).reshape(int(seeds), len(record), num_filters, -1)
    loss = jnp.concatenate([loss0[:, None], losses], axis=1)
    return CNNRun(record, np.asarray(filters), np.asarray(filters[:, 0]), np.asarray(y), np.asarray(loss))


def _init_small_cnn(key, channels: int, k: int, widths: tuple[int, int], classes: int) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    w1, w2 = widths

    def he(key, shape):  # He-normal: std sqrt(2 / fan_in), as PyTorch's kaiming_normal_
        return jax.random.normal(key, shape) * jnp.sqrt(2.0 / np.prod(shape[1:]))

    return {
        "conv1": he(k1, (w1, channels, k, k)),
        "b1": jnp.zeros(w1),
        "conv2": he(k2, (w2, w1, 3, 3)),
        "b2": jnp.zeros(w2),
        "head": jax.random.normal(k3, (w2, classes)) / jnp.sqrt(w2),
        "bh": jnp.zeros(classes),
    }


def small_cnn_logits(params: dict, images: Float[Array, "n C H W"]) -> Float[Array, "n classes"]:
    """conv1 (valid) - relu - 2x2 avg pool - conv2 3x3 (same) - relu - global avg pool - linear head."""
    h = jax.nn.relu(_conv(images, params["conv1"]) + params["b1"][:, None, None])
    n, c, H, W = h.shape
    if H >= 2 and W >= 2:  # 2x2 average pool (floor), skipped on tiny maps
        h = h[:, :, : H // 2 * 2, : W // 2 * 2].reshape(n, c, H // 2, 2, W // 2, 2).mean(axis=(3, 5))
    h = jax.nn.relu(_conv(h, params["conv2"], "SAME") + params["b2"][:, None, None])
    return h.mean(axis=(2, 3)) @ params["head"] + params["bh"]


def _cross_entropy(params, images, labels):
    logits = small_cnn_logits(params, images)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


@functools.partial(jax.jit, static_argnums=(5,))
def _sgd_step(params, x, y, key, lr, batch: int):
    """One minibatch SGD step (indices drawn with replacement); returns the new parameters and the batch loss."""
    idx = jax.random.randint(key, (batch,), 0, x.shape[0])
    loss, g = jax.value_and_grad(_cross_entropy)(params, x[idx], y[idx])
    return jax.tree.map(lambda p, d: p - lr * d, params, g), loss


def _sgd_run(params, x, y, key, lr, records: int, record_every: int, batch: int):
    """`records * record_every` SGD steps; the first-layer filters and the last batch loss of each interval.

    A Python loop over a jitted step: on CPU, XLA runs convolutions inside `lax.scan` about 8x
    slower than the same convolution dispatched on its own.
    """
    filters, losses = [], []
    for r in range(records):
        for i in range(record_every):
            params, loss = _sgd_step(params, x, y, jax.random.fold_in(key, r * record_every + i), lr, batch)
        filters.append(params["conv1"])
        losses.append(loss)
    return jnp.stack(filters), jnp.stack(losses)


def train_small_cnn(
    images,
    labels=None,
    *,
    k: int = 3,
    widths: tuple[int, int] = (32, 32),
    classes: int = 10,
    lr: float = 0.05,
    batch: int = 64,
    steps: int = 1000,
    seeds: int = 1,
    record_every: int = 100,
    seed: int = 0,
    dtype=jnp.float32,
) -> CNNRun:
    """Minibatch SGD (cross-entropy) on the small nonlinear CNN, one run per seed.

    Trains in `dtype` (float32 by default, as networks are trained in practice, and about
    twice as fast as float64 on CPU); the recorded filters are returned as float64.

    `labels=None` draws uniform random classes per seed. Batches are drawn with replacement.
    The recorded `loss` is the minibatch loss of the step that ends each record interval.
    """
    images = as_images(images)
    n, C = images.shape[:2]
    record = _check_schedule(steps, record_every, seeds)
    require(int(batch) >= 1, f"batch must be >= 1, got {batch}")
    x = jnp.asarray(images, dtype=dtype)
    keys = jax.random.split(jax.random.PRNGKey(seed), int(seeds))
    if labels is None:
        y = jax.vmap(lambda key: jax.random.randint(jax.random.fold_in(key, 1), (n,), 0, classes))(keys)
    else:
        labels = np.asarray(labels, dtype=int)
        require(labels.shape == (n,), f"labels must have shape (n,) = ({n},), got {labels.shape}")
        require(labels.min() >= 0 and labels.max() < classes, f"labels must lie in [0, classes={classes})")
        y = jnp.broadcast_to(jnp.asarray(labels), (int(seeds), n))
    # seeds run one after another through one compiled step: vmapping a conv over its kernels
    # is far slower on CPU than a loop (it compiles to a grouped convolution)
    ws, losses = [], []
    for s in range(int(seeds)):
        params0 = jax.tree.map(lambda a: a.astype(dtype), _init_small_cnn(keys[s], C, k, tuple(widths), classes))
        w_s, loss_s = _sgd_run(params0, x, y[s], keys[s], jnp.asarray(lr, dtype=dtype), len(record) - 1, int(record_every), int(batch))
        loss0 = _cross_entropy(params0, x[: int(batch)], y[s, : int(batch)])
        ws.append(jnp.concatenate([params0["conv1"][None], w_s]))
        losses.append(jnp.concatenate([loss0[None], loss_s]))
    S, K = int(seeds), ws[0].shape[1]
    filters = jnp.stack(ws).reshape(S, len(record), K, -1).astype(float)
    loss = jnp.stack(losses).astype(float)
    return CNNRun(record, np.asarray(filters), np.asarray(filters[:, 0]), np.asarray(y), np.asarray(loss))
