"""`cnntheory fixed-points`: stationary points of the shape-counting flow and their stability."""

from __future__ import annotations

from . import _types as T
from ._notice import notice


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fixed-points",
        help="find and classify the fixed points of the shape-counting flow",
        description="Fixed points of the order-parameter flow (Levenberg-Marquardt from random starts, "
        "Filippov modes for relu), classified by the Jacobian's eigenvalues, grouped into families. "
        "Saturated states that are stationary only in the limit |m| -> infinity (e.g. sigmoid with "
        "sigma' ~ 1e-9) are counted and listed apart as asymptotic.",
    )
    p.add_argument(
        "--alpha",
        type=T.alpha,
        action="append",
        help="Dirichlet parameters, e.g. 1,1 (repeatable; default 1,1 and 2,1)",
    )
    p.add_argument("--overlap", type=T.overlap, default=0.8, help="Gram overlap G_12 of X and O")
    p.add_argument(
        "--activation", choices=T.ACTIVATION_NAMES, metavar="NAME", default="relu", help="student activation"
    )
    p.add_argument("--units", type=T.positive_int, default=2, help="student units L")
    p.add_argument("--starts", type=T.positive_int, default=256, help="random starts")
    p.add_argument("--seed", type=T.seed, default=0, help="PRNG seed of the random starts")
    p.add_argument("--all", action="store_true", help="print every point, not one per family")
    p.add_argument("--out", default="cnntheory-output/fixed-points", help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    import jax
    import numpy as np

    from .._io import save_results
    from .._problem import shape_counting
    from ..analysis import count_kinds, find_fixed_points, fixed_point_families, fixed_point_table

    alphas = args.alpha or [(1.0, 1.0), (2.0, 1.0)]
    params = {
        "command": "fixed-points",
        "overlap": args.overlap,
        "activation": args.activation,
        "units": args.units,
        "starts": args.starts,
        "seed": args.seed,
        "results": {},
    }
    arrays = {}
    for alpha in alphas:
        problem = shape_counting(args.overlap, alpha, args.activation)
        with notice("fixed-points", f"alpha = {tuple(alpha)}: compiling the fixed-point search"):
            points = find_fixed_points(problem, args.units, num_starts=args.starts, key=jax.random.PRNGKey(args.seed))
        families = fixed_point_families(points)
        tag = "_".join(f"{a:g}" for a in alpha)
        counts = count_kinds(points)
        print(f"\nalpha = {tuple(alpha)}, {args.activation}: {counts['fixed']} distinct fixed points and "
              f"{counts['asymptotic']} asymptotic (saturated) states, in {len(families)} families")  # fmt: skip
        for asymptotic, heading in (
            (False, "fixed points"),
            (True, "asymptotic states: stationary only as |m| -> infinity (sigma' ~ 0)"),
        ):
            group = [p for p in points if p.asymptotic == asymptotic]
            fams = [(rep, n) for rep, n in families if rep.asymptotic == asymptotic]
            if not group:
                continue
            print(f"{heading}:")
            print(fixed_point_table(group if args.all else [rep for rep, _ in fams]))
            if not args.all:
                print("family sizes:", [n for _, n in fams])
        params["results"][f"alpha_{tag}"] = {
            **counts,
            "families": [dict(rep.row(), count=n) for rep, n in families],
            "points": [p.row() for p in points],
        }
        arrays[f"m_alpha_{tag}"] = np.stack([np.asarray(p.m) for p in points])
        arrays[f"v_alpha_{tag}"] = np.stack([np.asarray(p.v) for p in points])
        arrays[f"loss_alpha_{tag}"] = np.array([p.loss for p in points])
    paths = save_results(args.out, "fixed_points", arrays=arrays, params=params)
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0
