"""Fluctuation theory of online SGD (`cnntheory.fluctuations.moments`) against online-SGD seeds.

The reference is an online SGD written here from the definitions, independent of the theory
and of `simulate`: numpy-sampled images (rho ~ Dirichlet(alpha), every patch an atom), the
real pooled CNN, `jax.grad` of the batch's squared error, order parameters read off the
kernels (`independent_sgd`); it is cross-checked against `cnntheory.simulate` at the two
target points. Every grid point is predicted twice: **before**, the continuous `lr -> 0`
equations (`discrete=False`, what `moments` computed until issue 21), and **after**, the
discrete-step map (`discrete=True`, now the default). Per component and record:

- spread: predicted / measured seed std; pass within 15% (and within 10%). The std of 512
  seeds has a relative SE of 3.1%, so even an exact theory misses 10% in ~0.1% of cases;
- mean: `|mu - seed mean| / SE`; pass within 3 SE (an exact theory fails in ~0.3%).

Problems:

1. **stiff** (the target): P = 4 atoms of a random Gram matrix, 2 x 2 patches of side 3, mean
   pooling, L = 3, softplus student and teacher, eta_K = 9, eta_v = 1 (stability edge lr ~1.05
   along the path), lr from 0.0125 to 0.4 (~0.4 of the edge) x B in 1, 4, 16, 64, 512 seeds,
   records at t = 0.5, 1, ..., 3. Targets: spread within 15% in >= 90% of component-times and
   mean within 3 SE at (lr, B) = (0.2, 4) and (0.1, 1);
2. shape counting (overlap 0.8, M = 4, v(0) = +-0.3) and a random P = 3 problem with
   softplus/sigmoid/tanh students, lr in 0.025, 0.1, B in 1, 4, 16, 256 seeds;
3. where it stops holding: lr = 0.6 on the stiff problem; the plateau (shape counting from
   v(0) = 0.01); a relu student whose mean crosses two kinks transversally (the stiff problem
   with relu, seed 6; B = 1, 4, 16); relu at shape counting's sliding surface (a status);
4. full-batch GD across 256 training sets of 128 images vs `training_set_spread` (lr = 0.05);
5. the cost of a prediction: discrete map vs continuous solve.

Writes `benchmarks/results/fluctuations.{json,md,png}`. About 10-15 minutes on 2 shared CPU
cores. Run: `python benchmarks/fluctuations.py` (`--quick`: the two target points only).
"""

from __future__ import annotations

import json
import pathlib
import platform
import sys
import time
import warnings

import equinox as eqx
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
SEEDS = 512
SMALL_SEEDS = 256
QUICK = "--quick" in sys.argv
STIFF_LRS = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)
STIFF_BATCHES = (1, 4, 16, 64)
TARGETS = ((0.2, 4), (0.1, 1))


# --- problems ----------------------------------------------------------------------------


def random_problem(seed, P=3, L=2, M=3, k=3, activation="softplus", teacher="tanh", scale=0.5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, P + 2))
    gram = X @ X.T / (P + 2)
    gram = gram / np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    mixture = ct.PatchMixture(ct.atoms_from_gram(gram, k, key=seed), rng.uniform(0.5, 2.0, P), M, "mean")
    problem = ct.TeacherStudent(
        mixture,
        rng.standard_normal(P),
        teacher_activation=teacher,
        student_activation=activation,
        kernel_lr_multiplier=float(k * k),
        head_lr_multiplier=1.0,
    )
    return problem, jnp.asarray(scale * rng.standard_normal((L, P))), jnp.asarray(scale * rng.standard_normal(L))


def stiff_problem(activation="softplus", seed=5):
    return random_problem(seed, P=4, L=3, M=2, activation=activation, teacher="softplus")


def shape_problem(activation, v=0.3):
    problem = ct.shape_counting(0.8, (1.0, 1.0), activation, 4, "mean")
    return problem, jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([v, -v])


# --- the independent reference --------------------------------------------------------------


@eqx.filter_jit
def _sgd_step(problem, teacher_K, K, v, x, lr):
    D = x.shape[-1]
    scale = 1.0 if problem.mixture.pooling == "sum" else 1.0 / x.shape[-2]

    def output(K, v, x, act):  # x (B, N, D) -> (B,)
        return scale * jnp.sum(act(jnp.einsum("ld,bnd->bln", K, x) / D), -1) @ v

    def loss(K, v, x):
        y = output(teacher_K, problem.teacher_head, x, problem.phi.fn)
        return 0.5 * jnp.mean((output(K, v, x, problem.sigma.fn) - y) ** 2)

    gK, gv = jax.vmap(jax.grad(loss, argnums=(0, 1)))(K, v, x)
    return K - lr * problem.kernel_lr_multiplier * gK, v - lr * problem.head_lr_multiplier * gv


