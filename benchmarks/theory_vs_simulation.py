"""Theory versus simulation for shape counting, at the three simulation levels
(population GD, full-batch GD on sampled images, online SGD).

For a smooth student (softplus) and relu, shape counting with overlap 0.8, alpha = (1, 1),
mean pooling, d = 20, k = 5 (N = 16 patches), Lovig's initial condition:

1. `population` GD vs the ODE's Euler map with dt = lr (= 0.05): round-off.
2. `fullbatch` GD on n_train images vs the C_hat ODE's Euler map (round-off), and its
   test loss vs the population ODE's loss (finite-sample gap).
3. `online` SGD over a grid of lr and B vs the ODE (tsit5; Filippov for relu):
   bias = seed mean minus ODE, RMS over time and components, with the seed noise
   `std^2 / S` subtracted from its square (its deterministic Euler part measured by
   population GD at the same lr); fluctuation = seed std, RMS over time, worst
   component. Fitted log-log slopes: bias ~ lr^a B^c (expected a = 1; the SGD part of
   the bias is O(lr / B), c = -1, the Euler part O(lr), c = 0), fluctuation ~
   (lr / B)^(1/2).

Writes `benchmarks/results/theory_vs_simulation.{json,md,png}`. About 3 minutes on 2 CPU
cores. Run: `python benchmarks/theory_vs_simulation.py`.
"""

from __future__ import annotations

import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import cnntheory
from cnntheory import compare as cmp
from cnntheory import simulate as sim

RESULTS = pathlib.Path(__file__).parent / "results"
M0 = jnp.array([[0.3, 0.25], [0.2, 0.28]])
V0 = jnp.array([0.01, -0.01])
T1 = 20.0  # ODE time of every run (the kernels align with the atoms by then)
RECORDS = 20  # records per run (t = 0, 1, ..., 20)
LRS = (0.2, 0.1, 0.05, 0.025)  # T1 / RECORDS / lr is an integer for each
BATCHES = (4, 16, 64)
SEEDS = 32
N_TRAIN = 256


def exact_levels(problem, key):
    """Levels 1 and 2 at lr = 0.05."""
    lr = 0.05
    kw = dict(lr=lr, t1=T1, record_every=int(round(T1 / RECORDS / lr)), key=key)
    pop = sim.simulate(problem, M0, V0, mode="population", num_test=0, **kw)
    euler = cmp.matching_solve(problem, pop, M0, V0, method="euler", dt0=lr)
    c_pop = cmp.compare(pop, euler)
    full = sim.simulate(problem, M0, V0, mode="fullbatch", num_train=N_TRAIN, num_seeds=4, num_test=2048, **kw)
    c_full = cmp.compare(full, cmp.matching_solve(problem, full, M0, V0, method="euler", dt0=lr), problem=problem)
    c_test = cmp.compare(full, euler, fields=("test_loss", "m"))
    return {
        "lr": lr,
        "population_vs_euler": {k: c_pop[k].summary()["max"] for k in ("m", "v", "train_loss")},
        "fullbatch_vs_chat_euler": {k: c_full[k].summary()["max"] for k in ("m", "v", "train_loss", "predictions")},
        "fullbatch_test_loss_vs_population_ode": c_test["test_loss"].summary()["max"],
        "fullbatch_m_vs_population_ode": c_test["m"].summary()["max"],
        "population_loss_range": [float(euler.loss.min()), float(euler.loss.max())],
        "n_train": N_TRAIN,
        "n_test": 2048,
    }


def reference(problem, ts):
    """The ODE at `ts`: tsit5 (the Filippov hybrid for relu)."""
    return cnntheory.solve(problem, M0, V0, T1, ts=ts)


def rms_bias(x, ref):
    """Noise-corrected RMS (over time and components) of seed mean minus theory, the noise
    of the seed mean, and the fluctuation (seed std, RMS over time, worst component)."""
    S = x.shape[0]
    mean = x.mean(axis=0)
    var = x.var(axis=0, ddof=1) if S > 1 else np.zeros_like(mean)
    raw = float(np.sqrt(np.mean((mean - ref) ** 2)))
    noise = float(np.sqrt(np.mean(var) / S))
    return float(np.sqrt(max(raw**2 - noise**2, 0.0))), raw, noise, float(np.sqrt(np.mean(var, axis=0)).max())


def flat(m, v):
    """`(..., T, L, P)` and `(..., T, L)` as one `(..., T, L P + L)` array."""
    m, v = np.asarray(m), np.asarray(v)
    return np.concatenate([m.reshape(m.shape[:-2] + (-1,)), v], axis=-1)


