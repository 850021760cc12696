"""`cnntheory.fluctuations.sample_paths` against the moment maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnntheory import fluctuations as fl


def test_sample_paths_follow_the_moment_equations(shape_problem):
    problem, m0, v0 = shape_problem("tanh")
    lr, B, t1 = 0.05, 2, 2.0
    ts = jnp.array([1.0, 2.0])
    paths = fl.sample_paths(problem, m0, v0, t1, lr=lr, batch_size=B, key=jax.random.key(0), num_seeds=1024, ts=ts)
    pred = fl.moments(problem, m0, v0, t1, lr=lr, batch_size=B, ts=ts)
    y = np.concatenate([np.asarray(paths.m).reshape(1024, 2, -1), np.asarray(paths.v)], axis=2)
    mean, std = y.mean(axis=0), y.std(axis=0, ddof=1)
    # 1024 paths: mean within 4 SE; std within 4 x 2.2% plus the O(dt) Euler-Maruyama error
    assert np.all(np.abs(np.asarray(pred.mean) - mean) < 4 * std / np.sqrt(1024))
    assert np.all(np.abs(np.asarray(pred.std) / std - 1) < 0.12)


def test_num_paths_is_the_old_name_of_num_seeds(shape_problem):
    """`num_paths=` (the old name) warns and draws exactly the paths of `num_seeds=`."""
    problem, m0, v0 = shape_problem("tanh")
    args = dict(lr=0.05, batch_size=2, key=jax.random.key(1), ts=jnp.array([0.1]))
    new = fl.sample_paths(problem, m0, v0, 0.1, num_seeds=3, **args)
    with pytest.warns(DeprecationWarning, match=r"sample_paths\(num_paths=\.\.\.\) is deprecated, use num_seeds="):
        old = fl.sample_paths(problem, m0, v0, 0.1, num_paths=3, **args)
    np.testing.assert_array_equal(np.asarray(old.m), np.asarray(new.m))
    np.testing.assert_array_equal(np.asarray(old.v), np.asarray(new.v))
