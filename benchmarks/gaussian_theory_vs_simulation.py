"""Gaussian patches: online SGD at finite D against the D -> infinity ODE, N = 1, 4, 16.

Problem: K = M = 2, g = g* = erf(x / sqrt 2), T = I, unit heads (fixed), sum pooling,
learning rate 0.5 / N (the first-order flow is then the same for every N), start
Q = [[0.5, 0.1], [0.1, 0.4]], R = [[0.2, 0.0], [0.1, 0.3]] (built exactly at every D), time
alpha in [0, 4], records every 0.25. For each N and D in 125 ... 2000, SEEDS online runs:

- `dev`: RMS over seeds, records and components of the deviation of (Q, R) from the ODE;
- `bias`: RMS over records and components of the seed mean minus the ODE (with the seed
  noise std^2 / SEEDS subtracted from its square);
- `err_dev`: RMS over seeds and records of eps_sim - eps_ode.

Fitted log-log slopes against D: fluctuations are expected to scale as D^{-1/2}.

Writes `benchmarks/results/gaussian_theory_vs_simulation.{json,md,png}`.
Run: `python benchmarks/gaussian_theory_vs_simulation.py` (about 4 minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
import pathlib
import platform
import time

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import cnntheory  # noqa: F401 (float64)
from cnntheory.gaussian import GaussianTeacherStudent, simulate, solve

RESULTS = pathlib.Path(__file__).parent / "results"
Q0 = np.array([[0.5, 0.1], [0.1, 0.4]])
R0 = np.array([[0.2, 0.0], [0.1, 0.3]])
V0 = np.ones(2)
T1, RECORDS, SEEDS = 4.0, 16, 16
PATCHES = (1, 4, 16)
DIMS = (125, 250, 500, 1000, 2000)


def run(N, D):
    p = GaussianTeacherStudent(N, np.ones(2), np.eye(2), lr=0.5 / N)
    t0 = time.perf_counter()
    sim = simulate(p, Q0, R0, V0, dim=D, t1=T1, num_records=RECORDS, num_seeds=SEEDS, key=jax.random.PRNGKey(D + N))
    wall = time.perf_counter() - t0
    tr = solve(p, Q0, R0, V0, T1, ts=sim.t)
    sim_y = np.concatenate(
        [np.asarray(sim.Q).reshape(SEEDS, RECORDS + 1, -1), np.asarray(sim.R).reshape(SEEDS, RECORDS + 1, -1)], -1
    )
    ode_y = np.concatenate([np.asarray(tr.Q).reshape(RECORDS + 1, -1), np.asarray(tr.R).reshape(RECORDS + 1, -1)], -1)
    diff = (sim_y - ode_y[None])[:, 1:]  # t = 0 is exact by construction
    dev = float(np.sqrt(np.mean(diff**2)))
    mean, var = diff.mean(0), diff.var(0, ddof=1)
    bias = float(np.sqrt(max(np.mean(mean**2 - var / SEEDS), 0.0)))
    err_dev = float(np.sqrt(np.mean((np.asarray(sim.error) - np.asarray(tr.error)[None])[:, 1:] ** 2)))
    return {
        "N": N,
        "D": D,
        "dev": dev,
        "bias": bias,
        "err_dev": err_dev,
        "wall_s": wall,
        "steps": sim.steps,
        "ode_error_end": float(tr.error[-1]),
        "sim_error_end_mean": float(np.mean(sim.error[:, -1])),
    }


def slope(rows, key):
    x, y = np.log([r["D"] for r in rows]), np.log([r[key] for r in rows])
    return float(np.polyfit(x, y, 1)[0])


def main():
    rows, fits = [], {}
    for N in PATCHES:
        mine = []
        for D in DIMS:
            r = run(N, D)
            mine.append(r)
            print(
                f"N={N:2d} D={D:5d}  dev={r['dev']:.4f}  bias={r['bias']:.4f}  err_dev={r['err_dev']:.2e}  ({r['wall_s']:.1f} s)",
                flush=True,
            )
        rows += mine
        fits[N] = {"dev": slope(mine, "dev"), "err_dev": slope(mine, "err_dev")}
        print(f"N={N:2d}: slope of dev vs D {fits[N]['dev']:.3f}, of err_dev {fits[N]['err_dev']:.3f} (expected -0.5)")
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "machine": platform.platform(),
        "cpu_count": jax.local_device_count(),
        "devices": [str(d) for d in jax.devices()],
        "T1": T1,
        "records": RECORDS,
        "seeds": SEEDS,
        "Q0": Q0.tolist(),
        "R0": R0.tolist(),
        "lr": "0.5 / N",
        "pooling": "sum",
        "activation": "scaled_erf",
    }
    (RESULTS / "gaussian_theory_vs_simulation.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "slopes": {str(k): v for k, v in fits.items()}}, indent=2) + "\n"
    )
    lines = ["| N | D | dev (Q, R) | bias | error dev | wall s |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['N']} | {r['D']} | {r['dev']:.4f} | {r['bias']:.4f} | {r['err_dev']:.2e} | {r['wall_s']:.1f} |"
        for r in rows
    ]
    lines += ["", "| N | slope dev | slope error dev |", "|---|---|---|"]
    lines += [f"| {N} | {f['dev']:.3f} | {f['err_dev']:.3f} |" for N, f in fits.items()]
    (RESULTS / "gaussian_theory_vs_simulation.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for N in PATCHES:
        mine = [r for r in rows if r["N"] == N]
        ax.loglog([r["D"] for r in mine], [r["dev"] for r in mine], "o-", label=f"N = {N} (slope {fits[N]['dev']:.2f})")
    d = np.array(DIMS, float)
    ax.loglog(d, rows[0]["dev"] * (d / d[0]) ** -0.5, "k:", label=r"$D^{-1/2}$")
    ax.set_xlabel("input dimension D per patch")
    ax.set_ylabel("RMS deviation of (Q, R) from the ODE")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "gaussian_theory_vs_simulation.png", dpi=150)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
