"""`cnntheory committee`: the classic committee-machine plateaus and the N-patch learning curve."""

from __future__ import annotations

from . import _types as T
from ._notice import notice


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "committee",
        help="Saad-Solla plateaus (K = M = 2, 3, 4) and the same curve on N Gaussian patches",
        description="Gaussian-patch theory (cnntheory.gaussian): the soft committee machine (N = 1, "
        "g = erf(x/sqrt 2)) for K = M = 2, 3, 4 with the symmetric-plateau heights, and the K = M = 2 "
        "learning curve on N = 1, 4, 16 patches. Writes PNG + npz + JSON.",
    )
    p.add_argument("--K", type=T.positive_int, nargs="+", default=[2, 3, 4], help="committee sizes K = M")
    p.add_argument("--patches", type=T.positive_int, nargs="+", default=[1, 4, 16], help="patch counts N")
    p.add_argument("--lr", type=T.positive_float, default=0.1, help="learning rate of the committee panel")
    p.add_argument("--patch-lr", type=T.positive_float, default=1.0, help="patch panel: learning rate patch_lr / N")
    p.add_argument("--t1", type=T.positive_float, default=8000.0, help="final alpha = steps / D")
    p.add_argument("--num-points", type=T.num_points, default=801, help="save times, alpha = 0 to --t1")
    p.add_argument("--seed", type=T.seed, default=0, help="seed of the small initial asymmetry")
    p.add_argument("--out", default="cnntheory-output/committee", help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from .._io import save_results
    from ..gaussian._committee import committee_curves, committee_figure

    with notice("committee", "compiling the Gaussian-patch solver"):
        curves = committee_curves(
            tuple(args.K),
            tuple(args.patches),
            lr=args.lr,
            patch_lr=args.patch_lr,
            t1=args.t1,
            num_saves=args.num_points,
            seed=args.seed,
        )
    fig = committee_figure(curves)
    for K, err, h in zip(curves["K"], curves["committee_error"], curves["plateau_height"], strict=True):
        mid = err[len(err) // 8]
        print(
            f"K = M = {K}: Saad-Solla plateau {h:.6f}, solved error at alpha = {curves['t'][len(err) // 8]:g}: {mid:.6f}, final {err[-1]:.2e}"
        )
    params = {
        "command": "committee",
        "K": args.K,
        "patches": args.patches,
        "lr": args.lr,
        "patch_lr": args.patch_lr,
        "t1": args.t1,
        "seed": args.seed,
        "activation": "scaled_erf",
        "pooling": "sum",
    }
    arrays = {k: np.asarray(v) for k, v in curves.items()}
    for kind, path in save_results(args.out, "committee", arrays=arrays, params=params, figure=fig).items():
        print(f"wrote {kind}: {path}")
    return 0
