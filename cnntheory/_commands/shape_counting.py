"""`cnntheory shape-counting`: Lovig's figure (two Dirichlet laws, relu, overlap 0.8)."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from ._types import activation, finite_float, positive_float, positive_int

if TYPE_CHECKING:
    from jax import Array

DEFAULT_M0 = (0.3, 0.25, 0.2, 0.28)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "shape-counting",
        help="solve the shape-counting flow (Lovig 2025) and draw its figure",
        description="Order-parameter dynamics of the shape-counting teacher-student CNN: "
        "one panel per Dirichlet law alpha, order parameters m_lp(t), head v(t), loss.",
    )
    p.add_argument(
        "--alpha",
        type=_floats,
        action="append",
        help="Dirichlet parameters, e.g. 1,1 (repeat for more panels; default 1,1 and 2,1)",
    )
    p.add_argument("--overlap", type=finite_float, default=0.8, help="Gram overlap of the X and O atoms (default 0.8)")
    p.add_argument("--activation", type=activation, default="relu", help="student activation (default relu)")
    p.add_argument("--t1", type=positive_float, default=60.0, help="final time (default 60)")
    p.add_argument("--eps", type=finite_float, default=0.01, help="initial head v(0) = (eps, -eps) (default 0.01)")
    p.add_argument(
        "--m0", type=_floats, default=DEFAULT_M0, help="initial m as m11,m12,m21,m22 (default 0.3,0.25,0.2,0.28)"
    )
    p.add_argument("--method", default="tsit5", help="diffrax solver name or scipy method (default tsit5)")
    p.add_argument("--rtol", type=positive_float, default=1e-8)
    p.add_argument("--atol", type=positive_float, default=1e-10)
    p.add_argument("--patches-per-side", type=positive_int, default=None, help="M (default: continuum moments)")
    p.add_argument("--pooling", choices=("mean", "sum"), default="mean")
    p.add_argument("--k", type=positive_int, default=5, help="patch side (default 5)")
    p.add_argument("--num-points", type=positive_int, default=601, help="save times (default 601)")
    p.add_argument("--out", default="cnntheory-output/shape-counting", help="output folder")
    p.set_defaults(func=run)


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
    if len(args.m0) != 4:
        raise ValueError(f"--m0 needs 4 numbers (m11,m12,m21,m22), got {len(args.m0)}")
    m0 = jnp.asarray(args.m0).reshape(2, 2)
    v0 = jnp.array([args.eps, -args.eps])
    ts = jnp.linspace(0.0, args.t1, args.num_points)
    trajs, timings = {}, {}
    arrays: dict[str, np.ndarray | Array] = {"t": np.asarray(ts)}
    events: dict[str, list[dict]] = {}
    for alpha in alphas:
        problem = shape_counting(args.overlap, alpha, args.activation, args.patches_per_side, args.pooling, args.k)
        start = time.perf_counter()
        traj = solve(problem, m0, v0, args.t1, ts=ts, method=args.method, rtol=args.rtol, atol=args.atol)
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
        "rtol": args.rtol,
        "atol": args.atol,
        "patches_per_side": args.patches_per_side,
        "pooling": args.pooling,
        "k": args.k,
        "lr_kernel": args.k * args.k,
        "lr_head": 1.0,
        "seconds": timings,
        "events": events,
    }
    paths = save_results(args.out, "shape_counting", arrays=arrays, params=params, figure=fig)
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0
