"""The first call: whole-process times, import, compile and per-call overhead, peak memory.

What a researcher pays running a script or the CLI once, measured in one run:

- **Whole process** (a fresh interpreter each): a small `ct.solve` script, `gaussian.solve`
  on the soft committee machine of pyscm's example (M = 2 teachers, K = 3 students, erf,
  lr = 0.5, to alpha = 1000) and `cnntheory --help`; without the persistent compilation
  cache, then a first (cold) and a second (warm) run with it. Wall time and peak memory
  (`maxrss` of the child, from `os.wait4`).
- **Import**: `python -X importtime -c "import cnntheory"`, beside `import jax, diffrax` and
  beside importing every subpackage (what a bare `import cnntheory` loaded before).
- **Compile and steady time** in one process beside a bare `diffrax.diffeqsolve` of the same
  vector field, solver, step-size controller and save times (jitted): the first call after
  `jax.clear_caches()` (trace + compile, alternated, median of repeats) and the steady
  per-call time (alternated, median and minimum of repeats).

`--baseline DIR` runs the whole-process and import figures also with another checkout of
the package on `PYTHONPATH` (e.g. the last release: the "before" column). The comparison
with the peer codes (pyscm, nn2pp) is the peer benchmark's, not this script's.

    python benchmarks/first_call.py [--quick] [--repeats N] [--baseline DIR]

Prints a table and writes benchmarks/results/first_call.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The children's working folder: not a checkout, so that `PYTHONPATH` alone says which
#: cnntheory they import (`python -c` puts the working folder first on `sys.path`).
NEUTRAL = pathlib.Path(tempfile.mkdtemp(prefix="first_call_"))

SOLVE_SCRIPT = """
import time
start = time.perf_counter()
import jax.numpy as jnp
import cnntheory as ct
imported = time.perf_counter()
getattr(ct, "enable_compilation_cache", lambda: None)()  # a baseline may predate it
problem = ct.shape_counting(activation="sigmoid")
traj = ct.solve(problem, jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.01, -0.01]), 60.0, ts=jnp.linspace(0, 60, 61))
traj.m.block_until_ready()
print("TIMES", imported - start, time.perf_counter() - imported)
"""

COMMITTEE_SCRIPT = """
import time
start = time.perf_counter()
import numpy as np
import cnntheory as ct
from cnntheory import gaussian
imported = time.perf_counter()
getattr(ct, "enable_compilation_cache", lambda: None)()  # a baseline may predate it
problem = gaussian.GaussianTeacherStudent(1, np.ones(2), np.eye(2), lr=0.5)
Q0, R0 = 0.2 * np.eye(3), 1e-3 + 1e-6 * np.random.default_rng(0).uniform(size=(3, 2))
traj = gaussian.solve(problem, Q0, R0, np.ones(3), 1000.0)
traj.error.block_until_ready()
print("TIMES", imported - start, time.perf_counter() - imported)
"""


def _child(argv: list[str], env: dict) -> dict:
    """Run `argv`; wall time, peak memory (MiB) and the `TIMES import first_call` line it prints."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=NEUTRAL, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed:\n{err[-2000:]}")
    row = dict(wall_s=wall, peak_mib=usage.ru_maxrss / 1024)
    times = re.search(r"TIMES (\S+) (\S+)", out)
    if times:
        row.update(import_s=float(times[1]), first_call_s=float(times[2]))
    return row


