"""`cnntheory equations`: print the order-parameter equations, derived by sympy.

Default: Lovig's (2025) equations (1)-(4) for shape counting (`L = L* = P = 2`, undefined
`sigma`, `phi`, continuum moments `E_pi[pi_p pi_q]`, `eta_K = D`, `eta_v = 1`).
"""

from __future__ import annotations

import argparse

ABSTRACT = "abstract"


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes must be integers 'L,P' or 'L,P,Lstar', got {text!r}") from None
    if len(sizes) not in (2, 3) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes must be two or three positive integers 'L,P[,Lstar]', got {text!r}")
    return sizes


def register(subparsers) -> None:
    from .._activations import ACTIVATIONS

    names = [ABSTRACT, *sorted(ACTIVATIONS)]
    parser = subparsers.add_parser(
        "equations",
        help="print the order-parameter ODEs derived symbolically (sympy)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--latex", action="store_true", help="print LaTeX (an aligned block) instead of unicode text")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=(2, 2, 2),
        metavar="L,P[,Lstar]",
        help="student units, atoms, teacher units (default 2,2,2)",
    )
    parser.add_argument(
        "--activation", choices=names, default=ABSTRACT, help="student activation (default: undefined sigma)"
    )
    parser.add_argument(
        "--teacher-activation", choices=names, default=ABSTRACT, help="teacher activation (default: undefined phi)"
    )
    parser.add_argument("--plain", action="store_true", help="write the moments as C_pq instead of E_pi[pi_p pi_q]")
    parser.add_argument(
        "--learning-rates",
        action="store_true",
        help="keep eta_K, eta_v and D as symbols (default: Lovig's eta_K = D, eta_v = 1)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import symbolic

    def activation(name: str):
        return None if name == ABSTRACT else name

    rates = {} if args.learning_rates else {"lr_kernel": symbolic.D, "lr_head": 1}
    L, P, *rest = args.sizes
    flow = symbolic.derive(
        L,
        P,
        rest[0] if rest else None,
        activation=activation(args.activation),
        teacher_activation=activation(args.teacher_activation),
        **rates,
    )
    print(symbolic.latex(flow, notation="plain" if args.plain else "seed") if args.latex else symbolic.pretty(flow))
    return 0
