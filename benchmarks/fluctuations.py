"""Fluctuation theory of online SGD (`cnntheory.fluctuations.moments`) vs `simulate(mode="online")`.

For six problems (shape counting with overlap 0.8, alpha = (1, 1), mean pooling, M = 4, started
off the plateau at `v(0) = (0.3, -0.3)`; and a random problem: P = 3 atoms of a random Gram
matrix, tanh teacher with a random head, L = 2, M = 3, mean pooling) with softplus, sigmoid and
tanh students, and a grid lr x B, 256 seeds of online SGD each, records at t = 1, 2, 3:

- spread: predicted `sqrt(diag Sigma)` over the measured seed std, per component and time;
  pass when within 10% (the std of 256 seeds has a relative SE of 4.4%, so even an exact theory
  misses 10% in ~2% of components);
- mean: wherever the plain flow misses the seed mean by more than 5 standard errors, pass when
  the corrected mean `mu` is within 2 SE (an exact theory fails this in ~5% of components).

Then where it stops holding: large lr (towards the stability edge), the plateau (shape counting
from `v(0) = (0.01, -0.01)`, where the head's spread exceeds its mean), and relu at the Filippov
sliding surface `m_21 = 0` of shape counting. Finally `fullbatch` GD on 256 training sets of 128
images against `training_set_spread` (`--training-sets` runs only this part).

Writes `benchmarks/results/fluctuations.{json,md,png}`. About 10 minutes on 2 CPU cores.
Run: `python benchmarks/fluctuations.py` (`--quick`: one grid point; `--replot`: redraw the figure).
"""

from __future__ import annotations

import json
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import cnntheory as ct
from cnntheory import fluctuations as fl
from cnntheory import simulate as sim

RESULTS = pathlib.Path(__file__).parent / "results"
SEEDS = 256
T1 = 3.0
LRS = (0.01, 0.025, 0.1)
BATCHES = (1, 4, 16)
ACTIVATIONS = ("softplus", "sigmoid", "tanh")
QUICK = "--quick" in sys.argv  # smoke run: one problem, one grid point
REPLOT = "--replot" in sys.argv  # redraw the figure from the stored JSON
TRAINING_SETS = "--training-sets" in sys.argv  # only the finite-training-set check, merged into the stored JSON


def shape_problem(activation, v=0.3):
    problem = ct.shape_counting(0.8, (1.0, 1.0), activation, 4, "mean")
    return problem, jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([v, -v])


def random_problem(activation, seed=5, P=3, L=2, M=3, k=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, P + 2))
    gram = X @ X.T / (P + 2)
    gram = gram / np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    mixture = ct.PatchMixture(ct.atoms_from_gram(gram, k, key=seed), rng.uniform(0.5, 2.0, P), M, "mean")
    problem = ct.TeacherStudent(
        mixture,
        rng.standard_normal(P),
        teacher_activation="tanh",
        student_activation=activation,
        lr_kernel=float(k * k),
        lr_head=1.0,
    )
    return problem, jnp.asarray(0.5 * rng.standard_normal((L, P))), jnp.asarray(0.5 * rng.standard_normal(L))


def flat(m, v):
    S, T = v.shape[:2]
    return np.concatenate([np.asarray(m).reshape(S, T, -1), np.asarray(v)], axis=2)


