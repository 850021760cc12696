"""`method="euler"` is gradient descent: a run whose loss rises above its start is DIVERGED.

Small-step gradient descent never raises the loss, so a save above the starting loss proves
the step `dt0` is too large (the issue: `dt0=50` reported success while the loss grew 0.17 ->
61). The check must not fire on stable runs: many random problems, saves on and off the
step grid, relu included, and oscillating-but-stable steps (`1 < dt0 * lambda < 2`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnntheory as ct

M0 = jnp.array([[0.3, 0.25], [0.2, 0.28]])
V0 = jnp.array([0.01, -0.01])


def test_the_issue_case_is_diverged_and_names_dt0():
    problem = ct.shape_counting()
    traj = ct.solve(problem, M0, V0, 500.0, method="euler", dt0=50.0, ts=jnp.linspace(0, 500, 11), throw=False)
    loss = np.asarray(traj.loss)
    assert np.nanmax(loss) > loss[0]  # it does rise
    assert int(traj.status) == ct.Status.DIVERGED
    assert "reduce dt0" in traj.message and "loss rose above its starting value" in traj.message
    with pytest.raises(ct.SolverError, match="reduce dt0"):
        ct.solve(problem, M0, V0, 500.0, method="euler", dt0=50.0, ts=jnp.linspace(0, 500, 11))


def _manual_gd(problem, m, v, dt, steps):
    losses = [float(problem.loss(m, v))]
    for _ in range(steps):
        dm, dv = problem.rhs(m, v)
        m, v = m + dt * dm, v + dt * dv
        losses.append(float(problem.loss(m, v)))
    return np.array(losses)


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_status_agrees_with_the_loss_of_gradient_descent_itself(activation):
    # 12 random problems and steps from small to far too large: DIVERGED exactly when the
    # GD map's own loss (computed here step by step, saves on the step grid) rises above its start.
    key = jax.random.key(7)
    verdicts = set()
    for i in range(12):
        key, k1, k2, k3 = jax.random.split(key, 4)
        overlap = float(jax.random.uniform(k1, minval=-0.5, maxval=0.9))
        problem = ct.shape_counting(overlap, (1.0 + i % 3, 1.0), activation, patches_per_side=4)
        m0 = jax.random.uniform(k2, (2, 2), minval=-0.5, maxval=0.8)
        v0 = 0.3 * jax.random.normal(k3, (2,))
        dt = [0.05, 0.5, 2.0, 8.0, 30.0, 100.0][i % 6]
        steps = 20
        traj = ct.solve(
            problem, m0, v0, steps * dt, method="euler", dt0=dt, ts=dt * jnp.arange(steps + 1.0), throw=False
        )
        reference = _manual_gd(problem, m0, v0, dt, steps)
        rose = (not np.all(np.isfinite(reference))) or np.max(reference) > reference[0] * (1 + 1e-9)
        assert (int(traj.status) == ct.Status.DIVERGED) == rose, (i, dt, reference)
        verdicts.add(rose)
    assert verdicts == {True, False}  # both outcomes were exercised


def test_stable_oscillating_descent_with_saves_between_steps_is_success():
    # Near a minimum the loss is nearly quadratic: with 1 < dt lambda_max < 2 gradient descent
    # overshoots and oscillates but converges, and saves off the step grid interpolate between
    # iterates (convex along each segment): no save exceeds the start.
    from cnntheory.analysis import stability_edge

    problem = ct.shape_counting(activation="linear", patches_per_side=4)
    flow = ct.solve(problem, M0, jnp.array([0.5, -0.4]), 400.0)
    m0 = flow.m[-1] + 0.01 * jnp.array([[1.0, -1.0], [0.5, 0.2]])
    v0 = flow.v[-1] + 0.01 * jnp.array([-1.0, 1.0])
    dt = 0.8 * float(stability_edge(problem, m0, v0))
    reference = _manual_gd(problem, m0, v0, dt, 50)
    assert np.max(reference) <= reference[0] and reference[-1] < reference[0]
    traj = ct.solve(problem, m0, v0, 50 * dt, method="euler", dt0=dt, ts=jnp.linspace(0, 50 * dt, 37), throw=False)
    assert int(traj.status) == ct.Status.SUCCESS, traj.message
    np.testing.assert_allclose(traj.loss[-1], reference[-1], rtol=1e-9)


def test_batched_euler_marks_only_the_diverging_lane():
    problem = ct.shape_counting(activation="sigmoid", patches_per_side=4)
    m0s = jnp.stack([M0, M0])
    v0s = jnp.stack([V0, jnp.array([3.0, -3.0])])
    for shared in (False, True):
        traj = ct.solve_batch(
            problem, m0s, v0s, 200.0, method="euler", dt0=40.0, ts=jnp.linspace(0, 200, 6), throw=False,
            shared_steps=shared,
        )  # fmt: skip
        reference = [_manual_gd(problem, M0, V0, 40.0, 5), _manual_gd(problem, m0s[1], v0s[1], 40.0, 5)]
        expected = [
            ct.Status.DIVERGED if np.max(r) > r[0] or not np.isfinite(r).all() else ct.Status.SUCCESS for r in reference
        ]
        assert [int(s) for s in traj.status] == expected
