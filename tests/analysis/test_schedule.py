"""Schedules: `solve_schedule` against chained solves, and `simulate_schedule` (real CNN training
through a schedule) against the chained ODE Euler map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_problems import SEED_M0

import cnntheory as ct
from cnntheory import analysis as an
from cnntheory.analysis import Schedule, restrict_atoms, simulate_schedule, solve_schedule

M0 = jnp.asarray(SEED_M0)
V0 = jnp.array([0.1, -0.1])
LR = 0.05


def _live_ablation():
    problem = ct.shape_counting(activation="tanh", k=3)
    return Schedule([0.0, 2.0], [restrict_atoms(problem, [0]), problem])


@pytest.mark.slow
def test_population_schedule_is_the_chained_euler_map():
    schedule = _live_ablation()
    sims = simulate_schedule(schedule, M0, V0, lr=LR, key=jax.random.PRNGKey(0), t1=4.0, mode="population", num_test=0)
    ode = solve_schedule(schedule, M0, V0, 4.0, ts=[2.0, 4.0], method="euler", dt0=LR)
    # Population GD equals the Euler map to round-off (simulate's own tests: 1e-12 per step);
    # 80 steps of O(1e-16) rounding stay far below 1e-11.
    np.testing.assert_allclose(sims[0].m[0, -1], ode.m[0], atol=1e-11)
    np.testing.assert_allclose(sims[1].m[0, -1], ode.m[1], atol=1e-11)
    np.testing.assert_allclose(sims[1].v[0, -1], ode.v[1], atol=1e-11)
    # The ablated phase really is different data: the second atom's order parameters learn
    # nothing about the missing shape's label until it appears.
    assert not np.allclose(ode.m[0], ode.m[1])


def test_sampling_modes_refuse_moments_that_the_sampler_cannot_draw():
    with pytest.raises(ValueError, match="population"):
        simulate_schedule(
            _live_ablation(), M0, V0, lr=LR, key=jax.random.PRNGKey(0), t1=4.0, mode="online", batch_size=8
        )


@pytest.mark.slow
def test_simulated_filters_match_the_theory_filters():
    from cnntheory.analysis import filters_figure, kernels_from_order, moving_part
    from cnntheory.simulate import simulate

    problem = ct.shape_counting(activation="tanh", k=3)
    sim = simulate(
        problem,
        M0,
        V0,
        mode="population",
        lr=LR,
        key=jax.random.PRNGKey(1),
        t1=4.0,
        record_every=20,
        num_test=0,
        init_scale=1.0,
    )
    kernels = sim.kernels[0]
    # The out-of-span part is real (init_scale=1) and never moves: removing its initial value
    # leaves exactly the in-span filter that the measured m determines (round-off only).
    assert float(jnp.max(jnp.abs(kernels[0] - kernels_from_order(problem, sim.m[0, 0])))) > 0.1
    np.testing.assert_allclose(moving_part(problem, kernels), kernels_from_order(problem, sim.m[0]), atol=1e-12)
    # Theory filters from the Euler map at the same times equal the simulated ones (population GD = Euler map).
    ode = ct.solve(problem, M0, V0, 4.0, ts=sim.t, method="euler", dt0=LR)
    np.testing.assert_allclose(kernels_from_order(problem, ode.m), moving_part(problem, kernels), atol=1e-11)
    fig = filters_figure(problem, [0.0, 2.0, 4.0], ode.m, t=ode.t, simulated_kernels=kernels, t_sim=sim.t)
    assert len(fig.axes) == 2 * 2 * 3  # (theory, simulation) x L units x times


@pytest.mark.slow
def test_schedule_one_segment_and_two_chained():
    p1 = ct.shape_counting(0.8, (1.0, 1.0), "tanh", k=3)
    p2 = an.restrict_atoms(p1, [0])
    m0, v0 = jnp.asarray(SEED_M0), jnp.array([0.1, -0.1])
    ts = np.linspace(0, 10, 11)
    plain = ct.solve(p1, m0, v0, 10.0, ts=ts)
    one = an.solve_schedule(an.Schedule([0.0], [p1]), m0, v0, 10.0, ts=ts)
    np.testing.assert_allclose(one.m, plain.m, atol=1e-13)
    np.testing.assert_allclose(one.loss, plain.loss, atol=1e-13)
    two = an.solve_schedule(an.Schedule([0.0, 4.0], [p2, p1]), m0, v0, 10.0, ts=ts)
    first = ct.solve(p2, m0, v0, 4.0, ts=ts[:5])
    second = ct.solve(p1, first.m[-1], first.v[-1], 10.0, t0=4.0, ts=ts[4:])
    np.testing.assert_allclose(two.m[:4], first.m[:4], atol=1e-13)
    np.testing.assert_allclose(two.m[4:], second.m, atol=1e-13)
    np.testing.assert_allclose(two.loss[4:], second.loss, atol=1e-13)
    assert two.success


@pytest.mark.slow
def test_a_failing_segment_stops_the_chain():
    """The failure branch: a segment that runs out of steps ends the chain with its status and
    message; the later saves are inf (not reached); `throw=True` (the default) raises instead."""
    p1 = ct.shape_counting(0.8, (1.0, 1.0), "tanh", k=3)
    schedule = an.Schedule([0.0, 4.0], [an.restrict_atoms(p1, [0]), p1])
    ts = np.linspace(0, 10, 11)
    failed = an.solve_schedule(schedule, M0, V0, 10.0, ts=ts, max_steps=3, throw=False)
    alone = ct.solve(schedule.problems[0], M0, V0, 4.0, ts=ts[:5], max_steps=3, throw=False)
    assert failed.status == ct.Status.MAX_STEPS and not failed.success and failed.message == alone.message
    assert failed.m.shape == (11, 2, 2) and np.array_equal(np.asarray(failed.t), ts)
    np.testing.assert_array_equal(np.asarray(failed.m[:4]), np.asarray(alone.m[:4]))
    assert np.isinf(np.asarray(failed.m[4:])).all() and np.isinf(np.asarray(failed.loss[4:])).all()
    assert int(failed.num_steps) == int(alone.num_steps)
    with pytest.raises(ct.SolverError, match="max_steps"):
        an.solve_schedule(schedule, M0, V0, 10.0, ts=ts, max_steps=3)
