"""One sweep over 1, 2 and 4 local processes joined through `jax.distributed`.

`cnntheory sweep` (the shape-counting phase diagram, `--overlaps x --skews` grid points) is
run as one process, then as 2 and 4 processes on the loopback address
(`--coordinator 127.0.0.1:PORT --num-processes N --process-id I`), without the compilation
cache, so every process pays its own import and compile. Reported: the wall time of the
whole run (the slowest process), its ratio to one process, and whether the assembled result
(process 0's `sweep.npz`) is bit-identical to the single-process one. On a machine with few
cores the point is correctness and overhead, not speed-up: each extra process adds an import
and a compile, and the processes share the cores. Every run uses one chunk size (batched
programs of one shape: the same arithmetic); with other chunk sizes the trajectories stay
identical and the loss along them can differ in its last bit (XLA's CPU code for another
batch shape sums in another order).

    python benchmarks/distributed.py [--overlaps 8] [--skews 8] [--processes 1 2 4]

Prints a table and writes benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(count: int, grid: tuple[int, int], chunk: int, out: pathlib.Path) -> float:
    """Wall time of the sweep over `count` processes (until the last one exits)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CNNTHEORY_NO_CACHE": "1", "JAX_PLATFORMS": "cpu"}
    argv = [sys.executable, "-m", "cnntheory", "sweep", "--overlaps", str(grid[0]), "--skews", str(grid[1])]
    argv += ["--chunk-size", str(chunk), "--out", str(out)]
    port = str(_free_port())
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            argv
            + (
                []
                if count == 1
                else ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(count), "--process-id", str(p)]
            ),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(count)
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"sweep over {count} processes failed:\n{err[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlaps", type=int, default=8)
    parser.add_argument("--skews", type=int, default=8)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    grid = (args.overlaps, args.skews)
    # One chunk size for every run (the share of the most processes, when it divides): the
    # batched programs then have one shape, so the arithmetic, and the result, are the same.
    chunk = max(1, grid[0] * grid[1] // max(args.processes))
    rows = []
    with tempfile.TemporaryDirectory(prefix="distributed_") as tmp:
        reference = None
        for count in args.processes:
            out = pathlib.Path(tmp) / f"p{count}"
            wall = run(count, grid, chunk, out)
            result = dict(np.load(out / "sweep.npz"))
            if reference is None:
                reference = result
            same = all(np.array_equal(result[k], reference[k]) for k in ("m", "v", "loss", "status"))
            diff = max(float(np.max(np.abs(result[k] - reference[k]))) for k in ("m", "v", "loss"))
            rows.append(dict(processes=count, wall_s=wall, bit_identical_to_first=same, max_abs_difference=diff))
    for r in rows:
        r["ratio_to_first"] = r["wall_s"] / rows[0]["wall_s"]
    print(f"\nsweep of {grid[0]} x {grid[1]} shape-counting problems (tanh, t1 = 100, chunks of {chunk}), no cache")
    print(f"{'processes':>9s} {'wall s':>8s} {'ratio':>6s}  bit-identical  max |difference|")
    for r in rows:
        print(
            f"{r['processes']:9d} {r['wall_s']:8.2f} {r['ratio_to_first']:6.2f}  {r['bit_identical_to_first']!s:13s}"
            f"  {r['max_abs_difference']:.1e}"
        )
    out = ROOT / "benchmarks" / "results" / "distributed.json"
    out.write_text(
        json.dumps(
            dict(
                benchmark="distributed",
                grid=dict(overlaps=grid[0], skews=grid[1], chunk_size=chunk),
                machine=dict(platform=platform.platform(), cpus=os.cpu_count(), load_average=os.getloadavg()),
                rows=rows,
            ),
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
