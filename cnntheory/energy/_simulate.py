r"""Training real CNNs in JAX and recording their first-layer filters.

- `train_linear_cnn`: the theorem's network. `K` filters, a stride-1 valid convolution, global
  average pooling, a sum over the filters, scalar output; the mean patch `mu` of the data set
  is subtracted (equivalently, each filter has the fixed bias `-w_k . mu`), so the network is
  `yhat(x) = sum_k w_k . (mean_j p_j(x) - mu)`. Loss `mean_x (yhat - y)^2`, full-batch GD
  with step `lr` (`eta` in the paper), filters initialised `N(0, init_std^2)`, labels given or random `N(0, 1)`
  per seed. All seeds train together through one convolution with `S K` output channels.
- `train_small_cnn`: a small nonlinear CNN (conv-relu-avgpool, conv-relu, global average
  pool, linear head; cross-entropy; minibatch SGD; He initialisation), whose first layer is
  profiled the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._deprecate import renamed_keywords
from .._keys import as_key
from .._typing import AnyArray
from .._validate import require
from ._patches import as_images, pooled_patches

_DIMS = ("NCHW", "OIHW", "NCHW")


def _conv(x, w, padding="VALID"):
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_DIMS)


def _responses(filters, images, mean_patch):
    """Pooled, centred response of every filter `(n, K)`: `mean_ij (w_k * x)_ij - w_k . mu`.

    The convolution is computed as im2col + matmul (`conv_general_dilated_patches` orders a
    patch (channel, row, col), like a flattened weight): XLA's direct float64 convolution on
    CPU is ~20x slower than float64 BLAS, and the linear CNN must run in float64 to be checked
    against the closed form to 1e-10.
    """
    k = filters.shape[-1]
    cols = jax.lax.conv_general_dilated_patches(
        images, (k, k), (1, 1), "VALID", dimension_numbers=_DIMS
    )  # (n, D, H', W')
    w = filters.reshape(filters.shape[0], -1)
    return jnp.einsum("ndhw,fd->nfhw", cols, w).mean(axis=(2, 3)) - w @ mean_patch


def linear_cnn_output(
    filters: Float[AnyArray, "K C k k"], images: Float[AnyArray, "n C H W"], mean_patch: Float[AnyArray, " D"]
) -> Float[Array, " n"]:
    """`yhat(x) = sum_k [mean_ij (w_k * x)_ij - w_k . mu]` through a real convolution."""
    return jnp.sum(_responses(filters, images, mean_patch), axis=-1)


def linear_cnn_loss(filters, images, labels, mean_patch) -> Float[Array, ""]:
    """`L = mean_x (yhat(x) - y(x))^2` (mean of squares: the factor 2 in `g_i` comes from here)."""
    return jnp.mean((linear_cnn_output(filters, images, mean_patch) - labels) ** 2)


def _seed_losses(w, x, y, mean_patch):
    """Losses `(S,)` of `S` linear CNNs `w` `(S, K, C, k, k)` on labels `y` `(S, n)`, through one convolution."""
    S, K = w.shape[:2]
    yhat = _responses(w.reshape(S * K, *w.shape[2:]), x, mean_patch).reshape(-1, S, K).sum(axis=-1)  # (n, S)
    return jnp.mean((yhat - y.T) ** 2, axis=0)


@functools.partial(jax.jit, static_argnums=(5,))
def _linear_gd(w, x, y, mean_patch, eta, steps: int):
    """`steps` full-batch GD steps for all seeds at once; returns the filters and their losses."""
    grad = jax.grad(lambda w: jnp.sum(_seed_losses(w, x, y, mean_patch)))
    w = jax.lax.fori_loop(0, steps, lambda _, w: w - eta * grad(w), w)
    return w, _seed_losses(w, x, y, mean_patch)


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


def _check_schedule(steps: int, record_every: int, num_seeds: int) -> np.ndarray:
    require(int(steps) >= 1, f"steps must be >= 1, got {steps}")
    require(
        int(record_every) >= 1 and int(steps) % int(record_every) == 0,
        f"record_every must divide steps={steps}, got {record_every}",
    )
    require(int(num_seeds) >= 1, f"num_seeds must be >= 1, got {num_seeds}")
    return np.arange(0, int(steps) + 1, int(record_every))


@renamed_keywords(eta="lr", seeds="num_seeds", seed="key")
def train_linear_cnn(
    images,
    labels=None,
    *,
    k: int,
    num_filters: int,
    lr: float,
    steps: int,
    num_seeds: int = 1,
    init_std: float = 1e-3,
    record_every: int = 1,
    key: int | PRNGKeyArray = 0,
) -> CNNRun:
    """Full-batch GD on the linear CNN, all seeds at once, filters recorded every `record_every` steps.

    `lr` is the gradient-descent step (`eta` of the theorem); `num_seeds` independent
    initialisations (and random labels) from `key` (a JAX key, or an int seed).

    `labels=None` draws random labels `y ~ N(0, 1)` per seed; otherwise the given labels are
    used by every seed (only the initialisation differs). The recorded `loss` at step `t` is
    that of the filters at step `t`.
    """
    images = as_images(images)
    n, C = images.shape[:2]
    record = _check_schedule(steps, record_every, num_seeds)
    mean_patch = jnp.asarray(pooled_patches(images, k, mean=np.zeros(C * k * k)).mean(axis=0))
    x = jnp.asarray(images)
    keys = jax.random.split(as_key(key), int(num_seeds))
    if labels is None:
        y = jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, 1), (n,)))(keys)
    else:
        labels = np.asarray(labels, dtype=float)
        require(labels.shape == (n,), f"labels must have shape (n,) = ({n},), got {labels.shape}")
        y = jnp.broadcast_to(jnp.asarray(labels), (int(num_seeds), n))
    w = init_std * jax.vmap(lambda key: jax.random.normal(key, (num_filters, C, k, k)))(keys)
    # every seed's filters go through ONE convolution with S*K output channels: the seeds'
    # losses are summed, and the gradient of the sum w.r.t. a seed's filters is the gradient of
    # its own loss. (vmapping the conv over its kernels is ~10x slower on CPU.)
    ws, losses = [w], [_seed_losses(w, x, y, mean_patch)]
    for _ in range(len(record) - 1):
        w, loss = _linear_gd(w, x, y, mean_patch, jnp.asarray(lr, dtype=float), int(record_every))
        ws.append(w)
        losses.append(loss)
    filters = jnp.stack(ws, axis=1).reshape(int(num_seeds), len(record), num_filters, -1)
    loss = jnp.stack(losses, axis=1)
    return CNNRun(record, np.asarray(filters), np.asarray(filters[:, 0]), np.asarray(y), np.asarray(loss))


def _init_small_cnn(key, channels: int, k: int, widths: Sequence[int], classes: int) -> dict:
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


def small_cnn_logits(params: dict, images: Float[AnyArray, "n C H W"]) -> Float[Array, "n classes"]:
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


@renamed_keywords(seeds="num_seeds", seed="key", batch="batch_size")
def train_small_cnn(
    images,
    labels=None,
    *,
    k: int = 3,
    widths: tuple[int, int] = (32, 32),
    classes: int = 10,
    lr: float = 0.05,
    batch_size: int = 64,
    steps: int = 1000,
    num_seeds: int = 1,
    record_every: int = 100,
    key: int | PRNGKeyArray = 0,
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
    record = _check_schedule(steps, record_every, num_seeds)
    require(int(batch_size) >= 1, f"batch_size must be >= 1, got {batch_size}")
    x = jnp.asarray(images, dtype=dtype)
    keys = jax.random.split(as_key(key), int(num_seeds))
    if labels is None:
        y = jax.vmap(lambda key: jax.random.randint(jax.random.fold_in(key, 1), (n,), 0, classes))(keys)
    else:
        labels = np.asarray(labels, dtype=int)
        require(labels.shape == (n,), f"labels must have shape (n,) = ({n},), got {labels.shape}")
        require(labels.min() >= 0 and labels.max() < classes, f"labels must lie in [0, classes={classes})")
        y = jnp.broadcast_to(jnp.asarray(labels), (int(num_seeds), n))
    # seeds run one after another through one compiled step: vmapping a conv over its kernels
    # is far slower on CPU than a loop (it compiles to a grouped convolution)
    ws, losses = [], []
    for s in range(int(num_seeds)):
        params0 = jax.tree.map(lambda a: a.astype(dtype), _init_small_cnn(keys[s], C, k, tuple(widths), classes))
        w_s, loss_s = _sgd_run(
            params0, x, y[s], keys[s], jnp.asarray(lr, dtype=dtype), len(record) - 1, int(record_every), int(batch_size)
        )
        loss0 = _cross_entropy(params0, x[: int(batch_size)], y[s, : int(batch_size)])
        ws.append(jnp.concatenate([params0["conv1"][None], w_s]))
        losses.append(jnp.concatenate([loss0[None], loss_s]))
    S, K = int(num_seeds), ws[0].shape[1]
    filters = jnp.stack(ws).reshape(S, len(record), K, -1).astype(float)
    loss = jnp.stack(losses).astype(float)
    return CNNRun(record, np.asarray(filters), np.asarray(filters[:, 0]), np.asarray(y), np.asarray(loss))