def compare(problem, m0, v0, lr, B, t1, records, key, seeds=SEEDS, method="tsit5"):
    """One grid point: simulate, predict, and the per-component statistics at the records."""
    steps = int(round(t1 / lr))
    start = time.perf_counter()
    s = sim.simulate(
        problem,
        m0,
        v0,
        mode="online",
        lr=lr,
        steps=steps,
        record_every=steps // records,
        key=key,
        num_seeds=seeds,
        batch_size=B,
        num_test=0,
        throw=False,
    )
    sim_s = time.perf_counter() - start
    start = time.perf_counter()
    pred = fl.moments(problem, m0, v0, t1, lr=lr, batch_size=B, ts=s.t, method=method, throw=False)
    theory_s = time.perf_counter() - start
    ok = np.asarray(s.status) == 0
    y = flat(s.m, s.v)[ok][:, 1:]
    n = y.shape[0]
    mean, std = y.mean(0), y.std(0, ddof=1)
    se = std / np.sqrt(n)
    flow = np.concatenate([np.asarray(pred.flow_m).reshape(len(s.t), -1), np.asarray(pred.flow_v)], 1)[1:]
    mu, sd = np.asarray(pred.mean)[1:], np.asarray(pred.std)[1:]
    ratio = sd / std
    missed = np.abs(flow - mean) > 5 * se
    z = np.abs(mu - mean) / se
    return {
        "lr": lr,
        "batch_size": B,
        "seeds": int(n),
        "diverged": int((~ok).sum()),
        "t": np.asarray(s.t[1:]).tolist(),
        "theory_status": int(pred.status),
        "theory_message": pred.message,
        "spread_ratio": ratio.tolist(),
        "spread_pass_fraction": float(np.mean(np.abs(ratio - 1) <= 0.10)),
        "spread_ratio_range": [float(ratio.min()), float(ratio.max())],
        "flow_miss_over_se": (np.abs(flow - mean) / se).tolist(),
        "mean_miss_over_se": z.tolist(),
        "bias_resolved_components": int(missed.sum()),
        "mean_pass_fraction": float(np.mean(z[missed] <= 2)) if missed.any() else None,
        "max_mean_z_where_flow_missed": float(z[missed].max()) if missed.any() else None,
        # summaries for the figure: RMS over components at the last record
        "measured_spread": float(np.sqrt(np.mean(std[-1] ** 2))),
        "predicted_spread": float(np.sqrt(np.mean(sd[-1] ** 2))),
        "measured_bias": float(np.sqrt(max(np.mean((mean[-1] - flow[-1]) ** 2 - se[-1] ** 2), 0.0))),
        "predicted_bias": float(np.sqrt(np.mean((mu[-1] - flow[-1]) ** 2))),
        "seconds": {"simulate": sim_s, "moments": theory_s},
    }


def training_sets(key, seeds=SEEDS, num_train=128, lr=0.05, t1=3.0):
    """Full-batch GD on `seeds` training sets of `num_train` images vs `training_set_spread`."""
    out = []
    for name, make in (("shape_counting", shape_problem), ("random", random_problem)):
        problem, m0, v0 = make("softplus")
        steps = int(round(t1 / lr))
        key, sub = jax.random.split(key)
        start = time.perf_counter()
        s = sim.simulate(
            problem,
            m0,
            v0,
            mode="fullbatch",
            lr=lr,
            steps=steps,
            record_every=steps // 3,
            key=sub,
            num_seeds=seeds,
            num_train=num_train,
            num_test=8,
        )  # num_test=0 trips simulate's label grouping
        sim_s = time.perf_counter() - start
        pred = fl.training_set_spread(problem, m0, v0, t1, num_train=num_train, ts=s.t)
        std = flat(s.m, s.v)[:, 1:].std(0, ddof=1)
        ratio = np.asarray(pred.std)[1:] / std
        out.append(
            {
                "problem": name,
                "activation": "softplus",
                "num_train": num_train,
                "seeds": seeds,
                "lr": lr,
                "t": np.asarray(s.t[1:]).tolist(),
                "spread_ratio": ratio.tolist(),
                "spread_ratio_range": [float(ratio.min()), float(ratio.max())],
                "spread_pass_fraction": float(np.mean(np.abs(ratio - 1) <= 0.10)),
                "seconds_simulate": sim_s,
            }
        )
        print(
            f"training sets {name}: spread ratio [{ratio.min():.3f}, {ratio.max():.3f}], pass {out[-1]['spread_pass_fraction']:.2f}",
            flush=True,
        )
    return out


