"""Solver benchmark: the shape-counting flow with every method, and a 1000-member ensemble.

For a smooth student (sigmoid) and relu (Filippov hybrid), each method is timed on its
first call (compile + run) and steady state (median of repeats), and its error at t1 is
measured against a tight reference. The relu rows end with a differentiated solve
(`jax.grad` of the final loss w.r.t. `m0`, reverse mode), compile and steady time beside
the plain one, its gradient checked against a central difference. The ensemble compares one batched diffrax solve
(`solve_batch`, jit(vmap)) with a Python loop of scipy solves.

The front door (`bench_front_door`, also alone with `--front-door`): the steady time of
`cnntheory.solve` against a bare jitted `diffrax.diffeqsolve` of the same flow (the state
as the tuple `(m, v)`, `problem.rhs`, same solver, tolerances and save times) and against
scipy's RK45 with a plain numpy right-hand side, each as a ratio measured in the same run:
one small solve, 1000 initial conditions with `solve_batch` (each lane its own steps, and
`shared_steps=True`: one step size for all lanes), and a 2040-state flow.

    python benchmarks/solvers.py [--quick] [--front-door]
    python benchmarks/solvers.py --relu    # only the relu rows, stored into the JSON
    python benchmarks/solvers.py --sizes

Prints a table and writes benchmarks/results/solvers.json (`--sizes`: the size sweep of
`bench_sizes`, relu beside softplus from 2x2 to 40x50, to benchmarks/results/solver_sizes.json).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import platform
import statistics
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp
from scipy.special import expit

import cnntheory as ct
from cnntheory import _solve  # private core, for the naive baseline

T1 = 60.0
M0 = jnp.array([[0.3, 0.25], [0.2, 0.28]])
V0 = jnp.array([0.01, -0.01])
TS = jnp.linspace(0.0, T1, 61)
METHODS = ["tsit5", "dopri5", "dopri8", "bosh3", "kvaerno5", "RK45", "DOP853", "LSODA", "Radau", "BDF"]


def timed(fn, repeats):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.m)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn().m)
        times.append(time.perf_counter() - start)
    return out, first, statistics.median(times)


def bench_methods(activation, repeats):
    problem = ct.shape_counting(activation=activation)
    reference = ct.solve(problem, M0, V0, T1, ts=TS, method="dopri8", rtol=1e-12, atol=1e-14)
    rows = []
    for method in METHODS:
        traj, first, steady = timed(
            functools.partial(ct.solve, problem, M0, V0, T1, ts=TS, method=method, rtol=1e-8, atol=1e-10), repeats
        )
        err = float(max(jnp.max(jnp.abs(traj.m - reference.m)), jnp.max(jnp.abs(traj.v - reference.v))))
        row = dict(
            activation=activation,
            method=method,
            first_call_s=first,
            steady_s=steady,
            max_error=err,
            steps=int(traj.num_steps),
            segments=int(traj.num_segments),
        )
        if method == "dopri8":
            row["note"] = "first call reuses the reference solve's compilation"
        if method == "tsit5" and activation == "sigmoid":
            row["note"] = "first call reuses the front-door benchmark's compilation"
        rows.append(row)
    if activation == "relu":
        for dt in (1e-3, 1e-4):
            traj, first, steady = timed(
                functools.partial(ct.solve, problem, M0, V0, T1, ts=TS, method="euler", dt0=dt), 1
            )
            err = float(max(jnp.max(jnp.abs(traj.m - reference.m)), jnp.max(jnp.abs(traj.v - reference.v))))
            rows.append(
                dict(
                    activation=activation,
                    method=f"euler dt={dt:g} (gradient descent)",
                    first_call_s=first,
                    steady_s=steady,
                    max_error=err,
                    steps=int(traj.num_steps),
                    segments=1,
                )
            )
        rows.append(naive_relu(problem, reference))
        rows.append(differentiated_relu(problem, reference, repeats))
    return rows


def differentiated_relu(problem, reference, repeats):
    """`jax.grad` of the final loss w.r.t. `m0` through the relu solve (reverse mode, tsit5).

    Compile and steady time beside the plain tsit5 row; `max_error` is the relative gap of
    the gradient along a random direction to a central difference (step 1e-6) of the loss.
    """

    def loss(m0):
        return ct.solve(problem, m0, V0, T1, ts=TS, method="tsit5", rtol=1e-8, atol=1e-10, throw=False).loss[-1]

    grad = jax.jit(jax.grad(loss))
    start = time.perf_counter()
    g = jax.block_until_ready(grad(M0))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(grad(M0))
        times.append(time.perf_counter() - start)
    d = jax.random.normal(jax.random.PRNGKey(1), M0.shape)
    value = jax.jit(loss)
    eps = 1e-6
    fd = float(value(M0 + eps * d) - value(M0 - eps * d)) / (2 * eps)
    return dict(
        activation="relu",
        method="tsit5, jax.grad of final loss w.r.t. m0",
        first_call_s=first,
        steady_s=statistics.median(times),
        max_error=abs(float(jnp.sum(g * d)) - fd) / abs(fd),
        steps=int(reference.num_steps),
        segments=int(reference.num_segments),
        note="reverse mode through the checkpointed segment loop; max_error: vs central difference; steps: the reference's",
    )


def naive_relu(problem, reference):
    """Tsit5 on the plain (discontinuous) relu field, capped at 10^5 steps: it grinds at the kink."""
    kwargs = dict(hybrid=False, batch_problem=False, batched=False, rhs=None)
    config = ct.SolverConfig(method="tsit5", rtol=1e-8, atol=1e-10, max_steps=100_000, max_segments=1, max_events=1)
    args = (problem, M0, V0, jnp.asarray(0.0), jnp.asarray(T1), TS, config, 0)
    start = time.perf_counter()
    traj = jax.block_until_ready(_solve._assemble(TS, _solve._compiled(*args, **kwargs), config, ()))
    status, steps, t_end = traj.status, traj.num_steps, traj.t_end
    first = time.perf_counter() - start
    return dict(
        activation="relu",
        method="tsit5, no Filippov (naive)",
        first_call_s=first,
        steady_s=float("nan"),
        max_error=float("nan"),
        steps=int(steps),
        segments=1,
        note=f"status {int(status)} (1 = max_steps reached) at t = {float(t_end):.4g} of {T1}",
    )


def bench_ensemble(activation, n, scipy_n):
    problem = ct.shape_counting(activation=activation)
    key = jax.random.PRNGKey(0)
    m0s = 0.3 + 0.1 * jax.random.normal(key, (n, 2, 2))
    v0s = jnp.tile(V0, (n, 1))
    run = lambda: ct.solve_batch(problem, m0s, v0s, T1, ts=TS)
    batch, first, steady = timed(run, 2)
    start = time.perf_counter()
    loop = [ct.solve(problem, m0s[i], v0s[i], T1, ts=TS, method="DOP853") for i in range(scipy_n)]
    loop_s = (time.perf_counter() - start) * n / scipy_n
    err = max(float(jnp.max(jnp.abs(batch.m[i] - loop[i].m))) for i in range(scipy_n))
    return dict(
        activation=activation,
        n=n,
        batched_first_call_s=first,
        batched_steady_s=steady,
        scipy_loop_s=loop_s,
        scipy_loop_measured_on=scipy_n,
        speedup=loop_s / steady,
        max_diff=err,
    )


# --- the front door: solve vs bare diffrax vs scipy with a numpy right-hand side -------------


def numpy_rhs(problem, L):
    """The flow of a sigmoid student in plain numpy (flat state), for scipy."""
    G, C = np.asarray(problem.gram), np.asarray(problem.moments)
    b = np.asarray(problem.teacher_outputs())
    eta_k, eta_v, P = (
        float(problem.kernel_lr_multiplier) / problem.patch_dim,
        float(problem.head_lr_multiplier),
        problem.num_atoms,
    )

    def f(t, y):
        m, v = y[: L * P].reshape(L, P), y[L * P :]
        s = expit(m)
        r = C @ (v @ s - b)
        dm = -eta_k * (v[:, None] * s * (1 - s) * r[None, :]) @ G
        return np.concatenate([dm.ravel(), -eta_v * s @ r])

    return f


@functools.partial(jax.jit, static_argnames=("solver", "rtol", "atol"))
def bare_diffrax(problem, m0, v0, ts, solver="Tsit5", rtol=1e-8, atol=1e-10):
    """A bare jitted `diffeqsolve` of `problem.rhs` on the state `(m, v)`, saved at `ts`."""
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, p: p.rhs(*y)),
        getattr(diffrax, solver)(),
        ts[0],
        ts[-1],
        None,
        (m0, v0),
        args=problem,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=100_000,
    )
    return sol.ys


def interleaved(fns, repeats):
    """Median steady time of each function, the calls interleaved (a shared machine drifts)."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def large_problem(L=40, P=50, k=8, seed=0):
    """`L x P + L = 2040` states: P random unit-norm atoms, a sigmoid teacher, a sigmoid student."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(P, k * k))
    atoms = k * atoms / np.linalg.norm(atoms, axis=1, keepdims=True)
    mixture = ct.PatchMixture(atoms, np.ones(P), None, "mean")
    problem = ct.TeacherStudent(
        mixture,
        rng.normal(size=P),
        teacher_activation="sigmoid",
        student_activation="sigmoid",
        kernel_lr_multiplier=float(k * k),
    )
    return problem, jnp.asarray(0.3 * rng.normal(size=(L, P))), jnp.asarray(0.1 * rng.normal(size=L))


def bench_front_door(quick=False):
    rows = []

    def case(name, problem, m0, v0, ts, methods, repeats, scipy_repeats):
        L, t1 = m0.shape[0], float(ts[-1])
        fns = {"bare diffrax tsit5": lambda: bare_diffrax(problem, m0, v0, ts)}
        fns.update(
            {f"cnntheory.solve {m}": (lambda m=m: ct.solve(problem, m0, v0, t1, ts=ts, method=m).m) for m in methods}
        )
        times = interleaved(fns, repeats)
        f, y0 = numpy_rhs(problem, L), np.concatenate([np.ravel(m0), np.asarray(v0)])
        run = lambda: solve_ivp(
            f, (0.0, float(ts[-1])), y0, method="RK45", t_eval=np.asarray(ts), rtol=1e-8, atol=1e-10
        )
        times["scipy RK45 numpy rhs"] = _scipy_time(run, scipy_repeats)
        ref = ct.solve(problem, m0, v0, float(ts[-1]), ts=ts, method="dopri8", rtol=1e-12, atol=1e-14)
        err_scipy = float(np.max(np.abs(run().y[: m0.size, -1] - np.ravel(ref.m[-1]))))
        best = min(times[f"cnntheory.solve {m}"] for m in methods)
        row = dict(
            case=name,
            states=int(m0.size + v0.size),
            times_s=times,
            scipy_max_error=err_scipy,
            solve_over_bare=times[f"cnntheory.solve {methods[0]}"] / times["bare diffrax tsit5"],
            scipy_over_best_solve=times["scipy RK45 numpy rhs"] / best,
        )
        for m in methods:
            row[f"error {m}"] = float(
                jnp.max(jnp.abs(ct.solve(problem, m0, v0, float(ts[-1]), ts=ts, method=m).m[-1] - ref.m[-1]))
            )
        rows.append(row)
        print(
            f"{name:<34} solve/bare {row['solve_over_bare']:.2f}x   scipy/solve {row['scipy_over_best_solve']:.1f}x   "
            + "  ".join(f"{k} {v * 1e3:.3g} ms" for k, v in times.items()),
            flush=True,
        )

    small = ct.shape_counting(activation="sigmoid")
    case("small (sigmoid, t = 60, 61 saves)", small, M0, V0, TS, ["tsit5"], 100 if quick else 400, 10 if quick else 30)
    big, bm0, bv0 = large_problem()
    case(
        "large (L = 40, P = 50, t = 50)",
        big,
        bm0,
        bv0,
        jnp.linspace(0.0, 50.0, 51),
        ["tsit5", "dopri5", "dopri8"],
        3 if quick else 7,
        2 if quick else 3,
    )

    # 1000 initial conditions: one solve_batch against a loop of scipy solves (numpy rhs).
    n, scipy_n = 1000, 20 if quick else 50
    m0s = 0.3 + 0.1 * jax.random.normal(jax.random.PRNGKey(0), (n, 2, 2))
    v0s = jnp.tile(V0, (n, 1))
    times = interleaved(
        {
            "own": lambda: ct.solve_batch(small, m0s, v0s, T1, ts=TS).m,
            "shared": lambda: ct.solve_batch(small, m0s, v0s, T1, ts=TS, shared_steps=True).m,
        },
        3,
    )
    f = numpy_rhs(small, 2)
    start = time.perf_counter()
    for i in range(scipy_n):
        solve_ivp(
            f,
            (0.0, T1),
            np.concatenate([np.ravel(m0s[i]), np.asarray(v0s[i])]),
            method="RK45",
            t_eval=np.asarray(TS),
            rtol=1e-8,
            atol=1e-10,
        )
    scipy_each = (time.perf_counter() - start) / scipy_n
    for name, label in (("own", "own steps per lane (jit(vmap))"), ("shared", "shared_steps=True")):
        batch = times[name]
        rows.append(
            dict(
                case=f"solve_batch, 1000 initial conditions, {label}",
                per_trajectory_s=batch / n,
                scipy_rk45_each_s=scipy_each,
                scipy_over_batch_per_trajectory=scipy_each / (batch / n),
            )
        )
        print(
            f"solve_batch x1000, {label}: {batch / n * 1e6:.1f} us per trajectory; "
            f"scipy RK45 numpy {scipy_each * 1e3:.2f} ms each: {scipy_each / (batch / n):.0f}x",
            flush=True,
        )
    return rows


def _scipy_time(run, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- size sweep: compile and steady time of relu (Filippov) beside softplus ---------------

SIZES = [(2, 2), (4, 6), (8, 10), (16, 20), (16, 50), (40, 50)]


def _random_problem(L, P, activation, seed=0):
    """A random problem: `P` correlated atoms with `|mu|^2 / D = 1` in `D = k*k > P` (a regular Gram),
    relu teacher with kernels = atoms, continuum mean pooling, `eta_K = D`."""
    from cnntheory._data import PatchMixture

    k = int(np.ceil(np.sqrt(P))) + 1
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(P, k * k)) + 0.5 * rng.normal(size=(1, k * k))
    atoms *= k / np.linalg.norm(atoms, axis=1, keepdims=True)
    mixture = PatchMixture(atoms, rng.uniform(0.5, 2.0, P), None, "mean")
    problem = ct.TeacherStudent(
        mixture,
        rng.normal(size=P),
        teacher_activation="relu",
        student_activation=activation,
        kernel_lr_multiplier=float(k * k),
        head_lr_multiplier=1.0,
    )
    return problem, jnp.asarray(0.5 * rng.normal(size=(L, P))), jnp.asarray(0.5 * rng.normal(size=L))


def bench_sizes(sizes=SIZES, t1=50.0, repeats=3):
    """Compile (first call minus steady) and steady time per size, relu beside softplus; writes solver_sizes.json."""
    rows = []
    print(
        f"{'L x P':>7} {'activation':<9} {'first s':>8} {'compile s':>9} {'steady s':>9} {'segments':>8} {'events':>6} {'steps':>7}"
    )
    for L, P in sizes:
        for activation in ("softplus", "relu"):
            problem, m0, v0 = _random_problem(L, P, activation)
            run = functools.partial(
                ct.solve, problem, m0, v0, t1, ts=jnp.linspace(0.0, t1, 51), max_events=1024, throw=False
            )
            traj, first, steady = timed(run, repeats)
            row = dict(
                L=L,
                P=P,
                activation=activation,
                first_call_s=first,
                compile_s=first - steady,
                steady_s=steady,
                segments=int(traj.num_segments),
                events=int(traj.events.count),
                steps=int(traj.num_steps),
                status=int(traj.status),
            )
            rows.append(row)
            print(
                f"{L:>3} x {P:<3} {activation:<9} {first:>8.2f} {first - steady:>9.2f} {steady:>9.3f} {row['segments']:>8d} {row['events']:>6d} {row['steps']:>7d}"
            )
    out = pathlib.Path(__file__).parent / "results" / "solver_sizes.json"
    out.parent.mkdir(exist_ok=True)
    meta = dict(
        t1=t1,
        rtol=1e-8,
        atol=1e-10,
        method="tsit5",
        problem="random: relu teacher (kernels = atoms), continuum mean pooling, k = ceil(sqrt(P)) + 1, seed 0",
        machine=platform.processor() or platform.machine(),
        cpu_count=__import__("os").cpu_count(),
        jax=jax.__version__,
        device=str(jax.devices()[0]),
    )
    out.write_text(json.dumps(dict(meta=meta, sizes=rows), indent=2) + "\n")
    print(f"wrote {out}")
    return rows


def print_methods(rows):
    print(
        f"{'activation':<9} {'method':<40} {'first call s':>12} {'steady s':>10} {'max err':>9} {'steps':>7} {'segs':>5}"
    )
    for r in rows:
        print(
            f"{r['activation']:<9} {r['method']:<40} {r['first_call_s']:>12.3f} {r['steady_s']:>10.4f} {r['max_error']:>9.1e} {r['steps']:>7d} {r['segments']:>5d} {r.get('note', '')}"
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller scipy loop")
    parser.add_argument(
        "--front-door", action="store_true", help="only the front-door figures (updates that part of the JSON)"
    )
    parser.add_argument("--sizes", action="store_true", help="only the size sweep (relu vs softplus, 2x2 to 40x50)")
    parser.add_argument("--relu", action="store_true", help="only the relu rows (updates those rows of the JSON)")
    args = parser.parse_args()
    if args.sizes:
        bench_sizes()
        return
    out = pathlib.Path(__file__).parent / "results" / "solvers.json"
    if args.relu:
        rows = bench_methods("relu", 3 if args.quick else 5)
        print_methods(rows)
        stored = json.loads(out.read_text()) if out.exists() else {}
        stored["methods"] = [r for r in stored.get("methods", []) if r["activation"] != "relu"] + rows
        out.write_text(json.dumps(stored, indent=2) + "\n")
        print(f"\nwrote {out}")
        return
    front_door = bench_front_door(args.quick)
    if args.front_door:
        stored = json.loads(out.read_text()) if out.exists() else {}
        stored["front_door"] = front_door
        out.write_text(json.dumps(stored, indent=2) + "\n")
        print(f"\nwrote {out}")
        return
    repeats = 3 if args.quick else 5
    rows = bench_methods("sigmoid", repeats) + bench_methods("relu", repeats)
    print_methods(rows)
    ensembles = [bench_ensemble(a, 1000, 50 if args.quick else 200) for a in ("sigmoid", "relu")]
    print(
        f"\n{'ensemble':<9} {'n':>5} {'batched first s':>15} {'batched s':>10} {'scipy loop s':>12} {'speedup':>8} {'max diff':>9}"
    )
    for e in ensembles:
        print(
            f"{e['activation']:<9} {e['n']:>5} {e['batched_first_call_s']:>15.2f} {e['batched_steady_s']:>10.3f} {e['scipy_loop_s']:>12.2f} {e['speedup']:>8.0f} {e['max_diff']:>9.1e}"
        )
    out.parent.mkdir(exist_ok=True)
    meta = dict(
        t1=T1,
        m0=np.asarray(M0).tolist(),
        v0=np.asarray(V0).tolist(),
        rtol=1e-8,
        atol=1e-10,
        reference="dopri8 rtol 1e-12 (Filippov hybrid for relu)",
        machine=platform.processor() or platform.machine(),
        cpu_count=__import__("os").cpu_count(),
        jax=jax.__version__,
        device=str(jax.devices()[0]),
    )
    out.write_text(
        json.dumps(dict(meta=meta, methods=rows, ensembles=ensembles, front_door=front_door), indent=2) + "\n"
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
