"""Solver options: `SolverConfig` (checked when built), the keywords that build one
(`SolverOptions`, `resolve_config`), and every entry point that integrates a flow taking
them the same way (a config and the same keywords give bit-identical results)."""

import dataclasses
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_checks import raises_unchecked
from helpers_problems import SEED_M0, SEED_V0

import cnntheory as ct
from cnntheory import SolverConfig, shape_counting, solve, solve_batch
from cnntheory import analysis as an
from cnntheory import fluctuations as fl
from cnntheory import gaussian as ga
from cnntheory._config import SolverOptions, resolve_config

M0, V0 = SEED_M0, SEED_V0


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
    with raises_unchecked(ValueError, match=words):
        SolverConfig(**kwargs)
    with raises_unchecked(ValueError, match=words):
        solve(shape_counting(activation="tanh"), M0, V0, 1.0, **kwargs)


@pytest.mark.slow
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


@pytest.mark.slow
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
    with raises_unchecked(ValueError, match="config must be a cnntheory.SolverConfig"):
        solve(problem, M0, V0, 1.0, config={"rtol": 1e-7})


@pytest.mark.slow
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


@pytest.mark.slow
def test_solver_config_under_jit_takes_traced_tolerances():
    problem = shape_counting(activation="tanh")

    def final_loss(rtol):
        return solve(problem, M0, V0, 1.0, ts=[1.0], config=SolverConfig(rtol=rtol)).loss[-1]

    assert float(jax.jit(final_loss)(1e-8)) == pytest.approx(float(final_loss(1e-8)), rel=1e-12)


def test_solver_options_are_the_config_fields():
    """The keyword names and the config's fields are one list (a new field cannot be forgotten)."""
    fields = [f.name for f in dataclasses.fields(SolverConfig)]
    assert list(typing.get_type_hints(SolverOptions)) == fields


def test_unknown_solver_keyword_names_the_options():
    problem = shape_counting(activation="tanh")
    m0, v0 = np.stack([M0, M0]), np.stack([V0, V0])
    calls = [
        ("solve", lambda: solve(problem, M0, V0, 1.0, rtoll=1e-6)),
        ("solve_batch", lambda: solve_batch(problem, m0, v0, 1.0, rtoll=1e-6)),
        ("moments", lambda: fl.moments(problem, M0, V0, 1.0, lr=0.1, batch_size=2, rtoll=1e-6)),
        ("training_set_spread", lambda: fl.training_set_spread(problem, M0, V0, 1.0, num_train=10, rtoll=1e-6)),
    ]
    for caller, call in calls:
        with pytest.raises(
            TypeError,
            match=rf"{caller}\(\) got unexpected keyword argument\(s\) 'rtoll'; the solver options are method, rtol",
        ):
            call()


def test_resolve_config_defaults_and_reuse():
    defaults = SolverConfig(dt0=1e-2, max_steps=1_000_000)
    assert resolve_config(None, {}, caller="f", defaults=defaults) == defaults
    config = resolve_config(None, {"rtol": 1e-6}, caller="f", defaults=defaults)
    assert (float(config.rtol), float(config.dt0), config.max_steps) == (1e-6, 1e-2, 1_000_000)
    # Immutable, so repeated keywords reuse one object (no rebuild on every call).
    assert resolve_config(None, {"rtol": 1e-6}, caller="f", defaults=defaults) is config
    # A traced tolerance builds a fresh config that keeps the tracer.
    traced = jax.jit(lambda r: resolve_config(None, {"rtol": r}, caller="f").rtol)(1e-5)
    assert float(traced) == 1e-5


@pytest.mark.slow
def test_entry_points_take_a_config_or_its_keywords():
    """`moments`, `response`, `training_set_spread`, `matching_solve`'s `solve`,
    `solve_schedule`, `sweep`, the Gaussian `solve` and the escape-time fits: the same
    options as keywords or as a `SolverConfig` give identical results, and a conflict is
    refused the same way."""
    problem = shape_counting(activation="tanh")
    options = {"method": "dopri5", "rtol": 1e-7, "atol": 1e-9}
    config = SolverConfig(**options)
    ts = jnp.array([0.5, 1.0])

    def same(a, b):
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)

    same(
        fl.moments(problem, M0, V0, 1.0, lr=0.1, batch_size=4, ts=ts, **options),
        fl.moments(problem, M0, V0, 1.0, lr=0.1, batch_size=4, ts=ts, config=config),
    )
    same(fl.response(problem, M0, V0, 1.0, ts=ts, **options), fl.response(problem, M0, V0, 1.0, ts=ts, config=config))
    schedule = an.Schedule([0.0, 0.5], [problem, problem])
    same(
        an.solve_schedule(schedule, M0, V0, 1.0, ts=ts, **options).m,
        an.solve_schedule(schedule, M0, V0, 1.0, ts=ts, config=config).m,
    )

    def sweep(**solver):
        fn = lambda overlap: shape_counting(float(overlap), activation="tanh")
        return an.sweep(fn, {"overlap": [0.5, 0.8]}, M0, V0, 1.0, ts=ts, progress=False, **solver).loss

    same(sweep(**options), sweep(config=config))
    gp = ga.GaussianTeacherStudent(1, np.ones(2), np.eye(2), lr=0.1)
    Q0, R0 = 0.2 * np.eye(2), 0.1 * np.eye(2)
    same(
        ga.solve(gp, Q0, R0, np.ones(2), 1.0, num_saves=3, **options).Q,
        ga.solve(gp, Q0, R0, np.ones(2), 1.0, num_saves=3, config=config).Q,
    )
    with pytest.raises(ValueError, match="disagree"):
        fl.moments(problem, M0, V0, 1.0, lr=0.1, batch_size=4, config=config, rtol=1e-3)
    with pytest.raises(ValueError, match="disagree"):
        ga.solve(gp, Q0, R0, np.ones(2), 1.0, config=config, method="tsit5")
    with pytest.raises(ValueError, match="method must be an adaptive diffrax solver"):
        fl.moments(problem, M0, V0, 1.0, lr=0.1, batch_size=4, method="RK45")


@pytest.mark.slow
def test_gaussian_solve_keeps_its_own_defaults():
    """The Gaussian flow starts with `dt0 = 1e-2` and allows `10**6` steps: `max_steps=2`
    overrides only that field."""
    gp = ga.GaussianTeacherStudent(1, np.ones(2), np.eye(2), lr=0.1)
    tr = ga.solve(gp, 0.2 * np.eye(2), 0.1 * np.eye(2), np.ones(2), 2.0, max_steps=2, throw=False)
    assert int(tr.status) == ct.Status.MAX_STEPS
    assert "max_steps=2" in tr.message
