"""`cnntheory shape-counting`: Lovig's figure (two Dirichlet laws, relu, overlap 0.8)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import _types as T
from ._notice import notice

if TYPE_CHECKING:
    from jax import Array

DEFAULT_M0 = (0.3, 0.25, 0.2, 0.28)


def add_method_options(p, default: str = "tsit5", dt0_default: str = "required for euler") -> None:
    """`--method` and `--dt0`, shared with `simulate`."""
    p.add_argument(
        "--method",
        choices=T.METHOD_NAMES,
        default=default,
        metavar="METHOD",
        help="ODE solver: a diffrax solver (tsit5, dopri5, dopri8, bosh3, kvaerno5, ...), 'euler' (the gradient-"
        "descent map with fixed step --dt0) or a scipy method (RK45, DOP853, LSODA, Radau, BDF)",
    )
    p.add_argument(
        "--dt0",
        type=T.positive_float,
        default=None,
        help=f"fixed step of --method euler (default: {dt0_default}); the first step of an adaptive method",
    )


def check_method(args) -> None:
    T.require(
        args.method != "euler" or args.dt0 is not None,
        "argument --dt0: --method euler takes fixed steps of size --dt0: give one, e.g. --dt0 0.01",
    )


def check_pooling(args) -> None:
    T.require(
        args.patches_per_side is not None or args.pooling == "mean",
        "argument --pooling: the continuum moments (no --patches-per-side) exist for mean pooling only: "
        "give --patches-per-side M with --pooling sum",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "shape-counting",
        help="solve the shape-counting flow (Lovig 2025) and draw its figure",
        description="Order-parameter dynamics of the shape-counting teacher-student CNN: "
        "one panel per Dirichlet law alpha, order parameters m_lp(t), head v(t), loss. "
        "Writes shape_counting.png, .npz and .json to --out.",
    )
    p.add_argument(
        "--alpha",
        type=T.alpha,
        action="append",
        help="Dirichlet parameters of X and O, e.g. 1,1 (repeat for more panels; default 1,1 and 2,1)",
    )
    p.add_argument("--overlap", type=T.overlap, default=0.8, help="Gram overlap G_12 of the X and O atoms")
    p.add_argument(
        "--activation", choices=T.ACTIVATION_NAMES, metavar="NAME", default="relu", help="student activation"
    )
    p.add_argument("--t1", type=T.positive_float, default=60.0, help="final time")
    p.add_argument("--eps", type=T.finite_float, default=0.01, help="initial head v(0) = (eps, -eps)")
    p.add_argument("--m0", type=T.m0, default=DEFAULT_M0, help="initial m as m11,m12,m21,m22")
    add_method_options(p)
    p.add_argument("--rtol", type=T.tolerance, default=1e-8, help="relative tolerance of adaptive methods")
    p.add_argument("--atol", type=T.positive_float, default=1e-10, help="absolute tolerance of adaptive methods")
    p.add_argument(
        "--patches-per-side", type=T.positive_int, default=None, help="M (default: None, the continuum moments)"
    )
    p.add_argument("--pooling", choices=("mean", "sum"), default="mean", help="pooling of the patch outputs")
    p.add_argument("--k", type=T.positive_int, default=5, help="patch side (D = k^2 sets eta_K = D)")
    p.add_argument("--num-points", type=T.num_points, default=601, help="save times, t = 0 to --t1")
    p.add_argument("--out", default="cnntheory-output/shape-counting", help="output folder")
    p.set_defaults(func=run, check=T.checker(check_method, check_pooling))


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import jax.numpy as jnp
    import numpy as np

    from .._io import save_results
    from .._plots import trajectory_figure
    from .._problem import shape_counting
    from .._solve import solve
    from .._trajectory import Events

    alphas = args.alpha or [(1.0, 1.0), (2.0, 1.0)]
    m0 = jnp.asarray(args.m0).reshape(2, 2)
    v0 = jnp.array([args.eps, -args.eps])
    ts = jnp.linspace(0.0, args.t1, args.num_points)
    trajs, timings = {}, {}
    arrays: dict[str, np.ndarray | Array] = {"t": np.asarray(ts)}
    events: dict[str, list[dict]] = {}
    for alpha in alphas:
        problem = shape_counting(args.overlap, alpha, args.activation, args.patches_per_side, args.pooling, args.k)
        start = time.perf_counter()
        what = (
            "compiling the relu (Filippov) solver, 20-60 s on a first run"
            if args.activation == "relu"
            else "compiling the solver"
        )
        with notice("shape-counting", f"alpha = {tuple(alpha)}: {what}"):
            traj = solve(
                problem, m0, v0, args.t1, ts=ts, method=args.method, rtol=args.rtol, atol=args.atol, dt0=args.dt0
            )
        tag = "_".join(f"{a:g}" for a in alpha)
        name = r"$\alpha = (" + ", ".join(f"{a:g}" for a in alpha) + ")$"
        timings[f"alpha_{tag}"] = time.perf_counter() - start
        trajs[name] = traj
        arrays.update({f"m_alpha_{tag}": traj.m, f"v_alpha_{tag}": traj.v, f"loss_alpha_{tag}": traj.loss})
        record = traj.events if traj.events is not None else Events.empty()
        events[f"alpha_{tag}"] = [dict(t=t, unit=l, atom=p, kind=kind, to=to) for t, l, p, kind, to in record.to_list()]
        print(
            f"alpha = {tuple(alpha)}: final m = {np.round(np.asarray(traj.m[-1]), 5).tolist()}, v = {np.round(np.asarray(traj.v[-1]), 5).tolist()}, "
            f"loss = {float(traj.loss[-1]):.3e} ({int(traj.num_segments)} segments, {int(record.count)} relu events, {timings[f'alpha_{tag}']:.2f} s incl. compile)"
        )
    fig = trajectory_figure(
        trajs,
        suptitle=f"Shape counting: {args.activation}, overlap {args.overlap:g}, $v(0) = (\\varepsilon, -\\varepsilon)$, $\\varepsilon = {args.eps:g}$",
    )
    params = {
        "command": "shape-counting",
        "alphas": [list(a) for a in alphas],
        "overlap": args.overlap,
        "activation": args.activation,
        "teacher": {"activation": "indicator", "head": [1.0, -1.0], "kernels": "atoms"},
        "t1": args.t1,
        "eps": args.eps,
        "m0": np.asarray(m0).tolist(),
        "v0": np.asarray(v0).tolist(),
        "method": args.method,
        "dt0": args.dt0,
        "rtol": args.rtol,
        "atol": args.atol,
        "patches_per_side": args.patches_per_side,
        "pooling": args.pooling,
        "k": args.k,
        "kernel_lr_multiplier": args.k * args.k,
        "head_lr_multiplier": 1.0,
        "seconds": timings,
        "events": events,
    }
    paths = save_results(args.out, "shape_counting", arrays=arrays, params=params, figure=fig)
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0
