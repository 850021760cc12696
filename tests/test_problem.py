"""The order-parameter loss and RHS against brute force, autodiff and Lovig's (2025) equations."""

import itertools
import zlib
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from helpers_bruteforce import brute_force_flow, enumerate_images
from helpers_checks import raises_unchecked
from helpers_problems import SEED_M0, SEED_V0

from cnntheory import ACTIVATIONS, PatchMixture, TeacherStudent, atoms_from_gram, shape_atoms, shape_counting
from cnntheory._problem import flatten_state

STUDENTS = ["relu", "sigmoid", "tanh", "swish", "gelu", "softplus", "erf", "quadratic", "linear"]

GRAMS = {
    2: np.array([[1.0, 0.8], [0.8, 1.0]]),
    3: np.array([[1.0, 0.3, -0.2], [0.3, 1.0, 0.5], [-0.2, 0.5, 1.0]]),
}


def _case(L, P, k, seed, teacher, Lstar):
    """Atoms, a random student (K, v) and a teacher (kernels, head, activation)."""
    rng = np.random.default_rng(seed)
    atoms = np.asarray(atoms_from_gram(GRAMS[P], k, key=seed))
    D = k * k
    K = rng.normal(scale=1.0, size=(L, D))
    v = rng.normal(size=L)
    if Lstar is None:  # teacher kernels = atoms, default overlaps m* = G (Lovig's teacher with phi = 1{m = 1})
        Kstar, vstar, overlaps = atoms, rng.normal(size=P), None
    else:  # a generic teacher with its own kernels and L* units
        Kstar, vstar = rng.normal(size=(Lstar, D)), rng.normal(size=Lstar)
        overlaps = Kstar @ atoms.T / D
    return atoms, K, v, Kstar, vstar, overlaps


CASES = [
    # (student, L, P, teacher, L*)
    *[(s, 1 + i % 3, 2 + i % 2, "indicator", None) for i, s in enumerate(STUDENTS)],
    *[(s, 1 + (i + 1) % 3, 2 + (i + 1) % 2, "tanh", 1 + i % 3) for i, s in enumerate(STUDENTS)],
    *[("relu", L, P, "sigmoid", 2) for L in (1, 2, 3) for P in (2, 3)],
    *[(s, 2, 3, "tanh", None) for s in ("relu", "sigmoid", "quadratic")],  # kernels = atoms, smooth phi
]


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["sum", "mean"])
@pytest.mark.parametrize("student, L, P, teacher, Lstar", CASES)
def test_brute_force_convolution(student, L, P, teacher, Lstar, pooling):
    """THE key test: the closed-form theory equals the exact loss of a real CNN on all images."""
    M, k = 2, 3  # N = 4 patches: P^N <= 81 images of 6 x 6 pixels
    seed = zlib.crc32(repr((student, L, P, teacher, pooling)).encode()) % 1000
    atoms, K, v, Kstar, vstar, overlaps = _case(L, P, k, seed, teacher, Lstar)
    alpha = np.linspace(0.7, 2.1, P)
    eta_K, eta_v = 3.7, 0.6
    images, probs = enumerate_images(atoms, alpha, M)
    sigma, phi = ACTIVATIONS[student].fn, ACTIVATIONS[teacher].fn
    loss_bf, dm_bf, dv_bf = brute_force_flow(
        jnp.asarray(K),
        jnp.asarray(v),
        jnp.asarray(Kstar),
        jnp.asarray(vstar),
        jnp.asarray(atoms),
        images,
        probs,
        sigma=sigma,
        phi=phi,
        pooling=pooling,
        eta_K=eta_K,
        eta_v=eta_v,
    )
    problem = TeacherStudent(
        PatchMixture(atoms, alpha, M, pooling),
        vstar,
        overlaps,
        teacher_activation=teacher,
        student_activation=student,
        kernel_lr_multiplier=eta_K,
        head_lr_multiplier=eta_v,
    )
    m = jnp.asarray(K @ atoms.T / k**2)
    if student == "relu":
        assert np.abs(m).min() > 1e-3  # generic point: away from the kink, so the gradient is classical
    loss = problem.loss(m, jnp.asarray(v))
    dm, dv = problem.rhs(m, jnp.asarray(v))
    # Both sides are float64 sums of <= 81 terms of O(1) numbers (no cancellation-prone
    # step): 1e-12 relative to the size of the quantity leaves ~1e3 ulps of room.
    assert loss_bf > 1e-6
    np.testing.assert_allclose(float(loss), float(loss_bf), rtol=1e-12)
    scale_m = max(1.0, float(np.abs(dm_bf).max()))
    scale_v = max(1.0, float(np.abs(dv_bf).max()))
    np.testing.assert_allclose(np.asarray(dm), np.asarray(dm_bf), rtol=0, atol=1e-12 * scale_m)
    np.testing.assert_allclose(np.asarray(dv), np.asarray(dv_bf), rtol=0, atol=1e-12 * scale_v)