def main():
    RESULTS.mkdir(exist_ok=True)
    if TRAINING_SETS:
        path = RESULTS / "fluctuations.json"
        stored = json.loads(path.read_text())
        stored["training_sets"] = training_sets(jax.random.key(1))
        path.write_text(json.dumps(stored, indent=1) + "\n")
        (RESULTS / "fluctuations.md").write_text(summary_table(stored))
        return
    if REPLOT:
        stored = json.loads((RESULTS / "fluctuations.json").read_text())
        figure(stored["grid"]).savefig(RESULTS / "fluctuations.png", dpi=150, bbox_inches="tight")
        (RESULTS / "fluctuations.md").write_text(summary_table(stored))
        return
    key = jax.random.key(0)
    grid = []
    problems = [("shape_counting", a, shape_problem) for a in ACTIVATIONS] + [
        ("random", a, random_problem) for a in ACTIVATIONS
    ]
    if QUICK:
        problems = problems[:1]
    for name, act, make in problems:
        problem, m0, v0 = make(act)
        for lr in LRS[1:2] if QUICK else LRS:
            for B in BATCHES[1:2] if QUICK else BATCHES:
                key, sub = jax.random.split(key)
                r = compare(problem, m0, v0, lr, B, T1, 3, sub)
                r.update(problem=name, activation=act)
                grid.append(r)
                print(
                    f"{name:15s} {act:8s} lr={lr:<5g} B={B:<3d} spread ratio [{r['spread_ratio_range'][0]:.3f}, {r['spread_ratio_range'][1]:.3f}] "
                    f"pass {r['spread_pass_fraction']:.2f} | bias resolved in {r['bias_resolved_components']:2d} comps, "
                    f"mean pass {r['mean_pass_fraction']} | sim {r['seconds']['simulate']:.1f}s theory {r['seconds']['moments']:.1f}s",
                    flush=True,
                )

    limits = {}
    if not QUICK:
        # large lr: shape counting softplus, B = 4, towards the stability edge
        from cnntheory.analysis import stability_edge

        problem, m0, v0 = shape_problem("softplus")
        limits["stability_edge_at_start"] = float(stability_edge(problem, m0, v0))
        limits["large_lr"] = []
        for lr in (0.3, 0.6):
            key, sub = jax.random.split(key)
            r = compare(problem, m0, v0, lr, 4, 3.6, 3, sub)
            limits["large_lr"].append(r)
            print(
                f"large lr={lr}: spread ratio {r['spread_ratio_range']}, pass {r['spread_pass_fraction']:.2f}, mean pass {r['mean_pass_fraction']}",
                flush=True,
            )
        # plateau: shape counting from the seed's small head
        problem, m0, v0 = shape_problem("softplus", v=0.01)
        key, sub = jax.random.split(key)
        r = compare(problem, m0, v0, 0.05, 4, 10.0, 5, sub)
        limits["plateau"] = r
        print(
            f"plateau: spread ratio {r['spread_ratio_range']}, pass {r['spread_pass_fraction']:.2f}, mean pass {r['mean_pass_fraction']}",
            flush=True,
        )
        # relu at the sliding surface: the seed's shape-counting run, m_21 reaches 0 near t = 25
        problem, m0, v0 = shape_problem("relu", v=0.01)
        key, sub = jax.random.split(key)
        lr, B, t1 = 0.05, 4, 40.0
        steps = int(round(t1 / lr))
        s = sim.simulate(
            problem,
            m0,
            v0,
            mode="online",
            lr=lr,
            steps=steps,
            record_every=steps // 8,
            key=sub,
            num_seeds=SEEDS,
            batch_size=B,
            num_test=0,
            throw=False,
        )
        flow = ct.solve(problem, m0, v0, t1, ts=s.t)
        pred = fl.moments(problem, m0, v0, t1, lr=lr, batch_size=B, ts=s.t, throw=False, max_steps=20_000)
        m21 = np.asarray(s.m[:, :, 1, 0])
        limits["relu_sliding"] = {
            "t": np.asarray(s.t).tolist(),
            "filippov_flow_m21": np.asarray(flow.m[:, 1, 0]).tolist(),
            "seed_mean_m21": m21.mean(0).tolist(),
            "seed_std_m21": m21.std(0, ddof=1).tolist(),
            "fraction_of_seeds_with_m21_below_0": (m21 < 0).mean(0).tolist(),
            "moments_status": int(pred.status),
            "moments_message": pred.message,
            "predicted_mean_m21": np.asarray(pred.mean_m[:, 1, 0]).tolist(),
            "predicted_std_m21": np.asarray(pred.std_m[:, 1, 0]).tolist(),
        }
        print(
            "relu sliding:",
            json.dumps({k: v for k, v in limits["relu_sliding"].items() if k != "t"}, default=str)[:600],
            flush=True,
        )

    params = {
        "benchmark": "fluctuations",
        "seeds": SEEDS,
        "t1": T1,
        "lrs": LRS,
        "batch_sizes": BATCHES,
        "activations": ACTIVATIONS,
        "criteria": {
            "spread": "|predicted/measured std - 1| <= 0.10 per component and record",
            "mean": "|mu - seed mean| <= 2 SE wherever |flow - seed mean| > 5 SE",
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "jax": jax.__version__},
        "grid": grid,
        "limits": limits,
        "training_sets": training_sets(key) if not QUICK else [],
    }
    stem = "fluctuations_quick" if QUICK else "fluctuations"
    (RESULTS / f"{stem}.json").write_text(json.dumps(params, indent=1) + "\n")
    figure(grid).savefig(RESULTS / f"{stem}.png", dpi=150, bbox_inches="tight")
    (RESULTS / f"{stem}.md").write_text(summary_table(params))
    spread = [g["spread_pass_fraction"] for g in grid]
    mean = [g["mean_pass_fraction"] for g in grid if g["mean_pass_fraction"] is not None]
    print(
        f"overall: spread pass {np.mean(spread):.3f} (worst grid point {min(spread):.2f}); mean pass {np.mean(mean) if mean else None} "
        f"over {sum(g['bias_resolved_components'] for g in grid)} resolved-bias components"
    )