def online_grid(problem, key):
    rows = []
    traj = None
    for lr in LRS:
        r = int(round(T1 / RECORDS / lr))
        kw = dict(lr=lr, t1=T1, record_every=r, num_test=0, key=key)
        # The deterministic Euler part of the bias: population GD (= the Euler map) vs the ODE.
        pop = sim.simulate(problem, M0, V0, mode="population", **kw)
        if traj is None:  # same record times for every lr
            traj = reference(problem, pop.t)
        ref = flat(traj.m, traj.v)
        euler_bias = rms_bias(flat(pop.m, pop.v), ref)[1]
        for B in BATCHES:
            t0 = time.perf_counter()
            s = sim.simulate(problem, M0, V0, mode="online", batch_size=B, num_seeds=SEEDS, **kw)
            bias, raw, noise, fluct = rms_bias(flat(s.m, s.v), ref)
            rows.append(
                dict(
                    lr=lr,
                    B=B,
                    reference=traj.method,
                    bias=bias,
                    bias_raw=raw,
                    mean_noise=noise,
                    fluctuation=fluct,
                    euler_bias=euler_bias,
                    seconds=time.perf_counter() - t0,
                )
            )
            print(
                f"  lr={lr:<6g} B={B:<3d} bias={bias:.3e} (raw {raw:.3e}, noise {noise:.3e}, Euler part {euler_bias:.3e}) "
                f"fluct={fluct:.3e} ({rows[-1]['seconds']:.1f} s)"
            )
    return rows


def fit_slopes(rows):
    """log-log least squares (points where the noise-corrected bias exceeds the seed-mean
    noise).

    - bias vs lr at each B (`numpy.polyfit`), and jointly `log bias = a log lr + c log B`
      (the SGD part of the bias is O(lr / B), the Euler part O(lr));
    - the Euler part alone (population GD vs ODE) vs lr;
    - fluctuation: `log std = s log(lr / B) + const` over all points.
    """
    lr = np.array([r["lr"] for r in rows])
    B = np.array([r["B"] for r in rows], dtype=float)
    bias = np.array([r["bias"] for r in rows])
    noise = np.array([r["mean_noise"] for r in rows])
    fluct = np.array([r["fluctuation"] for r in rows])
    ok = bias > noise
    per_B = {}
    for b in BATCHES:
        sel = ok & (B == b)
        per_B[str(b)] = float(np.polyfit(np.log(lr[sel]), np.log(bias[sel]), 1)[0]) if sel.sum() >= 2 else None
    a = c = float("nan")
    if ok.sum() >= 4:
        X = np.stack([np.log(lr[ok]), np.log(B[ok]), np.ones(ok.sum())], axis=1)
        a, c, _ = np.linalg.lstsq(X, np.log(bias[ok]), rcond=None)[0]
    lrs = np.array(LRS)
    euler = np.array([next(r["euler_bias"] for r in rows if r["lr"] == x) for x in lrs])
    fluct_slope, fluct_icpt = np.polyfit(np.log(lr / B), np.log(fluct), 1)
    return {
        "bias_vs_lr_slope": float(a),
        "bias_vs_B_slope": float(c),
        "bias_vs_lr_slope_per_B": per_B,
        "bias_fit_points": int(ok.sum()),
        "euler_bias_vs_lr_slope": float(np.polyfit(np.log(lrs), np.log(euler), 1)[0]),
        "fluctuation_vs_lr_over_B_slope": float(fluct_slope),
        "fluctuation_prefactor": float(np.exp(fluct_icpt)),
    }


