"""`solve` under JAX transformations: no recompiles for new numbers, `jit`, `vmap`, `grad`.

Gradients are checked against central finite differences of `solve` itself, along random
directions in every array field of the problem and in the initial state. Smooth problems use
a random 3-unit student on 3 random atoms with a sigmoid teacher (so that the teacher
overlaps matter); one compilation per test function at most, small sizes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_problems import SEED_M0, SEED_V0
from helpers_problems import random_sigmoid_problem as random_problem
from helpers_problems import random_sigmoid_state as random_state

import cnntheory as ct
from cnntheory import SolverError, TeacherStudent, solve, solve_batch

T1 = 4.0
TS = np.linspace(0.0, T1, 9)
# Tight tolerances: the AD gradient differentiates the discrete solver, which matches the
# exact derivative to ~rtol; finite differences with step H carry O(H^2) truncation and
# O(atol / H) solver noise, both far below the 1e-6 relative tolerance used below.
TOL = {"rtol": 1e-11, "atol": 1e-13}
H = 1e-5


@pytest.fixture(scope="module")
def smooth():
    return random_problem()


@pytest.mark.slow
def test_new_numbers_do_not_recompile(monkeypatch):
    """New t1, ts, tolerances, parameters and initial states reuse the compiled solve."""
    traces = []
    rhs = TeacherStudent.rhs

    def counting_rhs(self, m, v):
        traces.append(1)  # runs only while JAX traces the program
        return rhs(self, m, v)

    monkeypatch.setattr(TeacherStudent, "rhs", counting_rhs)
    problem = random_problem(1, P=4)
    m0, v0 = random_state(1, L=5, P=4)  # a shape no other test uses: the first call compiles
    solve(problem, m0, v0, T1, ts=TS)
    assert len(traces) > 0
    n = len(traces)
    other = TeacherStudent(
        problem.mixture,
        2 * problem.teacher_head,
        0.5 * problem.teacher_overlaps,
        "sigmoid",
        "sigmoid",
        kernel_lr_multiplier=3.0,
        head_lr_multiplier=0.2,
        moments=1.1 * problem.moments,
    )
    solve(problem, m0, v0, 2 * T1, ts=np.linspace(0.5, 2 * T1, 9))  # new t1 and save times
    solve(problem, m0, v0, T1, ts=TS, rtol=1e-6, atol=1e-9, t0=-1.0)  # new tolerances and t0
    solve(other, 0.5 * m0, -v0, T1, ts=TS)  # new parameters and initial state
    solve(problem, m0, v0, T1, ts=TS, throw=False)
    jax.jit(lambda t1: solve(problem, m0, v0, t1, ts=jnp.linspace(0.0, t1, 9)).loss)(3.0)
    assert len(traces) == n  # even inside jit the inner program's trace is reused
    solve(problem, m0, v0, T1, ts=np.linspace(0.0, T1, 10))  # a new number of save times does retrace
    assert len(traces) > n


@pytest.mark.slow
def test_jit_and_vmap_match_plain_calls(smooth):
    m0, v0 = random_state(0)

    def final_loss(problem, m0, t1):
        return solve(problem, m0, v0, t1, ts=jnp.linspace(0.0, t1, 5), **TOL).loss[-1]

    plain = float(final_loss(smooth, m0, T1))
    assert float(jax.jit(final_loss)(smooth, m0, T1)) == pytest.approx(plain, rel=1e-13)

    # vmap over the initial state, the end time and the teacher head at once
    m0s = np.stack([m0, 0.5 * m0, -m0])
    t1s = np.array([T1, 2.0, 3.0])
    heads = np.stack([smooth.teacher_head, 2 * smooth.teacher_head, -smooth.teacher_head])
    problems = ct.stack_problems([eqx_replace_head(smooth, h) for h in heads])
    batched = jax.vmap(final_loss)(problems, m0s, t1s)
    loop = [float(final_loss(eqx_replace_head(smooth, h), m, t)) for h, m, t in zip(heads, m0s, t1s, strict=True)]
    np.testing.assert_allclose(batched, loop, rtol=1e-12)


def eqx_replace_head(problem, head):
    return TeacherStudent(
        problem.mixture,
        head,
        problem.teacher_overlaps,
        problem.teacher_activation,
        problem.student_activation,
        problem.kernel_lr_multiplier,
        problem.head_lr_multiplier,
        problem.moments,
    )


def test_a_jitted_function_can_return_the_trajectory(smooth):
    m0, v0 = random_state(0)
    traj = jax.jit(lambda m0: solve(smooth, m0, v0, T1, ts=TS))(m0)
    direct = solve(smooth, m0, v0, T1, ts=TS)
    np.testing.assert_allclose(traj.m, direct.m, rtol=1e-13, atol=1e-15)
    assert traj.success and "successfully" in traj.message and traj.method == "tsit5"


@pytest.mark.slow
def test_throw_under_jit():
    """A failing traced solve raises at run time (`eqx.error_if`); throw=False returns the status."""
    problem = ct.shape_counting(activation="sigmoid")
    m0, v0 = np.full((2, 2), 0.3), np.array([0.01, -0.01])

    def run(throw):
        return jax.jit(lambda m0: solve(problem, m0, v0, 60.0, ts=TS, max_steps=5, throw=throw))(m0)

    assert int(run(False).status) == 1 and "max_steps=5" in run(False).message
    with pytest.raises(Exception, match="did not reach t1"):
        jax.block_until_ready(run(True).m)
    with pytest.raises(SolverError, match="max_steps=5"):
        solve(problem, m0, v0, 60.0, ts=TS, max_steps=5)


def _fields(problem):
    names = ("teacher_head", "teacher_overlaps", "moments", "kernel_lr_multiplier", "head_lr_multiplier")
    return {name: getattr(problem, name) for name in names}


def _rebuild(problem, f):
    return TeacherStudent(
        problem.mixture,
        f["teacher_head"],
        f["teacher_overlaps"],
        problem.teacher_activation,
        problem.student_activation,
        f["kernel_lr_multiplier"],
        f["head_lr_multiplier"],
        f["moments"],
    )


@pytest.mark.slow
@pytest.mark.parametrize("output", ["final_loss", "m_mid", "v_end"])
def test_grad_matches_finite_differences(smooth, output):
    """`jax.grad` through `solve` w.r.t. every array field of the problem and the initial state."""
    m0, v0 = random_state(2)
    weights = np.random.default_rng(7).normal(size=(3, 3))

    def objective(params):
        f, m0, v0 = params
        traj = solve(_rebuild(smooth, f), m0, v0, T1, ts=TS, **TOL)
        if output == "final_loss":
            return traj.loss[-1]
        if output == "m_mid":
            return jnp.sum(weights * traj.m[4])
        return jnp.sum(traj.v[-1] ** 2)

    params = (_fields(smooth), jnp.asarray(m0), jnp.asarray(v0))
    grad = jax.grad(objective)(params)
    rng = np.random.default_rng(3)
    # One direction per field (symmetric for the moments, which must stay a Gram matrix).
    for name in [*params[0], "m0", "v0"]:
        direction = jax.tree.map(jnp.zeros_like, params)
        leaf = params[0][name] if name in params[0] else params[1 if name == "m0" else 2]
        d = rng.normal(size=np.shape(leaf))
        if name == "moments":
            d = d + d.T
        if name in params[0]:
            direction[0][name] = jnp.asarray(d)
        else:
            direction = (
                (direction[0], jnp.asarray(d), direction[2])
                if name == "m0"
                else (direction[0], direction[1], jnp.asarray(d))
            )
        ad = sum(jnp.sum(g * u) for g, u in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True))
        plus, minus = (jax.tree.map(lambda p, u, s=s: p + s * u, params, direction) for s in (H, -H))
        fd = (objective(plus) - objective(minus)) / (2 * H)
        assert float(ad) == pytest.approx(float(fd), rel=1e-6, abs=1e-9), name


@pytest.mark.slow
def test_relu_jit():
    """The relu (Filippov) solve also runs traced, under jit and jax.grad (tests/test_filippov.py).

    (vmap works too, as `solve_batch` shows in tests/test_solve.py.)
    """
    problem = ct.shape_counting()
    m0, v0 = SEED_M0, SEED_V0
    ts = np.linspace(0.0, 60.0, 61)  # the shapes of tests/test_solve.py: one shared compilation
    final = lambda m0: solve(problem, m0, v0, 60.0, ts=ts).loss[-1]
    plain = float(final(m0))
    assert float(jax.jit(final)(m0)) == pytest.approx(plain, rel=1e-13)
    assert np.all(np.isfinite(np.asarray(jax.grad(final)(jnp.asarray(m0)))))


@pytest.mark.slow
def test_solve_batch_new_numbers_and_vmap_agree(smooth):
    m0, v0 = random_state(4)
    m0s, v0s = np.stack([m0, -m0]), np.stack([v0, 2 * v0])
    batch = solve_batch(smooth, m0s, v0s, T1, ts=TS, **TOL)
    vm = jax.vmap(lambda m, v: solve(smooth, m, v, T1, ts=TS, **TOL).m)(m0s, v0s)
    np.testing.assert_allclose(batch.m, vm, rtol=1e-12, atol=1e-14)
    assert batch.success and batch.loss.shape == (2, TS.size)