def _env(pythonpath: pathlib.Path, cache: pathlib.Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CNNTHEORY_NO_CACHE", "CNNTHEORY_CACHE_DIR")}
    env["PYTHONPATH"] = str(pythonpath)
    if cache is None:
        env["CNNTHEORY_NO_CACHE"] = "1"
    else:
        env["CNNTHEORY_CACHE_DIR"] = str(cache)
    return env


SCRIPTS = {
    "ct.solve (sigmoid, 2 x 2, t = 60)": ["-c", SOLVE_SCRIPT],
    "gaussian.solve (committee M = 2, K = 3, lr = 0.5, alpha = 1000)": ["-c", COMMITTEE_SCRIPT],
    "cnntheory --help": ["-m", "cnntheory", "--help"],
}


def whole_process(codes: dict[str, pathlib.Path], repeats: int) -> list[dict]:
    """Each script under each code: without the cache, then a first (cold: a fresh cache
    folder) and a second (warm) run with it; `repeats` rounds, alternated; medians."""
    samples: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(repeats):
            for script, argv in SCRIPTS.items():
                for label, path in codes.items():
                    runs = [("no cache", None)]
                    if label == "this":
                        folder = pathlib.Path(tmp) / f"{round_}-{len(samples)}"
                        runs += [("cache cold (1st run)", folder), ("cache warm (2nd run)", folder)]
                    for run, cache in runs:
                        row = _child([sys.executable, *argv], _env(path, cache))
                        samples.setdefault((label, script, run), []).append(row)
                        print(_fmt(dict(code=label, script=script, run=run, **row)), flush=True)
    rows = []
    for (label, script, run), got in samples.items():
        row = dict(code=label, script=script, run=run, repeats=len(got))
        for key in got[0]:
            values = [g[key] for g in got]
            row[key] = max(values) if key == "peak_mib" else statistics.median(values)
        row["wall_min_s"] = min(g["wall_s"] for g in got)
        rows.append(row)
    return rows


def _fmt(row: dict) -> str:
    parts = [f"{row['code']:9s} {row['script'][:46]:46s} {row['run']:21s} {row['wall_s']:6.2f} s"]
    if "import_s" in row:
        parts.append(f"(import {row['import_s']:.2f} s, first call {row['first_call_s']:.2f} s)")
    parts.append(f"peak {row['peak_mib']:.0f} MiB")
    return "  ".join(parts)


TIMED = {
    "jax",
    "diffrax",
    "cnntheory",
    *(f"cnntheory.{n}" for n in ("analysis", "compare", "energy", "fluctuations", "gaussian", "simulate", "symbolic")),
}


def imports(pythonpath: pathlib.Path, label: str) -> list[dict]:
    """`-X importtime` totals of `import cnntheory` and the modules it leaves loaded."""
    env = _env(pythonpath, None)
    rows = []
    codes = {
        "import jax, diffrax": "import jax, diffrax",
        "import cnntheory": "import cnntheory",
        "import cnntheory + every subpackage": "import cnntheory\n"
        + "".join(
            f"import cnntheory.{n}\n"
            for n in ("analysis", "compare", "energy", "fluctuations", "gaussian", "simulate", "symbolic")
        ),
    }
    probe = "\nimport sys\nprint('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'sympy', 'matplotlib', 'sklearn'}), len(sys.modules))"
    for name, code in codes.items():
        res = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code + probe],
            capture_output=True,
            text=True,
            env=env,
            cwd=NEUTRAL,
        )
        # Top-level lines only (one space after the bar): nested imports are inside their cumulative.
        top = re.finditer(r"import time:\s+(\d+) \|\s+(\d+) \| (\S+)$", res.stderr, re.MULTILINE)
        cumulative = [int(m[2]) for m in top if m[3] in TIMED]
        loaded = re.search(r"LOADED (\[.*\]) (\d+)", res.stdout)
        wall = _child([sys.executable, "-c", code], env)
        rows.append(
            dict(
                code=label,
                what=name,
                importtime_s=sum(cumulative) / 1e6,
                wall_s=wall["wall_s"],
                peak_mib=wall["peak_mib"],
                heavy_loaded=loaded[1] if loaded else "?",
                modules=int(loaded[2]) if loaded else -1,
            )
        )
        r = rows[-1]
        print(
            f"{label:9s} {name:38s} importtime {r['importtime_s']:5.2f} s  process {r['wall_s']:5.2f} s  "
            f"{r['modules']} modules, heavy: {r['heavy_loaded']}",
            flush=True,
        )
    return rows


# --- in one process: compile and steady time beside a bare diffeqsolve ---------------------


def _timed(f) -> float:
    import jax

    start = time.perf_counter()
    jax.block_until_ready(f())
    return time.perf_counter() - start


def _steady(fs: dict, rounds: int, number: int) -> dict:
    """Alternate the callables round by round; per call: median and minimum wall time over
    rounds, and the median CPU time of the process (all its threads: less sensitive to load)."""
    import jax

    wall: dict[str, list[float]] = {k: [] for k in fs}
    cpu: dict[str, list[float]] = {k: [] for k in fs}
    for _ in range(rounds):
        for k, f in fs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(number):
                jax.block_until_ready(f())
            wall[k].append((time.perf_counter() - start) / number)
            cpu[k].append((time.process_time() - start_cpu) / number)
    return {k: (statistics.median(wall[k]), min(wall[k]), statistics.median(cpu[k])) for k in fs}


def _compile(fs: dict, repeats: int) -> dict:
    """First-call time after `jax.clear_caches()`, alternated; the median per callable."""
    import jax

    samples: dict[str, list[float]] = {k: [] for k in fs}
    for _ in range(repeats):
        for k, f in fs.items():
            jax.clear_caches()
            samples[k].append(_timed(f))
    return {k: statistics.median(v) for k, v in samples.items()}


