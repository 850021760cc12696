"""`cnntheory simulate`: train the shape-counting student CNN for real and compare with the ODE."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from . import _types as T
from ._notice import notice
from .shape_counting import DEFAULT_M0, add_method_options, check_method

if TYPE_CHECKING:
    from jax import Array

#: The final ODE time when neither --steps nor --t1 is given.
DEFAULT_T1 = 40.0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="train the shape-counting student CNN (JAX) and compare it with the ODE",
        description="Finite-sample simulation of the shape-counting student CNN: population GD, "
        "full-batch GD on sampled images, or online SGD, over several seeds; the ODE of the same "
        "setting (the C_hat ODE per seed for fullbatch); a theory-vs-simulation figure and errors. "
        "Writes simulate_<mode>.png, .npz and .json to --out.",
    )
    p.add_argument("--mode", choices=("population", "fullbatch", "online"), default="online", help="what is trained on")
    p.add_argument("--alpha", type=T.alpha, default=(1.0, 1.0), help="Dirichlet parameters of X and O")
    p.add_argument("--overlap", type=T.overlap, default=0.8, help="Gram overlap G_12 of the X and O atoms")
    p.add_argument(
        "--activation", choices=T.ACTIVATION_NAMES, metavar="NAME", default="relu", help="student activation"
    )
    p.add_argument("--lr", type=T.positive_float, default=0.02, help="gradient step = ODE time per step")
    p.add_argument("--batch", type=T.positive_int, default=16, help="online batch size B")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=T.positive_int, default=None, help="number of steps (default: --t1 / --lr)")
    length.add_argument(
        "--t1", type=T.positive_float, default=None, help=f"final ODE time = lr x steps (default {DEFAULT_T1:g})"
    )
    p.add_argument("--seeds", type=T.positive_int, default=8, help="independent runs")
    p.add_argument(
        "--record-every", type=T.positive_int, default=None, help="steps between records (default: 100 records)"
    )
    p.add_argument("--n-train", type=T.positive_int, default=1024, help="training images for fullbatch")
    p.add_argument("--n-test", type=T.positive_int, default=1024, help="held-out test images")
    p.add_argument("--patches-per-side", type=T.positive_int, default=4, help="M (d = k M)")
    p.add_argument("--pooling", choices=("mean", "sum"), default="mean", help="pooling of the patch outputs")
    p.add_argument("--k", type=T.positive_int, default=5, help="patch side (D = k^2 sets eta_K = D)")
    p.add_argument("--eps", type=T.finite_float, default=0.01, help="initial head v(0) = (eps, -eps)")
    p.add_argument("--m0", type=T.m0, default=DEFAULT_M0, help="initial m as m11,m12,m21,m22")
    add_method_options(p, dt0_default="--lr, the gradient-descent map itself")
    p.add_argument("--seed", type=T.seed, default=0, help="PRNG seed")
    p.add_argument("--float32", action="store_true", help="simulate in float32 (default: float64)")
    p.add_argument(
        "--band",
        action="store_true",
        help="online mode, smooth activation: draw the fluctuation theory's predicted seed mean and +-2 sigma band "
        "(cnntheory.fluctuations.moments) over the seeds",
    )
    p.add_argument("--out", default="cnntheory-output/simulate", help="output folder")
    p.set_defaults(func=run, check=check)


def run_length(args) -> tuple[int, int]:
    """`(steps, record_every)`: a whole number of records of the requested length."""
    steps = args.steps if args.steps is not None else int(round((args.t1 or DEFAULT_T1) / args.lr))
    record_every = args.record_every or max(1, steps // 100)
    return steps - steps % record_every, record_every


def check(args) -> None:
    """Every argument, before JAX is imported."""
    if args.method == "euler" and args.dt0 is None:
        args.dt0 = args.lr  # the GD map of the simulation itself
    check_method(args)
    steps, record_every = run_length(args)
    if args.steps is None and steps < 1:
        t1 = args.t1 or DEFAULT_T1
        T.require(
            round(t1 / args.lr) >= 1,
            f"argument --lr: --lr {args.lr:g} is larger than the final time {t1:g} (--t1): no step fits; "
            "lower --lr or raise --t1",
        )
    T.require(
        steps >= 1,
        f"argument --record-every: {record_every} steps between records is more than the run's "
        f"{args.steps if args.steps is not None else round((args.t1 or DEFAULT_T1) / args.lr)} steps: "
        "lower --record-every or lengthen the run (--steps / --t1)",
    )
    if args.band:
        T.require(
            args.mode == "online",
            f"argument --band: --band predicts the spread of online SGD: use it with --mode online, not --mode {args.mode}",
        )
        T.require(
            args.activation not in T.NONSMOOTH_ACTIVATIONS,
            f"argument --band: --band needs a smooth --activation (e.g. softplus, sigmoid, tanh), got "
            f"{args.activation!r}: the fluctuation theory expands the flow to second order, which relu's kink does not allow",
        )


def stability_warning(problem, m0, v0, lr: float) -> str | None:
    """A one-line warning when `lr` is past gradient descent's stability edge at the start, else None.

    The edge is `2 / lambda_max(Lambda^{1/2} H Lambda^{1/2})` (`cnntheory.analysis.stability_edge`).
    """
    from ..analysis import stability_edge

    edge = stability_edge(problem, m0, v0)
    if lr <= edge:
        return None
    return (
        f"--lr {lr:g} exceeds gradient descent's stability edge {edge:.4g} at the initial state "
        "(2 / top eigenvalue of the Hessian preconditioned by eta_K, eta_v); the run may diverge"
    )


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from .. import compare as cmp
    from .. import simulate as sim
    from .._io import save_results
    from .._plots import explain_theory_vs_simulation
    from .._problem import shape_counting

    steps, record_every = run_length(args)
    m0 = jnp.asarray(args.m0).reshape(2, 2)
    v0 = jnp.array([args.eps, -args.eps])
    problem = shape_counting(args.overlap, args.alpha, args.activation, args.patches_per_side, args.pooling, args.k)
    warning = stability_warning(problem, m0, v0, args.lr)
    if warning:
        print(f"cnntheory simulate: warning: {warning}", file=sys.stderr)
    start = time.perf_counter()
    try:
        with notice("simulate", "compiling the training loop (the progress bar's first estimate includes it)", after=0):
            s = sim.simulate(
                problem,
                m0,
                v0,
                mode=args.mode,
                lr=args.lr,
                steps=steps,
                record_every=record_every,
                key=jax.random.key(args.seed),
                num_seeds=args.seeds,
                batch_size=args.batch,
                num_train=args.n_train,
                num_test=args.n_test,
                dtype=jnp.float32 if args.float32 else jnp.float64,
                progress=True,
            )
    except sim.SimulationDiverged as err:  # a failed run, not a bad argument: exit status 1
        raise SystemExit(f"cnntheory simulate: {err}") from None
    sim_seconds = time.perf_counter() - start
    start = time.perf_counter()
    solve_kw = {"method": args.method, "dt0": args.dt0}
    what = "the ODE of the same setting" + (
        " (compiling the relu Filippov solver: 20-60 s on a first run)" if args.activation == "relu" else ""
    )
    with notice("simulate", f"solving {what}"):
        traj = cmp.matching_solve(problem, s, m0, v0, **solve_kw)
        fields = ("m", "v", "train_loss" if args.mode != "online" else "loss")
        comparison = cmp.compare(
            s, traj, problem=problem, fields=fields + (("predictions",) if s.predictions is not None else ())
        )
        test = None
        if s.test_loss is not None:
            population = (
                traj
                if args.mode != "fullbatch"
                else cmp.matching_solve(problem, s, m0, v0, finite_data=False, **solve_kw)
            )
            test = cmp.compare(s, population, fields=("test_loss",))["test_loss"].summary()
    ode_seconds = time.perf_counter() - start
    print(s.message)
    print(comparison.table())
    alpha = ", ".join(f"{a:g}" for a in args.alpha)
    fig = cmp.plot_comparison(
        s,
        traj,
        problem,
        title=f"{args.mode}: {args.activation}, overlap {args.overlap:g}, alpha = ({alpha}), lr = {args.lr:g}"
        + (f", B = {args.batch}" if args.mode == "online" else "")
        + f", {args.seeds} seeds"
        + (" (theory: C_hat ODE per seed)" if args.mode == "fullbatch" else ""),
    )
    band = None
    if args.band:
        from .. import fluctuations as fl

        band = fl.moments(problem, m0, v0, float(s.t[-1]), lr=args.lr, batch_size=args.batch, ts=s.t)
        fl.draw_band(fig.axes[:2], band)
    explain_theory_vs_simulation(fig, s.label_values)  # after the band: its legend entries join the key
    arrays: dict[str, Array | None] = {
        "t": s.t,
        "m": s.m,
        "v": s.v,
        "loss": s.loss,
        "train_loss": s.train_loss,
        "theory_m": traj.m,
        "theory_v": traj.v,
        "theory_loss": traj.loss,
    }
    if s.test_loss is not None:
        arrays.update(
            test_loss=s.test_loss, label_values=s.label_values, label_counts=s.label_counts, predictions=s.predictions
        )
    if s.train_moments is not None:
        arrays["train_moments"] = s.train_moments
    if band is not None:
        arrays.update(band_mean_m=band.mean_m, band_mean_v=band.mean_v, band_std_m=band.std_m, band_std_v=band.std_v)
    params = {
        "command": "simulate",
        **{k: v for k, v in vars(args).items() if k not in ("func", "check", "command")},
        "steps": steps,
        "record_every": record_every,
        "m0": np.asarray(m0).tolist(),
        "v0": np.asarray(v0).tolist(),
        "teacher": {"activation": "indicator", "head": [1.0, -1.0], "kernels": "atoms"},
        "kernel_lr_multiplier": args.k * args.k,
        "head_lr_multiplier": 1.0,
        "message": s.message,
        "theory": traj.method + (" (C_hat ODE per seed)" if args.mode == "fullbatch" else ""),
        "errors": comparison.summary(),
        "test_loss_vs_population_ode": test,
        "seconds": {"simulate_incl_compile": sim_seconds, "ode_and_compare": ode_seconds},
    }
    paths = save_results(args.out, f"simulate_{args.mode}", arrays=arrays, params=params, figure=fig)
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0
