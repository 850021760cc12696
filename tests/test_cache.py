"""The persistent compilation cache (`cnntheory._cache`), always in a temporary folder.

tests/conftest.py sets `CNNTHEORY_NO_CACHE=1` for the whole run; the tests here lift it.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest
from helpers_checks import raises_unchecked
from jax.experimental.compilation_cache import compilation_cache

import cnntheory as ct
from cnntheory import _cache
from cnntheory._integrate import TIME_CHECKS, times_checked
from cnntheory._solve import _checked_times, _compiled, _prepare

FLAGS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture
def cache_env(monkeypatch, tmp_path):
    """The cache allowed, its default folder in `tmp_path`; JAX's cache settings restored after."""
    monkeypatch.delenv("CNNTHEORY_NO_CACHE", raising=False)
    monkeypatch.setenv("CNNTHEORY_CACHE_DIR", str(tmp_path / "default"))
    before = {name: getattr(jax.config, name) for name in FLAGS}
    yield tmp_path
    for name, value in before.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNTHEORY_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("CNNTHEORY_CACHE_DIR")
    assert _cache.default_cache_dir() == tmp_path / "xdg" / "cnntheory" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cache.default_cache_dir() == tmp_path / "home" / ".cache" / "cnntheory" / "jax"


def test_version_key_names_every_version():
    # A new cnntheory, jax or jaxlib, or another backend, never reads another's programs.
    key = _cache.version_key()
    for part in (f"cnntheory-{ct.__version__}", f"jax-{jax.__version__}", f"jaxlib-{jaxlib.__version__}"):
        assert part in key
    assert key.endswith(jax.default_backend())


def test_enable_sets_jax_cache(cache_env):
    path = ct.enable_compilation_cache(cache_env / "here")
    assert path == cache_env / "here" / _cache.version_key()
    assert path.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(path)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == _cache.MIN_COMPILE_TIME_SECS
    # None: the per-user default (here $CNNTHEORY_CACHE_DIR); the cache moves there.
    assert ct.enable_compilation_cache() == cache_env / "default" / _cache.version_key()
    assert jax.config.jax_compilation_cache_dir == str(cache_env / "default" / _cache.version_key())


@pytest.mark.parametrize("value", ["1", "yes"])
def test_no_cache_turns_it_off(cache_env, monkeypatch, value):
    monkeypatch.setenv("CNNTHEORY_NO_CACHE", value)
    before = jax.config.jax_compilation_cache_dir
    assert ct.enable_compilation_cache(cache_env / "here") is None
    assert jax.config.jax_compilation_cache_dir == before
    assert not (cache_env / "here").exists()


def test_no_cache_zero_keeps_it_on(cache_env, monkeypatch):
    monkeypatch.setenv("CNNTHEORY_NO_CACHE", "0")
    assert ct.enable_compilation_cache(cache_env / "here") is not None


@pytest.mark.parametrize("directory", [3, "", b"folder"])
def test_bad_directory(cache_env, directory):
    with raises_unchecked(ValueError, match="directory must be a folder path"):
        ct.enable_compilation_cache(directory)
    with raises_unchecked(ValueError, match="directory must be a folder path"):
        ct.clear_compilation_cache(directory)


def test_uncreatable_directory(cache_env):
    blocker = cache_env / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot create the cache folder.*CNNTHEORY_NO_CACHE=1"):
        ct.enable_compilation_cache(blocker)


def test_uncreatable_default_warns(cache_env, monkeypatch):
    # The default folder is only an optimisation: a run goes on without it.
    blocker = cache_env / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CNNTHEORY_CACHE_DIR", str(blocker))
    with pytest.warns(RuntimeWarning, match="no compilation cache"):
        assert ct.enable_compilation_cache() is None


def test_clear_removes_only_cache_folders(cache_env):
    base = cache_env / "base"
    path = ct.enable_compilation_cache(base)
    (path / "program-cache").write_bytes(b"x")
    stale = base / "cnntheory-0.0.1_jax-0.0.1_jaxlib-0.0.1_cpu"
    stale.mkdir()
    (base / "notes.txt").write_text("kept")
    (base / "other").mkdir()
    ct.clear_compilation_cache(base)
    assert sorted(p.name for p in base.iterdir()) == sorted([path.name, "notes.txt", "other"])
    assert path.is_dir() and not any(path.iterdir())  # the cache in use stays on, empty
    ct.clear_compilation_cache(cache_env / "never_made")  # nothing there: nothing to do


def _callbacks(problem, m0, v0) -> int:
    t0, t1, ts, config, branch, hybrid = _prepare("solve", problem, 0.0, 5.0, None, None, {}, "minus")
    program = _compiled.trace(
        problem, m0, v0, t0, t1, ts, config, branch, hybrid=hybrid, batch_problem=False, batched=False, rhs=None
    )
    return str(program.jaxpr).count("callback")


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_solve_program_has_no_host_callbacks(activation):
    # JAX never writes a program with host callbacks to its cache: the solve must have none.
    problem = ct.shape_counting(activation=activation)
    assert _callbacks(problem, jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.01, -0.01])) == 0