def in_process(quick: bool) -> list[dict]:
    import diffrax
    import jax
    import jax.numpy as jnp
    import numpy as np

    import cnntheory as ct
    from cnntheory import gaussian

    problem = ct.shape_counting(activation="sigmoid")
    m0, v0 = jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.01, -0.01])
    ts = jnp.linspace(0.0, 60.0, 61)

    @jax.jit
    def bare_solve(problem, y0, t1, ts):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, p: p.rhs(*y)),
            diffrax.Tsit5(),
            0.0,
            t1,
            None,
            y0,
            args=problem,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
            max_steps=100_000,
            throw=False,
        ).ys

    t1 = jnp.asarray(60.0)
    solve_fs = {
        "cnntheory": lambda: ct.solve(problem, m0, v0, 60.0, ts=ts).m,
        "bare diffeqsolve": lambda: bare_solve(problem, (m0, v0), t1, ts),
    }

    committee = gaussian.GaussianTeacherStudent(1, np.ones(2), np.eye(2), lr=0.5)
    Q0, R0 = 0.2 * np.eye(3), 1e-3 + 1e-6 * np.random.default_rng(0).uniform(size=(3, 2))
    y0 = tuple(jnp.asarray(x) for x in (Q0, R0, np.ones(3)))
    alphas = jnp.linspace(0.0, 1000.0, 201)

    @jax.jit
    def bare_committee(problem, y0, alpha1, ts):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, p: p.rhs(*y)),
            diffrax.Tsit5(),
            0.0,
            alpha1,
            1e-2,
            y0,
            args=problem,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
            max_steps=1_000_000,
            throw=False,
        ).ys

    alpha1 = jnp.asarray(1000.0)
    committee_fs = {
        "cnntheory": lambda: gaussian.solve(committee, Q0, R0, np.ones(3), 1000.0).error,
        "bare diffeqsolve": lambda: bare_committee(committee, y0, alpha1, alphas),
    }
    # The same solves: the saved states agree to round-off (`ct.solve` steps the state as one
    # flat vector, the bare solve as a tuple), recorded per row.
    difference = {
        "ct.solve": np.abs(np.asarray(solve_fs["cnntheory"]()) - np.asarray(solve_fs["bare diffeqsolve"]()[0])).max(),
        "gaussian.solve": np.abs(
            np.asarray(gaussian.solve(committee, Q0, R0, np.ones(3), 1000.0).Q)
            - np.asarray(committee_fs["bare diffeqsolve"]()[0])
        ).max(),
    }

    rows = []
    for name, fs, (rounds, number) in (
        ("ct.solve (sigmoid, 2 x 2, t = 60)", solve_fs, (5, 50) if quick else (15, 200)),
        ("gaussian.solve (committee M = 2, K = 3)", committee_fs, (3, 5) if quick else (9, 20)),
    ):
        compile_s = _compile(fs, 2 if quick else 3)
        steady = _steady(fs, rounds, number)
        ours, bare = "cnntheory", "bare diffeqsolve"
        rows.append(
            dict(
                solve=name,
                first_call_s=compile_s[ours],
                bare_first_call_s=compile_s[bare],
                first_call_ratio=compile_s[ours] / compile_s[bare],
                steady_ms=steady[ours][0] * 1e3,
                bare_steady_ms=steady[bare][0] * 1e3,
                steady_ratio=steady[ours][0] / steady[bare][0],
                steady_min_ms=steady[ours][1] * 1e3,
                bare_steady_min_ms=steady[bare][1] * 1e3,
                steady_min_ratio=steady[ours][1] / steady[bare][1],
                steady_cpu_ms=steady[ours][2] * 1e3,
                bare_steady_cpu_ms=steady[bare][2] * 1e3,
                steady_cpu_ratio=steady[ours][2] / steady[bare][2],
                max_state_difference=float(difference[name.split()[0]]),
            )
        )
        r = rows[-1]
        print(
            f"{name:42s} first call {r['first_call_s']:5.2f} s vs {r['bare_first_call_s']:5.2f} s "
            f"({r['first_call_ratio']:.2f}x); steady {r['steady_ms']:.3f} ms vs {r['bare_steady_ms']:.3f} ms "
            f"({r['steady_ratio']:.2f}x; min {r['steady_min_ratio']:.2f}x; cpu {r['steady_cpu_ratio']:.2f}x)",
            flush=True,
        )
    return rows


def _describe(checkout: pathlib.Path) -> str:
    """The baseline by its commit (not its path on this machine)."""
    res = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return res.stdout.strip()[:80] or checkout.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the whole-process runs (default 3)")
    parser.add_argument("--baseline", type=pathlib.Path, help="another checkout of the package: the 'before' figures")
    args = parser.parse_args()
    import jax

    load_before = os.getloadavg()
    print("whole process (a fresh interpreter each):")
    codes = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    processes = whole_process(codes, 1 if args.quick else args.repeats)
    print("\nimport:")
    import_rows = imports(ROOT, "this")
    if args.baseline:
        import_rows += imports(args.baseline.resolve(), "baseline")
    print("\nin one process, beside a bare jitted diffeqsolve:")
    sys.path.insert(0, str(ROOT))
    compile_rows = in_process(args.quick)
    meta = dict(
        machine=platform.machine(),
        cpus=os.cpu_count(),
        python=platform.python_version(),
        jax=jax.__version__,
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
        quick=args.quick,
        baseline=_describe(args.baseline) if args.baseline else None,
        note="one run: whole-process rows are medians of `repeats` runs alternated with the other rows "
        "(peak memory the largest), compile and steady rows alternate cnntheory and the bare diffeqsolve; "
        "the machine's load is in load_average; the peer comparison (pyscm, nn2pp) is the peer benchmark's",
    )
    out = ROOT / "benchmarks" / "results" / "first_call.json"
    out.write_text(
        json.dumps(dict(meta=meta, whole_process=processes, imports=import_rows, compile=compile_rows), indent=2) + "\n"
    )
    print(f"\npeer comparison (pyscm, nn2pp): skipped here, see the peer benchmark\nwrote {out}")


if __name__ == "__main__":
    main()
