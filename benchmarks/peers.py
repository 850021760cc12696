"""The peer codes side by side: `gaussian.solve` against pyscm and nn2pp, and `ct.solve`
against the hand-written Euler loop research code uses.

**The committee example** (pyscm's `examples/scm_ode.py` defaults): the soft committee machine
with `M = 2` teacher and `K = 3` student units, `g(x) = erf(x / sqrt 2)`, isotropic teacher
`T = I`, second layers fixed to 1, `lr = 0.5`, integrated to `alpha = 1000` from
`Q0 = 0.2 I`, `R0 = 1e-3 + 1e-6 U(0, 1)`. Every code starts from the same state and is scored
by its generalisation error `eps_g(alpha)` against a tight reference (`gaussian.solve`,
Tsit5 at `rtol = atol = 1e-12`) at the times it reports:

- `gaussian.solve` at its default tolerances and as explicit Euler with `dt0 = 0.01`
  (pyscm's and nn2pp's map): the first call (trace + compile) and the steady call (median).
- **pyscm** (S. Goldt, Cython; github.com/sgoldt/pyscm): its `scm_ode_erf.propagate` over
  pyscm's own print grid, run by the Python it is installed in (`--pyscm-python`, or
  `CNNTHEORY_PYSCM_PYTHON`). Time of the integration loop, and of the whole process.
- **nn2pp** (S. Goldt, C++ with Armadillo; github.com/sgoldt/nn2pp): its ODE integrator
  `scmpp_ode.exe` (`--nn2pp`, or `CNNTHEORY_NN2PP_ODE`), fed the same initial state through its
  `--prefix` files. It prints six significant digits, so its error is resolved only above
  about `1e-6 eps_g`. Whole-process time.
- **Whole process** of a cnntheory script doing the same solve: a first run without the
  persistent compilation cache, a second run with a warm one (`cnntheory.enable_compilation_cache`).

A peer that is not installed is skipped with a line saying how to build it: they are built
from their public source into a scratch environment for a run (never for the tests):

    python -m venv /tmp/peers/venv && /tmp/peers/venv/bin/pip install numpy scipy cython wheel setuptools
    git clone https://github.com/sgoldt/pyscm && /tmp/peers/venv/bin/pip install --no-build-isolation ./pyscm
    apt-get install libarmadillo-dev && git clone https://github.com/sgoldt/nn2pp && \\
        make -C nn2pp scmpp_ode.exe CFLAGS="-O3 -fopenmp" MFLAGS="-larmadillo -fopenmp"

**The CNN flow against a hand-written Euler loop**: `ct.solve` on the sigmoid shape-counting
problem (2 x 2, to `t = 60`) at its default tolerances, against a jitted `lax.scan` of explicit
Euler steps of the same vector field (what research code writes), the step halved until its
error at the save times is no larger than `ct.solve`'s: compile and steady time of both.

    python benchmarks/peers.py [--pyscm-python PY] [--nn2pp EXE] [--repeats N]

Prints a table and writes benchmarks/results/peers.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from first_call import _child, _env  # noqa: E402  (one way to time a child process)

ROOT = pathlib.Path(__file__).resolve().parents[1]
M, K, LR, ALPHA = 2, 3, 0.5, 1000.0
#: pyscm's and nn2pp's print grid: t = 0 and then 300 log-spaced times from 0.1 to alpha.
PRINT_TIMES = np.concatenate([[0.0], np.geomspace(0.1, ALPHA, 300)])


def initial_state() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(Q0, R0, v0)` of the committee example (every code starts here)."""
    R0 = 1e-3 + 1e-6 * np.random.default_rng(0).uniform(size=(K, M))
    return 0.2 * np.eye(K), R0, np.ones(K)


