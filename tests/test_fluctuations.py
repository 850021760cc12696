"""`cnntheory.fluctuations`: gradient noise, moment equations, SDE paths, training-set spread.

Every formula is checked against something independent: count moments against exact
enumeration of Dirichlet-multinomial compositions; the gradient noise `D` against exact
enumeration of all patch configurations through a real strided convolution (jax.grad of
each image's loss), and against Monte Carlo through the package's sampler; the moment
equations against `simulate(mode="online")` and the SDE sampler; the training-set spread
against full-batch ODEs on sampled training sets.
"""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_bruteforce import cnn_output, enumerate_images
from scipy.special import gammaln

import cnntheory as ct
from cnntheory import fluctuations as fl
from cnntheory import simulate as sim
from cnntheory._problem import flatten_state


def random_problem(seed, P=3, L=2, M=2, pooling="sum", activation="softplus", k=3):
    """A random Gram matrix, teacher head and tanh teacher (so the labels are generic)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, P + 2))
    gram = X @ X.T / (P + 2)
    gram = gram / np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    mixture = ct.PatchMixture(ct.atoms_from_gram(gram, k, key=seed), rng.uniform(0.5, 2.0, P), M, pooling)
    problem = ct.TeacherStudent(
        mixture,
        rng.standard_normal(P),
        teacher_activation="tanh",
        student_activation=activation,
        lr_kernel=float(k * k),
        lr_head=1.0,
    )
    m0 = 0.5 * rng.standard_normal((L, P))
    v0 = 0.5 * rng.standard_normal(L)
    return problem, jnp.asarray(m0), jnp.asarray(v0)


def per_image_steps(problem, K, v, images, pool_scale):
    """`(m, v)` step direction of every image: `-(eta_K grad_K, eta_v grad_v)` of its loss, projected."""
    return _per_image_steps(problem, sim.teacher_kernels(problem), K, v, images, pool_scale)


@eqx.filter_jit
def _per_image_steps(problem, teacher, K, v, images, pool_scale):
    # Each image's loss 1/2 (f_i - y_i)^2 has gradient (f_i - y_i) grad f_i; the Jacobian of
    # the batch output f (S,) in K (L D directions) is forward-mode through the batched conv.
    f = lambda K, v: cnn_output(K, v, images, problem.sigma.fn, pool_scale)
    y = cnn_output(teacher, problem.teacher_head, images, problem.phi.fn, pool_scale)
    dfK, dfv = jax.jacfwd(f, argnums=(0, 1))(K, v)  # (S, L, D), (S, L)
    err = f(K, v) - y
    gK, gv = err[:, None, None] * dfK, err[:, None] * dfv
    atoms = problem.mixture.atoms
    dm = -problem.lr_kernel * gK @ atoms.T / problem.patch_dim
    dv = -problem.lr_head * gv
    return jax.vmap(flatten_state)(dm, dv)


# --- count moments -------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_count_moments_match_enumeration_of_compositions(pooling):
    alpha = np.array([0.7, 1.3, 2.0])
    M, P = 2, 3
    N = M * M
    mixture = ct.PatchMixture(ct.atoms_from_gram(np.eye(P), 3), alpha, M, pooling)
    E = {k: np.zeros((P,) * k) for k in (1, 2, 3, 4)}
    for n in itertools.product(range(N + 1), repeat=P):
        if sum(n) != N:
            continue
        n = np.array(n)
        # Dirichlet-multinomial pmf of the composition n
        logp = (
            gammaln(N + 1)
            - gammaln(n + 1).sum()
            + gammaln(alpha.sum())
            - gammaln(N + alpha.sum())
            + (gammaln(n + alpha) - gammaln(alpha)).sum()
        )
        nt = n if pooling == "sum" else n / N
        outer = np.ones(())
        for k in (1, 2, 3, 4):
            outer = np.multiply.outer(outer, nt)
            E[k] += np.exp(logp) * outer
    for k in (1, 2, 3, 4):
        scale = np.abs(E[k]).max()
        # exact sums of ~15 terms: round-off only
        np.testing.assert_allclose(fl.count_moment_tensor(mixture, k), E[k], rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(fl.count_moment_tensor(mixture, 2), mixture.moments, rtol=1e-14, atol=0)


def test_continuum_moments_are_the_limit_of_mean_pooling():
    alpha = jnp.array([1.0, 2.0])
    atoms = ct.atoms_from_gram(np.eye(2), 3)
    cont = fl.count_moment_tensor(ct.PatchMixture(atoms, alpha, None, "mean"), 4)
    big = fl.count_moment_tensor(ct.PatchMixture(atoms, alpha, 200, "mean"), 4)
    # corrections are O(1/N) with N = 40000 patches
    np.testing.assert_allclose(big, cont, rtol=1e-3)
    # and they are the Dirichlet fourth moments, checked by Monte Carlo (1e6 draws: 0.5% SE)
    rho = np.random.default_rng(0).dirichlet(np.asarray(alpha), 1_000_000)
    mc = np.einsum("si,sj,sk,sl->ijkl", rho, rho, rho, rho, optimize=True) / rho.shape[0]
    np.testing.assert_allclose(cont, mc, rtol=0.02)


# --- gradient noise ------------------------------------------------------------------------


def test_drift_map_reproduces_the_flow():
    problem, m, v = random_problem(1, P=4, L=3)
    F = flatten_state(*problem.rhs(m, v))
    np.testing.assert_allclose(fl.drift_map(problem, m, v) @ problem.residual(m, v), F, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("pooling,M,P,seed", [("sum", 2, 3, 0), ("mean", 2, 3, 1), ("mean", 3, 2, 2)])
def test_gradient_noise_matches_exact_enumeration_through_the_convolution(pooling, M, P, seed):
    problem, m, v = random_problem(seed, P=P, L=2, M=M, pooling=pooling)
    K = sim.init_kernels(problem, m, jax.random.key(seed))
    images, probs = enumerate_images(problem.mixture.atoms, problem.mixture.alpha, M)
    steps = per_image_steps(problem, K, v, images, 1.0 if pooling == "sum" else 1.0 / (M * M))
    mean = probs @ steps
    cov = (steps - mean).T @ (probs[:, None] * (steps - mean))
    # the mean step is the population flow
    np.testing.assert_allclose(mean, flatten_state(*problem.rhs(m, v)), rtol=1e-10, atol=1e-12)
    D = fl.gradient_noise(problem, m, v)
    # exact sums over P^N configurations vs closed form: round-off (conv in float64)
    np.testing.assert_allclose(D, cov, rtol=1e-9, atol=1e-12 * np.abs(cov).max())


def test_gradient_noise_matches_monte_carlo_through_the_sampler():
    problem, m, v = random_problem(3, P=3, L=2, M=4, pooling="mean")
    K = sim.init_kernels(problem, m, jax.random.key(0))
    chunks = []
    for key in jax.random.split(jax.random.key(1), 4):  # 4 x 10000 images (one call at 40000 exhausts memory)
        images, _ = problem.mixture.sample(key, 10000)
        chunks.append(per_image_steps(problem, K, v, images, 1.0 / 16))
    steps = jnp.concatenate(chunks)
    S = steps.shape[0]
    cov = np.cov(np.asarray(steps).T)
    D = np.asarray(fl.gradient_noise(problem, m, v))
    # entrywise standard error of a sample covariance: sqrt(Var(x_i x_j) / S); 5 SE (+ tiny floor)
    x = np.asarray(steps) - np.asarray(steps).mean(axis=0)
    se = np.sqrt(np.var(x[:, :, None] * x[:, None, :], axis=0) / S)
    assert np.all(np.abs(D - cov) <= 5 * se + 1e-12), np.max(np.abs(D - cov) / (se + 1e-300))


# --- moment equations ------------------------------------------------------------------------


def shape_problem(activation="softplus"):
    problem = ct.shape_counting(0.8, (1.0, 1.0), activation, 4, "mean")
    return problem, jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.3, -0.3])


def test_mean_without_noise_is_the_modified_equation_of_gradient_descent():
    """With the noise off, the mean follows the Euler map (population GD) to O(lr^2); the flow to O(lr)."""
    problem, m0, v0 = random_problem(4, P=3, L=2, activation="tanh")
    t1 = 2.0
    errs = {}
    for lr in (0.02, 0.01):
        gd = ct.solve(problem, m0, v0, t1, ts=jnp.array([t1]), method="euler", dt0=lr)
        gd = flatten_state(gd.m[-1], gd.v[-1])
        mo = fl.moments(problem, m0, v0, t1, lr=lr, batch_size=1, ts=jnp.array([t1]), noise_drift=False)
        flow = jnp.concatenate([mo.flow_m[-1].ravel(), mo.flow_v[-1]])
        errs[lr] = (float(jnp.max(jnp.abs(flow - gd))), float(jnp.max(jnp.abs(mo.mean[-1] - gd))))
    (flow2, mod2), (flow1, mod1) = errs[0.02], errs[0.01]
    assert 1.8 < flow2 / flow1 < 2.2  # first order
    assert 3.5 < mod2 / mod1 < 4.5  # second order: the O(lr) term is exactly -(lr/2) J F
    assert mod2 < 0.05 * flow2


def test_covariance_is_linear_in_lr_over_batch():
    problem, m0, v0 = random_problem(4, P=3, L=2, activation="tanh")
    # without the noise-induced drift the mean does not depend on B: Sigma scales exactly as 1/B
    a = fl.moments(problem, m0, v0, 2.0, lr=0.01, batch_size=2, ts=jnp.array([2.0]), noise_drift=False)
    b = fl.moments(problem, m0, v0, 2.0, lr=0.01, batch_size=8, ts=jnp.array([2.0]), noise_drift=False)
    # solver tolerance rtol 1e-8 (atol for entries that cancel)
    np.testing.assert_allclose(a.cov, 4 * b.cov, rtol=1e-6, atol=1e-8 * float(np.abs(a.cov).max()))
    assert np.all(np.linalg.eigvalsh(np.asarray(a.cov[-1])) > -1e-15)  # a covariance


@pytest.fixture(scope="module")
def online_runs():
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
    y = np.concatenate([np.asarray(s.m).reshape(S, s.t.shape[0], -1), np.asarray(s.v)], axis=2)[:, 1:]
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


def test_sample_paths_follow_the_moment_equations():
    problem, m0, v0 = shape_problem("tanh")
    lr, B, t1 = 0.05, 2, 2.0
    ts = jnp.array([1.0, 2.0])
    paths = fl.sample_paths(problem, m0, v0, t1, lr=lr, batch_size=B, key=jax.random.key(0), num_paths=1024, ts=ts)
    pred = fl.moments(problem, m0, v0, t1, lr=lr, batch_size=B, ts=ts)
    y = np.concatenate([np.asarray(paths.m).reshape(1024, 2, -1), np.asarray(paths.v)], axis=2)
    mean, std = y.mean(axis=0), y.std(axis=0, ddof=1)
    # 1024 paths: mean within 4 SE; std within 4 x 2.2% plus the O(dt) Euler-Maruyama error
    assert np.all(np.abs(np.asarray(pred.mean) - mean) < 4 * std / np.sqrt(1024))
    assert np.all(np.abs(np.asarray(pred.std) / std - 1) < 0.12)


# --- finite training sets ---------------------------------------------------------------------


def test_response_matches_finite_differences():
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


def test_training_set_spread_matches_many_training_sets():
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


def test_bad_input_raises():
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


def test_failed_moment_solve_reports_its_status():
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