def plot(results, path):
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    for row, (act, res) in enumerate(results.items()):
        rows = res["online"]
        ax = axes[row, 0]
        for B in BATCHES:
            sel = [r for r in rows if r["B"] == B]
            ax.loglog([r["lr"] for r in sel], [r["bias"] for r in sel], "o-", label=f"B={B}")
            ax.loglog(
                [r["lr"] for r in sel], [r["mean_noise"] for r in sel], ":", color=ax.lines[-1].get_color(), lw=0.8
            )
        lr = np.array(LRS)
        euler = [next(r["euler_bias"] for r in rows if r["lr"] == x) for x in lr]
        ax.loglog(lr, euler, "ks-", ms=3, lw=0.8, label="Euler part (population GD)")
        ax.loglog(lr, lr * rows[0]["bias"] / rows[0]["lr"], "k--", lw=0.8, label="slope 1")
        ax.text(0.02, 0.02, "dotted: seed-mean noise", transform=ax.transAxes, fontsize=7)
        ax.set(
            xlabel="lr",
            ylabel="bias (RMS, noise-corrected)",
            title=f"{act}: bias ~ lr^{res['slopes']['bias_vs_lr_slope']:.2f} B^{res['slopes']['bias_vs_B_slope']:.2f}",
        )
        ax.legend(fontsize=8)
        ax = axes[row, 1]
        x = np.array([r["lr"] / r["B"] for r in rows])
        ax.loglog(x, [r["fluctuation"] for r in rows], "o")
        xs = np.sort(x)
        ax.loglog(
            xs,
            res["slopes"]["fluctuation_prefactor"] * xs ** res["slopes"]["fluctuation_vs_lr_over_B_slope"],
            "k--",
            lw=0.8,
        )
        ax.set(
            xlabel="lr / B",
            ylabel="seed std (RMS over t)",
            title=f"{act}: fluctuation, slope {res['slopes']['fluctuation_vs_lr_over_B_slope']:.3f}",
        )
    fig.suptitle(f"online SGD vs ODE, shape counting (overlap 0.8, alpha (1,1), N=16), {SEEDS} seeds, t1={T1:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results) -> str:
    lines = ["# Theory vs simulation (shape counting, d=20, k=5, mean pooling)", ""]
    for act, res in results.items():
        ex = res["exact"]
        lines += [
            f"## {act}",
            "",
            f"- population GD vs ODE Euler map (lr={ex['lr']}): max |dm| = {ex['population_vs_euler']['m']:.1e}, "
            f"max |dv| = {ex['population_vs_euler']['v']:.1e}",
            f"- fullbatch GD (n_train={ex['n_train']}, 4 seeds) vs C_hat ODE Euler map: max |dm| = "
            f"{ex['fullbatch_vs_chat_euler']['m']:.1e}, max |dv| = {ex['fullbatch_vs_chat_euler']['v']:.1e}, "
            f"train loss {ex['fullbatch_vs_chat_euler']['train_loss']:.1e}",
            f"- fullbatch vs population ODE: max |dm| = {ex['fullbatch_m_vs_population_ode']:.1e}; "
            f"test loss ({ex['n_test']} images) vs ODE loss: max gap {ex['fullbatch_test_loss_vs_population_ode']:.1e} "
            f"(population loss range {ex['population_loss_range'][0]:.3g}..{ex['population_loss_range'][1]:.3g})",
            "",
            "| lr | B | bias | bias (raw) | seed-mean noise | Euler part | fluctuation |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["online"]:
            lines.append(
                f"| {r['lr']:g} | {r['B']} | {r['bias']:.2e} | {r['bias_raw']:.2e} | {r['mean_noise']:.2e} | {r['euler_bias']:.2e} | {r['fluctuation']:.2e} |"
            )
        s = res["slopes"]
        lines += [
            "",
            f"Fitted slopes ({s['bias_fit_points']} of {len(res['online'])} points with bias > seed-mean noise): "
            f"bias ~ lr^{s['bias_vs_lr_slope']:.2f} B^{s['bias_vs_B_slope']:.2f}; bias vs lr per B: "
            + ", ".join(
                f"B={b}: {v:.2f}" if v is not None else f"B={b}: -" for b, v in s["bias_vs_lr_slope_per_B"].items()
            )
            + f"; Euler part ~ lr^{s['euler_bias_vs_lr_slope']:.2f}; "
            f"fluctuation ~ (lr/B)^{s['fluctuation_vs_lr_over_B_slope']:.3f}. Reference ODE: {res['online'][0]['reference']}.",
            "",
        ]
    return "\n".join(lines)


def main():
    RESULTS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = {}
    for act in ("softplus", "relu"):
        print(f"{act}:")
        problem = cnntheory.shape_counting(activation=act, patches_per_side=4, pooling="mean")
        exact = exact_levels(problem, jax.random.key(0))
        print("  exact levels:", exact["population_vs_euler"], exact["fullbatch_vs_chat_euler"])
        rows = online_grid(problem, jax.random.key(1))
        results[act] = {"exact": exact, "online": rows, "slopes": fit_slopes(rows)}
        print("  slopes:", results[act]["slopes"])
    meta = {
        "setting": "shape_counting(overlap=0.8, alpha=(1,1), patches_per_side=4, pooling='mean', k=5)",
        "m0": np.asarray(M0).tolist(),
        "v0": np.asarray(V0).tolist(),
        "t1": T1,
        "records": RECORDS,
        "lrs": LRS,
        "batches": BATCHES,
        "seeds": SEEDS,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "machine": platform.processor() or platform.machine(),
        "seconds": time.perf_counter() - start,
    }
    (RESULTS / "theory_vs_simulation.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (RESULTS / "theory_vs_simulation.md").write_text(table(results))
    plot(results, RESULTS / "theory_vs_simulation.png")
    print(table(results))
    print(f"wrote {RESULTS}/theory_vs_simulation.(json|md|png) in {meta['seconds']:.0f} s")


if __name__ == "__main__":
    main()