@pytest.mark.slow
def test_brute_force_larger_image():
    """M = 3 (N = 9 patches, 512 images) with P = 2: the N-dependence of the moments."""
    M, k, P, L = 3, 2, 2, 2
    atoms, K, v, Kstar, vstar, overlaps = _case(L, P, k, 11, "indicator", None)
    alpha = np.array([2.0, 1.0])
    images, probs = enumerate_images(atoms, alpha, M)
    for pooling in ("sum", "mean"):
        loss_bf, dm_bf, dv_bf = brute_force_flow(
            jnp.asarray(K),
            jnp.asarray(v),
            jnp.asarray(Kstar),
            jnp.asarray(vstar),
            jnp.asarray(atoms),
            images,
            probs,
            sigma=ACTIVATIONS["tanh"].fn,
            phi=ACTIVATIONS["indicator"].fn,
            pooling=pooling,
            eta_K=1.0,
            eta_v=1.0,
        )
        problem = TeacherStudent(PatchMixture(atoms, alpha, M, pooling), vstar, student_activation="tanh")
        m = jnp.asarray(K @ atoms.T / k**2)
        dm, dv = problem.rhs(m, jnp.asarray(v))
        # 512-term float64 sums of O(N^2) values: 1e-12 relative.
        np.testing.assert_allclose(float(problem.loss(m, jnp.asarray(v))), float(loss_bf), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(dm), np.asarray(dm_bf), atol=1e-12 * max(1, float(np.abs(dm_bf).max())))
        np.testing.assert_allclose(np.asarray(dv), np.asarray(dv_bf), atol=1e-12 * max(1, float(np.abs(dv_bf).max())))


# --- rhs is the Gram-preconditioned gradient flow of loss ---------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("student", STUDENTS)
@pytest.mark.parametrize("pooling, M", [("sum", 3), ("mean", 4), ("mean", None)])
def test_rhs_is_gradient_flow_of_loss(student, pooling, M):
    P, L = 3, 2
    rng = np.random.default_rng(5)
    atoms = atoms_from_gram(GRAMS[P], 3, key=2)
    problem = TeacherStudent(
        PatchMixture(atoms, (0.5, 1.0, 2.0), M, pooling),
        rng.normal(size=4),
        rng.normal(size=(4, P)),
        teacher_activation="sigmoid",
        student_activation=student,
        kernel_lr_multiplier=2.5,
        head_lr_multiplier=0.7,
    )
    m = jnp.asarray(rng.normal(size=(L, P)))
    v = jnp.asarray(rng.normal(size=L))
    gm, gv = jax.grad(problem.loss, argnums=(0, 1))(m, v)
    D = problem.patch_dim
    dm_ref = -(2.5 / D) * gm @ problem.gram
    dv_ref = -0.7 * gv
    dm, dv = problem.rhs(m, v)
    # Same arithmetic in a different order (autodiff vs closed form): round-off only.
    np.testing.assert_allclose(np.asarray(dm), np.asarray(dm_ref), atol=1e-13 * max(1, float(np.abs(dm_ref).max())))
    np.testing.assert_allclose(np.asarray(dv), np.asarray(dv_ref), atol=1e-13 * max(1, float(np.abs(dv_ref).max())))


# --- Lovig's (2025) equations (1)-(4), term by term -------------------------------------------


def _beta_second_moments(alpha):
    """E[pi_p pi_q] for P = 2 from the Beta law of pi_1 (scipy), independent of cnntheory."""
    b = scipy.stats.beta(alpha[0], alpha[1])
    e1, e11 = b.moment(1), b.moment(2)
    return np.array([[e11, e1 - e11], [e1 - e11, 1 - 2 * e1 + e11]])


