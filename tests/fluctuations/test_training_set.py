"""`cnntheory.fluctuations.response` and `training_set_spread` against finite differences and sampled training sets."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import cnntheory as ct
from cnntheory import fluctuations as fl
from cnntheory import simulate as sim


def test_response_matches_finite_differences(random_problem):
    problem, m0, v0 = random_problem(6, P=3, L=2, activation="softplus")
    ts = jnp.array([1.0, 3.0])
    _, S = fl.response(problem, m0, v0, 3.0, ts=ts)
    dC = np.random.default_rng(0).standard_normal((3, 3))
    dC = 1e-5 * (dC + dC.T) * np.asarray(problem.moments).max()
    run = lambda C: ct.solve(problem.with_moments(C), m0, v0, 3.0, ts=ts, rtol=1e-12, atol=1e-14)
    up, down = run(problem.moments + dC), run(problem.moments - dC)
    fd = (jnp.concatenate([up.m.reshape(2, -1), up.v], 1) - jnp.concatenate([down.m.reshape(2, -1), down.v], 1)) / 2
    # central differences: O(|dC|^2) truncation, 1e-12 solver tolerance
    np.testing.assert_allclose(S @ dC.ravel(), fd, rtol=1e-5, atol=1e-10)


def test_training_set_spread_matches_many_training_sets(random_problem):
    problem, m0, v0 = random_problem(8, P=3, L=2, M=3, pooling="mean", activation="softplus")
    n_train, sets, t1 = 256, 400, 3.0
    ts = jnp.array([1.0, 3.0])
    _, counts = problem.mixture.sample_counts(jax.random.key(3), n_train * sets)
    C_hat = jax.vmap(lambda c: sim.empirical_moments(problem, c))(counts.reshape(sets, n_train, -1))
    # the stacked problem: every leaf broadcast over the sets, then each set's C_hat (400 constructors are slow)
    batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (sets,) + x.shape), problem)
    batch = eqx.tree_at(lambda p: p.moments, batch, C_hat)
    traj = ct.solve_batch(
        batch,
        jnp.broadcast_to(m0, (sets,) + m0.shape),
        jnp.broadcast_to(v0, (sets,) + v0.shape),
        t1,
        ts=ts,
        batch_problem=True,
    )
    y = np.concatenate([np.asarray(traj.m).reshape(sets, 2, -1), np.asarray(traj.v)], axis=2)
    pred = fl.training_set_spread(problem, m0, v0, t1, num_train=n_train, ts=ts)
    # 400 sets: the std has relative SE 3.5%; 4 SE plus the O(1/sqrt(n_train)) nonlinearity
    np.testing.assert_allclose(np.asarray(pred.std), y.std(axis=0, ddof=1), rtol=0.15)
    # C_hat itself: its covariance is Cov(vec n n^T) / n_train (3.5% SE on the diagonal)
    emp = np.cov(np.asarray(C_hat).reshape(sets, -1).T)
    theory = np.asarray(fl.moment_covariance(problem)) / n_train
    np.testing.assert_allclose(np.diag(emp), np.diag(theory), rtol=0.2)


def test_discrete_response_is_the_derivative_of_gradient_descent(random_problem):
    """At a finite step the response is the exact derivative of the Euler map in C: central differences."""
    problem, m0, v0 = random_problem(6, P=3, L=2, activation="softplus")
    lr, ts = 0.02, jnp.array([1.0, 3.0])  # lr_rho ~ 0.45: below the stability edge
    y, S = fl.response(problem, m0, v0, 3.0, ts=ts, lr=lr)
    gd = lambda C: ct.solve(problem.with_moments(C), m0, v0, 3.0, ts=ts, method="euler", dt0=lr)  # noqa: E731
    base = gd(problem.moments)
    np.testing.assert_allclose(y, jnp.concatenate([base.m.reshape(2, -1), base.v], 1), rtol=1e-12, atol=1e-14)
    dC = np.random.default_rng(1).standard_normal((3, 3))
    dC = 1e-5 * (dC + dC.T) * np.asarray(problem.moments).max()
    up, down = gd(problem.moments + dC), gd(problem.moments - dC)
    fd = (jnp.concatenate([up.m.reshape(2, -1), up.v], 1) - jnp.concatenate([down.m.reshape(2, -1), down.v], 1)) / 2
    # a finite map, no solver tolerance: agreement to 1e-6 of the largest entry (measured 1e-7)
    np.testing.assert_allclose(S @ dC.ravel(), fd, rtol=0, atol=1e-6 * float(np.abs(fd).max()))
    # the discrete spread differs from the lr -> 0 one by O(lr)
    a = fl.training_set_spread(problem, m0, v0, 3.0, num_train=64, ts=ts, lr=lr)
    b = fl.training_set_spread(problem, m0, v0, 3.0, num_train=64, ts=ts)
    assert a.discrete and not b.discrete
    assert 1e-3 < float(jnp.max(jnp.abs(a.std / b.std - 1))) < 0.5