def test_gaussian_program_has_no_host_callbacks():
    from cnntheory.gaussian import GaussianTeacherStudent
    from cnntheory.gaussian._solve import SOLVE_DEFAULTS, _solve, norm_bound

    problem = GaussianTeacherStudent(1, np.ones(2), np.eye(2), lr=0.5)
    y0 = (0.2 * jnp.eye(2), jnp.full((2, 2), 1e-3), jnp.ones(2))
    f64 = np.float64
    bound = norm_bound(problem, y0[0], y0[2])
    jaxpr = eqx.filter_make_jaxpr(_solve)(
        problem, y0, f64(0.0), f64(1.0), jnp.linspace(0.0, 1.0, 3), bound, SOLVE_DEFAULTS
    )
    assert str(jaxpr[0]).count("callback") == 0


def test_traced_times_checked_in_the_callers_program():
    # Traced times skip the Python checks: the same conditions run in the caller's program.
    check = jax.jit(lambda t1, ts, dt0: _checked_times(np.float64(0.0), t1, ts, dt0))
    np.testing.assert_array_equal(check(1.0, jnp.array([0.0, 0.5, 1.0]), 0.1), [0.0, 0.5, 1.0])
    bad = [(1.0, [0.0, 0.7, 0.5], 0.1), (1.0, [0.0, 0.5, 1.5], 0.1), (1.0, [-0.1, 0.5, 1.0], 0.1)]
    bad += [(-1.0, [-1.0, -0.5, 0.0], 0.1), (1.0, [0.0, 0.5, 1.0], -0.1)]
    for t1, ts, dt0 in bad:
        with pytest.raises(Exception, match=r"need t0 < t1, dt0 > 0 and ts sorted in increasing order"):
            jax.block_until_ready(check(t1, jnp.array(ts), dt0))
    concrete = np.linspace(0.0, 1.0, 3)
    assert _checked_times(np.float64(0.0), np.float64(1.0), concrete, None) is concrete  # checked in Python


def test_times_checked_drops_only_those_checks():
    original = eqxi.error_if
    x = jnp.arange(3.0)
    with times_checked():
        for message in TIME_CHECKS:
            assert eqxi.error_if(x, True, message + " (and the values)") is x
        with pytest.raises(Exception, match="another check"):  # equinox raises at trace time
            eqxi.error_if(x, True, "another check")
    assert eqxi.error_if is original
    with pytest.raises(KeyError), times_checked():
        raise KeyError("inside")
    assert eqxi.error_if is original
    with times_checked(False):
        assert eqxi.error_if is original


SCRIPT = textwrap.dedent(
    """
    import collections, json, sys
    import jax, jax.numpy as jnp
    import cnntheory as ct
    events = collections.Counter()
    jax.monitoring.register_event_listener(lambda name, **kwargs: events.update([name]))
    path = ct.enable_compilation_cache()
    problem = ct.shape_counting(activation="tanh")
    traj = ct.solve(problem, jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.01, -0.01]), 5.0)
    print(json.dumps({
        "path": str(path),
        "hits": events["/jax/compilation_cache/cache_hits"],
        "misses": events["/jax/compilation_cache/cache_misses"],
        "m": traj.m.tolist(),
    }))
    """
)


@pytest.mark.slow
def test_second_process_skips_compilation(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CNNTHEORY_NO_CACHE"}
    env["CNNTHEORY_CACHE_DIR"] = str(tmp_path)
    env["PYTHONPATH"] = str(pathlib.Path(ct.__file__).parents[1])

    def run():
        out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=False)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.splitlines()[-1])

    first, second = run(), run()
    folder = pathlib.Path(first["path"])
    assert folder.parent == tmp_path
    assert first["misses"] > 0  # (a program compiled twice in one process hits already in the first)
    assert any(p.name.startswith("jit__compiled-") for p in folder.iterdir())  # the solve itself was written
    assert second["misses"] == 0 and second["hits"] == first["misses"] + first["hits"]  # all came from disk
    assert second["m"] == first["m"]  # the same numbers, bit for bit


# --- the per-call path: a solve's outputs become a `Trajectory` by a cached unflatten ---------


@pytest.mark.parametrize("batch", [(), (3,)])
@pytest.mark.parametrize("shared", [False, True])
def test_assemble_equals_the_constructor(batch, shared):
    from cnntheory._solve import _assemble
    from cnntheory._trajectory import Events, Trajectory

    rng = np.random.default_rng(0)
    T, L, P = 4, 2, 3
    ts = jnp.linspace(0.0, 1.0, T)
    m, v, loss = (jnp.asarray(rng.normal(size=(*batch, T, *s))) for s in ((L, P), (L,), ()))
    status, nsteps, t_end = jnp.zeros(batch, dtype=int), jnp.full(batch, 7), jnp.ones(batch)
    config = ct.SolverConfig(method="dopri5", max_steps=123, max_segments=9)
    got = _assemble(ts, (m, v, loss, status, nsteps, t_end), config, batch, shared=shared)
    nseg = jnp.ones(batch, dtype=int) if shared else jnp.full(batch, 1)
    want = Trajectory(
        t=ts, m=m, v=v, loss=loss, status=status, num_steps=nsteps, num_segments=nseg, t_end=t_end,
        method="dopri5", max_steps=123, max_segments=9, events=Events.empty(0, batch),
    )  # fmt: skip
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.weak_type == b.weak_type
        np.testing.assert_array_equal(a, b)
    assert got.message == want.message
