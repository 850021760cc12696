"""Plateaus and escape: detection on constructed curves, and the saddle a plateau shadows."""

import jax.numpy as jnp
import numpy as np
import pytest

import cnntheory as ct
from cnntheory import analysis as an


def test_plateau_detection():
    t = np.linspace(0, 30, 601)
    # Constructed: flat at 0.5 until t = 10, then a drop to 1e-3 (a saddle escape).
    loss = 1e-3 + 0.5 / (1 + np.exp(2.0 * (t - 12.0)))
    traj = _fake(t, loss)
    plats = an.find_plateaus(traj)
    assert len(plats) == 1
    assert plats[0].start == 0.0 and 8.0 < plats[0].end < 12.0 and np.isclose(plats[0].height, 0.501, rtol=1e-2)
    assert an.find_plateaus(_fake(t, np.exp(-0.3 * t))) == []
    assert an.find_plateaus(_fake(t, np.exp(-30 * t) + 1e-300)) == []


def _fake(t, loss):
    T = t.size
    return ct.Trajectory(
        jnp.asarray(t),
        jnp.zeros((T, 1, 1)),
        jnp.zeros((T, 1)),
        jnp.asarray(loss),
        jnp.asarray(0),
        jnp.asarray(0),
        jnp.asarray(1),
        jnp.asarray(t[-1]),
        "none",
        "",
    )


@pytest.mark.slow
def test_seed_plateau_shadows_symmetric_saddle():
    problem = ct.shape_counting(0.8, (1.0, 1.0), "tanh")
    m0 = jnp.array([[0.3, 0.3], [0.25, 0.25]])
    traj = ct.solve(problem, m0, jnp.array([1e-4, -1e-4]), 150.0, ts=np.linspace(0, 150, 601))
    plats = an.find_plateaus(traj, problem=problem)
    assert plats and plats[0].start == 0.0 and plats[0].saddle is not None
    assert plats[0].saddle.kind == "saddle" and abs(float(jnp.max(jnp.abs(plats[0].saddle.v)))) < 1e-9