def _seed_rhs(m, v, vstar, mstar, G, E, sigma, dsigma):
    """Equations (1)-(4) of Lovig (2025) with explicit loops (G_qr where Lovig writes m*_rq)."""

    def phi(x):
        return 1.0 if abs(x - 1.0) < 1e-9 else 0.0  # 1{m = 1} with a round-off tolerance

    L, P = m.shape
    Ls = len(vstar)
    dm = np.zeros((L, P))
    dv = np.zeros(L)
    for l in range(L):
        for r in range(P):
            total = 0.0
            for ls in range(Ls):  # (1)
                for p in range(P):
                    for q in range(P):
                        total += v[l] * vstar[ls] * E[p, q] * phi(mstar[ls, p]) * dsigma(m[l, q]) * G[q, r]
            for lp in range(L):  # (2)
                for p in range(P):
                    for q in range(P):
                        total -= v[l] * v[lp] * E[p, q] * sigma(m[lp, p]) * dsigma(m[l, q]) * G[q, r]
            dm[l, r] = total
        total = 0.0
        for ls in range(Ls):  # (3)
            for p in range(P):
                for q in range(P):
                    total += vstar[ls] * E[p, q] * phi(mstar[ls, p]) * sigma(m[l, q])
        for lp in range(L):  # (4)
            for p in range(P):
                for q in range(P):
                    total -= v[lp] * E[p, q] * sigma(m[lp, p]) * sigma(m[l, q])
        dv[l] = total
    return dm, dv


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [(1.0, 1.0), (2.0, 1.0)])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "softplus", "linear"])
def test_shape_counting_is_seed_equations(alpha, activation):
    problem = shape_counting(overlap=0.8, alpha=alpha, activation=activation)
    assert (
        problem.patch_dim == 25
        and float(problem.kernel_lr_multiplier) == 25.0
        and float(problem.head_lr_multiplier) == 1.0
    )
    atoms = np.asarray(shape_atoms(5, 0.8))
    G = atoms @ atoms.T / 25
    E = _beta_second_moments(alpha)
    act = ACTIVATIONS[activation]

    def sigma(x):
        return float(act.fn(x))

    def dsigma(x):
        return float(act.derivative(x))

    rng = np.random.default_rng(3)
    states = [(SEED_M0, SEED_V0)]
    states += [(rng.normal(size=(2, 2)), rng.normal(size=2)) for _ in range(3)]
    states += [(rng.normal(size=(3, 2)), rng.normal(size=3))]  # L = 3 students, L* = 2
    for m, v in states:
        dm_ref, dv_ref = _seed_rhs(m, v, np.array([1.0, -1.0]), G, G, E, sigma, dsigma)
        dm, dv = problem.rhs(jnp.asarray(m), jnp.asarray(v))
        # Loops vs vectorised float64 arithmetic over <= 3*2*2*2 terms: round-off only.
        np.testing.assert_allclose(np.asarray(dm), dm_ref, rtol=0, atol=1e-13)
        np.testing.assert_allclose(np.asarray(dv), dv_ref, rtol=0, atol=1e-13)


def test_shape_counting_teacher_outputs():
    """y = #X - #O: the teacher gives +1 on an X patch and -1 on an O patch."""
    problem = shape_counting()
    np.testing.assert_array_equal(np.asarray(problem.teacher_outputs()), [1.0, -1.0])
    np.testing.assert_allclose(np.asarray(problem.moments), _beta_second_moments((1.0, 1.0)), atol=1e-15)


# --- bad input ----------------------------------------------------------------------------


def _mixture(P=2, M=2, atoms=None):
    atoms = atoms_from_gram(GRAMS[P], 3) if atoms is None else atoms
    return PatchMixture(atoms, np.ones(P), M)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(teacher_head=[1.0, -1.0, 0.5]), "teacher_head"),
        (dict(teacher_head=[[1.0, -1.0]]), "teacher_head"),
        (dict(teacher_head=[1.0, -1.0], teacher_overlaps=np.eye(3)), "teacher_overlaps"),
        (dict(teacher_head=[1.0], teacher_overlaps=np.ones((2, 2))), "teacher_overlaps"),
        (dict(teacher_head=[1.0, -1.0], kernel_lr_multiplier=0.0), "kernel_lr_multiplier"),
        (dict(teacher_head=[1.0, -1.0], head_lr_multiplier=-1.0), "head_lr_multiplier"),
        (dict(teacher_head=[1.0, -1.0], student_activation="leaky"), "unknown activation"),
        (dict(teacher_head=[1.0, -1.0], teacher_activation="heaviside"), "unknown activation"),
        (dict(teacher_head=[1.0, -1.0], moments=np.eye(3)), "moments"),
        (dict(teacher_head=[1.0, -1.0], moments=np.array([[1.0, 2.0], [2.0, 1.0]])), "moments"),
    ],
)
def test_teacher_student_rejects(kwargs, words):
    with pytest.raises(ValueError, match=words):
        TeacherStudent(_mixture(), **kwargs)


def test_mixture_must_be_a_patch_mixture():
    with raises_unchecked(ValueError, match="mixture"):
        TeacherStudent(cast(Any, np.eye(2)), [1.0, -1.0])


