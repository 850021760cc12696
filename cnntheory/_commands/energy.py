"""`cnntheory energy`: fit the linear-CNN energy formula (Chowers & Weiss, ICML 2023) on bundled images and draw the figure.

Writes `energy_<dataset>.png` (the energy-profile figure of Chowers & Weiss), `energy_<dataset>.json` (every parameter and
the correlations) and `energy_<dataset>.npz` (the profiles) to `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from . import _types as T
from ._notice import notice

#: The side of the 8 x 8 digits of scikit-learn.
DIGIT_SIDE = 8


def _check(args) -> None:
    side = DIGIT_SIDE if args.dataset == "digits" else args.size
    T.require(
        args.patch <= side,
        f"argument --patch: a {args.patch} x {args.patch} filter does not fit in the {side} x {side} images"
        + (" (the digits are 8 x 8)" if args.dataset == "digits" else " (--size)")
        + ": lower --patch"
        + ("" if args.dataset == "digits" else " or raise --size"),
    )
    T.require(
        args.linear_steps % args.linear_records == 0,
        f"argument --linear-steps: {args.linear_steps} steps must be a multiple of --linear-records "
        f"{args.linear_records} (the linear CNN is recorded every linear-steps / linear-records steps)",
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "energy",
        help="energy profiles of first-layer filters against the linear-CNN theory (Chowers & Weiss, ICML 2023)",
        description=__doc__,
    )
    parser.add_argument("--out", type=Path, default=Path("cnntheory-output/energy"), help="output folder")
    parser.add_argument("--dataset", choices=T.DATASET_NAMES, default="photos", help="bundled image set")
    parser.add_argument("--images", type=T.positive_int, default=1024, help="number of images / crops")
    parser.add_argument(
        "--size", type=T.Range(int, ge=1, le=256), default=24, help="crop side for photos / powerlaw (digits: 8)"
    )
    parser.add_argument("--patch", type=T.positive_int, default=3, help="first-layer filter side k")
    parser.add_argument("--linear-steps", type=T.positive_int, default=200, help="GD steps of the linear CNN")
    parser.add_argument("--linear-records", type=T.positive_int, default=4, help="records of the linear CNN")
    parser.add_argument("--linear-seeds", type=T.positive_int, default=32, help="seeds of the linear CNN")
    parser.add_argument("--steps", type=T.positive_int, default=1000, help="SGD steps of the nonlinear CNN")
    parser.add_argument("--seeds", type=T.positive_int, default=2, help="seeds of the nonlinear CNN")
    parser.add_argument("--seed", type=T.seed, default=0, help="random seed")
    parser.set_defaults(func=run, check=_check)


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from ..energy import EnergyConfig, load_dataset, plot_report, run_experiment

    images, labels = load_dataset(args.dataset, args.images, args.size, key=args.seed)
    classes = {"photos": 2, "digits": 10}.get(args.dataset, 10)
    config = EnergyConfig(
        k=args.patch, linear_steps=args.linear_steps, linear_records=args.linear_records, linear_seeds=args.linear_seeds,
        small_steps=args.steps, small_seeds=args.seeds, key=args.seed,
    )  # fmt: skip
    with notice("energy", "training the linear and the small nonlinear CNNs (about two minutes at the defaults)"):
        report = run_experiment(images, labels, classes=classes, config=config)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"energy_{args.dataset}"
    fig = plot_report(report, title=f"{args.dataset}: {images.shape[0]} images {images.shape[1:]}, k = {args.patch}")
    fig.savefig(stem.with_suffix(".png"), dpi=200)
    params = {"dataset": args.dataset, "images": list(images.shape), "classes": classes, **dataclasses.asdict(config)}
    stem.with_suffix(".json").write_text(
        json.dumps({"parameters": params, "correlations": report.correlations()}, indent=2)
    )
    np.savez(
        stem.with_suffix(".npz"), lambdas=report.pca.lambdas, basis=report.pca.basis, linear_steps=report.linear_steps,
        linear_mean=report.linear_mean, linear_expected=report.linear_expected, control=report.control,
        **{f"nonlinear_{kind}_{part}": p for kind, parts in report.small.items() for part, p in parts.items()},
    )  # fmt: skip
    corr = report.correlations()
    print(f"linear CNN vs formula: r = {corr['linear_vs_formula']['r']:.3f}; nonlinear (W - W0) vs formula: "
          + ", ".join(f"{k}: r = {corr[f'nonlinear_{k}_labels_learned_vs_formula']['mean']:.3f}" for k in report.small)
          + f"; random init: r = {corr['random_init_control']['mean']:.2f}")  # fmt: skip
    for suffix in (".png", ".json", ".npz"):
        print(f"wrote {stem.with_suffix(suffix)}")
    return 0
