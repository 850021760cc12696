"""`simulate` and its pieces (`cnntheory.gaussian._simulate`) against independent references:
`kernels_from_overlaps` reproduces the overlaps it is given exactly; online SGD at finite D
follows the ODE of `solve` to within its O(D^{-1/2}) fluctuations; one fullbatch step is a
`jax.grad` step of the network's loss, and fullbatch runs approach the population gradient
flow as `n_train` grows; argument checks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_checks import raises_unchecked
from helpers_gaussian import Q0, R0, V0

from cnntheory import Status
from cnntheory.gaussian import GaussianTeacherStudent, gaussian_network, kernels_from_overlaps, simulate, solve
from cnntheory.gaussian._simulate import fullbatch_step, teacher_labels


@pytest.mark.slow
def test_kernels_from_overlaps_are_exact():
    T = np.array([[1.0, 0.3], [0.3, 0.8]])
    Kstar, K = kernels_from_overlaps(jnp.asarray(T), jnp.asarray(Q0), jnp.asarray(R0), 50, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(Kstar @ Kstar.T / 50), T, atol=1e-12)
    np.testing.assert_allclose(np.asarray(K @ K.T / 50), Q0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(K @ Kstar.T / 50), R0, atol=1e-12)
    with pytest.raises(ValueError, match="positive semi-definite"):
        kernels_from_overlaps(jnp.asarray(T), jnp.asarray(0.01 * Q0), jnp.asarray(R0), 50, jax.random.PRNGKey(0))


@pytest.mark.slow
def test_online_simulation_follows_the_ode(problem):
    t1, D = 2.0, 1000
    sim = simulate(problem, Q0, R0, V0, dim=D, t1=t1, num_records=4, num_seeds=3, key=jax.random.PRNGKey(1))
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


@pytest.mark.slow
@pytest.mark.parametrize("act,pooling", [("scaled_erf", "sum"), ("relu", "mean")])
def test_one_step_is_a_jax_grad_step(act, pooling):
    p = GaussianTeacherStudent(
        3,
        [1.0, 0.6],
        np.eye(2),
        teacher_activation=act,
        student_activation=act,
        lr=0.7,
        noise_std=0.3,
        train_head=True,
        pooling=pooling,
    )
    D, P = 20, 7
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    Kstar, K = kernels_from_overlaps(p.teacher_overlaps, jnp.asarray(Q0), jnp.asarray(R0), D, k1)
    v = jnp.asarray([0.5, -0.4])
    X = jax.random.normal(k2, (P, 3, D))
    y = teacher_labels(p, Kstar, X, k3)

    def loss(K, v):
        f = jax.vmap(lambda x: gaussian_network(K, v, x, act, p.pool_constant))(X)
        return 0.5 * jnp.mean((f - y) ** 2)

    gK, gv = jax.grad(loss, argnums=(0, 1))(K, v)
    K1, v1, l0 = fullbatch_step(p, K, v, X, y)
    # Same arithmetic up to summation order: round-off 1e-15 on O(1) entries.
    np.testing.assert_allclose(np.asarray(K1), np.asarray(K - p.lr * gK), rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.asarray(v1), np.asarray(v - p.lr / D * gv), rtol=0, atol=1e-13)
    assert float(l0) == pytest.approx(float(loss(K, v)), rel=1e-13)
    # The labels are the teacher's network plus the noise.
    clean = jax.vmap(lambda x: gaussian_network(Kstar, p.teacher_head, x, act, p.pool_constant))(X)
    resid = np.asarray(y - clean)
    assert 0 < np.std(resid) < 1.0


@pytest.fixture(scope="module")
def runs():
    """Fullbatch runs at n_train = 200, 800, 3200 (D = 50, 4 seeds), and the population gradient flow."""
    p = GaussianTeacherStudent(2, [1.0, 1.0], np.eye(2), lr=0.5)
    t1, D = 2.0, 50
    v0 = np.array([1.0, 1.0])
    sims = {
        n: simulate(
            p,
            Q0,
            R0,
            v0,
            dim=D,
            t1=t1,
            num_records=4,
            num_seeds=4,
            key=jax.random.PRNGKey(n),
            mode="fullbatch",
            num_train=n,
        )
        for n in (200, 800, 3200)
    }
    # Gradient flow = the ODE's first-order part: scale lr by s and time by 1/s; the eta^2
    # terms are then a relative 1e-6, far below the tolerances below.
    s = 1e-6
    flow = solve(eqx.tree_at(lambda q: q.lr, p, p.lr * s), Q0, R0, v0, t1 / s, ts=sims[200].t / s)
    return p, sims, flow


@pytest.mark.slow
def test_fullbatch_conventions(runs):
    p, sims, flow = runs
    sim = sims[800]
    assert sim.mode == "fullbatch" and sim.num_train == 800 and sim.status.tolist() == [0] * 4
    assert sim.Q.shape == (4, 5, 2, 2) and sim.train_loss.shape == (4, 5)
    np.testing.assert_allclose(np.asarray(sim.Q[:, 0]), np.broadcast_to(Q0, (4, 2, 2)), atol=1e-12)
    assert np.all(np.isfinite(np.asarray(sim.train_loss)))
    # Over-fitting: at the end the training loss is below the population error (every seed).
    assert np.all(np.asarray(sim.train_loss[:, -1]) < np.asarray(sim.error[:, -1]))
    # The error recorded is the exact population error of the measured state.
    assert float(sim.error[0, -1]) == pytest.approx(float(p.error(sim.Q[0, -1], sim.R[0, -1], sim.v[0, -1])), rel=1e-12)


@pytest.mark.slow
def test_fullbatch_approaches_the_population_flow(runs):
    p, sims, flow = runs
    devs = {}
    for n, sim in sims.items():
        y_sim = np.concatenate([np.asarray(sim.Q).reshape(4, 5, -1), np.asarray(sim.R).reshape(4, 5, -1)], -1)[:, 1:]
        y_ode = np.concatenate([np.asarray(flow.Q).reshape(5, -1), np.asarray(flow.R).reshape(5, -1)], -1)[1:]
        devs[n] = float(np.sqrt(np.mean((y_sim - y_ode) ** 2)))
    # The flow moves the overlaps by O(0.5); the deviation must shrink at least like
    # n^{-1/2} (measured at D = 100 with 4 seeds: 0.023, 0.0068, 0.0045, 0.0019 at n = 250
    # ... 16000, slope ~ -0.6). Each factor 4 in n must cut it by > 4^{0.5} / 1.25 = 1.6
    # (the slack 1.25 covers the seed noise of an RMS over 4 seeds x 4 records x 8 entries).
    # Here (D = 50): 0.033, 0.013, 0.0032, slope -0.83.
    assert devs[200] / devs[800] > 1.6 and devs[800] / devs[3200] > 1.6, devs
    slope = np.polyfit(np.log(list(devs)), np.log(list(devs.values())), 1)[0]
    assert slope < -0.5, devs
    assert devs[3200] < 0.02


def test_fullbatch_bad_arguments():
    p = GaussianTeacherStudent(1, [1.0], np.eye(1))
    for bad in (None, 0, -5, 2.5, True):
        with raises_unchecked(ValueError, match="num_train"):
            simulate(p, np.eye(1), np.zeros((1, 1)), np.ones(1), dim=10, t1=0.1, mode="fullbatch", num_train=bad)
    with pytest.raises(ValueError, match="num_train"):
        simulate(p, np.eye(1), np.zeros((1, 1)), np.ones(1), dim=10, t1=0.1, mode="online", num_train=100)
    with pytest.raises(ValueError, match="mode"):
        simulate(p, np.eye(1), np.zeros((1, 1)), np.ones(1), dim=10, t1=0.1, mode="batch")


@pytest.mark.slow
def test_a_diverging_simulation_reports_diverged():
    """Linear units at a huge lr: the online run's error overflows; its status is DIVERGED (3),
    not MAX_STEPS (1), and the population mode carries the solve's status."""
    p = GaussianTeacherStudent(1, [1.0], [[1.0]], teacher_activation="linear", student_activation="linear", lr=50.0)
    Q, R, v = np.array([[0.5]]), np.array([[0.2]]), np.array([1.0])
    sim = simulate(p, Q, R, v, dim=8, t1=20.0, num_records=2, num_seeds=2)
    assert sim.status.tolist() == [Status.DIVERGED] * 2 and "2 of 2 runs diverged" in sim.message
    ok = simulate(
        p.__class__(1, [1.0], [[1.0]], teacher_activation="linear", student_activation="linear", lr=0.1),
        Q,
        R,
        v,
        dim=8,
        t1=0.5,
        num_records=2,
    )
    assert ok.status.tolist() == [Status.SUCCESS]
    pop = simulate(
        ok_problem := GaussianTeacherStudent(1, [1.0], [[1.0]], lr=0.1), Q, R, v, dim=8, t1=0.5, mode="population"
    )
    assert pop.status.tolist() == [int(solve(ok_problem, Q, R, v, 0.5).status)]
