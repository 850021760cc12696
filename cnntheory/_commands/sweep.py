"""`cnntheory sweep`: phase diagram of the shape-counting flow over overlap x alpha skew."""

from __future__ import annotations

from . import _types as T
from ._notice import notice


def _check(args) -> None:
    for name, (lo, hi) in (("--overlap-range", args.overlap_range), ("--skew-range", args.skew_range)):
        T.require(lo < hi, f"argument {name}: needs LO < HI, got {lo:g} {hi:g}")
    lo, hi = args.overlap_range
    T.require(-1 < lo and hi < 1, f"argument --overlap-range: overlaps of unit atoms lie in (-1, 1), got {lo:g} {hi:g}")
    T.require(
        args.skew_range[0] > -1,
        f"argument --skew-range: alpha = (1 + s, 1) needs s > -1, got {args.skew_range[0]:g}",
    )
    explicit = [args.coordinator, args.num_processes, args.process_id]
    T.require(
        all(x is None for x in explicit) or all(x is not None for x in explicit),
        "arguments --coordinator, --num-processes, --process-id: give all three (or none, and --distributed "
        "to let JAX detect the cluster)",
    )
    if args.coordinator is not None:
        host, _, port = args.coordinator.rpartition(":")
        T.require(
            bool(host) and port.isdigit() and 0 < int(port) < 65536,
            f"argument --coordinator: needs HOST:PORT (e.g. 127.0.0.1:12345), got {args.coordinator!r}",
        )
        T.require(
            args.process_id < args.num_processes,
            f"argument --process-id: must be below --num-processes={args.num_processes}, got {args.process_id}",
        )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="phase diagram (final loss, plateau length) over overlap x alpha skew",
        description="Shape counting on a grid of atom overlaps G_12 and Dirichlet skews alpha = (1 + s, 1), "
        "solved in sharded batches over all JAX devices; heatmaps of the final loss and the plateau length, "
        "one cell per grid point. Writes sweep.png, .npz, .json and sweep_summary.npz/.json to --out.",
    )
    grid = T.Range(int, ge=2)
    p.add_argument("--overlaps", type=grid, default=8, help="grid points in overlap")
    p.add_argument(
        "--overlap-range", type=T.overlap, nargs=2, default=(0.0, 0.9), metavar=("LO", "HI"), help="overlap interval"
    )
    p.add_argument("--skews", type=grid, default=8, help="grid points in skew s")
    p.add_argument(
        "--skew-range",
        type=T.Range(float, gt=-1),
        nargs=2,
        default=(0.0, 3.0),
        metavar=("LO", "HI"),
        help="skew interval, alpha = (1 + s, 1)",
    )
    p.add_argument(
        "--activation",
        choices=T.ACTIVATION_NAMES,
        metavar="NAME",
        default="tanh",
        help="student activation (relu compiles slowly)",
    )
    p.add_argument("--eps", type=T.finite_float, default=1e-3, help="initial head (eps, -eps)")
    p.add_argument("--t1", type=T.positive_float, default=100.0, help="final time")
    p.add_argument("--num-points", type=T.num_points, default=401, help="save times, t = 0 to --t1")
    p.add_argument("--chunk-size", type=T.positive_int, default=256, help="problems per batched solve")
    p.add_argument("--out", default="cnntheory-output/sweep", help="output folder")
    dist = p.add_argument_group(
        "across processes (jax.distributed)",
        "Every process runs the same command; each solves its share of the grid, process 0 writes the files.",
    )
    dist.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run whose layout JAX detects (SLURM, Open MPI, ...)",
    )
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator (explicit layout)")
    dist.add_argument("--num-processes", type=T.positive_int, help="number of processes (explicit layout)")
    dist.add_argument("--process-id", type=T.Range(int, ge=0), help="this process's index, 0 .. N-1 (explicit layout)")
    p.set_defaults(func=run, check=_check)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import jax  # a multi-process run (--distributed, --coordinator) was joined by the CLI already
    import jax.numpy as jnp
    import numpy as np

    from .._plots import sweep_figure
    from .._problem import shape_counting
    from .._trajectory import Status
    from ..analysis import sweep
    from ..analysis._plateaus import plateau_mask

    writer = jax.process_index() == 0
    (overlap_lo, overlap_hi), (skew_lo, skew_hi) = args.overlap_range, args.skew_range
    grid = {
        "overlap": np.linspace(overlap_lo, overlap_hi, args.overlaps),
        "skew": np.linspace(skew_lo, skew_hi, args.skews),
    }
    m0 = jnp.array([[0.3, 0.25], [0.2, 0.28]])
    v0 = jnp.array([args.eps, -args.eps])
    with notice("sweep", f"compiling the batched {args.activation} solver"):
        res = sweep(
            lambda overlap, skew: shape_counting(float(overlap), (1.0 + float(skew), 1.0), args.activation),
            grid,
            m0,
            v0,
            args.t1,
            ts=np.linspace(0.0, args.t1, args.num_points),
            chunk_size=args.chunk_size,
        )

    if not writer:  # every process holds the whole result; process 0 reports and writes it
        return 0

    def plateau_length(t, m, v, loss):
        mask = plateau_mask(t, loss)
        return float(np.sum(np.diff(t)[mask[:-1]]))

    final, plateau = res.final_loss(), res.map(plateau_length)
    fig = sweep_figure(
        grid["skew"],
        grid["overlap"],
        {"log10 final loss": np.log10(np.maximum(final, 1e-300)), "plateau length (time)": plateau},
        xlabel=r"skew $s$, $\alpha = (1 + s, 1)$",
        ylabel="overlap $G_{12}$",
        suptitle=f"Shape counting, {args.activation}: {final.size} problems to t = {args.t1:g}",
    )
    print(
        f"{final.size} problems, {int(np.sum(res.status != Status.SUCCESS))} failed; final loss in [{final.min():.3e}, {final.max():.3e}], "
        f"plateau length in [{plateau.min():.3g}, {plateau.max():.3g}]"
    )
    params = {
        "command": "sweep",
        "activation": args.activation,
        "eps": args.eps,
        "t1": args.t1,
        "num_points": args.num_points,
        "overlap": grid["overlap"].tolist(),
        "skew": grid["skew"].tolist(),
        "m0": np.asarray(m0).tolist(),
    }
    paths = res.save(args.out, "sweep", params=params, figure=fig)
    from .._io import save_results

    save_results(args.out, "sweep_summary", arrays={"final_loss": final, "plateau_length": plateau}, params=params)
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0