def _problem():
    from cnntheory import gaussian

    return gaussian.GaussianTeacherStudent(1, np.ones(M), np.eye(M), lr=LR)


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    """`(first call s, steady median s, last result)`; results blocked on before the clock stops."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    steady = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        steady.append(time.perf_counter() - start)
    return first, statistics.median(steady), out


def cnntheory_rows(repeats: int):
    """`gaussian.solve` rows, and the reference `eps_g(times)` (Tsit5 at `rtol = atol = 1e-12`)."""
    import jax

    from cnntheory import gaussian

    problem, (Q0, R0, v0) = _problem(), initial_state()
    ts = PRINT_TIMES

    def run(**options):
        traj = gaussian.solve(problem, Q0, R0, v0, ALPHA, ts=ts, **options)
        return np.asarray(jax.block_until_ready(traj.error))

    def reference(times: np.ndarray) -> np.ndarray:
        times = np.asarray(times, dtype=float)
        unique, where = np.unique(np.clip(times, 0.0, ALPHA), return_inverse=True)
        traj = gaussian.solve(problem, Q0, R0, v0, ALPHA, ts=unique, rtol=1e-12, atol=1e-12)
        return np.asarray(traj.error)[where]

    rows = []
    for label, options in (
        ("gaussian.solve (Tsit5, default tolerances)", {}),
        ("gaussian.solve (explicit Euler, dt0 = 0.01)", {"method": "euler", "dt0": 0.01}),
    ):
        jax.clear_caches()
        first, steady, err = _timed(lambda options=options: run(**options), repeats)
        rows.append(dict(code=label, compile_s=first - steady, steady_s=steady, **_errors(ts, err, reference)))
    return rows, reference


def _errors(ts: np.ndarray, err: np.ndarray, reference) -> dict:
    """Largest absolute and relative error of `eps_g` at the times a code reports (its own
    times: pyscm and nn2pp step past a print time by up to `dt`), against `reference(ts)`."""
    ref = reference(ts)
    return dict(max_abs_error=float(np.max(np.abs(err - ref))), max_rel_error=float(np.max(np.abs(err - ref) / ref)))


PYSCM_CHILD = """
import json, sys, time
import numpy as np
start = time.perf_counter()
from scm import scm
from scm.ode import scm_ode_erf
cfg = json.loads(sys.argv[1])
Q, R, T = (np.array(cfg[k], dtype=float) for k in ("Q0", "R0", "T"))
times = np.array(cfg["times"])
errors = [scm.eg_white_inputs_orderparameters(Q, R, T, scm.g_erf, scm.g_erf, False)]
loop = time.perf_counter()
t, ts = 0.0, [0.0]
for duration in np.diff(times):
    t, Q, R = scm_ode_erf.propagate(duration, cfg["dt"], Q.shape[0] + T.shape[0], t, Q, R, T, cfg["lr"], 0.0, 0.0, 0)
    Q, R = np.array(Q), np.array(R)
    ts.append(t)
    errors.append(scm.eg_white_inputs_orderparameters(Q, R, T, scm.g_erf, scm.g_erf, False))
