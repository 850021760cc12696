"""A sweep sharded over 4 forced host devices equals the unsharded loop, element by element."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np, jax.numpy as jnp
    import cnntheory as ct
    from cnntheory.analysis import sweep, SweepResult
    assert len(jax.devices()) == 4, jax.devices()
    fn = lambda overlap, skew: ct.shape_counting(overlap, (1.0 + skew, 1.0), "tanh", k=3)
    grid = {"overlap": [0.2, 0.5, 0.8], "skew": [0.0, 1.0, 2.0]}
    m0, v0 = jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.01, -0.01])
    ts = np.linspace(0, 20, 21)
    res = sweep(fn, grid, m0, v0, 20.0, ts=ts, chunk_size=4, progress=False)
    assert res.m.shape == (3, 3, 21, 2, 2) and res.loss.shape == (3, 3, 21)
    diff = 0.0
    for i, o in enumerate(grid["overlap"]):
        for j, s in enumerate(grid["skew"]):
            ref = ct.solve(fn(o, s), m0, v0, 20.0, ts=ts)
            diff = max(diff, float(np.max(np.abs(res.m[i, j] - np.asarray(ref.m)))), float(np.max(np.abs(res.loss[i, j] - np.asarray(ref.loss)))))
    import tempfile, pathlib
    with tempfile.TemporaryDirectory() as d:
        paths = res.save(d)
        back = SweepResult.load(paths["npz"])
        assert np.array_equal(back.loss, res.loss) and list(back.coords) == ["overlap", "skew"]
    print("MAXDIFF", diff)
    """
)


@pytest.mark.slow
def test_sharded_sweep_equals_loop():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    diff = float(out.stdout.split("MAXDIFF")[1])
    # Same solver, same steps per element (vmapped adaptive stepping is per element): only
    # reduction-order rounding separates them (measured 3e-16).
    assert diff < 1e-12


def test_sweep_argument_checks():
    import jax.numpy as jnp
    import pytest

    import cnntheory as ct
    from cnntheory.analysis import sweep

    fn = lambda overlap: ct.shape_counting(overlap, activation="tanh", k=3)
    m0, v0 = jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.01, -0.01])
    with pytest.raises(ValueError, match="non-empty dict"):
        sweep(fn, {}, m0, v0, 1.0, progress=False)
    with pytest.raises(ValueError, match="1-D sequence"):
        sweep(fn, {"overlap": []}, m0, v0, 1.0, progress=False)
