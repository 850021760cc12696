"""Work shared over `jax.distributed` processes (`cnntheory._distributed`, `analysis.sweep`).

The multi-process tests start real local CPU processes joined through `jax.distributed` on
the loopback address and compare the assembled sweep with the single-process one, bit for
bit (every grid point is solved in a chunk of one, so the arithmetic is the same).
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnntheory import Status
from cnntheory._distributed import _decode, _encode, gather_shares, share_bounds

ROOT = pathlib.Path(__file__).resolve().parents[1]


@given(st.integers(0, 50), st.integers(1, 9))
def test_shares_partition_the_items_in_order(n, count):
    bounds = [share_bounds(n, p, count) for p in range(count)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_share_bounds_rejects_a_bad_index():
    with pytest.raises(ValueError, match="process index 3 must be in"):
        share_bounds(5, 3, 3)


def test_one_process_computes_everything_and_raises_as_usual():
    out, failures = gather_shares(4, lambda a, b: {"x": np.arange(a, b)})
    assert failures == [] and out["x"].tolist() == [0, 1, 2, 3]

    def boom(a, b):
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError):
        gather_shares(4, boom)


def test_header_round_trip_and_long_errors_are_cut():
    header = {"error": None, "arrays": {"m": [[3, 2], "<f8"]}}
    assert _decode(_encode(header)) == header
    long = _decode(_encode({"error": "x" * 20000, "arrays": {}}))
    assert long["error"].startswith("...") and len(long["error"]) < 2100


CHILD = """
import sys, numpy as np
pid, count, port, out, fail = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"
import cnntheory as ct
if count > 1:
    ct.initialize_distributed(f"127.0.0.1:{port}", count, pid)
import warnings
from cnntheory import analysis

def problem_fn(overlap, skew):
    if fail and overlap > 0.75:
        raise FloatingPointError("this share cannot be built")
    return ct.shape_counting(overlap, (1.0, 1.0 + skew), "sigmoid")

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    res = analysis.sweep(problem_fn, {"overlap": [0.6, 0.7, 0.8], "skew": [0.0]},
                         np.array([[0.3, 0.25], [0.2, 0.28]]), np.array([0.01, -0.01]), 5.0,
                         ts=np.linspace(0.0, 5.0, 6), chunk_size=1, progress=False)
messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
np.savez(f"{out}_{pid}.npz", m=res.m, v=res.v, loss=res.loss, status=res.status, messages=np.array(messages, dtype=str))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: pathlib.Path, count: int, *, fail: bool = False) -> list[dict]:
    """Every process's assembled result of the child sweep, run over `count` processes."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out, port = str(tmp_path / f"run{count}{'f' if fail else ''}"), str(_free_port())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CNNTHEORY_NO_CACHE": "1", "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(p), str(count), port, out, "1" if fail else "0"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(count)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    return [dict(np.load(f"{out}_{p}.npz")) for p in range(count)]


@pytest.mark.slow
def test_sweep_over_processes_equals_one_process(tmp_path):
    (single,) = _run(tmp_path, 1)
    assert (single["status"] == Status.SUCCESS).all()
    # 2 processes: shares of 2 and 1 points; 4 processes: one has no work.
    for count in (2, 4):
        results = _run(tmp_path, count)
        for res in results:  # assembled on every process, identically
            for key in ("m", "v", "loss", "status"):
                np.testing.assert_array_equal(res[key], single[key])
            assert res["messages"].size == 0


@pytest.mark.slow
def test_a_failed_share_is_reported_not_dropped(tmp_path):
    (single,) = _run(tmp_path, 1)
    for res in _run(tmp_path, 2, fail=True):
        # process 0 holds overlaps 0.6, 0.7; process 1's share (0.8) raised.
        np.testing.assert_array_equal(res["m"][:2], single["m"][:2])
        assert np.isnan(res["m"][2]).all() and res["status"].ravel().tolist() == [0, 0, int(Status.FAILED)]
        (message,) = res["messages"]
        assert "process 1 (grid points 2..2) failed: FloatingPointError: this share cannot be built" in message
