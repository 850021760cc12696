"""`cnntheory sweep`: phase diagram of the shape-counting flow over overlap x alpha skew."""

from __future__ import annotations

from ._types import activation, finite_float, positive_float, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="phase diagram (final loss, plateau length) over overlap x alpha skew",
        description="Shape counting on a grid of atom overlaps G_12 and Dirichlet skews alpha = (1 + s, 1), "
        "solved in sharded batches over all JAX devices; heatmaps of the final loss and the plateau length.",
    )
    p.add_argument("--overlaps", type=positive_int, default=8, help="grid points in overlap (default 8)")
    p.add_argument("--overlap-range", type=finite_float, nargs=2, default=(0.0, 0.9))
    p.add_argument("--skews", type=positive_int, default=8, help="grid points in skew s (default 8)")
    p.add_argument("--skew-range", type=finite_float, nargs=2, default=(0.0, 3.0))
    p.add_argument(
        "--activation", type=activation, default="tanh", help="student activation (default tanh; relu compiles slowly)"
    )
    p.add_argument("--eps", type=finite_float, default=1e-3, help="initial head (eps, -eps) (default 1e-3)")
    p.add_argument("--t1", type=positive_float, default=100.0)
    p.add_argument("--num-points", type=positive_int, default=401)
    p.add_argument("--chunk-size", type=positive_int, default=256)
    p.add_argument("--out", default="cnntheory-output/sweep", help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np

    from .._problem import shape_counting
    from .._trajectory import Status
    from ..analysis import sweep
    from ..analysis._plateaus import plateau_mask

    (overlap_lo, overlap_hi), (skew_lo, skew_hi) = args.overlap_range, args.skew_range
    grid = {
        "overlap": np.linspace(overlap_lo, overlap_hi, args.overlaps),
        "skew": np.linspace(skew_lo, skew_hi, args.skews),
    }
    m0 = jnp.array([[0.3, 0.25], [0.2, 0.28]])
    v0 = jnp.array([args.eps, -args.eps])
    res = sweep(
        lambda overlap, skew: shape_counting(float(overlap), (1.0 + float(skew), 1.0), args.activation),
        grid,
        m0,
        v0,
        args.t1,
        ts=np.linspace(0.0, args.t1, args.num_points),
        chunk_size=args.chunk_size,
    )

    def plateau_length(t, m, v, loss):
        mask = plateau_mask(t, loss)
        return float(np.sum(np.diff(t)[mask[:-1]]))

    final, plateau = res.final_loss(), res.map(plateau_length)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    extent = (*args.skew_range, *args.overlap_range)
    for ax, data, title in (
        (axes[0], np.log10(np.maximum(final, 1e-300)), "log10 final loss"),
        (axes[1], plateau, "plateau length"),
    ):
        im = ax.imshow(data, origin="lower", aspect="auto", extent=extent)
        ax.set_xlabel("skew s, alpha = (1 + s, 1)")
        ax.set_ylabel("overlap $G_{12}$")
        ax.set_title(title)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    print(
        f"{final.size} problems, {int(np.sum(res.status != Status.SUCCESS))} failed; final loss in [{final.min():.3e}, {final.max():.3e}], "
        f"plateau length in [{plateau.min():.3g}, {plateau.max():.3g}]"
    )
    params = {
        "command": "sweep",
        "activation": args.activation,
        "eps": args.eps,
        "t1": args.t1,
        "m0": np.asarray(m0).tolist(),
    }
    paths = res.save(args.out, "sweep", params=params, figure=fig)
    from .._io import save_results

    save_results(args.out, "sweep_summary", arrays={"final_loss": final, "plateau_length": plateau}, params=params)
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0
