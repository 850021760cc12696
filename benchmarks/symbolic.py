"""Symbolic layer benchmark: derivation and code-generation cost against state size.

For `L = P` student units and atoms (relu student, indicator teacher with the atoms as
kernels, `n = L P + L` states) it times

- `derive`: building the loss and differentiating it (`symbolic.from_problem`),
- `lambdify`: printing the JAX code (with common-subexpression elimination),
- `compile`: the first call of the jitted generated function (XLA compilation),
- per call: the generated function against `jax.jit(problem.rhs)` (median of repeats),

and checks that both agree. Sizes stop growing once one size's derive + lambdify +
compile passes `--budget` seconds, so the run stays within a few minutes.

    python benchmarks/symbolic.py [--quick] [--budget SECONDS]

Prints a table and writes benchmarks/results/symbolic.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import cnntheory as ct
from cnntheory import symbolic

SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 10]


def problem_of_size(P: int) -> ct.TeacherStudent:
    rng = np.random.default_rng(P)
    A = rng.standard_normal((P, P + 2))
    G = A @ A.T
    G /= np.sqrt(np.outer(np.diag(G), np.diag(G)))
    k = max(3, int(np.ceil(np.sqrt(P))))
    mixture = ct.PatchMixture(ct.atoms_from_gram(G, k), rng.uniform(0.5, 3.0, P), 4, "sum")
    return ct.TeacherStudent(
        mixture, teacher_head=rng.normal(size=P), student_activation="relu", kernel_lr_multiplier=float(k * k)
    )


def per_call(fn, m, v, repeats: int = 200) -> float:
    jax.block_until_ready(fn(m, v))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn(m, v)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / repeats)
    return statistics.median(times)


def timed(fn):
    """`(result, wall seconds, CPU seconds of this process)`: CPU time is the fairer
    number on a shared machine (wall time there includes waiting for the cores)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - wall, time.process_time() - cpu


def bench(n: int) -> dict:
    L = P = n
    problem = problem_of_size(P)
    flow, derive, derive_cpu = timed(lambda: symbolic.from_problem(problem, L, exact=False))
    _, lambdify, lambdify_cpu = timed(lambda: symbolic._compile(flow, list(flow.rhs)))
    f = symbolic.to_jax(flow)
    rng = np.random.default_rng(0)
    m, v = jnp.asarray(rng.normal(size=(L, P))), jnp.asarray(rng.normal(size=L))
    _, compile_, compile_cpu = timed(lambda: f(m, v))
    vectorised = jax.jit(lambda m, v: problem.rhs(m, v))
    error = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(f(m, v), vectorised(m, v), strict=True))
    return {
        "L": L,
        "P": P,
        "states": L * P + L,
        "derive_s": derive,
        "lambdify_s": lambdify,
        "compile_s": compile_,
        "total_s": derive + lambdify + compile_,
        "derive_cpu_s": derive_cpu,
        "lambdify_cpu_s": lambdify_cpu,
        "compile_cpu_s": compile_cpu,
        "call_generated_us": 1e6 * per_call(f, m, v),
        "call_vectorised_us": 1e6 * per_call(vectorised, m, v),
        "max_abs_diff": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sizes up to L = P = 4 only")
    parser.add_argument("--budget", type=float, default=45.0, help="stop after a size whose setup takes longer (s)")
    args = parser.parse_args()
    sizes = [n for n in SIZES if not args.quick or n <= 4]
    rows = []
    header = f"{'L=P':>4} {'states':>6} {'derive s':>9} {'lambdify s':>10} {'compile s':>9} {'setup cpu s':>11} {'gen us/call':>11} {'vec us/call':>11} {'max|diff|':>9}"
    print(header)
    for n in sizes:
        row = bench(n)
        rows.append(row)
        print(
            f"{n:>4} {row['states']:>6} {row['derive_s']:>9.2f} {row['lambdify_s']:>10.2f} {row['compile_s']:>9.2f} "
            f"{row['derive_cpu_s'] + row['lambdify_cpu_s'] + row['compile_cpu_s']:>11.2f} "
            f"{row['call_generated_us']:>11.1f} {row['call_vectorised_us']:>11.1f} {row['max_abs_diff']:>9.1e}",
            flush=True,
        )
        if row["total_s"] > args.budget:
            print(
                f"stopping: setup at {row['states']} states took {row['total_s']:.0f} s (> --budget {args.budget:.0f} s)"
            )
            break
    out = pathlib.Path(__file__).parent / "results" / "symbolic.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "jax": jax.__version__,
        "sympy": __import__("sympy").__version__,
        "activation": "relu",
        "slow_states_threshold": symbolic.SLOW_STATES,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
