"""Solve and simulate conventions; online SGD at finite D against the ODE; the CLI command."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnntheory import SolverError, Status
from cnntheory.gaussian import GaussianTeacherStudent, kernels_from_overlaps, simulate, solve


@pytest.fixture(scope="module")
def problem():
    return GaussianTeacherStudent(4, [1.0, 0.7], np.eye(2), lr=0.5, train_head=True)


Q0, R0, V0 = np.array([[0.5, 0.1], [0.1, 0.4]]), np.array([[0.2, 0.0], [0.1, 0.3]]), np.array([0.5, 0.4])


def test_solve_conventions(problem):
    tr = solve(problem, Q0, R0, V0, 2.0, num_saves=5)
    assert tr.success and tr.status == 0 and "successfully" in tr.message
    assert tr.Q.shape == (5, 2, 2) and tr.R.shape == (5, 2, 2) and tr.v.shape == (5, 2) and tr.error.shape == (5,)
    np.testing.assert_allclose(np.asarray(tr.Q[0]), Q0)
    assert tr.loss is tr.error
    # The saved error is the error of the saved state.
    assert float(tr.error[-1]) == pytest.approx(float(problem.error(tr.Q[-1], tr.R[-1], tr.v[-1])), rel=1e-12)
    with pytest.raises(SolverError, match="max_steps"):
        solve(problem, Q0, R0, V0, 2.0, max_steps=2)
    failed = solve(problem, Q0, R0, V0, 2.0, max_steps=2, throw=False)
    assert failed.status == Status.MAX_STEPS and not failed.success
    with pytest.raises(SolverError, match="max_steps=2 reached"):
        failed.raise_for_status()  # the one path from a failed status to an error, shared with Trajectory
    assert tr.raise_for_status() is tr
    with pytest.raises(ValueError, match="R0"):
        solve(problem, Q0, R0[:, :1], V0, 2.0)
    with pytest.raises(ValueError, match="t1"):
        solve(problem, Q0, R0, V0, -1.0)


def test_kernels_from_overlaps_are_exact():
    T = np.array([[1.0, 0.3], [0.3, 0.8]])
    Kstar, K = kernels_from_overlaps(jnp.asarray(T), jnp.asarray(Q0), jnp.asarray(R0), 50, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(Kstar @ Kstar.T / 50), T, atol=1e-12)
    np.testing.assert_allclose(np.asarray(K @ K.T / 50), Q0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(K @ Kstar.T / 50), R0, atol=1e-12)
    with pytest.raises(ValueError, match="positive semi-definite"):
        kernels_from_overlaps(jnp.asarray(T), jnp.asarray(0.01 * Q0), jnp.asarray(R0), 50, jax.random.PRNGKey(0))


def test_online_simulation_follows_the_ode(problem):
    t1, D = 2.0, 1000
    sim = simulate(problem, Q0, R0, V0, dim=D, t1=t1, num_records=4, seeds=3, key=jax.random.PRNGKey(1))
    assert sim.status.tolist() == [0, 0, 0] and sim.Q.shape == (3, 5, 2, 2)
    tr = solve(problem, Q0, R0, V0, t1, ts=sim.t)
    # Fluctuations of the order parameters are O(D^{-1/2}) ~ 0.03 (the benchmark measures
    # the D^{-1/2} rate); 0.1 is > 3 of them. The ODE moves R by O(0.5) over this time.
    assert np.max(np.abs(np.asarray(sim.R - tr.R[None]))) < 0.1
    assert np.max(np.abs(np.asarray(sim.error.mean(0) - tr.error))) < 0.1 * float(tr.error[0])
    assert float(np.max(np.abs(np.asarray(tr.R[-1] - tr.R[0])))) > 0.3
    pop = simulate(problem, Q0, R0, V0, dim=D, t1=t1, num_records=4, mode="population")
    np.testing.assert_allclose(np.asarray(pop.error[0]), np.asarray(tr.error), rtol=1e-10)
    with pytest.raises(ValueError, match="mode"):
        simulate(problem, Q0, R0, V0, dim=D, t1=t1, mode="minibatch")


def test_committee_command(tmp_path, capsys):
    from cnntheory._cli import main

    assert (
        main(
            [
                "committee",
                "--K",
                "2",
                "--patches",
                "1",
                "2",
                "--t1",
                "300",
                "--lr",
                "1.0",
                "--num-points",
                "31",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    for ext in ("png", "npz", "json"):
        assert (tmp_path / f"committee.{ext}").exists()
    data = np.load(tmp_path / "committee.npz")
    assert data["committee_error"].shape == (1, 31) and data["patch_error_per_patch"].shape == (2, 31)
    assert "Saad-Solla plateau 0.011611" in capsys.readouterr().out
