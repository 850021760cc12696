"""The relu (Filippov) solver through every mode change, against gradient descent.

The reference is independent of the hybrid event scheme: the package's own `"euler"`
(plain gradient descent with `relu'(0) = 0`, as `jax.grad` computes it), at two step
sizes `h` and `h/2`, Richardson-extrapolated (`2 E(h/2) - E(h)`). Gradient descent's
small-step limit is the Filippov solution wherever that solution is unique; where a
sliding surface turns repulsive it is not unique, and the solver must say so in its event
record before its path and gradient descent's part.

Compile time dominates: every shape is solved once, batched (`stack_problems` +
`solve_batch(batch_problem=True)`), and the Euler references share one compilation per
shape (same `max_steps`, `dt0` traced).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnntheory._data import PatchMixture, atoms_from_gram
from cnntheory._problem import TeacherStudent
from cnntheory._solve import solve, solve_batch, stack_problems
from cnntheory._trajectory import EVENT_KINDS, Events

# --- the repulsive example: L = 1, P = 3, relu teacher (kernels = atoms) -------------

G = np.array([[1, -0.61295616, 0.20060138], [-0.61295616, 1, -0.84616824], [0.20060138, -0.84616824, 1]])
ALPHA = (1.62095136, 1.34703113, 1.19474804)
V_STAR = (-1.37442618, -0.47727872, 0.65662161)
M0 = np.array([[-0.09291311, -0.05949312, 0.25673465]])
V0 = np.array([0.18246103])
T1 = 20.0
TS = np.linspace(0.0, T1, 41)
TOL = dict(rtol=1e-10, atol=1e-12)
# Euler references of the example: steps 2e-3 and 1e-3 (the issue's own check), one
# compilation (same max_steps). Where the surface repels, gradient descent's branch depends
# on the phase of its chattering, i.e. on the step: these steps (and dt = 1e-4) leave to
# m < 0, step 5e-4 leaves to m > 0. The limit is not unique there.
EULER_STEPS = (2e-3, 1e-3)
EULER_MAX = int(T1 / 1e-3) + 16


def example_problem():
    mixture = PatchMixture(atoms_from_gram(G, 3), ALPHA, None, "mean")
    return TeacherStudent(
        mixture,
        V_STAR,
        teacher_activation="relu",
        student_activation="relu",
        kernel_lr_multiplier=9.0,
        head_lr_multiplier=1.0,
    )


def richardson(problem, m0, v0, t1, ts, steps, max_steps, batched=False, **kw):
    """`2 E(h/2) - E(h)` of gradient descent (the package's `"euler"`), and `E(h/2)`."""
    run = solve_batch if batched else solve
    h, h2 = steps
    coarse = run(problem, m0, v0, t1, ts=ts, method="euler", dt0=h, max_steps=max_steps, **kw)
    fine = run(problem, m0, v0, t1, ts=ts, method="euler", dt0=h2, max_steps=max_steps, **kw)
    rich = tuple(2 * np.asarray(getattr(fine, x)) - np.asarray(getattr(coarse, x)) for x in ("m", "v"))
    return rich, fine


@pytest.fixture(scope="module")
def example():
    return example_problem()


@pytest.fixture(scope="module")
def example_minus(example):
    return solve(example, M0, V0, T1, ts=TS, repulsive="minus", **TOL)


@pytest.fixture(scope="module")
def example_gd(example):
    return richardson(example, M0, V0, T1, TS, EULER_STEPS, EULER_MAX)


def test_repulsive_example_minus_branch_is_these_gradient_descents(example_minus, example_gd):
    sol = example_minus
    (rich_m, rich_v), fine = example_gd
    # The gradient-descent answer at t = 20, quoted to 4 decimals (dt = 1e-4 and
    # the Richardson limit of 2e-3, 1e-3 agreed): 1e-4 covers the quoting and dt = 1e-4.
    np.testing.assert_allclose(np.asarray(sol.m[-1]), [[-0.0795, -0.1085, 0.3130]], rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(sol.v[-1]), [-0.2527], rtol=0, atol=1e-4)
    assert abs(float(sol.loss[-1]) - 0.17461) < 5e-6
    # Our own Richardson-extrapolated gradient descent, along the whole path.
    np.testing.assert_allclose(np.asarray(sol.m), rich_m, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(sol.v), rich_v, rtol=0, atol=1e-4)
    # The record: m_12 starts sliding at t ~ 6.1, the surface repels when v_1 crosses 0
    # at t ~ 8.55, and the default branch leaves to m < 0.
    events = sol.events.to_list()
    assert [(e[1], e[2], e[3], e[4]) for e in events] == [(0, 1, "slide", "slide"), (0, 1, "repulsive", "m<0")]
    assert abs(events[0][0] - 6.1) < 0.05 and abs(events[1][0] - 8.55) < 0.05
    # v_1 changes sign at the repulsive event (F^- and F^+ are proportional to v_1).
    t_rep = events[1][0]
    v = np.asarray(sol.v[:, 0])
    assert np.all(v[TS < t_rep - 0.2] > 0) and np.all(v[TS > t_rep + 0.2] < 0)


def test_repulsive_example_default_says_step_dependent(example, example_minus):
    """theta ~ 0.51 when the surface turns: gradient descent's side is a coin toss over its
    step (steps 2e-3, 1e-3 and 1e-4 leave to m < 0, 5e-4 to m > 0), and the record says so."""
    sol = solve(example, M0, V0, T1, ts=TS, **TOL)
    events = sol.events.to_list()
    assert [e[1:] for e in events] == [(0, 1, "slide", "slide"), (0, 1, "step_dependent", "m>0")]
    before = TS < 8.5
    np.testing.assert_allclose(np.asarray(sol.m)[before], np.asarray(example_minus.m)[before], rtol=0, atol=1e-12)


def test_repulsive_example_other_branches(example):
    plus = solve(example, M0, V0, T1, ts=TS, repulsive="plus", **TOL)
    stay = solve(example, M0, V0, T1, ts=TS, repulsive="stay", **TOL)
    assert plus.events.of_kind("repulsive")[0][4] == "m>0"
    # "plus" leaves to m_12 > 0 and stays there; "stay" keeps sliding (the old answer).
    assert float(plus.m[-1, 0, 1]) > 0.05
    np.testing.assert_allclose(np.asarray(stay.m[-1]), [[-0.1438, 0.0, 0.2193]], rtol=0, atol=5e-5)
    np.testing.assert_allclose(np.asarray(stay.v[-1]), [-0.2214], rtol=0, atol=5e-5)
    assert stay.events.of_kind("repulsive") == [] and float(stay.m[-1, 0, 1]) == 0.0
    # All three follow one path until the surface repels.
    before = TS < 8.5
    for other in (plus, stay):
        np.testing.assert_allclose(np.asarray(other.m)[before], np.asarray(plus.m)[before], rtol=0, atol=1e-12)


def test_repulsive_example_scipy_matches_diffrax(example, example_minus):
    ref = solve(example, M0, V0, T1, ts=TS, method="RK45", repulsive="minus", **TOL)
    assert ref.success
    # Both are tight adaptive solves of the same segments: 1e-7 is far above their errors.
    np.testing.assert_allclose(np.asarray(ref.m), np.asarray(example_minus.m), rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(ref.v), np.asarray(example_minus.v), rtol=0, atol=1e-7)
    mine, theirs = example_minus.events.to_list(), ref.events.to_list()
    assert [e[1:] for e in mine] == [e[1:] for e in theirs]
    np.testing.assert_allclose([e[0] for e in mine], [e[0] for e in theirs], rtol=0, atol=1e-7)


def test_start_on_a_repulsive_surface(example, example_minus):
    """Start at m_12 = 0 after v_1 changed sign: F^- < 0 < F^+, recorded at t0, branch taken."""
    i = int(np.searchsorted(TS, 10.0))
    m0 = np.asarray(example_minus.m[i]).copy()
    m0[0, 1] = 0.0
    v0 = np.asarray(example_minus.v[i])
    t1, ts = 5.0, np.linspace(0.0, 5.0, 11)
    sol = solve(example, m0, v0, t1, ts=ts, **TOL)
    first = sol.events.to_list()[0]
    assert first[0] == 0.0 and first[1:] == (0, 1, "repulsive", "m<0")
    (rich_m, rich_v), _ = richardson(example, m0, v0, t1, ts, EULER_STEPS, EULER_MAX)
    np.testing.assert_allclose(np.asarray(sol.m), rich_m, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(sol.v), rich_v, rtol=0, atol=1e-4)


def test_start_on_an_attractive_surface(example, example_minus):
    """Start at m_12 = 0 while the surface attracts: a slide recorded at t0."""
    i = int(np.searchsorted(TS, 7.0))
    m0, v0 = np.asarray(example_minus.m[i]), np.asarray(example_minus.v[i])
    assert m0[0, 1] == 0.0  # sliding at t = 7
    t1 = 1.4  # the surface turns repulsive ~1.55 later: stop before (not unique after)
    ts = np.linspace(0.0, t1, 11)
    sol = solve(example, m0, v0, t1, ts=ts, **TOL)
    assert sol.events.to_list() == [(0.0, 0, 1, "slide", "slide")]
    (rich_m, rich_v), _ = richardson(example, m0, v0, t1, ts, EULER_STEPS, EULER_MAX)
    np.testing.assert_allclose(np.asarray(sol.m), rich_m, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(sol.v), rich_v, rtol=0, atol=1e-4)


def test_dead_unit_with_an_entry_on_the_surface(example):
    """All entries <= 0, one exactly 0: relu'(0) = 0 and relu(0) = 0, so nothing moves."""
    m0, v0 = np.array([[-0.3, 0.0, -0.2]]), np.array([0.7])
    sol = solve(example, m0, v0, 5.0, ts=np.linspace(0.0, 5.0, 11), **TOL)
    assert sol.success
    np.testing.assert_array_equal(np.asarray(sol.m), np.broadcast_to(m0, sol.m.shape))
    np.testing.assert_array_equal(np.asarray(sol.v), np.broadcast_to(v0, sol.v.shape))


def test_simultaneous_events_of_twin_units(example):
    """Two identical units: every event of one happens at the same instant in the other.

    Both must be resolved (the side check of every entry after each segment), and the
    units must stay identical and match gradient descent (up to the repulsion).
    """
    m0, v0 = np.repeat(M0, 2, axis=0), np.repeat(V0, 2)
    sol = solve(example, m0, v0, T1, ts=TS, **TOL)
    events = sol.events.to_list()
    # Both units slide at one instant, and both surfaces repel at one instant.
    assert [(e[1], e[2], e[3]) for e in events] == [
        (0, 1, "slide"),
        (1, 1, "slide"),
        (0, 1, "step_dependent"),
        (1, 1, "step_dependent"),
    ]
    assert events[0][0] == events[1][0] and events[2][0] == events[3][0]
    # The units' sums are taken in different orders: equal up to rounding.
    np.testing.assert_allclose(np.asarray(sol.m[:, 0]), np.asarray(sol.m[:, 1]), rtol=0, atol=1e-14)
    (rich_m, rich_v), _ = richardson(example, m0, v0, T1, TS, EULER_STEPS, EULER_MAX)
    before = TS < events[2][0]
    np.testing.assert_allclose(np.asarray(sol.m)[before], rich_m[before], rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(sol.v)[before], rich_v[before], rtol=0, atol=1e-4)


# --- randomized: 100 random relu problems against Richardson gradient descent ----------------

# (L, P, teacher, pooling, M): both poolings, finite M and the continuum, three teachers.
SHAPES = [
    (2, 2, "relu", "mean", None),
    (2, 4, "tanh", "sum", 2),
    (3, 3, "indicator", "mean", 3),
    (4, 5, "relu", "mean", None),
    (1, 3, "relu", "mean", None),
]
PER_SHAPE = 20
RANDOM_T1 = 8.0
RANDOM_TS = np.linspace(0.0, RANDOM_T1, 9)
RANDOM_STEPS = (5e-5, 2.5e-5)
RANDOM_MAX = int(RANDOM_T1 / 2.5e-5) + 16


def random_problem(rng, L, P, teacher, pooling, M, k=3):
    """Random unit-norm atoms (|mu|^2 / D = 1), head, and a start near the surfaces.

    Heads of size ~0.7 and kernels of size ~0.3 make entries cross 0 and heads change
    sign within the horizon, so every kind of event occurs. Sum pooling over `N = M^2`
    patches scales the gradients by ~`N`; its learning rates are divided by `N` to keep
    the time scale of the mean-pooled problems (and Euler at steps 1e-4 converged).
    """
    atoms = rng.normal(size=(P, k * k))
    atoms *= k / np.linalg.norm(atoms, axis=1, keepdims=True)
    mixture = PatchMixture(atoms, rng.uniform(0.5, 2.0, P), M, pooling)
    scale = 1.0 / M**2 if pooling == "sum" else 1.0
    problem = TeacherStudent(
        mixture,
        rng.normal(size=P),
        teacher_activation=teacher,
        student_activation="relu",
        kernel_lr_multiplier=scale * k * k,
        head_lr_multiplier=scale,
    )
    return problem, 0.3 * rng.normal(size=(L, P)), 0.7 * rng.normal(size=L)


def _random_batch(index):
    shape = SHAPES[index]
    rng = np.random.default_rng(index)
    items = [random_problem(rng, *shape) for _ in range(PER_SHAPE)]
    problem = stack_problems([p for p, _, _ in items])
    m0, v0 = np.stack([m for _, m, _ in items]), np.stack([v for _, _, v in items])
    sol = solve_batch(problem, m0, v0, RANDOM_T1, ts=RANDOM_TS, batch_problem=True, **TOL)
    (rich_m, rich_v), _ = richardson(
        problem, m0, v0, RANDOM_T1, RANDOM_TS, RANDOM_STEPS, RANDOM_MAX, batched=True, batch_problem=True
    )
    return sol, rich_m, rich_v


@pytest.fixture(scope="module")
def random_batches():
    return [_random_batch(i) for i in range(len(SHAPES))]


@pytest.mark.parametrize("index", range(len(SHAPES)), ids=["{}x{}-{}-{}-M{}".format(*s) for s in SHAPES])
def test_random_problems_match_gradient_descent(random_batches, index):
    sol, rich_m, rich_v = random_batches[index]
    assert sol.success
    err = np.maximum(
        np.abs(np.asarray(sol.m) - rich_m).max(axis=(2, 3)), np.abs(np.asarray(sol.v) - rich_v).max(axis=2)
    )  # (B, T)
    for b in range(PER_SHAPE):
        events = sol.events.to_list(b)
        repulsive = [e[0] for e in events if e[3] in ("repulsive", "step_dependent")]
        # 1e-4: the Richardson limit of steps 5e-5, 2.5e-5 is that accurate here (with
        # steps 1e-4, 5e-5 its worst case was 1.06e-4, on a sum-pooled problem with 13
        # events: Euler's error at an event depends on where the event falls in a step, so
        # extrapolation removes only part of it).
        if not repulsive:
            assert err[b].max() < 1e-4, (b, err[b].max(), events)
        else:
            # Not unique: up to the first repulsive event the paths must agree; after it,
            # gradient descent may take another branch, and the record has said so.
            apart = RANDOM_TS[err[b] >= 1e-4]
            assert apart.size == 0 or apart[0] > repulsive[0], (b, apart, events)


def test_random_problems_saw_every_kind_of_event(random_batches):
    """The random set exercises every transition (and heads that cross zero)."""
    kinds = {e[3] for sol, _, _ in random_batches for b in range(PER_SHAPE) for e in sol.events.to_list(b)}
    assert {"cross", "slide", "exit"} <= kinds <= set(EVENT_KINDS)
    assert kinds & {"repulsive", "step_dependent"}
    crossed = [np.any(np.diff(np.sign(np.asarray(sol.v)), axis=1) != 0) for sol, _, _ in random_batches]
    assert any(crossed)


# --- larger sizes, scipy, the record itself ----------------------------------------------------


def test_scipy_relu_8x10_matches_diffrax():
    """The scipy backend on an 8 x 10 problem (it crashed on a segment with no save time)."""
    rng = np.random.default_rng(7)
    problem, m0, v0 = random_problem(rng, 8, 10, "relu", "mean", None, k=4)
    ts = np.linspace(0.0, 5.0, 6)
    ref = solve(problem, m0, v0, 5.0, ts=ts, **TOL)
    sp = solve(problem, m0, v0, 5.0, ts=ts, method="RK45", **TOL)
    assert ref.success and sp.success and int(ref.events.count) >= 3
    # Two tight adaptive solves of the same segments.
    np.testing.assert_allclose(np.asarray(sp.m), np.asarray(ref.m), rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(sp.v), np.asarray(ref.v), rtol=0, atol=1e-7)
    assert [e[1:] for e in sp.events.to_list()] == [e[1:] for e in ref.events.to_list()]


def test_event_record_layout(example, example_minus):
    ev = example_minus.events
    assert ev.t.shape == ev.kind.shape == (256,) and int(ev.count) == 2
    assert np.all(np.asarray(ev.kind)[2:] == -1)
    assert ev.of_kind("slide")[0][1:3] == (0, 1)
    small = solve(example, M0, V0, T1, ts=TS, max_events=1, **TOL)
    assert int(small.events.count) == 2 and len(small.events.to_list()) == 1  # overflow is counted
    with pytest.raises(ValueError, match="unknown event kind"):
        ev.of_kind("bounce")
    with pytest.raises(ValueError, match="repulsive must be one of"):
        solve(example, M0, V0, T1, repulsive="down")
    smooth = solve(
        TeacherStudent(example.mixture, V_STAR, teacher_activation="relu", student_activation="softplus"), M0, V0, 1.0
    )
    assert smooth.events.t.shape == (0,) and int(smooth.events.count) == 0 and smooth.events.to_list() == []
    assert isinstance(Events.empty(3, (2,)).count, jnp.ndarray)


def test_sliding_solve_matches_numpy_on_random_sliding_sets():
    """The elimination of the sliding system against numpy's LAPACK solve of each unit's sub-Gram."""
    from cnntheory._filippov import _sliding_solve

    rng = np.random.default_rng(11)
    for L, P in [(1, 1), (3, 4), (5, 12), (16, 50)]:
        atoms = rng.normal(size=(P, P + 3))
        G = atoms @ atoms.T / (P + 3)
        S = rng.random((L, P)) < rng.uniform(0.0, 1.0, (L, 1))
        b = rng.normal(size=(L, P)) * S
        x = np.asarray(_sliding_solve(jnp.asarray(G), jnp.asarray(S), jnp.asarray(b)))
        for l in range(L):
            s = S[l]
            expected = np.zeros(P)
            expected[s] = np.linalg.solve(G[np.ix_(s, s)], b[l, s])
            # Relative to the solution's size: the sub-Grams' condition numbers reach ~1e3 here.
            np.testing.assert_allclose(
                x[l], expected, rtol=0, atol=1e-12 * max(1.0, np.abs(expected).max()) * np.linalg.cond(G)
            )


def test_research_size_relu_solve_runs_and_converges():
    """A 16 x 50 relu solve (800 entries) runs to t1 with events and is converged in its tolerance.

    It once compiled and then waited for ever: jaxlib's batched LAPACK LU on the CPU and the
    two one-sided flows evaluated in parallel took every XLA thread on a two-core machine.
    Tolerances are traced, so the tight solve reuses the compiled program.
    """
    rng = np.random.default_rng(5)
    problem, m0, v0 = random_problem(rng, 16, 50, "relu", "mean", None, k=8)
    ts = np.linspace(0.0, 5.0, 6)
    loose = solve(problem, m0, v0, 5.0, ts=ts, rtol=1e-8, atol=1e-10, max_events=1024)
    tight = solve(problem, m0, v0, 5.0, ts=ts, rtol=1e-11, atol=1e-13, max_events=1024)
    assert loose.success and tight.success and int(tight.events.count) >= 5
    assert float(tight.loss[-1]) < float(tight.loss[0])
    np.testing.assert_allclose(np.asarray(loose.m), np.asarray(tight.m), rtol=0, atol=1e-6)
    assert [e[1:] for e in loose.events.to_list()] == [e[1:] for e in tight.events.to_list()]


# --- reverse-mode gradients through relu solves ------------------------------------------
# The solve is differentiated through its checkpointed segment loop, with event times
# differentiated implicitly; the mode choice itself is discrete. Finite differences are
# valid where the event sequence does not change within the difference: the problem below
# has a slide event well inside the interval and no entry near 0 at the start.

GRAD_TOL = dict(rtol=1e-11, atol=1e-13)
#: Central differences with this step: truncation ~1e-10, solver noise ~1e-11 / 1e-5.
EPS = 1e-5


def grad_output(problem, m0, v0, t1, ts):
    sol = solve(problem, m0, v0, t1, ts=ts, throw=False, **GRAD_TOL)
    return jnp.sum(sol.m[-1] ** 2) + jnp.sum(jnp.sin(sol.v[-1])) + sol.loss[len(ts) // 2]


def central_difference(f, x, direction):
    return (f(x + EPS * direction) - f(x - EPS * direction)) / (2 * EPS)


@pytest.mark.slow
def test_gradients_through_a_slide_match_finite_differences():
    """The issue's example up to t = 8: m_12 starts sliding at t ~ 6.1 (before the repulsion)."""
    problem, t1 = example_problem(), 8.0
    ts = jnp.linspace(0.0, t1, 5)
    m0, v0 = jnp.asarray(M0), jnp.asarray(V0)
    events = solve(problem, m0, v0, t1, ts=ts, **GRAD_TOL).events.to_list()
    assert [e[3] for e in events] == ["slide"]
    grad = jax.grad(grad_output, argnums=(0, 1, 2))
    g_problem, g_m, g_v = grad(problem, m0, v0, t1, ts)
    rng = np.random.default_rng(0)
    dm = jnp.asarray(rng.normal(size=m0.shape))
    np.testing.assert_allclose(
        float(jnp.sum(g_m * dm)), central_difference(lambda x: grad_output(problem, x, v0, t1, ts), m0, dm), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(g_v[0]), central_difference(lambda x: grad_output(problem, m0, x, t1, ts), v0, 1.0), rtol=1e-5
    )
    # The problem's array fields: the teacher head and the moment matrix.
    for field in (lambda p: p.teacher_head, lambda p: p.moments):
        value = field(problem)
        d = jnp.asarray(rng.normal(size=value.shape))
        d = (d + d.T) / 2 if d.ndim == 2 else d

        def f(x, field=field):
            return grad_output(eqx.tree_at(field, problem, x), m0, v0, t1, ts)

        np.testing.assert_allclose(float(jnp.sum(field(g_problem) * d)), central_difference(f, value, d), rtol=1e-5)