def summary_table(stored) -> str:
    """A markdown summary: one row per grid point, then the limits and the training sets."""
    intro = (
        "Spread: predicted / measured seed std over components and records (pass: within 10%). Mean: where the "
        "plain flow misses the seed mean by > 5 SE, the fraction of those components where the corrected mean is "
        "within 2 SE."
    )
    lines = [
        "# Fluctuation theory vs online SGD (256 seeds)",
        "",
        intro,
        "",
        "| problem | activation | lr | B | spread ratio min | spread ratio max | spread pass | bias resolved | mean pass | max z |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda x: "-" if x is None else f"{x:.3g}"
    for g in stored["grid"]:
        lines.append(
            f"| {g['problem']} | {g['activation']} | {g['lr']:g} | {g['batch_size']} | {g['spread_ratio_range'][0]:.3f} | "
            f"{g['spread_ratio_range'][1]:.3f} | {g['spread_pass_fraction']:.2f} | {g['bias_resolved_components']} | "
            f"{fmt(g['mean_pass_fraction'])} | {fmt(g['max_mean_z_where_flow_missed'])} |"
        )
    limits = stored.get("limits", {})
    rows = [(f"large lr = {r['lr']:g}, B = {r['batch_size']}", r) for r in limits.get("large_lr", [])]
    if "plateau" in limits:
        rows.append(("plateau v(0) = 0.01, lr = 0.05, B = 4", limits["plateau"]))
    if rows:
        lines += [
            "",
            f"Limits (shape counting, softplus; stability edge at the start {limits['stability_edge_at_start']:.3g}):",
            "",
            "| case | spread ratio min | spread ratio max | spread pass | mean pass |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {r['spread_ratio_range'][0]:.3f} | {r['spread_ratio_range'][1]:.3f} | {r['spread_pass_fraction']:.2f} | "
            f"{fmt(r['mean_pass_fraction'])} |"
            for name, r in rows
        ]
    if stored.get("training_sets"):
        lines += [
            "",
            "Full-batch GD across training sets vs `training_set_spread`:",
            "",
            "| problem | n_train | sets | spread ratio min | spread ratio max | spread pass |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['problem']} | {r['num_train']} | {r['seeds']} | {r['spread_ratio_range'][0]:.3f} | {r['spread_ratio_range'][1]:.3f} | "
            f"{r['spread_pass_fraction']:.2f} |"
            for r in stored["training_sets"]
        ]
    return "\n".join(lines) + "\n"


def figure(grid):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted({(g["problem"], g["activation"]) for g in grid})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, act) in enumerate(names):
        rows = sorted(
            (g for g in grid if (g["problem"], g["activation"]) == (name, act)), key=lambda g: g["lr"] / g["batch_size"]
        )
        c = colors[i % len(colors)]
        x = np.array([g["lr"] / g["batch_size"] for g in rows])
        axes[0].loglog(x, [g["predicted_spread"] for g in rows], "-", color=c, lw=1, label=f"{name}, {act}")
        axes[0].loglog(x, [g["measured_spread"] for g in rows], "o", color=c, ms=4)
        rows = sorted(rows, key=lambda g: (g["lr"], g["batch_size"]))
        for B, marker in zip(BATCHES, ("o", "s", "^"), strict=True):
            sub = [g for g in rows if g["batch_size"] == B]
            lr = [g["lr"] for g in sub]
            axes[1].loglog(lr, [g["predicted_bias"] for g in sub], "-", color=c, lw=1)
            seen = [
                (g["lr"], g["measured_bias"]) for g in sub if g["measured_bias"] > 0
            ]  # 0: not resolved from seed noise
            if seen:
                axes[1].loglog(*zip(*seen, strict=True), marker, color=c, ms=4, mfc="none" if B != 1 else c)
    axes[0].set(
        xlabel="lr / B",
        ylabel="seed std at t = 3 (RMS over components)",
        title="spread: theory (lines) vs 256 seeds (dots)",
    )
    axes[1].set(
        xlabel="lr",
        ylabel="|seed mean - flow| at t = 3 (RMS)",
        title="bias: theory (lines) vs seeds (B = 1 ●, 4 ○, 16 △)",
    )
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
