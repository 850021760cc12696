"""The simulated student CNN against the order-parameter theory: `lr` steps of gradient
descent are the explicit Euler map of the flow with `dt = lr`, so ODE time is `t = lr * step`.

References are independent of `cnntheory.simulate`: the closed-form `problem.rhs` iterated
as an explicit Euler map (and `cnntheory.solve(method="euler")`), patch extraction by
reshaping instead of convolution, counts by matching patches to atoms.
"""

from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_checks import raises_unchecked

import cnntheory
from cnntheory import simulate as sim

M0 = jnp.array([[0.3, 0.25], [0.2, 0.28]])
V0 = jnp.array([0.01, -0.01])
LR = 0.01
LR_DIVERGE = 10.0


def euler_map(problem, m0, v0, lr, steps, record_every):
    """The flow's explicit Euler map with `dt = lr`, from the closed-form RHS."""

    def step(state, _):
        m, v = state
        dm, dv = problem.rhs(m, v)
        return (m + lr * dm, v + lr * dv), None

    def chunk(state, _):
        state, _ = jax.lax.scan(step, state, None, length=record_every)
        return state, state

    _, (ms, vs) = jax.lax.scan(chunk, (m0, v0), None, length=steps // record_every)
    return jnp.concatenate([m0[None], ms]), jnp.concatenate([v0[None], vs])


@pytest.fixture(scope="module")
def relu_problem():
    return cnntheory.shape_counting(activation="relu", patches_per_side=4, pooling="mean")


@pytest.fixture(scope="module")
def general_problem():
    """P = 3 atoms with a generic Gram matrix, sum pooling, tanh student, custom teacher."""
    gram = np.array([[1.0, 0.3, -0.2], [0.3, 1.0, 0.5], [-0.2, 0.5, 1.0]])
    mixture = cnntheory.PatchMixture(cnntheory.atoms_from_gram(gram, 4, key=1), [1.0, 2.0, 0.5], 3, "sum")
    overlaps = np.array([[0.9, 0.1, -0.3], [0.2, -0.5, 0.7]])
    return cnntheory.TeacherStudent(
        mixture,
        [1.0, -0.5],
        overlaps,
        teacher_activation="tanh",
        student_activation="tanh",
        kernel_lr_multiplier=4.0,
        head_lr_multiplier=0.5,
    )


@pytest.fixture(scope="module")
def population_run(relu_problem):
    s = sim.simulate(
        relu_problem,
        M0,
        V0,
        mode="population",
        lr=LR,
        steps=2000,
        record_every=200,
        key=jax.random.key(0),
        num_seeds=2,
        num_test=64,
    )
    return s


@pytest.fixture(scope="module")
def fullbatch_run(relu_problem):
    return sim.simulate(
        relu_problem,
        M0,
        V0,
        mode="fullbatch",
        lr=LR,
        steps=1000,
        record_every=100,
        key=jax.random.key(1),
        num_seeds=3,
        num_train=128,
        num_test=64,
    )


# --- the network and the data -----------------------------------------------------------


@eqx.filter_jit
def sample(mixture, key, n=64):
    """Images and counts (jitted: eager sampling compiles primitive by primitive)."""
    return mixture.sample(key, n)


def test_network_matches_patch_reshaping(general_problem):
    mix = general_problem.mixture
    images, _ = sample(mix, jax.random.key(3))
    K = jax.random.normal(jax.random.key(4), (3, mix.patch_dim))
    v = jnp.array([0.5, -1.0, 2.0])
    patches = cnntheory.extract_patches(images, mix.patch_size)  # (n, N, D)
    expected = jnp.sum(jnp.tanh(patches @ K.T / mix.patch_dim), axis=1) @ v
    got = sim.network(K, v, images, general_problem.sigma, "sum")
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("fixture", ["relu_problem", "general_problem"])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_patch_network_equals_the_convolution(fixture, pooling, request):
    """The gather + matmul network the simulation trains equals the real strided convolution
    on the assembled images, values and gradients, to round-off."""
    problem = request.getfixturevalue(fixture)
    mix = problem.mixture
    labels, _ = eqx.filter_jit(lambda mix, key: mix.sample_counts(key, 32))(mix, jax.random.key(6))
    images = mix.images_from_labels(labels)
    K = jax.random.normal(jax.random.key(7), (5, mix.patch_dim))
    v = jax.random.normal(jax.random.key(8), (5,))
    weights = jax.random.normal(jax.random.key(9), (32,))

    def loss(params, net, x):
        return weights @ net(*params, x, problem.sigma, pooling)

    conv = lambda K, v, x, act, pool: sim.network(K, v, x, act, pool)
    gather = lambda K, v, x, act, pool: sim.patch_network(K, v, x, mix.atoms, act, pool)
    np.testing.assert_allclose(
        gather(K, v, labels, problem.sigma, pooling), conv(K, v, images, problem.sigma, pooling), rtol=1e-12, atol=1e-13
    )
    g_conv = jax.grad(loss)((K, v), conv, images)
    g_gather = jax.grad(loss)((K, v), gather, labels)
    for a, b in zip(g_gather, g_conv, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("fixture", ["relu_problem", "general_problem"])
def test_teacher_labels_are_counts_times_b(fixture, request):
    """y(S) from the teacher network equals n~ . b (the theory's teacher outputs)."""
    problem = request.getfixturevalue(fixture)
    mix = problem.mixture
    images, counts = sample(mix, jax.random.key(5))
    y = sim.network(sim.teacher_kernels(problem), problem.teacher_head, images, problem.phi, mix.pooling)
    np.testing.assert_allclose(y, mix.pooled_counts(counts) @ problem.teacher_outputs(), atol=1e-12)


def test_teacher_kernels_realise_overlaps(general_problem):
    K_star = sim.teacher_kernels(general_problem)
    atoms = general_problem.mixture.atoms
    np.testing.assert_allclose(K_star @ atoms.T / atoms.shape[1], general_problem.teacher_overlaps, atol=1e-12)


def test_empirical_moments_match_sampled_counts(relu_problem):
    """C_hat from the returned counts equals C_hat from counting the atoms in the images."""
    mix = relu_problem.mixture
    images, counts = sample(mix, jax.random.key(6))
    patches = cnntheory.extract_patches(images, mix.patch_size)
    which = jnp.argmin(jnp.sum((patches[:, :, None, :] - mix.atoms[None, None]) ** 2, axis=-1), axis=-1)
    recount = jax.vmap(lambda w: jnp.bincount(w, length=mix.num_atoms))(which)
    np.testing.assert_array_equal(recount, counts)
    pooled = np.asarray(recount, dtype=float) / mix.num_patches  # mean pooling
    np.testing.assert_allclose(sim.empirical_moments(relu_problem, counts), pooled.T @ pooled / 64, atol=1e-15)


# --- initial kernels ----------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["relu_problem", "general_problem"])
def test_initial_kernels_have_requested_order_parameters(fixture, request):
    problem = request.getfixturevalue(fixture)
    P = problem.num_atoms
    m0 = jax.random.normal(jax.random.key(7), (5, P))
    K = sim.init_kernels(problem, m0, jax.random.key(8), scale=2.0)
    atoms = problem.mixture.atoms
    np.testing.assert_allclose(K @ atoms.T / problem.patch_dim, m0, atol=1e-12)
    # The random part is orthogonal to the atoms and not small.
    perp = K - sim.init_kernels(problem, m0, jax.random.key(8), scale=0.0)
    np.testing.assert_allclose(perp @ atoms.T, 0.0, atol=1e-11)
    assert float(jnp.linalg.norm(perp)) > 1.0


def test_simulations_start_at_m0(population_run, fullbatch_run):
    for s in (population_run, fullbatch_run):
        np.testing.assert_allclose(s.m[:, 0], jnp.broadcast_to(M0, s.m[:, 0].shape), atol=1e-14)
        np.testing.assert_array_equal(s.v[:, 0], jnp.broadcast_to(V0, s.v[:, 0].shape))


# --- level 1: population GD is the Euler map ----------------------------------------------


def test_population_equals_euler_map(population_run, relu_problem):
    s = population_run
    assert s.m.shape == (2, 11, 2, 2) and s.t[-1] == pytest.approx(20.0)
    m_ref, v_ref = euler_map(relu_problem, M0, V0, LR, 2000, 200)
    np.testing.assert_allclose(s.m, jnp.broadcast_to(m_ref, s.m.shape), atol=1e-12)
    np.testing.assert_allclose(s.v, jnp.broadcast_to(v_ref, s.v.shape), atol=1e-12)
    np.testing.assert_allclose(s.train_loss, s.loss, atol=1e-14)
    # ... and cnntheory.solve's Euler map (its own implementation) agrees too.
    traj = cnntheory.solve(relu_problem, M0, V0, 20.0, ts=s.t, method="euler", dt0=LR)
    np.testing.assert_allclose(s.m[0], traj.m, atol=1e-12)
    np.testing.assert_allclose(s.loss[0], traj.loss, atol=1e-12)


def test_population_general_problem_equals_euler_map(general_problem):
    m0 = jnp.array([[0.2, -0.1, 0.4], [0.3, 0.5, -0.2]])
    v0 = jnp.array([0.1, 0.2])
    s = sim.simulate(
        general_problem,
        m0,
        v0,
        mode="population",
        lr=0.02,
        steps=500,
        record_every=50,
        key=jax.random.key(2),
        num_test=0,
    )
    m_ref, v_ref = euler_map(general_problem, m0, v0, 0.02, 500, 50)
    np.testing.assert_allclose(s.m[0], m_ref, atol=1e-12)
    np.testing.assert_allclose(s.v[0], v_ref, atol=1e-12)
    assert s.test_loss is None and s.predictions is None
    assert float(jnp.abs(s.m[0, -1] - m0).max()) > 1e-2  # it did move


# --- level 2: fullbatch GD is the C_hat Euler map -------------------------------------------


def test_fullbatch_equals_empirical_euler_map(fullbatch_run, relu_problem):
    s = fullbatch_run
    for seed in range(s.num_seeds):
        finite = relu_problem.with_moments(s.train_moments[seed])
        m_ref, v_ref = euler_map(finite, M0, V0, LR, 1000, 100)
        np.testing.assert_allclose(s.m[seed], m_ref, atol=1e-10)
        np.testing.assert_allclose(s.v[seed], v_ref, atol=1e-10)
        # The training-set loss is the finite-data theory's loss, exactly.
        np.testing.assert_allclose(s.train_loss[seed], jax.vmap(finite.loss)(m_ref, v_ref), atol=1e-12)
    # Different training sets: different C_hat, different runs.
    assert float(jnp.abs(s.train_moments[0] - s.train_moments[1]).max()) > 1e-4


@pytest.mark.parametrize("mode,kwargs", [("fullbatch", dict(num_train=32)), ("online", dict(batch_size=8))])
def test_no_test_set(relu_problem, mode, kwargs):
    # num_test=0: no test loss and no predictions, and the training itself is unchanged.
    common = dict(mode=mode, lr=LR, steps=50, record_every=10, key=jax.random.key(2), num_seeds=2, **kwargs)
    without = sim.simulate(relu_problem, M0, V0, num_test=0, **common)
    assert without.test_loss is None and without.predictions is None
    with_test = sim.simulate(relu_problem, M0, V0, num_test=16, **common)
    if mode == "online":  # the test images come from the data key; online batches do not
        np.testing.assert_array_equal(without.m, with_test.m)
    assert without.m.shape == with_test.m.shape and bool(jnp.isfinite(without.loss).all())


def test_predictions_per_label(fullbatch_run, relu_problem):
    s = fullbatch_run
    # Shape counting, mean pooling, N = 16: labels (n_X - n_O) / 16.
    np.testing.assert_allclose(s.label_values * 16, np.round(s.label_values * 16), atol=1e-9)
    np.testing.assert_allclose(s.label_counts @ relu_problem.teacher_outputs(), s.label_values, atol=1e-12)
    a = jnp.einsum("stl,stlp->stp", s.v, relu_problem.sigma(s.m))
    np.testing.assert_allclose(s.predictions, a @ s.label_counts.T, atol=1e-12)


# --- level 3: online SGD around the ODE --------------------------------------------------------


def test_online_mean_within_statistical_band():
    """Seed mean of online SGD vs the Euler map with dt = lr.

    Per recorded time and component, the seed mean of S = 16 independent runs has standard
    error `std_s / sqrt(S)`; we require `|mean - euler| < 6 standard errors` (a t-statistic
    with 15 degrees of freedom exceeds 6 with probability ~2e-5, so all ~60 comparisons
    pass with probability > 99.8%). The remaining SGD bias, `O(lr t / B)`, is far below
    this band at lr = 0.005, B = 16 (checked by the benchmark's slope fits).
    """
    problem = cnntheory.shape_counting(activation="softplus", patches_per_side=4, pooling="mean")
    lr, steps, S = 0.005, 600, 16
    s = sim.simulate(
        problem,
        M0,
        V0,
        mode="online",
        lr=lr,
        steps=steps,
        record_every=60,
        batch_size=16,
        key=jax.random.key(11),
        num_seeds=S,
        num_test=0,
    )
    m_ref, v_ref = euler_map(problem, M0, V0, lr, steps, 60)
    for x, ref in ((s.m, m_ref), (s.v, v_ref)):
        x, ref = np.asarray(x)[:, 1:], np.asarray(ref)[1:]  # t = 0 has no spread
        sem = x.std(axis=0, ddof=1) / np.sqrt(S)
        assert np.all(sem > 0)
        assert np.all(np.abs(x.mean(axis=0) - ref) < 6 * sem)
    # The runs really are noisy (else the band above would be vacuous).
    assert float(np.asarray(s.v).std(axis=0).max()) > 1e-4
    np.testing.assert_allclose(s.t, lr * 60 * np.arange(11))


# --- precision, bad input, divergence ----------------------------------------------------------


def test_float32_population_close_to_float64(relu_problem):
    kw = dict(mode="population", lr=LR, steps=200, record_every=100, key=jax.random.key(0), num_test=0)
    s32 = sim.simulate(relu_problem, M0, V0, dtype=jnp.float32, **kw)
    s64 = sim.simulate(relu_problem, M0, V0, **kw)
    assert s32.m.dtype == jnp.float32
    np.testing.assert_allclose(s32.m, s64.m, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="online", lr=0.0, batch_size=4), "lr must be"),
        (dict(mode="online", lr=-0.1, batch_size=4), "lr must be"),
        (dict(mode="online", lr=0.1, batch_size=0), "batch_size"),
        (dict(mode="online", lr=0.1, batch_size=-3), "batch_size"),
        (dict(mode="fullbatch", lr=0.1, num_train=0), "num_train"),
        (dict(mode="sgd", lr=0.1), "mode must be"),
        (dict(mode="population", lr=0.1, steps=10, record_every=3), "multiple of record_every"),
        (dict(mode="population", lr=0.1, steps=10, t1=1.0), "exactly one of steps"),
        (dict(mode="population", lr=0.3, t1=1.0, steps=None), "whole number of steps"),
    ],
)
def test_bad_input(relu_problem, kwargs, match):
    kwargs = {"steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        sim.simulate(relu_problem, M0, V0, key=jax.random.key(0), **kwargs)


def test_bad_initial_state(relu_problem):
    with pytest.raises(ValueError, match="m must have shape"):
        sim.simulate(relu_problem, jnp.zeros((2, 3)), V0, mode="population", lr=0.1, steps=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="m0 has non-finite"):
        sim.simulate(
            relu_problem, M0.at[0, 0].set(jnp.nan), V0, mode="population", lr=0.1, steps=1, key=jax.random.key(0)
        )


def test_continuum_mixture_needs_population_without_test_set():
    problem = cnntheory.shape_counting(activation="linear", patches_per_side=None)
    with pytest.raises(ValueError, match="patches_per_side"):
        sim.simulate(problem, M0, V0, mode="online", lr=0.1, steps=1, batch_size=4, key=jax.random.key(0))


def test_divergence_is_reported_with_its_step():
    # Linear student on continuum moments: GD on a quartic, unstable for a large step.
    problem = cnntheory.shape_counting(activation="linear", patches_per_side=None)
    kw = dict(
        mode="population", lr=LR_DIVERGE, steps=40, record_every=2, key=jax.random.key(0), num_seeds=2, num_test=0
    )
    with pytest.raises(sim.SimulationDiverged, match=r"diverged .* at step \d+ .*lr=") as info:
        sim.simulate(problem, M0, V0, **kw)
    assert 0 < info.value.step < 40 and info.value.lr == LR_DIVERGE
    s = sim.simulate(problem, M0, V0, throw=False, **kw)
    assert np.all(np.asarray(s.status) == cnntheory.Status.DIVERGED) and np.all(
        np.asarray(s.diverged_at) == info.value.step
    )
    assert "diverged" in s.message
    recorded = np.arange(s.t.shape[0]) * 2
    after = recorded > info.value.step
    assert after.any() and (~after).any()
    assert np.all(np.isnan(np.asarray(s.m)[:, after])) and np.all(np.isfinite(np.asarray(s.m)[:, ~after]))
    # A stable step on the same problem runs through.
    ok = sim.simulate(problem, M0, V0, **{**kw, "lr": 0.1})
    assert np.all(np.asarray(ok.status) == 0) and np.all(np.isfinite(np.asarray(ok.m)))


def test_cli_registers_simulate():
    from cnntheory._cli import build_parser

    args = build_parser().parse_args(
        ["simulate", "--mode", "fullbatch", "--lr", "0.05", "--n-train", "64", "--float32"]
    )
    assert args.func.__module__ == "cnntheory._commands.simulate"
    assert (args.mode, args.lr, args.n_train, args.float32, args.out) == (
        "fullbatch",
        0.05,
        64,
        True,
        "cnntheory-output/simulate",
    )


def test_seeds_by_vmap_and_map_agree(relu_problem):
    kw = dict(
        mode="fullbatch",
        lr=LR,
        steps=50,
        record_every=10,
        key=jax.random.key(1),
        num_seeds=2,
        num_train=32,
        num_test=16,
    )
    a = sim.simulate(relu_problem, M0, V0, seeds_by="vmap", **kw)
    b = sim.simulate(relu_problem, M0, V0, seeds_by="map", **kw)
    np.testing.assert_allclose(a.m, b.m, atol=1e-14)
    np.testing.assert_allclose(a.predictions, b.predictions, atol=1e-14)


@pytest.mark.parametrize(
    "name, keywords, mode",
    [
        ("population", {}, sim.Population()),
        ("fullbatch", {"num_train": 16}, sim.FullBatch(num_train=16)),
        ("online", {"batch_size": 4}, sim.Online(batch_size=4)),
    ],
)
def test_mode_objects_match_mode_names(relu_problem, name, keywords, mode):
    common = {"lr": LR, "steps": 20, "record_every": 10, "key": jax.random.key(3), "num_seeds": 2, "num_test": 16}
    by_name = sim.simulate(relu_problem, M0, V0, mode=name, **keywords, **common)
    by_object = sim.simulate(relu_problem, M0, V0, mode=mode, **common)
    assert by_object.mode == by_name.mode == mode.name == name
    assert (by_object.batch_size, by_object.num_train) == (by_name.batch_size, by_name.num_train)
    for field in ("m", "v", "loss", "train_loss", "test_loss", "predictions"):
        np.testing.assert_array_equal(getattr(by_object, field), getattr(by_name, field))
    # A keyword that repeats the object's number is no conflict.
    if keywords:
        same = sim.simulate(relu_problem, M0, V0, mode=mode, **keywords, **common)
        np.testing.assert_array_equal(same.m, by_object.m)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: sim.Online(batch_size=0), "online mode needs batch_size >= 1"),
        (lambda: sim.Online(batch_size=cast(Any, 2.5)), "online mode needs batch_size >= 1"),
        (lambda: sim.FullBatch(num_train=cast(Any, None)), "fullbatch mode needs num_train >= 1"),
        (lambda: sim.FullBatch(num_train=True), "fullbatch mode needs num_train >= 1"),
    ],
)
def test_mode_objects_are_checked_when_built(build, match):
    with raises_unchecked(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "mode, keywords, match",
    [
        (sim.Online(batch_size=8), {"batch_size": 4}, "batch_size=4 contradicts mode=Online"),
        (sim.FullBatch(num_train=8), {"num_train": 4}, "num_train=4 contradicts mode=FullBatch"),
        (sim.Population(), {"batch_size": 4}, "batch_size=4 contradicts mode=Population"),
        (3, {}, "mode must be one of"),
    ],
)
def test_mode_object_and_conflicting_keyword(relu_problem, mode, keywords, match):
    with raises_unchecked(ValueError, match=match):
        sim.simulate(relu_problem, M0, V0, mode=mode, lr=LR, steps=1, key=jax.random.key(0), **keywords)


def test_mode_objects_own_their_objective(relu_problem):
    assert [m.name for m in (sim.Population(), sim.FullBatch(2), sim.Online(2))] == list(sim.MODES)
    assert not sim.Population().samples and sim.FullBatch(2).samples and sim.Online(2).samples
    assert (
        sim.Population().training_images(),
        sim.FullBatch(5).training_images(),
        sim.Online(5).training_images(),
    ) == (0, 5, 0)
