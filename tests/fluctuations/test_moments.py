"""`cnntheory.fluctuations.moments`: the discrete-step map, the continuous limit, relu kinks.

Every prediction is checked against something independent of the theory: gradient descent's
Euler map (`solve(method="euler")`), `simulate(mode="online")`, and an online SGD written here
from the definitions (numpy-sampled images, `jax.grad` of the real CNN's loss; `conftest.py`).
Statistical tolerances: the std of `S` seeds has a relative standard error `1/sqrt(2 S)`, a
mean `std / sqrt(S)`.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnntheory as ct
from cnntheory import fluctuations as fl
from cnntheory import simulate as sim
from cnntheory._problem import flatten_state


def flat_seeds(s):
    """`(S, T, n)` flat states of a `Simulation`."""
    return np.concatenate([np.asarray(s.m).reshape(s.num_seeds, s.t.shape[0], -1), np.asarray(s.v)], axis=2)


# --- the discrete map against gradient descent ---------------------------------------------


def test_noise_free_discrete_mean_is_gradient_descent(random_problem):
    """Without noise (no curvature drift) the discrete mean map is the Euler map itself: round-off."""
    problem, m0, v0 = random_problem(4, P=3, L=2, activation="tanh")
    lr, t1 = 0.1, 2.0
    gd = ct.solve(problem, m0, v0, t1, ts=jnp.array([1.0, t1]), method="euler", dt0=lr)
    mo = fl.moments(problem, m0, v0, t1, lr=lr, batch_size=1, ts=jnp.array([1.0, t1]), noise_drift=False)
    np.testing.assert_allclose(mo.mean_m, gd.m, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mo.mean_v, gd.v, rtol=1e-12, atol=1e-14)
    assert mo.discrete and mo.success


def test_discrete_covariance_is_the_linearised_chain(random_problem):
    """`Sigma_K` equals `sum_k M_{K,k+1} lr^2 D(mu_k) / B M_{K,k+1}^T` with `M` products of `jax.jacfwd` of
    the Euler map (noise drift off, so `mu_k` is gradient descent)."""
    problem, m0, v0 = random_problem(7, P=3, L=2, activation="sigmoid")
    lr, B, K = 0.05, 3, 20  # lr_rho ~ 0.6
    step = lambda y: y + lr * problem.flat_rhs(y)  # noqa: E731
    ys = [flatten_state(m0, v0)]
    for _ in range(K):
        ys.append(step(ys[-1]))
    Sigma = np.zeros((ys[0].shape[0],) * 2)
    for k in range(K):
        A = np.asarray(jax.jacfwd(step)(ys[k]))
        D = np.asarray(fl.gradient_noise(problem, *problem.unflatten(ys[k])))
        Sigma = A @ Sigma @ A.T + lr**2 * D / B
    mo = fl.moments(problem, m0, v0, lr * K, lr=lr, batch_size=B, ts=jnp.array([lr * K]), noise_drift=False)
    np.testing.assert_allclose(mo.cov[-1], Sigma, rtol=1e-10, atol=1e-14 * np.abs(Sigma).max())


def test_continuous_mean_is_the_modified_equation_of_gradient_descent(random_problem):
    """`discrete=False` without noise: the Euler map to O(lr^2) (the modified equation); the flow to O(lr)."""
    problem, m0, v0 = random_problem(4, P=3, L=2, activation="tanh")
    t1 = 2.0
    errs = {}
    for lr in (0.02, 0.01):
        gd = ct.solve(problem, m0, v0, t1, ts=jnp.array([t1]), method="euler", dt0=lr)
        gd = flatten_state(gd.m[-1], gd.v[-1])
        mo = fl.moments(problem, m0, v0, t1, lr=lr, batch_size=1, ts=jnp.array([t1]), noise_drift=False, discrete=False)
        assert not mo.discrete
        flow = jnp.concatenate([mo.flow_m[-1].ravel(), mo.flow_v[-1]])
        errs[lr] = (float(jnp.max(jnp.abs(flow - gd))), float(jnp.max(jnp.abs(mo.mean[-1] - gd))))
    (flow2, mod2), (flow1, mod1) = errs[0.02], errs[0.01]
    assert 1.8 < flow2 / flow1 < 2.2  # first order
    assert 3.5 < mod2 / mod1 < 4.5  # second order: the O(lr) term is exactly -(lr/2) J F
    assert mod2 < 0.05 * flow2


@pytest.mark.parametrize("discrete", [True, False])
def test_covariance_is_linear_in_lr_over_batch(random_problem, discrete):
    problem, m0, v0 = random_problem(4, P=3, L=2, activation="tanh")
    # without the noise-induced drift the mean does not depend on B: Sigma scales exactly as 1/B
    kw = dict(lr=0.01, ts=jnp.array([2.0]), noise_drift=False, discrete=discrete)
    a = fl.moments(problem, m0, v0, 2.0, batch_size=2, **kw)
    b = fl.moments(problem, m0, v0, 2.0, batch_size=8, **kw)
    # the discrete map: round-off; the continuous solve: rtol 1e-8 (atol for entries that cancel)
    np.testing.assert_allclose(a.cov, 4 * b.cov, rtol=1e-6, atol=1e-8 * float(np.abs(a.cov).max()))
    assert np.all(np.linalg.eigvalsh(np.asarray(a.cov[-1])) > -1e-15)  # a covariance


@pytest.fixture(scope="module")
def online_runs(shape_problem, random_problem):
    """256 seeds of online SGD on shape counting (softplus) and a random problem (sigmoid), short runs."""
    runs = []
    for problem, m0, v0, lr, B, t1 in [
        (*shape_problem("softplus"), 0.05, 4, 4.0),
        (*random_problem(5, P=3, L=2, M=2, pooling="mean", activation="sigmoid"), 0.02, 2, 2.0),
    ]:
        steps = int(round(t1 / lr))
        s = sim.simulate(
            problem,
            m0,
            v0,
            mode="online",
            lr=lr,
            steps=steps,
            record_every=steps // 2,
            key=jax.random.key(7),
            num_seeds=256,
            batch_size=B,
            num_test=0,
        )
        runs.append((problem, m0, v0, lr, B, t1, s))
    return runs


@pytest.mark.parametrize("which", [0, 1], ids=["shape_counting", "random"])
def test_moments_predict_online_sgd_mean_and_spread(online_runs, which):
    problem, m0, v0, lr, B, t1, s = online_runs[which]
    pred = fl.moments(problem, m0, v0, t1, lr=lr, batch_size=B, ts=s.t)
    S = s.num_seeds
    y = flat_seeds(s)[:, 1:]
    mean, std = y.mean(axis=0), y.std(axis=0, ddof=1)
    se = std / np.sqrt(S)
    # spread: the std of 256 seeds has a relative SE of 1/sqrt(2 S) = 4.4%; 3.5 SE plus the O(lr)
    # relative error of the linear-noise theory
    ratio = np.asarray(pred.std[1:]) / std
    assert np.all(np.abs(ratio - 1) < 0.2), ratio
    # mean: where the plain flow misses the seed mean by > 5 SE, the corrected mean is within 3 SE
    flow = np.concatenate([np.asarray(pred.flow_m).reshape(pred.t.shape[0], -1), pred.flow_v], axis=1)[1:]
    missed = np.abs(flow - mean) > 5 * se
    assert missed.any()  # the bias is resolved: the test has teeth
    assert np.all(np.abs(np.asarray(pred.mean[1:]) - mean)[missed] < 3 * se[missed])
    # and overall the corrected mean is statistically consistent (max |z| over <= 16 components)
    assert np.max(np.abs(np.asarray(pred.mean[1:]) - mean) / se) < 4


@pytest.fixture(scope="module")
def stiff_runs(stiff_problem, independent_sgd):
    """400 seeds of the independent SGD on the stiff problem at lr = 0.2 (B = 4) and 0.1 (B = 1), t = 1, 2, 3."""
    problem, m0, v0 = stiff_problem()
    runs = {}
    for lr, B in [(0.2, 4), (0.1, 1)]:
        steps = int(round(3.0 / lr))
        y = independent_sgd(
            problem, m0, v0, lr=lr, batch_size=B, steps=steps, record_every=steps // 3, num_seeds=400, seed=11
        )
        runs[lr, B] = (problem, m0, v0, y)
    return runs


@pytest.mark.parametrize("lr,B", [(0.2, 4), (0.1, 1)])
def test_discrete_map_predicts_stiff_sgd_where_the_continuous_mean_misses(stiff_runs, lr, B):
    problem, m0, v0, y = stiff_runs[lr, B]
    S = y.shape[0]
    mean, std = y.mean(0), y.std(0, ddof=1)
    se = std / np.sqrt(S)
    ts = jnp.array([1.0, 2.0, 3.0])
    pred = fl.moments(problem, m0, v0, 3.0, lr=lr, batch_size=B, ts=ts)
    assert pred.validity.valid.all()
    # spread: 400 seeds have a 3.5% relative SE; 4 SE plus the dropped O(Sigma^(3/2)) terms
    ratio = np.asarray(pred.std) / std
    assert np.all(np.abs(ratio - 1) < 0.15), ratio
    # mean: max |z| over 45 component-times of a consistent prediction stays below ~3.5
    z = np.abs(np.asarray(pred.mean) - mean) / se
    assert z.max() < 4, z.max()
    # the continuous equations at the same lr: their O(lr^2) mean error shows (teeth) at lr = 0.2
    if lr == 0.2:
        cont = fl.moments(problem, m0, v0, 3.0, lr=lr, batch_size=B, ts=ts, discrete=False)
        assert (np.abs(np.asarray(cont.mean) - mean) / se).max() > 6


def test_validity_indicators_match_finite_differences(stiff_problem):
    problem, m0, v0 = stiff_problem()
    lr = 0.2
    pred = fl.moments(problem, m0, v0, 1.0, lr=lr, batch_size=4, ts=jnp.array([0.4, 1.0]))
    mu, Sigma = np.asarray(pred.mean[-1]), np.asarray(pred.cov[-1])
    F = lambda y: np.asarray(problem.flat_rhs(jnp.asarray(y)))  # noqa: E731
    n, eps = mu.shape[0], 1e-4
    E = np.eye(n) * eps
    J = np.stack([(F(mu + E[j]) - F(mu - E[j])) / (2 * eps) for j in range(n)], axis=1)
    H = np.stack(  # H_ijk = d^2 F_i / dy_j dy_k by central differences of F
        [
            np.stack(
                [
                    (F(mu + E[j] + E[k]) - F(mu + E[j] - E[k]) - F(mu - E[j] + E[k]) + F(mu - E[j] - E[k]))
                    / (4 * eps**2)
                    for k in range(n)
                ],
                -1,
            )
            for j in range(n)
        ],
        axis=1,
    )
    lr_rho = lr * np.abs(np.linalg.eigvals(J)).max()
    curvature = np.sqrt(np.einsum("ijk,ijl,kl->", H, H, Sigma)) / np.linalg.norm(J)
    # central differences: O(eps^2) ~ 1e-8 truncation, round-off 1e-16 / eps^2 ~ 1e-8 in H
    np.testing.assert_allclose(float(pred.validity.lr_rho[-1]), lr_rho, rtol=1e-6)
    np.testing.assert_allclose(float(pred.validity.curvature[-1]), curvature, rtol=1e-4)
    assert float(pred.validity.kink_proximity[-1]) == 0.0  # a smooth student has no kink


def test_large_steps_and_plateaus_are_flagged(stiff_problem, shape_problem):
    problem, m0, v0 = stiff_problem()
    with pytest.warns(fl.ValidityWarning, match="lr_rho"):
        pred = fl.moments(problem, m0, v0, 2.4, lr=0.6, batch_size=4, ts=jnp.array([1.2, 2.4]))
    assert not pred.validity.valid.all() and pred.success  # a prediction, flagged where it is not valid
    # a large lr / B: the spread is no longer small against the scale on which the flow bends
    problem, m0, v0 = shape_problem("tanh")
    with pytest.warns(fl.ValidityWarning, match="curvature"):
        pred = fl.moments(problem, m0, v0, 2.0, lr=0.4, batch_size=1, ts=jnp.array([1.2, 2.0]))
    assert float(pred.validity.curvature[-1]) > fl.THRESHOLDS["curvature"]


def test_relu_crossing_is_carried_by_the_saltation_matrix(stiff_problem):
    """A relu student whose mean crosses m[2, 3] = 0 transversally near t = 1.15 (and m[1, 0] near 0.2):
    once the band has passed the kink the prediction matches 512 seeds; while it straddles, it is flagged."""
    problem, m0, v0 = stiff_problem("relu", seed=6)
    lr, B, t1 = 0.05, 4, 3.0
    s = sim.simulate(
        problem,
        m0,
        v0,
        mode="online",
        lr=lr,
        steps=60,
        record_every=4,
        key=jax.random.key(2),
        num_seeds=512,
        batch_size=B,
        num_test=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = fl.moments(problem, m0, v0, t1, lr=lr, batch_size=B, ts=s.t)
    assert pred.success
    assert any(issubclass(w.category, fl.ValidityWarning) and "kink_proximity" in str(w.message) for w in caught)
    y = flat_seeds(s)[:, 1:]
    mean, std = y.mean(0), y.std(0, ddof=1)
    valid = pred.validity.valid[1:]
    assert 8 <= valid.sum() < valid.size  # the crossings are flagged, the rest is predicted
    ratio = (np.asarray(pred.std)[1:] / std)[valid]
    z = (np.abs(np.asarray(pred.mean)[1:] - mean) / (std / np.sqrt(512)))[valid]
    # 512 seeds: 3.1% relative SE of a std; 4 SE plus the first-order saltation
    assert np.all(np.abs(ratio - 1) < 0.15), ratio
    assert z.max() < 4, z.max()


def test_relu_sliding_stops_with_the_time_and_the_entry(shape_problem):
    """Shape counting's m[1, 0] reaches its sliding surface near t = 25: no theory there, a failure that says so
    (when the predicted 3-sigma band reaches the surface, before the mean does)."""
    problem, m0, v0 = shape_problem("relu", v=0.01)
    failed = fl.moments(problem, m0, v0, 40.0, lr=0.05, batch_size=4, ts=jnp.array([10.0, 20.0, 40.0]), throw=False)
    assert int(failed.status) == ct.Status.FAILED and not failed.success
    assert "m[1, 0]" in failed.message and "sliding or repulsive" in failed.message
    t_stop = float(failed.message.split("stopped at t=")[1].split(" ")[0])
    assert 10 < t_stop < 25
    assert np.isfinite(failed.mean[0]).all() and np.isnan(failed.mean[-1]).all()  # records after it are NaN
    with pytest.raises(ct.SolverError, match=r"m\[1, 0\]"):
        fl.moments(problem, m0, v0, 40.0, lr=0.05, batch_size=4, ts=jnp.array([10.0, 20.0, 40.0]))
    with pytest.raises(ValueError, match="smooth student activation"):
        fl.moments(problem, m0, v0, 40.0, lr=0.05, batch_size=4, discrete=False)


def test_bad_input_raises(shape_problem):
    problem, m0, v0 = shape_problem()
    with pytest.raises(ValueError, match="batch_size"):
        fl.moments(problem, m0, v0, 1.0, lr=0.1, batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        fl.moments(problem, m0, v0, 1.0, lr=-1.0, batch_size=1)
    with pytest.raises(ValueError, match="m must have shape"):
        fl.gradient_noise(problem, m0[:, :1], v0)
    with pytest.raises(ValueError, match="order"):
        fl.count_moment_tensor(problem.mixture, 5)
    with pytest.raises(ValueError, match="num_train"):
        fl.training_set_spread(problem, m0, v0, 1.0, num_train=0)
    with pytest.raises(ValueError, match=r"ts\[1\] = 0.55 is not a whole number of steps lr = 0.1"):
        fl.moments(problem, m0, v0, 1.0, lr=0.1, batch_size=1, ts=jnp.array([0.5, 0.55]))
    with pytest.raises(ValueError, match="t1 - t0 = 1.05 is not a whole number of steps"):
        fl.moments(problem, m0, v0, 1.05, lr=0.1, batch_size=1)
    fl.moments(problem, m0, v0, 1.05, lr=0.1, batch_size=1, discrete=False)  # the continuous limit has no grid
    with pytest.raises(ValueError, match="dt is the Euler-Maruyama step"):
        fl.sample_paths(problem, m0, v0, 1.0, lr=0.1, batch_size=1, key=jax.random.key(0), dt=0.01)


def test_failed_moment_solve_reports_its_status(shape_problem):
    problem, m0, v0 = shape_problem()
    with pytest.raises(ct.SolverError, match="max_steps=3 reached"):
        fl.moments(problem, m0, v0, 1.0, lr=0.1, batch_size=4, max_steps=3)
    failed = fl.moments(problem, m0, v0, 1.0, lr=0.1, batch_size=4, max_steps=3, throw=False)
    assert int(failed.status) == ct.Status.MAX_STEPS and not failed.success
    with pytest.raises(ct.SolverError, match="max_steps=3 reached"):
        failed.raise_for_status()


# --- where users see it --------------------------------------------------------------------


def test_public_module_and_cli_band(tmp_path, capsys):
    from cnntheory._cli import main

    assert ct.fluctuations is fl
    out = tmp_path / "sim"
    code = main(
        [
            "simulate",
            "--mode",
            "online",
            "--activation",
            "tanh",
            "--band",
            "--t1",
            "1",
            "--lr",
            "0.05",
            "--batch",
            "4",
            "--seeds",
            "4",
            "--n-test",
            "8",
            "--eps",
            "0.3",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    data = np.load(out / "simulate_online.npz")
    # the band saved is the theory of the same run (independent call)
    problem = ct.shape_counting(0.8, (1.0, 1.0), "tanh", 4, "mean")
    ref = fl.moments(
        problem, jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.3, -0.3]), 1.0, lr=0.05, batch_size=4, ts=data["t"]
    )
    np.testing.assert_allclose(data["band_std_v"], ref.std_v, rtol=1e-10)
    assert (out / "simulate_online.png").exists()
    assert main(["simulate", "--mode", "fullbatch", "--band", "--activation", "tanh"]) == 2
    assert "--band predicts the spread of online SGD" in capsys.readouterr().err
    assert main(["simulate", "--band"]) == 2  # relu (the default) has no second derivative
    assert "smooth --activation" in capsys.readouterr().err