def independent_sgd(problem, m0, v0, *, lr, batch_size, steps, record_every, num_seeds, seed):
    """`(S, R, n)` flat order parameters of online SGD at steps `record_every, 2 record_every, ...`."""
    mixture = problem.mixture
    atoms = np.asarray(mixture.atoms)
    P, D = atoms.shape
    rng = np.random.default_rng(seed)
    ginv = np.linalg.inv(np.asarray(problem.gram))
    teacher_K = jnp.asarray(np.asarray(problem.teacher_overlaps) @ ginv @ atoms)
    K0 = np.asarray(m0) @ ginv @ atoms  # K0 atoms^T / D = m0 (nothing outside the atoms' span)
    K = jnp.broadcast_to(jnp.asarray(K0), (num_seeds,) + K0.shape)
    v = jnp.broadcast_to(jnp.asarray(v0), (num_seeds, v0.shape[0]))
    out = []
    for k in range(1, steps + 1):
        rho = rng.dirichlet(np.asarray(mixture.alpha), size=(num_seeds, batch_size))
        u = rng.random((num_seeds, batch_size, mixture.num_patches, 1))
        idx = np.minimum((u > np.cumsum(rho, -1)[:, :, None, :]).sum(-1), P - 1)
        K, v = _sgd_step(problem, teacher_K, K, v, jnp.asarray(atoms[idx]), jnp.asarray(lr))
        if k % record_every == 0:
            m = K @ jnp.asarray(atoms).T / D
            out.append(np.concatenate([np.asarray(m).reshape(num_seeds, -1), np.asarray(v)], axis=1))
    return np.stack(out, axis=1)


def flat(s):
    return np.concatenate([np.asarray(s.m).reshape(s.num_seeds, s.t.shape[0], -1), np.asarray(s.v)], axis=2)


# --- statistics ------------------------------------------------------------------------------


def predict(problem, m0, v0, lr, B, ts, discrete):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fl.ValidityWarning)
        return fl.moments(problem, m0, v0, float(ts[-1]), lr=lr, batch_size=B, ts=ts, discrete=discrete, throw=False)


def stats(pred, y):
    """Per-component-time statistics of a prediction against seeds `y` `(S, T, n)` at `pred.t`."""
    S = y.shape[0]
    mean, std = y.mean(0), y.std(0, ddof=1)
    ratio = np.asarray(pred.std) / std
    z = np.abs(np.asarray(pred.mean) - mean) / (std / np.sqrt(S))
    val = pred.validity
    valid = val.valid
    out = {
        "status": int(pred.status),
        "message": pred.message,
        "spread_within_15": float(np.mean(np.abs(ratio - 1) <= 0.15)),
        "spread_within_10": float(np.mean(np.abs(ratio - 1) <= 0.10)),
        "spread_ratio_range": [float(np.nanmin(ratio)), float(np.nanmax(ratio))],
        "mean_within_3se": float(np.mean(z <= 3)),
        "mean_max_z": float(np.nanmax(z)),
        "valid_records": int(valid.sum()),
        "records": int(valid.size),
        "max_lr_rho": float(np.nanmax(np.asarray(val.lr_rho))),
        "max_curvature": float(np.nanmax(np.asarray(val.curvature))),
        "max_kink_proximity": float(np.nanmax(np.asarray(val.kink_proximity))),
    }
    if valid.any() and not valid.all():
        r, zz = ratio[valid], z[valid]
        out["where_valid"] = {
            "spread_within_15": float(np.mean(np.abs(r - 1) <= 0.15)),
            "spread_ratio_range": [float(r.min()), float(r.max())],
            "mean_within_3se": float(np.mean(zz <= 3)),
            "mean_max_z": float(zz.max()),
        }
    return out