def test_indicator_teacher_needs_unit_diagonal_gram():
    atoms = 1.5 * np.asarray(atoms_from_gram(np.eye(2), 3))  # Gram diagonal 2.25
    with pytest.raises(ValueError, match="unit diagonal"):
        TeacherStudent(_mixture(atoms=atoms), [1.0, -1.0])
    # Fine with a smooth teacher, or with explicit overlaps.
    TeacherStudent(_mixture(atoms=atoms), [1.0, -1.0], teacher_activation="tanh")
    TeacherStudent(_mixture(atoms=atoms), [1.0, -1.0], teacher_overlaps=np.eye(2))


@pytest.mark.parametrize(
    "m, v",
    [
        (np.zeros((2, 3)), np.zeros(2)),
        (np.zeros((2, 2)), np.zeros(3)),
        (np.zeros(2), np.zeros(2)),
        (np.zeros((2, 2)), np.zeros((2, 1))),
    ],
)
def test_loss_and_rhs_reject_bad_shapes(m, v):
    problem = TeacherStudent(_mixture(), [1.0, -1.0])
    with raises_unchecked(ValueError, match="must have shape"):
        problem.loss(m, v)
    with raises_unchecked(ValueError, match="must have shape"):
        problem.rhs(m, v)


def test_with_moments_and_properties():
    problem = shape_counting(alpha=(2.0, 1.0), activation="tanh", patches_per_side=3, pooling="sum")
    assert (problem.num_atoms, problem.patch_dim, problem.sigma.name, problem.phi.name) == (2, 25, "tanh", "indicator")
    C_hat = np.array([[2.0, 0.5], [0.5, 1.0]])
    other = problem.with_moments(C_hat)
    np.testing.assert_array_equal(np.asarray(other.moments), C_hat)
    m, v = jnp.array([[0.3, -0.2], [0.1, 0.4]]), jnp.array([0.5, -0.7])
    e = np.asarray(other.student_outputs(m, v) - other.teacher_outputs())
    np.testing.assert_allclose(float(other.loss(m, v)), 0.5 * e @ C_hat @ e, rtol=1e-14)  # round-off


def test_permutation_equivariance_of_rhs():
    problem = shape_counting(activation="swish")
    rng = np.random.default_rng(0)
    m, v = rng.normal(size=(3, 2)), rng.normal(size=3)
    for order in itertools.permutations(range(3)):
        perm = list(order)
        dm, dv = problem.rhs(jnp.asarray(m), jnp.asarray(v))
        dmp, dvp = problem.rhs(jnp.asarray(m[perm]), jnp.asarray(v[perm]))
        # Same terms summed in another order: round-off only.
        np.testing.assert_allclose(np.asarray(dmp), np.asarray(dm)[perm], atol=1e-14)
        np.testing.assert_allclose(np.asarray(dvp), np.asarray(dv)[perm], atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("student", ["tanh", "relu", "softplus"])
def test_lane_rhs_is_rhs_of_each_lane(student):
    """`lane_rhs` (lanes stacked last, as `solve_batch(shared_steps=True)` integrates them)
    equals `rhs` lane by lane, on a random problem with L != P != L*."""
    rng = np.random.default_rng(7)
    P, L, Lstar, B = 4, 3, 5, 6
    atoms = rng.normal(size=(P, 9))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    mixture = PatchMixture(atoms, np.array([0.5, 1.0, 2.0, 1.5]), 3, "mean")
    problem = TeacherStudent(
        mixture,
        rng.normal(size=Lstar),
        rng.normal(size=(Lstar, P)),
        teacher_activation="tanh",
        student_activation=student,
        kernel_lr_multiplier=2.0,
        head_lr_multiplier=0.5,
    )
    m, v = rng.normal(size=(L, P, B)), rng.normal(size=(L, B))
    dm, dv = problem.lane_rhs(jnp.asarray(m), jnp.asarray(v))
    # The flat layout keeps lanes last: lane b of the stacked state is the flat state of lane b.
    y = flatten_state(jnp.asarray(m), jnp.asarray(v))
    for b in range(B):
        np.testing.assert_array_equal(y[:, b], flatten_state(jnp.asarray(m[..., b]), jnp.asarray(v[:, b])))
    np.testing.assert_array_equal(problem.unflatten(y)[0], m)
    np.testing.assert_array_equal(problem.unflatten(y)[1], v)
    for b in range(B):
        one_m, one_v = problem.rhs(jnp.asarray(m[..., b]), jnp.asarray(v[:, b]))
        np.testing.assert_allclose(dm[..., b], one_m, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(dv[:, b], one_v, rtol=1e-14, atol=1e-15)
