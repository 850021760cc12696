"""Fixed points: the root finder against hand solutions and finite differences, relu points as
Filippov equilibria, and asymptotic (saturated) states told apart from true fixed points.

A sigmoid student on shape counting with alpha = (2, 1) has states where one unit's
`|m_lp| ~ 20`: `sigma' ~ 1e-9` hides a non-zero force `v_l r_p`, so the flow passes the root
test there without balancing. The classification is checked against the flow itself
(`problem.rhs` with the saturation factor undone), and true fixed points with saturated
entries (zero force) are kept as fixed points.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnntheory as ct
from cnntheory import analysis as an
from cnntheory._data import PatchMixture, shape_atoms


@pytest.fixture(scope="module")
def sigmoid_points():
    problem = ct.shape_counting(0.8, (2.0, 1.0), "sigmoid")
    return problem, an.find_fixed_points(problem, 2, num_starts=256, key=jax.random.PRNGKey(0))


@pytest.mark.slow
def test_sigmoid_saturated_states_are_counted_apart(sigmoid_points):
    problem, points = sigmoid_points
    # The CLI's default search (`cnntheory fixed-points --activation sigmoid`, alpha = (2, 1)):
    # 237 roots pass max |F| < 1e-10, of which 232 sit at |m| ~ 20.
    assert an.count_kinds(points) == {"fixed": 5, "asymptotic": 232}
    first_asymptotic = [p.asymptotic for p in points].index(True)
    assert not any(p.asymptotic for p in points[:first_asymptotic]) and all(
        p.asymptotic for p in points[first_asymptotic:]
    )
    for p in points:
        m = np.asarray(p.m)
        if p.asymptotic:
            assert np.abs(m).max() > 15 and bool(np.any(p.saturated))
            # Independent of the criterion's formula: the flow itself (`problem.rhs`) at the state
            # is tiny only by the factor sigma'(m) / max sigma' of the saturated unit; undo that
            # factor and the velocity is far from zero (~1e-2 here, tolerance 1e-10).
            dm, _ = problem.rhs(p.m, p.v)
            units = np.asarray(p.saturated).all(axis=1)
            shrink = np.asarray(problem.sigma.derivative(p.m)).max(axis=1) / 0.25  # sigmoid' peaks at 1/4
            assert units.any() and np.max(np.abs(np.asarray(dm))[units] / shrink[units, None]) > 1e-4
            assert float(jnp.max(jnp.abs(dm))) < 1e-10  # and yet it passed the root test
        else:
            assert np.abs(m).max() < 5 and not np.any(p.saturated)
    families = an.fixed_point_families(points)
    assert sum(n for rep, n in families if rep.asymptotic) == 232
    table = an.fixed_point_table([rep for rep, _ in families])
    assert "asympt." in table


@pytest.mark.slow
def test_true_fixed_point_with_a_saturated_entry_stays_a_fixed_point():
    # Zero loss with a saturated teacher entry: r = 0, so the saturated entry carries no force;
    # its residual stays zero whatever sigma' is there.
    mixture = PatchMixture(shape_atoms(3, 0.5), (2.0, 1.0), None, "mean")
    m_star, v_star = jnp.array([[25.0, 0.3], [0.1, -0.4]]), jnp.array([1.0, -0.7])
    problem = ct.TeacherStudent(
        mixture, v_star, m_star, teacher_activation="sigmoid", student_activation="sigmoid", kernel_lr_multiplier=9.0
    )
    (point,) = an.find_fixed_points(problem, 2, starts=(m_star[None], v_star[None]))
    assert point.loss < 1e-28
    assert np.array_equal(np.asarray(point.saturated), [[True, False], [False, False]])
    assert not point.asymptotic and an.count_kinds([point]) == {"fixed": 1, "asymptotic": 0}


@pytest.mark.slow
def test_relu_unchanged_and_tanh_saturates_only_far_out():
    # relu: sigma' = 0 on m < 0 is exact, dead units are true equilibria; nothing is asymptotic.
    relu = ct.shape_counting(0.8, (2.0, 1.0), "relu")
    points = an.find_fixed_points(relu, 2, num_starts=64, key=jax.random.PRNGKey(0))
    assert points and an.count_kinds(points)["asymptotic"] == 0
    assert not any(bool(np.any(p.saturated)) for p in points)
    # tanh: with alpha = (1, 1) every root is a true fixed point; with alpha = (2, 1) the search
    # also lands on states with one unit at |m| ~ 12.7 (tanh' ~ 1e-10): asymptotic, as for sigmoid.
    for alpha in ((1.0, 1.0), (2.0, 1.0)):
        tanh = ct.shape_counting(0.8, alpha, "tanh")
        points = an.find_fixed_points(tanh, 2, num_starts=64, key=jax.random.PRNGKey(0))
        for p in points:
            assert p.asymptotic == bool(np.abs(np.asarray(p.m)).max() > 10)
        if alpha == (1.0, 1.0):
            assert an.count_kinds(points) == {"fixed": 64, "asymptotic": 0}


def _linear_problem():
    """P = 2 shapes, linear teacher and student: b = v* m* solvable by hand."""
    mix = PatchMixture(shape_atoms(3, 0.5), (2.0, 1.0), None, "mean")
    return ct.TeacherStudent(
        mix, [1.0, -0.5], teacher_activation="linear", student_activation="linear", kernel_lr_multiplier=9.0
    )


@pytest.mark.slow
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


@pytest.mark.slow
def test_flow_jacobian_matches_finite_differences():
    problem = ct.shape_counting(0.8, (2.0, 1.0), "tanh")
    m, v = jnp.array([[0.3, -0.2], [0.1, 0.5]]), jnp.array([0.7, -0.4])
    J = np.asarray(an.flow_jacobian(problem, m, v))
    y = np.concatenate([np.ravel(m), v])
    h = 1e-6
    F = lambda y: np.concatenate(
        [np.ravel(a) for a in problem.rhs(jnp.asarray(y[:4]).reshape(2, 2), jnp.asarray(y[4:]))]
    )
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