def run_point(problem, m0, v0, lr, B, t1, records, seeds, seed, label):
    steps = int(round(t1 / lr))
    every = steps // records
    start = time.perf_counter()
    y = independent_sgd(
        problem, m0, v0, lr=lr, batch_size=B, steps=steps, record_every=every, num_seeds=seeds, seed=seed
    )
    sim_s = time.perf_counter() - start
    ts = lr * every * np.arange(1, y.shape[1] + 1)
    row = {"problem": label, "lr": lr, "batch_size": B, "seeds": seeds, "t": ts.tolist(), "seconds_sgd": sim_s}
    row["before"] = stats(predict(problem, m0, v0, lr, B, ts, False), y) if problem.sigma.smooth else None
    row["after"] = stats(predict(problem, m0, v0, lr, B, ts, True), y)
    b, a = row["before"], row["after"]
    fmt = lambda r: "-" if r is None else f"{r['spread_within_15']:.2f}/{r['mean_max_z']:5.1f}"  # noqa: E731
    print(
        f"{label:22s} lr={lr:<6g} B={B:<3d} before {fmt(b)}  after {fmt(a)}  valid {a['valid_records']}/{a['records']} "
        f"lr_rho {a['max_lr_rho']:.2f} curv {a['max_curvature']:.3f} kink {a['max_kink_proximity']:.2f} (sgd {sim_s:.1f}s)",
        flush=True,
    )
    return row, y


def cross_check(problem, m0, v0, lr, B, y, seed):
    """`simulate(mode="online")` against the independent SGD: the same distribution (means in SE, std ratios)."""
    every = int(round(3.0 / lr)) // 6  # the records of `run_point`
    s = sim.simulate(
        problem,
        m0,
        v0,
        mode="online",
        lr=lr,
        steps=every * y.shape[1],
        record_every=every,
        key=jax.random.key(seed),
        num_seeds=SEEDS,
        batch_size=B,
        num_test=0,
    )
    x = flat(s)[:, 1:]
    se = np.sqrt(x.var(0, ddof=1) / x.shape[0] + y.var(0, ddof=1) / y.shape[0])
    z = np.abs(x.mean(0) - y.mean(0)) / se
    ratio = x.std(0, ddof=1) / y.std(0, ddof=1)
    out = {
        "lr": lr,
        "batch_size": B,
        "mean_max_z": float(z.max()),
        "std_ratio_range": [float(ratio.min()), float(ratio.max())],
    }
    print(f"simulate vs independent SGD lr={lr} B={B}: {out}", flush=True)
    return out


def training_sets(key, seeds=256, num_train=128, lr=0.05, t1=3.0):
    """Full-batch GD on `seeds` training sets of `num_train` images vs `training_set_spread` at step `lr`."""
    out = []
    for name, make in (("shape_counting", shape_problem), ("random", random_problem)):
        problem, m0, v0 = make("softplus") if name == "shape_counting" else make(5, activation="softplus")
        steps = int(round(t1 / lr))
        key, sub = jax.random.split(key)
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
        )
        std = flat(s)[:, 1:].std(0, ddof=1)
        row = {"problem": name, "num_train": num_train, "seeds": seeds, "lr": lr}
        for disc in (False, True):
            pred = fl.training_set_spread(problem, m0, v0, t1, num_train=num_train, ts=s.t, lr=lr, discrete=disc)
            ratio = np.asarray(pred.std)[1:] / std
            row["after" if disc else "before"] = {
                "spread_ratio_range": [float(ratio.min()), float(ratio.max())],
                "spread_within_10": float(np.mean(np.abs(ratio - 1) <= 0.10)),
            }
        print(f"training sets {name}: {row}", flush=True)
        out.append(row)
    return out


def cost(problem, m0, v0, lr=0.05, B=4, t1=3.0, repeats=5):
    """Seconds per prediction (after compiling) of the discrete map and the continuous solve, 61 records."""
    ts = lr * np.round(np.linspace(0, t1 / lr, 61))
    out = {}
    for disc in (True, False):
        predict(problem, m0, v0, lr, B, ts, disc).mean.block_until_ready()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predict(problem, m0, v0, lr, B, ts, disc).mean.block_until_ready()
            times.append(time.perf_counter() - start)
        out["discrete" if disc else "continuous"] = float(np.median(times))
    out["steps"] = int(round(t1 / lr))
    out["records"] = 61
    print(f"cost: {out}", flush=True)
    return out


