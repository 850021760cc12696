"""`cnntheory.compare`: error bookkeeping against hand computations, and the matching theory."""

from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_checks import raises_unchecked

import cnntheory
from cnntheory import compare as cmp
from cnntheory import simulate as sim

M0 = jnp.array([[0.3, 0.25], [0.2, 0.28]])
V0 = jnp.array([0.01, -0.01])


@pytest.fixture(scope="module")
def problem():
    return cnntheory.shape_counting(activation="relu", patches_per_side=4, pooling="mean")


@pytest.fixture(scope="module")
def fullbatch(problem):
    return sim.simulate(
        problem,
        M0,
        V0,
        mode="fullbatch",
        lr=0.02,
        steps=200,
        record_every=20,
        key=jax.random.key(3),
        num_seeds=3,
        num_train=64,
        num_test=128,
    )


def shifted(traj, dm, dv):
    """`traj` with `m + dm`, `v + dv` (to compare against known offsets)."""
    return cnntheory.Trajectory(
        traj.t,
        traj.m + dm,
        traj.v + dv,
        traj.loss,
        traj.status,
        traj.num_steps,
        traj.num_segments,
        traj.t_end,
        traj.method,
        traj.message,
    )


def test_errors_match_hand_computation(fullbatch, problem):
    theory = cmp.matching_solve(problem, fullbatch, M0, V0, method="euler", dt0=fullbatch.lr)
    assert theory.m.shape == fullbatch.m.shape  # one C_hat ODE per seed
    base = cmp.compare(fullbatch, theory, problem=problem)
    for name in ("m", "v", "train_loss", "predictions"):
        assert base[name].summary()["max"] < 1e-10
    # A known offset of the theory shows up exactly.
    T = fullbatch.t.shape[0]
    dm = 1e-3 * jnp.arange(T, dtype=float)[:, None, None] * jnp.ones((1, 2, 2))
    c = cmp.compare(fullbatch, shifted(theory, dm, 0.0), fields=("m", "v"))
    e = np.asarray(fullbatch.m - theory.m - dm)
    np.testing.assert_allclose(c["m"].error, e, atol=1e-15)
    np.testing.assert_allclose(c["m"].max, np.abs(e).max(axis=1), atol=1e-15)
    np.testing.assert_allclose(c["m"].rms, np.sqrt((e**2).mean(axis=1)), atol=1e-15)
    np.testing.assert_allclose(c["m"].mean_max, np.abs(e.mean(axis=0)).max(axis=0), atol=1e-15)
    np.testing.assert_allclose(c["m"].spread, np.asarray(fullbatch.m).std(axis=0, ddof=1), atol=1e-15)
    assert c["m"].summary()["max"] == pytest.approx(1e-3 * (T - 1), rel=1e-6)
    assert c.summary()["num_seeds"] == 3 and "m" in c.table()


def test_population_theory_predicts_test_loss(fullbatch, problem):
    """Against the population ODE the training run is off by the finite-sample gap only."""
    theory = cmp.matching_solve(problem, fullbatch, M0, V0, finite_data=False, method="euler", dt0=fullbatch.lr)
    assert theory.m.ndim == 3
    c = cmp.compare(fullbatch, theory, problem=problem, fields=("m", "loss", "test_loss"))
    assert 0 < c["m"].summary()["max"] < 0.05
    # The test loss is a 128-image estimate of the population loss.
    assert c["test_loss"].summary()["max"] < 0.5 * float(theory.loss.max())


def test_theory_predictions_are_counts_times_a(problem):
    traj = cnntheory.solve(problem, M0, V0, 1.0, ts=jnp.linspace(0, 1, 3), method="euler", dt0=0.5)
    counts = jnp.array([[1.0, 0.0], [0.25, 0.75]])
    a = jnp.einsum("tl,tlp->tp", traj.v, jnp.maximum(traj.m, 0))
    np.testing.assert_allclose(cmp.theory_predictions(problem, traj, counts), a @ counts.T, atol=1e-15)


def test_bad_input(fullbatch, problem):
    traj = cnntheory.solve(problem, M0, V0, 1.0, ts=jnp.linspace(0, 1, 5), method="euler", dt0=0.25)
    with pytest.raises(ValueError, match="ts=sim.t"):
        cmp.compare(fullbatch, traj)
    theory = cmp.matching_solve(problem, fullbatch, M0, V0, finite_data=False, method="euler", dt0=fullbatch.lr)
    with pytest.raises(ValueError, match="unknown field"):
        cmp.compare(fullbatch, theory, fields=("w",))
    with pytest.raises(ValueError, match="needs problem"):
        cmp.compare(fullbatch, theory, fields=("predictions",))
    with raises_unchecked(ValueError, match="must be a Simulation"):
        cmp.compare(cast(Any, traj), traj)


def test_diverged_seeds_are_left_out(fullbatch, problem):
    theory = cmp.matching_solve(problem, fullbatch, M0, V0, finite_data=False, method="euler", dt0=fullbatch.lr)
    status = jnp.array([0, 1, 0])
    partial = eqx_replace(fullbatch, status=status, m=fullbatch.m.at[1, 3:].set(jnp.nan))
    c = cmp.compare(partial, theory, fields=("m",))
    assert c.num_seeds == 2 and np.all(np.isfinite(np.asarray(c["m"].error)))
    with pytest.raises(ValueError, match="every seed"):
        cmp.compare(eqx_replace(fullbatch, status=jnp.ones(3, dtype=int)), theory)


def eqx_replace(module, **changes):
    import equinox as eqx

    names = list(changes)
    return eqx.tree_at(lambda m: [getattr(m, n) for n in names], module, [changes[n] for n in names])
