"""Dynamics analysis: fixed points, plateaus, curvature, schedules (independent references)."""

import jax
import jax.numpy as jnp
import numpy as np

import cnntheory as ct
from cnntheory import analysis as an
from cnntheory._data import PatchMixture, shape_atoms


def _linear_problem():
    """P = 2 shapes, linear teacher and student: b = v* m* solvable by hand."""
    mix = PatchMixture(shape_atoms(3, 0.5), (2.0, 1.0), None, "mean")
    return ct.TeacherStudent(mix, [1.0, -0.5], teacher_activation="linear", student_activation="linear", lr_kernel=9.0)


def test_fixed_points_residual_jacobian_and_planted():
    problem = _linear_problem()
    b = np.asarray(problem.teacher_outputs())
    Cb = np.asarray(problem.moments) @ b
    points = an.find_fixed_points(problem, 1, num_starts=64, key=jax.random.PRNGKey(0))
    assert points
    for p in points:
        dm, dv = problem.rhs(p.m, p.v)
        assert max(float(jnp.max(jnp.abs(dm))), float(jnp.max(jnp.abs(dv)))) < 1e-10
    # Hand solution: zero loss on {v m = b} (marginal: the rescaling curve), and the
    # saddle v = 0, m . C b = 0 (loss 1/2 b^T C b, one unstable direction).
    minima = [p for p in points if p.loss < 1e-20]
    assert minima and all(np.allclose(float(p.v[0]) * np.asarray(p.m[0]), b, atol=1e-9) for p in minima)
    assert all(p.kind == "marginal" for p in minima)
    saddles = [p for p in points if p.kind == "saddle"]
    assert saddles
    for p in saddles:
        assert abs(float(p.v[0])) < 1e-9 and abs(float(np.asarray(p.m[0]) @ Cb)) < 1e-9
        assert np.isclose(p.loss, 0.5 * b @ np.asarray(problem.moments) @ b)
        assert p.num_unstable == 1


def test_flow_jacobian_matches_finite_differences():
    problem = ct.shape_counting(0.8, (2.0, 1.0), "tanh")
    m, v = jnp.array([[0.3, -0.2], [0.1, 0.5]]), jnp.array([0.7, -0.4])
    J = np.asarray(an.flow_jacobian(problem, m, v))
    y = np.concatenate([np.ravel(m), v])
    h = 1e-6
    F = lambda y: np.concatenate([np.ravel(a) for a in problem.rhs(jnp.asarray(y[:4]).reshape(2, 2), jnp.asarray(y[4:]))])  # noqa: E731
    fd = np.stack([(F(y + h * e) - F(y - h * e)) / (2 * h) for e in np.eye(6)], axis=1)
    np.testing.assert_allclose(J, fd, atol=1e-8)


def test_relu_fixed_points_are_filippov_equilibria():
    problem = ct.shape_counting(0.8, (2.0, 1.0), "relu")
    points = an.find_fixed_points(problem, 2, num_starts=64, key=jax.random.PRNGKey(3))
    assert any(p.loss < 1e-20 for p in points)
    for p in points:
        if not np.any(np.asarray(p.sliding)):
            dm, dv = problem.rhs(p.m, p.v)  # off the surfaces relu is smooth: plain field vanishes
            assert max(float(jnp.max(jnp.abs(dm))), float(jnp.max(jnp.abs(dv)))) < 1e-10


def test_hessian_matches_finite_differences_and_landscape_centre():
    problem = ct.shape_counting(0.8, (2.0, 1.0), "tanh", k=3)
    m, v = jnp.array([[0.3, -0.2], [0.1, 0.5]]), jnp.array([0.7, -0.4])
    H = np.asarray(an.hessian(problem, m, v))
    K = np.asarray(an.kernels_from_order(problem, m))
    np.testing.assert_allclose(K @ np.asarray(problem.mixture.atoms).T / problem.patch_dim, m, atol=1e-12)
    theta = np.concatenate([K.ravel(), v])
    L, D = 2, problem.patch_dim
    f = lambda th: float(an.parameter_loss(problem, jnp.asarray(th[: L * D]).reshape(L, D), jnp.asarray(th[L * D :])))  # noqa: E731
    h = 1e-4
    rng = np.random.default_rng(0)
    for _ in range(4):
        i, j = rng.integers(theta.size, size=2)
        ei, ej = np.eye(theta.size)[i] * h, np.eye(theta.size)[j] * h
        fd = (f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej) + f(theta - ei - ej)) / (4 * h * h)
        assert abs(H[i, j] - fd) < 1e-6
    ls = an.landscape(problem, m, v, key=jax.random.PRNGKey(1), n=5, extent=0.5)
    assert np.isclose(float(ls.loss[2, 2]), float(problem.loss(m, v)), rtol=1e-13, atol=0)
    traj = ct.solve(problem, m, v, 5.0, ts=np.linspace(0, 5, 6))
    sharp = np.asarray(an.sharpness(problem, traj))
    assert np.isclose(sharp[0], np.linalg.eigvalsh(H)[-1])


def test_schedule_one_segment_and_two_chained():
    p1 = ct.shape_counting(0.8, (1.0, 1.0), "tanh", k=3)
    p2 = an.restrict_atoms(p1, [0])
    m0, v0 = jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.1, -0.1])
    ts = np.linspace(0, 10, 11)
    plain = ct.solve(p1, m0, v0, 10.0, ts=ts)
    one = an.solve_schedule(an.Schedule([0.0], [p1]), m0, v0, 10.0, ts=ts)
    np.testing.assert_allclose(one.m, plain.m, atol=1e-13)
    np.testing.assert_allclose(one.loss, plain.loss, atol=1e-13)
    two = an.solve_schedule(an.Schedule([0.0, 4.0], [p2, p1]), m0, v0, 10.0, ts=ts)
    first = ct.solve(p2, m0, v0, 4.0, ts=ts[:5])
    second = ct.solve(p1, first.m[-1], first.v[-1], 10.0, t0=4.0, ts=ts[4:])
    np.testing.assert_allclose(two.m[:4], first.m[:4], atol=1e-13)
    np.testing.assert_allclose(two.m[4:], second.m, atol=1e-13)
    np.testing.assert_allclose(two.loss[4:], second.loss, atol=1e-13)
    assert two.success


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
    return ct.Trajectory(jnp.asarray(t), jnp.zeros((T, 1, 1)), jnp.zeros((T, 1)), jnp.asarray(loss), jnp.asarray(0), jnp.asarray(0), jnp.asarray(1), jnp.asarray(t[-1]), "none", "")


def test_seed_plateau_shadows_symmetric_saddle():
    problem = ct.shape_counting(0.8, (1.0, 1.0), "tanh")
    m0 = jnp.array([[0.3, 0.3], [0.25, 0.25]])
    traj = ct.solve(problem, m0, jnp.array([1e-4, -1e-4]), 150.0, ts=np.linspace(0, 150, 601))
    plats = an.find_plateaus(traj, problem=problem)
    assert plats and plats[0].start == 0.0 and plats[0].saddle is not None
    assert plats[0].saddle.kind == "saddle" and abs(float(jnp.max(jnp.abs(plats[0].saddle.v)))) < 1e-9