def main():
    RESULTS.mkdir(exist_ok=True)
    stored: dict = {
        "benchmark": "fluctuations",
        "seeds": SEEDS,
        "criteria": {
            "spread": "|predicted/measured std - 1| <= 0.15 (and 0.10) per component and record",
            "mean": "|predicted mean - seed mean| <= 3 SE per component and record",
            "before": "continuous lr -> 0 equations (discrete=False)",
            "after": "discrete-step moment map (discrete=True, the default)",
        },
        "thresholds": fl.THRESHOLDS,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "jax": jax.__version__},
    }
    problem, m0, v0 = stiff_problem()
    from cnntheory.analysis import stability_edge

    stored["stiff_stability_edge_at_start"] = float(stability_edge(problem, m0, v0))
    grid, cross = [], []
    points = TARGETS if QUICK else [(lr, B) for lr in STIFF_LRS for B in STIFF_BATCHES]
    for i, (lr, B) in enumerate(points):
        row, y = run_point(problem, m0, v0, lr, B, 3.0, 6, SEEDS, 100 + i, "stiff softplus")
        grid.append(row)
        if (lr, B) in TARGETS:
            cross.append(cross_check(problem, m0, v0, lr, B, y, 7 + i))
    stored["stiff"] = grid
    stored["simulate_cross_check"] = cross
    if not QUICK:
        others = []
        for i, (name, act) in enumerate(
            [(p, a) for p in ("shape_counting", "random") for a in ("softplus", "sigmoid", "tanh")]
        ):
            prob, pm0, pv0 = shape_problem(act) if name == "shape_counting" else random_problem(5, activation=act)
            for lr in (0.025, 0.1):
                for B in (1, 4, 16):
                    row, _ = run_point(prob, pm0, pv0, lr, B, 3.0, 3, SMALL_SEEDS, 300 + i, f"{name} {act}")
                    others.append(row)
        stored["smooth_grid"] = others
        limits = {}
        limits["large_lr"], _ = run_point(problem, m0, v0, 0.6, 4, 3.6, 6, SEEDS, 400, "stiff softplus")
        prob, pm0, pv0 = shape_problem("softplus", v=0.01)
        limits["plateau"], _ = run_point(prob, pm0, pv0, 0.05, 4, 10.0, 10, SEEDS, 401, "plateau softplus")
        prob, pm0, pv0 = stiff_problem("relu", seed=6)
        limits["relu_crossing"] = [
            run_point(prob, pm0, pv0, 0.05, B, 3.0, 15, SEEDS, 402 + B, "relu crossing")[0] for B in (1, 4, 16)
        ]
        prob, pm0, pv0 = shape_problem("relu", v=0.01)
        pred = fl.moments(prob, pm0, pv0, 40.0, lr=0.05, batch_size=4, throw=False)
        limits["relu_sliding"] = {"status": int(pred.status), "message": pred.message}
        print(f"relu sliding: {limits['relu_sliding']}", flush=True)
        stored["limits"] = limits
        stored["training_sets"] = training_sets(jax.random.key(1))
        stored["cost"] = cost(problem, m0, v0)
    stem = "fluctuations_quick" if QUICK else "fluctuations"
    previous = RESULTS / "fluctuations.json"
    if previous.exists() and "grid" in (old := json.loads(previous.read_text())):
        # the measured spreads and biases of the earlier 256-seed `simulate` grid, which the notebook plots
        stored["grid"], stored["grid_note"] = old["grid"], old.get("grid_note", "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(stored, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(summary_table(stored))
    figure(stored).savefig(RESULTS / f"{stem}.png", dpi=150, bbox_inches="tight")


def _cells(r):
    if r is None:
        return "- | - | - |"
    return f"{r['spread_within_15']:.2f} | {r['spread_ratio_range'][0]:.2f}-{r['spread_ratio_range'][1]:.2f} | {r['mean_max_z']:.1f} |"


def summary_table(stored) -> str:
    lines = [
        f"# Fluctuation theory vs online SGD ({SEEDS} seeds on the stiff problem, {SMALL_SEEDS} elsewhere)",
        "",
        "Before: the continuous `lr -> 0` equations (`discrete=False`); after: the discrete-step map (the default). "
        "Per grid point, over components and records: the fraction of predicted/measured spreads within 15%, "
        "their range, and the largest mean miss in standard errors (a consistent prediction stays below ~3.5 over "
        "these 90 component-times). `valid`: records where every validity indicator is within its threshold "
        f"({', '.join(f'{k} <= {v:g}' for k, v in stored['thresholds'].items())}).",
        "",
        "| problem | lr | B | before: spread within 15% | range | max z | after: spread within 15% | range | max z | valid | max lr_rho | max curvature |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = stored["stiff"] + stored.get("smooth_grid", [])
    limits = stored.get("limits", {})
    rows = rows + [limits["large_lr"], limits["plateau"]] + limits["relu_crossing"] if limits else rows
    for g in rows:
        a = g["after"]
        lines.append(
            f"| {g['problem']} | {g['lr']:g} | {g['batch_size']} | {_cells(g['before'])} {_cells(a)} "
            f"{a['valid_records']}/{a['records']} | {a['max_lr_rho']:.2f} | {a['max_curvature']:.3f} |"
        )
    flagged = [g for g in rows if "where_valid" in g["after"]]
    if flagged:
        lines += ["", "Where the prediction is flagged somewhere, the records it calls valid:", ""]
        lines += [
            "| problem | lr | B | valid | spread within 15% | range | mean within 3 SE | max z |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for g in flagged:
            w = g["after"]["where_valid"]
            lines.append(
                f"| {g['problem']} | {g['lr']:g} | {g['batch_size']} | {g['after']['valid_records']}/{g['after']['records']} | "
                f"{w['spread_within_15']:.2f} | {w['spread_ratio_range'][0]:.2f}-{w['spread_ratio_range'][1]:.2f} | "
                f"{w['mean_within_3se']:.2f} | {w['mean_max_z']:.1f} |"
            )
    if limits:
        lines += [
            "",
            f"relu at shape counting's sliding surface: status {limits['relu_sliding']['status']}: {limits['relu_sliding']['message']}",
        ]
    if stored.get("simulate_cross_check"):
        lines += [
            "",
            "`simulate` vs the independent SGD (512 seeds each): "
            + "; ".join(
                f"lr={c['lr']:g}, B={c['batch_size']}: means within {c['mean_max_z']:.1f} SE, std ratios "
                f"{c['std_ratio_range'][0]:.3f}-{c['std_ratio_range'][1]:.3f}"
                for c in stored["simulate_cross_check"]
            ),
        ]
    if stored.get("training_sets"):
        lines += ["", "Full-batch GD (lr = 0.05) across 256 training sets of 128 images vs `training_set_spread`:", ""]
        lines += [
            "| problem | before: ratio range | within 10% | after: ratio range | within 10% |",
            "|---|---|---|---|---|",
        ]
        for r in stored["training_sets"]:
            b, a = r["before"], r["after"]
            lines.append(
                f"| {r['problem']} | {b['spread_ratio_range'][0]:.3f}-{b['spread_ratio_range'][1]:.3f} | {b['spread_within_10']:.2f} | "
                f"{a['spread_ratio_range'][0]:.3f}-{a['spread_ratio_range'][1]:.3f} | {a['spread_within_10']:.2f} |"
            )
    if stored.get("cost"):
        c = stored["cost"]
        lines += [
            "",
            f"Cost of one prediction ({c['steps']} steps, {c['records']} records, after compiling): discrete map "
            f"{1e3 * c['discrete']:.1f} ms, continuous solve {1e3 * c['continuous']:.1f} ms.",
        ]
    return "\n".join(lines) + "\n"


def figure(stored):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, B in enumerate(STIFF_BATCHES):
        rows = sorted((g for g in stored["stiff"] if g["batch_size"] == B), key=lambda g: g["lr"])
        if not rows:
            continue
        lr = [g["lr"] for g in rows]
        for which, style in (("before", "--o"), ("after", "-s")):
            axes[0].semilogx(
                lr,
                [g[which]["spread_within_15"] for g in rows],
                style,
                color=colors[i],
                ms=4,
                mfc="none" if which == "before" else colors[i],
                label=f"B = {B}, {which}",
            )
            axes[1].loglog(
                lr,
                [g[which]["mean_max_z"] for g in rows],
                style,
                color=colors[i],
                ms=4,
                mfc="none" if which == "before" else colors[i],
            )
    axes[0].axhline(0.9, color="0.5", lw=0.8, ls=":")
    axes[1].axhline(3.5, color="0.5", lw=0.8, ls=":")
    axes[0].set(
        xlabel="lr", ylabel="fraction of spreads within 15%", title="stiff problem: spread (before: continuous)"
    )
    axes[1].set(xlabel="lr", ylabel="max |mean miss| / SE", title="stiff problem: mean")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
