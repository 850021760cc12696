"""Results: `Status`, the error hierarchy, `raise_for_status` (solver options: `test_config.py`)."""

import jax
import numpy as np
import pytest
from helpers_problems import SEED_M0, SEED_V0

import cnntheory as ct
from cnntheory import (
    CnnTheoryError,
    SolverError,
    Status,
    shape_counting,
    solve,
    solve_batch,
)
from cnntheory import simulate as sim
from cnntheory._trajectory import status_message

M0 = SEED_M0
V0 = SEED_V0


def test_status_codes_are_stable():
    assert [int(s) for s in Status] == [0, 1, 2, 3, 4]
    assert [s.name for s in Status] == ["SUCCESS", "MAX_STEPS", "MAX_SEGMENTS", "DIVERGED", "FAILED"]


@pytest.mark.parametrize(
    "status, kwargs, words",
    [
        (Status.SUCCESS, {}, "successfully reached the end"),
        (Status.MAX_STEPS, {"max_steps": 7, "t1": 3.0}, "max_steps=7 reached at t=1.5 before t1=3: raise max_steps"),
        (Status.MAX_STEPS, {"max_steps": 7}, "before the end of the interval"),
        (Status.MAX_SEGMENTS, {"max_segments": 9}, "more than max_segments=9 relu mode switches before t=1.5"),
        (Status.DIVERGED, {"method": "tsit5"}, "diverged (non-finite or |state| > 1e+100) near t=1.5"),
        (Status.DIVERGED, {"method": "euler"}, "reduce dt0"),
        (
            Status.FAILED,
            {"method": "RK45", "detail": "step size too small"},
            "the solver 'RK45' failed at t=1.5: step size too small",
        ),
    ],
)
def test_status_describe(status, kwargs, words):
    assert words in status.describe(1.5, **kwargs)


def test_status_message_uses_describe_and_names_the_batch_element():
    codes = np.array([0, Status.MAX_SEGMENTS, Status.DIVERGED])
    message = status_message(codes, np.array([2.0, 1.5, 0.5]), "tsit5", None, 10, 20)
    assert (
        message
        == Status.MAX_SEGMENTS.describe(1.5, max_segments=20) + " (first failing batch element 1, 2 of 3 failed)"
    )
    assert status_message(0, 2.0, "tsit5", None, 10, 20) == Status.SUCCESS.describe()


def test_exception_hierarchy():
    assert issubclass(CnnTheoryError, RuntimeError)
    assert issubclass(SolverError, CnnTheoryError) and issubclass(sim.SimulationDiverged, CnnTheoryError)
    assert not issubclass(CnnTheoryError, ValueError)


@pytest.mark.slow
def test_trajectory_raise_for_status():
    problem = shape_counting(activation="tanh")
    ok = solve(problem, M0, V0, 2.0, ts=[2.0])
    assert ok.raise_for_status() is ok and int(ok.status) == Status.SUCCESS
    failed = solve(problem, M0, V0, 50.0, ts=[50.0], max_steps=4, throw=False)
    assert int(failed.status) == Status.MAX_STEPS
    with pytest.raises(SolverError, match="max_steps=4") as info:
        failed.raise_for_status()
    assert str(info.value) == failed.message
    with pytest.raises(CnnTheoryError, match="max_steps=4"):
        solve(problem, M0, V0, 50.0, ts=[50.0], max_steps=4)


@pytest.mark.slow
def test_trajectory_raise_for_status_under_jit():
    problem = shape_counting(activation="tanh")
    run = jax.jit(lambda m0: solve(problem, m0, V0, 50.0, ts=[50.0], max_steps=4, throw=False).raise_for_status().m)
    with pytest.raises(Exception, match="did not reach t1"):
        jax.block_until_ready(run(M0))


@pytest.mark.slow
def test_simulation_status_and_raise_for_status():
    problem = ct.shape_counting(activation="linear", patches_per_side=None)
    kw = {"mode": "population", "steps": 20, "key": jax.random.key(0), "num_seeds": 2, "num_test": 0}
    ok = sim.simulate(problem, M0, V0, lr=0.01, **kw)
    assert ok.success and ok.raise_for_status() is ok
    np.testing.assert_array_equal(ok.status, [Status.SUCCESS] * 2)
    bad = sim.simulate(problem, M0, V0, lr=10.0, throw=False, **kw)
    assert not bad.success
    np.testing.assert_array_equal(bad.status, [Status.DIVERGED] * 2)
    with pytest.raises(sim.SimulationDiverged) as info:
        bad.raise_for_status()
    assert str(info.value) == bad.message and info.value.lr == 10.0
    first = int(np.argmin(np.asarray(bad.diverged_at)))
    assert info.value.seed_index == first and info.value.step == int(bad.diverged_at[first])
    with pytest.raises(CnnTheoryError, match=r"diverged .* at step \d+ .*lr="):
        sim.simulate(problem, M0, V0, lr=10.0, **kw)


@pytest.mark.slow
def test_trajectory_stack_is_a_batched_solve():
    """`Trajectory.stack` of single solves equals `solve_batch` of the same starts."""
    problem = shape_counting(activation="tanh")
    starts = [(M0, V0), (0.5 * M0, -V0)]
    ts = [0.5, 1.0]
    stacked = ct.Trajectory.stack([solve(problem, m, v, 1.0, ts=ts) for m, v in starts])
    batch = solve_batch(problem, np.stack([m for m, _ in starts]), np.stack([v for _, v in starts]), 1.0, ts=ts)
    np.testing.assert_array_equal(stacked.t, batch.t)
    for name in ("m", "v", "loss"):
        np.testing.assert_allclose(getattr(stacked, name), getattr(batch, name), rtol=0, atol=1e-12)
    for name in ("status", "num_steps", "num_segments"):
        np.testing.assert_array_equal(getattr(stacked, name), getattr(batch, name))
    assert stacked.success and stacked.message == batch.message