loop = time.perf_counter() - loop
print(json.dumps(dict(times=ts, errors=errors, loop_s=loop, total_s=time.perf_counter() - start)))
"""


def pyscm_row(python: str | None, reference) -> dict | str:
    if not python or not shutil.which(python):
        return "pyscm: not found (give --pyscm-python or CNNTHEORY_PYSCM_PYTHON; see the module docstring to build it)"
    Q0, R0, _ = initial_state()
    cfg = dict(Q0=Q0.tolist(), R0=R0.tolist(), T=np.eye(M).tolist(), times=PRINT_TIMES.tolist(), dt=0.01, lr=LR)
    start = time.perf_counter()
    proc = subprocess.run([python, "-c", PYSCM_CHILD, json.dumps(cfg)], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return f"pyscm: failed ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode})"
    out = json.loads(proc.stdout)
    return dict(
        code="pyscm (Cython, explicit Euler dt = 0.01)",
        compile_s=0.0,
        steady_s=out["loop_s"],
        whole_process_s=wall,
        **_errors(np.array(out["times"]), np.array(out["errors"]), reference),
    )


def nn2pp_row(exe: str | None, reference) -> dict | str:
    if not exe or not os.access(exe, os.X_OK):
        return "nn2pp: not found (give --nn2pp or CNNTHEORY_NN2PP_ODE, the path of scmpp_ode.exe; see the docstring)"
    Q0, R0, v0 = initial_state()
    with tempfile.TemporaryDirectory(prefix="nn2pp_") as tmp:
        prefix = os.path.join(tmp, "committee")
        for name, x in (("Q0", Q0), ("R0", R0), ("T0", np.eye(M)), ("A0", np.ones(M)), ("v0", v0)):
            np.savetxt(f"{prefix}_{name}.dat", np.atleast_2d(x) if name not in ("A0", "v0") else x[:, None])
        argv = [exe, "--prefix", prefix, "--M", str(M), "--K", str(K), "--lr", str(LR), "--dt", "0.01"]
        argv += ["--steps", str(int(ALPHA)), "--quiet"]
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp, check=False)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            return f"nn2pp: failed ({proc.stderr.strip()[-300:] or proc.returncode})"
        rows = [line.split(",") for line in open(f"{prefix}_ode.dat") if line.strip() and not line.startswith("#")]
    t, eg = np.array([float(r[0]) for r in rows]), np.array([float(r[1]) for r in rows])
    return dict(
        code="nn2pp (C++/Armadillo, explicit Euler dt = 0.01)",
        compile_s=0.0,
        steady_s=wall,
        whole_process_s=wall,
        **_errors(t, eg, reference),
        note="steady_s is its whole process (it reports whole seconds only); 6 printed digits",
    )


WHOLE_SCRIPT = """
import time
start = time.perf_counter()
import numpy as np
import cnntheory as ct
from cnntheory import gaussian
imported = time.perf_counter()
ct.enable_compilation_cache()
problem = gaussian.GaussianTeacherStudent(1, np.ones(2), np.eye(2), lr=0.5)
Q0, R0 = 0.2 * np.eye(3), 1e-3 + 1e-6 * np.random.default_rng(0).uniform(size=(3, 2))
traj = gaussian.solve(problem, Q0, R0, np.ones(3), 1000.0)
traj.error.block_until_ready()
print("TIMES", imported - start, time.perf_counter() - imported)
"""


def whole_process_rows(repeats: int) -> list[dict]:
    """The cnntheory script as a whole process: no cache, then a warm cache (median of `repeats`)."""
    out = []
    with tempfile.TemporaryDirectory(prefix="peers_cache_") as cache:
        argv = [sys.executable, "-c", WHOLE_SCRIPT]
        _child(argv, _env(ROOT, pathlib.Path(cache)))  # fills the cache
        for label, env in (
            ("cnntheory script, whole process (no cache)", _env(ROOT, None)),
            ("cnntheory script, whole process (second run, warm cache)", _env(ROOT, pathlib.Path(cache))),
        ):
            runs = [_child(argv, env) for _ in range(repeats)]
            out.append(
                dict(
                    code=label,
                    whole_process_s=statistics.median(r["wall_s"] for r in runs),
                    import_s=statistics.median(r["import_s"] for r in runs),
                    first_call_s=statistics.median(r["first_call_s"] for r in runs),
                    peak_mib=statistics.median(r["peak_mib"] for r in runs),
                )
            )
    return out


def euler_loop_rows(repeats: int) -> list[dict]:
    """`ct.solve` against a hand-written jitted Euler `lax.scan` at equal accuracy."""
    import jax
    import jax.numpy as jnp

    import cnntheory as ct

    problem = ct.shape_counting(activation="sigmoid")
    m0, v0 = jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.01, -0.01])
    t1, ts = 60.0, jnp.linspace(0.0, 60.0, 61)
    y0 = jnp.concatenate([m0.ravel(), v0])  # the flat state (vec m, v) of `problem.flat_rhs`

    def flat(traj) -> np.ndarray:
        m, v = jax.block_until_ready((traj.m, traj.v))
        return np.concatenate([np.asarray(m).reshape(len(ts), -1), np.asarray(v)], axis=1)

    reference = flat(ct.solve(problem, m0, v0, t1, ts=ts, rtol=1e-12, atol=1e-12))

    def ours():
        return flat(ct.solve(problem, m0, v0, t1, ts=ts))

    jax.clear_caches()
    first, steady, y = _timed(ours, repeats)
    target = float(np.max(np.abs(y - reference)))
    rows = [
        dict(
            code="ct.solve (Tsit5, default tolerances)", compile_s=first - steady, steady_s=steady, max_abs_error=target
        )
    ]

    @functools.partial(jax.jit, static_argnums=1)
    def euler(y0, steps_per_save):
        dt = (ts[1] - ts[0]) / steps_per_save

        def save_interval(y, _):
            y = jax.lax.fori_loop(0, steps_per_save, lambda _, y: y + dt * problem.flat_rhs(y), y)
            return y, y

        _, ys = jax.lax.scan(save_interval, y0, None, length=ts.shape[0] - 1)
        return jnp.concatenate([y0[None], ys])

    steps = 1
    while True:
        error = float(np.max(np.abs(np.asarray(euler(y0, steps)) - reference)))
        if error <= target or steps >= 2**16:
            break
        steps *= 2
    jax.clear_caches()
    first, steady, _ = _timed(lambda: np.asarray(jax.block_until_ready(euler(y0, steps))), repeats)
    rows.append(
        dict(
            code=f"hand-written jitted Euler lax.scan (dt = {1.0 / steps:.3g}, "
            + ("as accurate)" if error <= target else "the finest tried)"),
            compile_s=first - steady,
            steady_s=steady,
            max_abs_error=error,
        )
    )
    return rows


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyscm-python", default=os.environ.get("CNNTHEORY_PYSCM_PYTHON"))
    parser.add_argument("--nn2pp", default=os.environ.get("CNNTHEORY_NN2PP_ODE"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    committee, reference = cnntheory_rows(args.repeats)
    skipped = []
    for row in (pyscm_row(args.pyscm_python, reference), nn2pp_row(args.nn2pp, reference)):
        (skipped.append(row) if isinstance(row, str) else committee.append(row))
    committee += whole_process_rows(args.repeats)
    flow = euler_loop_rows(args.repeats)

    ours = committee[0]["steady_s"]
    print(f"\ncommittee M = {M}, K = {K}, lr = {LR}, to alpha = {ALPHA:g} (errors of eps_g vs Tsit5 at 1e-12)")
    head = f"{'code':58s} {'compile s':>9s} {'steady s':>9s} {'process s':>9s} {'x ours':>7s} {'abs err':>8s} {'rel err':>8s}"
    print(head)
    for r in committee:
        steady = r.get("steady_s")
        ratio = None if steady is None else steady / ours
        print(
            f"{r['code']:58s} {_fmt(r.get('compile_s'), '9.3f')} {_fmt(steady, '9.4f')} "
            f"{_fmt(r.get('whole_process_s'), '9.2f')} {_fmt(ratio, '7.1f')} "
            f"{_fmt(r.get('max_abs_error'), '8.1e')} {_fmt(r.get('max_rel_error'), '8.1e')}"
        )
        if "import_s" in r:
            print(f"{'':58s}   import {r['import_s']:.2f} s, solve {r['first_call_s']:.2f} s, {r['peak_mib']:.0f} MiB")
    for line in skipped:
        print(line)
    print("\nCNN flow (sigmoid shape counting, 2 x 2, t = 60): error max abs vs Tsit5 at 1e-12")
    for r in flow:
        ratio = r["steady_s"] / flow[0]["steady_s"]
        print(
            f"{r['code']:58s} {r['compile_s']:9.3f} {r['steady_s']:9.5f} {'':9s} {ratio:7.1f} {r['max_abs_error']:8.1e}"
        )

    out = ROOT / "benchmarks" / "results" / "peers.json"
    out.write_text(
        json.dumps(
            dict(
                benchmark="peers",
                machine=dict(
                    platform=platform.platform(),
                    processor=platform.processor(),
                    cpus=os.cpu_count(),
                    load_average=os.getloadavg(),
                ),
                jax_devices=[str(d) for d in jax.devices()],
                committee=dict(M=M, K=K, lr=LR, alpha=ALPHA, rows=committee, skipped=skipped),
                cnn_flow=flow,
            ),
            indent=1,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
