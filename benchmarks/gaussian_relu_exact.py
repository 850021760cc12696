"""relu on Gaussian patches: the exact I4/J3 (closed forms) against the old Gauss–Hermite
quadrature, both against online SGD at D = 2000.

Problem: K = M = 2, g = g* = relu, T = I, unit heads (fixed), sum pooling, lr = 0.5 / N,
start Q = [[0.5, 0.1], [0.1, 0.4]], R = [[0.2, 0.0], [0.1, 0.3]], alpha in [0, T1], N = 1, 4.
For each N: the ODE with `method="auto"` (exact, diffrax), the ODE with `method="quadrature"`
at 16 points (the previous default for relu's I4 and J3; integrated by classical RK4 with step
0.1, because diffrax compiles the 16^4-point rule very slowly; RK4 at this step is accurate to
~1e-6 here, checked on the exact flow), and SEEDS online runs at
D = 2000. Reports the largest difference of the error curves and the RMS gap of the
seed-mean simulated error to each ODE.

Writes `benchmarks/results/gaussian_relu_exact.json`.
Run: `python benchmarks/gaussian_relu_exact.py` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import cnntheory  # noqa: F401 (float64)
from cnntheory.gaussian import GaussianTeacherStudent, simulate, solve

RESULTS = pathlib.Path(__file__).parent / "results"
Q0 = np.array([[0.5, 0.1], [0.1, 0.4]])
R0 = np.array([[0.2, 0.0], [0.1, 0.3]])
V0 = np.ones(2)
T1, RECORDS, SEEDS, DIM = 8.0, 16, 8, 2000


def problem(N, **kw):
    return GaussianTeacherStudent(
        N, np.ones(2), np.eye(2), teacher_activation="relu", student_activation="relu", lr=0.5 / N, **kw
    )


def rk4(problem, ts, dt=0.1):
    """Classical RK4 of the flow, states at `ts` (multiples of `dt`)."""
    f = jax.jit(lambda y: problem.rhs(*y))
    y = tuple(jnp.asarray(x, dtype=jnp.float64) for x in (Q0, R0, V0))
    out, t = [y], 0.0
    add = lambda y, k, h: tuple(a + h * b for a, b in zip(y, k, strict=True))
    for target in np.asarray(ts)[1:]:
        while t < target - 1e-9:
            k1 = f(y)
            k2 = f(add(y, k1, dt / 2))
            k3 = f(add(y, k2, dt / 2))
            k4 = f(add(y, k3, dt))
            y = tuple(a + dt / 6 * (b + 2 * c + 2 * d + e) for a, b, c, d, e in zip(y, k1, k2, k3, k4, strict=True))
            t += dt
        out.append(y)
    return np.asarray([float(problem.error(*y)) for y in out])


def main():
    rows = []
    for N in (1, 4):
        t0 = time.perf_counter()
        sim = simulate(
            problem(N), Q0, R0, V0, dim=DIM, t1=T1, num_records=RECORDS, num_seeds=SEEDS, key=jax.random.PRNGKey(N)
        )
        sim_wall = time.perf_counter() - t0
        mean = np.asarray(sim.error).mean(0)[1:]
        se = np.asarray(sim.error).std(0, ddof=1)[1:] / np.sqrt(SEEDS)
        row = {"N": N, "sim_wall_s": sim_wall, "sim_error_end": float(mean[-1]), "sim_error_end_se": float(se[-1])}
        curves = {}
        for label in ("exact", "exact_rk4", "quad16"):
            t0 = time.perf_counter()
            if label == "exact":
                curves[label] = np.asarray(solve(problem(N), Q0, R0, V0, T1, ts=sim.t).error)
            else:
                kw = {} if label == "exact_rk4" else {"method": "quadrature", "quadrature_points": 16}
                curves[label] = rk4(problem(N, **kw), sim.t)
            row[f"{label}_wall_s"] = time.perf_counter() - t0
            row[f"{label}_error_end"] = float(curves[label][-1])
            gap = mean - curves[label][1:]
            row[f"{label}_gap_rms"] = float(np.sqrt(np.mean(gap**2)))
            row[f"{label}_gap_max_over_se"] = float(np.max(np.abs(gap) / se))
        for label in ("exact_rk4", "quad16"):
            row[f"{label}_vs_exact_max_abs"] = float(np.max(np.abs(curves[label] - curves["exact"])))
            row[f"{label}_vs_exact_max_rel"] = float(np.max(np.abs(curves[label] - curves["exact"]) / curves["exact"]))
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "machine": platform.platform(),
        "devices": [str(d) for d in jax.devices()],
        "T1": T1,
        "records": RECORDS,
        "seeds": SEEDS,
        "dim": DIM,
        "Q0": Q0.tolist(),
        "R0": R0.tolist(),
        "lr": "0.5 / N",
        "K": 2,
        "M": 2,
        "activation": "relu",
    }
    (RESULTS / "gaussian_relu_exact.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(
        "| N | exact eps(T1) | quad16 eps(T1) | sim eps(T1) +- se | max |quad16 - exact| | gap rms exact | gap rms quad16 | max gap/se exact | quad16 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['N']} | {r['exact_error_end']:.5f} | {r['quad16_error_end']:.5f} | {r['sim_error_end']:.5f} +- {r['sim_error_end_se']:.5f} | "
            f"{r['quad16_vs_exact_max_abs']:.2e} | {r['exact_gap_rms']:.2e} | {r['quad16_gap_rms']:.2e} | {r['exact_gap_max_over_se']:.1f} | {r['quad16_gap_max_over_se']:.1f} |"
        )


if __name__ == "__main__":
    main()
