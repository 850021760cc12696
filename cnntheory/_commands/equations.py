"""`cnntheory equations`: print the order-parameter equations, derived by sympy.

Default: Lovig's (2025) equations (1)-(4) for shape counting (`L = L* = P = 2`, undefined
`sigma`, `phi`, continuum moments `E_pi[pi_p pi_q]`, `eta_K = D`, `eta_v = 1`).
"""

from __future__ import annotations

import argparse
import shutil

from . import _types as T

ABSTRACT = "abstract"


def register(subparsers) -> None:
    names = [ABSTRACT, *T.ACTIVATION_NAMES]
    parser = subparsers.add_parser(
        "equations",
        help="print the order-parameter ODEs derived symbolically (sympy)",
        description=__doc__,
    )
    parser.add_argument("--latex", action="store_true", help="print LaTeX (an aligned block) instead of unicode text")
    parser.add_argument(
        "--sizes",
        type=T.NumberList(T.positive_int, min_length=2, max_length=3, what="sizes L,P[,Lstar]"),
        default=(2, 2, 2),
        metavar="L,P[,Lstar]",
        help="student units, atoms, teacher units",
    )
    parser.add_argument(
        "--activation",
        choices=names,
        metavar="NAME",
        default=ABSTRACT,
        help="student activation (default: abstract, an undefined sigma)",
    )
    parser.add_argument(
        "--teacher-activation",
        choices=names,
        metavar="NAME",
        default=ABSTRACT,
        help="teacher activation (default: abstract, an undefined phi)",
    )
    parser.add_argument("--plain", action="store_true", help="write the moments as C_pq instead of E_pi[pi_p pi_q]")
    parser.add_argument(
        "--width",
        type=T.Range(int, ge=40),
        default=None,
        help="wrap the text at this many columns (default: the terminal's width, 100 when not a terminal)",
    )
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

    rates = {} if args.learning_rates else {"kernel_lr_multiplier": symbolic.D, "head_lr_multiplier": 1}
    L, P, *rest = args.sizes
    flow = symbolic.derive(
        L,
        P,
        rest[0] if rest else None,
        teacher_activation=activation(args.teacher_activation),
        student_activation=activation(args.activation),
        **rates,
    )
    notation = "plain" if args.plain else "seed"
    if args.latex:
        print(symbolic.latex(flow, notation=notation))
    else:  # wrapped at the terminal's width (COLUMNS, or 100 columns when not a terminal)
        print(symbolic.pretty(flow, notation=notation, width=args.width or shutil.get_terminal_size((100, 24)).columns))
    return 0
