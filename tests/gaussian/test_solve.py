"""`solve` (`cnntheory.gaussian._solve`): the trajectory's conventions (shapes, the saved error is
the problem's error of the saved state, statuses and `raise_for_status`, argument checks; a too large lr ends DIVERGED; unrealisable
overlaps are a ValueError before any step, checked against principal minors). Its
accuracy is held elsewhere: online SGD at finite D follows it (test_simulate.py), and the
soft-committee-machine literature's plateaus and asymptotic errors come out of it
(test_literature.py)."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_gaussian import Q0, R0, V0

import cnntheory.gaussian._solve as gaussian_solve_module
from cnntheory import SolverError, Status
from cnntheory.gaussian import kernels_from_overlaps, simulate, solve
from cnntheory.gaussian._problem import require_realisable
from cnntheory.gaussian._solve import norm_bound


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_learning_rate_above_the_stable_one_diverges(problem):
    """lr = 50: the student norms run away (past 100x the scale within t = 6); the solve ends
    DIVERGED there, not at max_steps after grinding the stiffening flow, and says to reduce lr."""
    # The fixture's problem at lr = 50: the same structure and save count as test_solve_conventions,
    # so the compiled solve is reused.
    p = eqx.tree_at(lambda q: q.lr, problem, jnp.asarray(50.0))
    tr = solve(p, Q0, R0, V0, 6.0, num_saves=5, throw=False)
    assert tr.status == Status.DIVERGED and "reduce lr" in tr.message and not tr.success
    # t_end is the first save past the bound; the saves before it are the flow, those after unreached.
    j = int(np.flatnonzero(np.asarray(tr.t) == float(tr.t_end))[0])
    assert 0 < j < 4
    Qd = np.diagonal(np.asarray(tr.Q), axis1=-2, axis2=-1)
    assert np.all(Qd[:j] < float(norm_bound(p, Q0, V0))) and np.all(np.isinf(Qd[j:]))
    assert np.isinf(np.asarray(tr.error[j:])).all() and np.isfinite(np.asarray(tr.error[:j])).all()
    # Before the runaway the solve is the plain flow (the same run with t1 inside it).
    early = solve(p, Q0, R0, V0, float(tr.t[j - 1]), num_saves=5)
    np.testing.assert_allclose(np.asarray(early.Q[-1]), np.asarray(tr.Q[j - 1]), rtol=1e-5)
    with pytest.raises(SolverError, match="diverged"):
        solve(p, Q0, R0, V0, 6.0, num_saves=5)


UNREALISABLE = [
    (np.array([[0.5, 0.6], [0.6, 0.4]]), R0, "Q0 is not positive semi-definite"),
    (np.array([[-0.1, 0.0], [0.0, 0.4]]), R0, "negative diagonal"),
    (Q0, np.array([[0.8, 0.0], [0.1, 0.3]]), "Cauchy-Schwarz"),
    # Each |R_ln| <= sqrt(Q_ll T_nn), Q0 PSD, yet no kernels: 0.6^2 + 0.4^2 > Q0_00.
    (Q0, np.array([[0.6, 0.4], [0.1, 0.3]]), "not the overlaps of real kernels"),
    (np.array([[0.5, 0.1], [0.2, 0.4]]), R0, "symmetric"),
]


@pytest.mark.parametrize(("Q", "R", "match"), UNREALISABLE)
def test_unrealisable_overlaps_are_refused_before_any_step(problem, monkeypatch, Q, R, match):
    def no_step(*args, **kwargs):
        raise AssertionError("the flow was integrated")

    monkeypatch.setattr(gaussian_solve_module, "_solve", no_step)
    with pytest.raises(ValueError, match=match):
        solve(problem, Q, R, V0, 2.0)
    with pytest.raises(ValueError, match=match):
        simulate(problem, Q, R, V0, dim=8, t1=1.0)


def _principal_minors_nonnegative(C, tol):
    """Independent of the package's test: a symmetric matrix is PSD iff every principal minor is >= 0."""
    n = C.shape[0]
    return all(
        np.linalg.det(C[np.ix_(idx, idx)]) >= -tol
        for k in range(1, n + 1)
        for idx in itertools.combinations(range(n), k)
    )


@pytest.mark.slow
def test_realisability_check_against_principal_minors():
    rng = np.random.default_rng(0)
    T = np.array([[1.0, 0.3], [0.3, 0.8]])
    checked = {True: 0, False: 0}
    for _ in range(300):
        Q = rng.normal(size=(2, 2)) * 0.5
        Q = Q @ Q.T + rng.uniform(-0.3, 0.3) * np.eye(2)
        R = rng.normal(size=(2, 2)) * 0.35
        C = np.block([[Q, R], [R.T, T]])
        if abs(np.linalg.eigvalsh(C).min()) < 1e-3:
            continue  # too close to the boundary to call either way at round-off
        realisable = _principal_minors_nonnegative(C, 0.0)
        if realisable:
            require_realisable(T, Q, R)  # accepted, and real kernels reproduce the overlaps
            Kstar, K = kernels_from_overlaps(jnp.asarray(T), jnp.asarray(Q), jnp.asarray(R), 6, jax.random.PRNGKey(0))
            np.testing.assert_allclose(np.asarray(K @ Kstar.T / 6), R, atol=1e-12)
            np.testing.assert_allclose(np.asarray(K @ K.T / 6), Q, atol=1e-12)
        else:
            with pytest.raises(ValueError, match="Q0"):
                require_realisable(T, Q, R)
        checked[realisable] += 1
    assert min(checked.values()) > 30  # both sides well sampled


def test_solves_bit_identical_to_recorded():
    # sha256 (16 hex digits) of the float64 bytes of three solves, recorded at commit 240a749
    # (before the core refactor of issue 19): the solve path may be restructured, not its numbers.
    import hashlib

    from cnntheory.gaussian import GaussianTeacherStudent

    problem = GaussianTeacherStudent(1, np.ones(2), np.eye(2), lr=0.5)
    got = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        W = rng.normal(size=(3, 5)) / np.sqrt(5)
        tr = solve(problem, W @ W.T, 0.1 * rng.normal(size=(3, 2)), np.ones(3), 20.0, num_saves=5, throw=False)
        d = hashlib.sha256()
        for a in (tr.Q, tr.R, tr.v, tr.error, tr.t_end, tr.num_steps, tr.status):
            d.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
        got.append(d.hexdigest()[:16])
    assert got == ["1aaa4768a5c3cf48", "30eca50bea7f3d3c", "1b8775779661bce0"]
