"""Results and options: `Status`, the error hierarchy, `raise_for_status`, `SolverConfig`."""

import dataclasses

import jax
import numpy as np
import pytest

import cnntheory as ct
from cnntheory import (
    CnnTheoryError,
    SolverConfig,
    SolverError,
    Status,
    shape_counting,
    solve,
    solve_batch,
)
from cnntheory import simulate as sim
from cnntheory._trajectory import status_message

M0 = np.array([[0.3, 0.25], [0.2, 0.28]])
V0 = np.array([0.01, -0.01])


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


def test_trajectory_raise_for_status_under_jit():
    problem = shape_counting(activation="tanh")
    run = jax.jit(lambda m0: solve(problem, m0, V0, 50.0, ts=[50.0], max_steps=4, throw=False).raise_for_status().m)
    with pytest.raises(Exception, match="did not reach t1"):
        jax.block_until_ready(run(M0))


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
    assert info.value.seed == first and info.value.step == int(bad.diverged_at[first])
    with pytest.raises(CnnTheoryError, match=r"diverged .* at step \d+ .*lr="):
        sim.simulate(problem, M0, V0, lr=10.0, **kw)


# --- SolverConfig ---------------------------------------------------------------------------


def test_solver_config_defaults_match_solve():
    config = SolverConfig()
    assert (config.method, float(config.rtol), float(config.atol), config.dt0) == ("tsit5", 1e-8, 1e-10, None)
    assert (config.max_steps, config.max_segments, config.max_events) == (100_000, 1000, 256)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rtol = 1.0


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"method": "rk4"}, "unknown method 'rk4'"),
        ({"rtol": 0.0}, "rtol must be > 0"),
        ({"rtol": float("nan")}, "rtol must be > 0"),
        ({"atol": -1e-9}, "atol must be > 0"),
        ({"method": "euler"}, "dt0 > 0"),
        ({"method": "euler", "dt0": 0.0}, "dt0 > 0"),
        ({"dt0": -0.1}, "dt0 must be a finite number > 0"),
        ({"dt0": float("inf")}, "dt0 must be a finite number > 0"),
        ({"max_steps": 0}, "max_steps must be an int >= 1"),
        ({"max_steps": 10.5}, "max_steps must be an int >= 1"),
        ({"max_steps": True}, "max_steps must be an int >= 1"),
        ({"max_segments": 0}, "max_segments must be an int >= 1"),
        ({"max_events": -1}, "max_events must be an int >= 1"),
    ],
)
def test_solver_config_rejects(kwargs, words):
    with pytest.raises(ValueError, match=words):
        SolverConfig(**kwargs)
    with pytest.raises(ValueError, match=words):
        solve(shape_counting(activation="tanh"), M0, V0, 1.0, **kwargs)


@pytest.mark.parametrize(
    "activation, options",
    [
        ("tanh", {"method": "dopri5", "rtol": 1e-7, "atol": 1e-9, "max_steps": 5000}),
        ("tanh", {"method": "RK45", "rtol": 1e-7, "atol": 1e-9}),
        ("tanh", {"method": "euler", "dt0": 0.01}),
        ("relu", {"rtol": 1e-7, "atol": 1e-9, "max_segments": 50, "max_events": 16}),
    ],
)
def test_config_and_keywords_give_identical_trajectories(activation, options):
    problem = shape_counting(activation=activation)
    ts = np.linspace(0.0, 2.0, 5)
    by_keywords = solve(problem, M0, V0, 2.0, ts=ts, **options)
    by_config = solve(problem, M0, V0, 2.0, ts=ts, config=SolverConfig(**options))
    for name in ("m", "v", "loss", "status", "num_steps", "num_segments", "t_end"):
        np.testing.assert_array_equal(getattr(by_keywords, name), getattr(by_config, name))
    assert (by_keywords.method, by_keywords.max_steps, by_keywords.max_segments) == (
        by_config.method,
        by_config.max_steps,
        by_config.max_segments,
    )
    assert by_keywords.events.to_list() == by_config.events.to_list()


def test_solve_batch_accepts_a_config():
    problem = shape_counting(activation="tanh")
    m0, v0 = np.stack([M0, 0.5 * M0]), np.stack([V0, V0])
    options = {"method": "dopri5", "rtol": 1e-7}
    a = solve_batch(problem, m0, v0, 1.0, ts=[1.0], **options)
    b = solve_batch(problem, m0, v0, 1.0, ts=[1.0], config=SolverConfig(**options))
    np.testing.assert_array_equal(a.m, b.m)
    with pytest.raises(ValueError, match="diffrax method"):
        solve_batch(problem, m0, v0, 1.0, config=SolverConfig(method="RK45"))


def test_config_and_conflicting_keyword():
    problem = shape_counting(activation="tanh")
    config = SolverConfig(method="dopri5", rtol=1e-7)
    with pytest.raises(ValueError, match=r"config= and the keyword\(s\) rtol disagree"):
        solve(problem, M0, V0, 1.0, config=config, rtol=1e-6)
    with pytest.raises(ValueError, match=r"method, max_steps disagree"):
        solve(problem, M0, V0, 1.0, config=config, method="bosh3", max_steps=10)
    # The same value as the config's, or a keyword left at its default, is no conflict.
    same = solve(problem, M0, V0, 1.0, ts=[1.0], config=config, rtol=1e-7, method="dopri5")
    plain = solve(problem, M0, V0, 1.0, ts=[1.0], config=config)
    np.testing.assert_array_equal(same.m, plain.m)
    with pytest.raises(ValueError, match="config must be a cnntheory.SolverConfig"):
        solve(problem, M0, V0, 1.0, config={"rtol": 1e-7})


def test_config_tolerances_do_not_recompile(monkeypatch):
    """Configs differing only in numbers (rtol, atol, dt0) reuse the compiled solve."""
    traces = []
    rhs = ct.TeacherStudent.rhs

    def counting_rhs(self, m, v):
        traces.append(1)
        return rhs(self, m, v)

    monkeypatch.setattr(ct.TeacherStudent, "rhs", counting_rhs)
    problem = shape_counting(activation="tanh")
    ts = np.linspace(0.0, 1.0, 7)  # a number of save times no other test uses: the first call compiles
    solve(problem, M0, V0, 1.0, ts=ts, config=SolverConfig(method="bosh3"))
    n = len(traces)
    assert n > 0
    solve(problem, M0, V0, 1.0, ts=ts, config=SolverConfig(method="bosh3", rtol=1e-6, atol=1e-7))
    solve(problem, M0, V0, 1.0, ts=ts, method="bosh3", rtol=1e-5)
    jax.jit(lambda rtol: solve(problem, M0, V0, 1.0, ts=ts, config=SolverConfig(method="bosh3", rtol=rtol)).loss)(1e-6)
    assert len(traces) == n


def test_solver_config_under_jit_takes_traced_tolerances():
    problem = shape_counting(activation="tanh")

    def final_loss(rtol):
        return solve(problem, M0, V0, 1.0, ts=[1.0], config=SolverConfig(rtol=rtol)).loss[-1]

    assert float(jax.jit(final_loss)(1e-8)) == pytest.approx(float(final_loss(1e-8)), rel=1e-12)
