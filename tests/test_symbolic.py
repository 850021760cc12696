"""The symbolic layer: derived RHS, Jacobian, code generation, LaTeX, exact moments.

References are independent of the code under test: the hand-written `TeacherStudent.rhs`,
`jax.jacfwd` of it, the numeric `count_moments`, and equations (1)-(4) of Lovig (2025)
written out term by term.
"""

import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from helpers_problems import SEED_M0, SEED_V0
from helpers_problems import random_gram_problem as random_problem
from helpers_problems import random_gram_state as random_state

import cnntheory
from cnntheory import symbolic
from cnntheory._cli import main

STUDENT_ACTIVATIONS = sorted(cnntheory.ACTIVATIONS)


def assert_close(actual, desired, tol=1e-12):
    actual, desired = np.asarray(actual), np.asarray(desired)
    scale = max(1.0, float(np.max(np.abs(desired))))
    np.testing.assert_allclose(actual, desired, rtol=tol, atol=tol * scale)


# --- symbolic RHS == vectorised RHS -------------------------------------------------------
# Every activation at one size; several sizes for a few (derivation and compile cost time).
CASES = [(a, (2, 3, 2)) for a in STUDENT_ACTIVATIONS]
CASES += [
    ("relu", (1, 1, 1)),
    ("relu", (3, 2, 1)),
    ("gelu", (3, 2, 3)),
    ("sigmoid", (1, 4, 1)),
    ("softplus", (1, 1, 2)),
]


@pytest.mark.slow
@pytest.mark.parametrize("activation,sizes", CASES)
def test_generated_rhs_matches_vectorised(activation, sizes):
    L, P, Lstar = sizes
    problem = random_problem(P, Lstar, activation, seed=L + 10 * P)
    f = symbolic.to_jax(symbolic.from_problem(problem, L, exact=False))
    for seed in range(3):
        m, v = random_state(L, P, seed)
        dm, dv = f(m, v)
        ref_m, ref_v = problem.rhs(m, v)
        assert dm.shape == (L, P) and dv.shape == (L,)
        assert_close(dm, ref_m)
        assert_close(dv, ref_v)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_sympy_evaluation_matches_vectorised(activation):
    """Evaluating the derived expressions in sympy itself (no JAX printer involved)."""
    L, P = 2, 2
    problem = random_problem(P, 2, activation, seed=3)
    flow = symbolic.from_problem(problem, L, exact=False)
    m, v = random_state(L, P, 7)
    values = dict(zip(flow.state, map(float, np.concatenate([np.ravel(m), v])), strict=True))
    got = np.array([float(e.subs(values).evalf(30)) for e in flow.rhs])
    dm, dv = problem.rhs(m, v)
    assert_close(got, np.concatenate([np.ravel(dm), dv]))


def test_shape_counting_exact_numbers():
    """Shape counting substitutes exactly: C = E[rho rho^T], G_12 = 4/5, b = v* = (1, -1)."""
    problem = cnntheory.shape_counting()
    flow = symbolic.from_problem(problem, 2)
    assert flow.moments == sp.Matrix([[sp.Rational(1, 3), sp.Rational(1, 6)], [sp.Rational(1, 6), sp.Rational(1, 3)]])
    assert flow.gram == sp.Matrix([[1, sp.Rational(4, 5)], [sp.Rational(4, 5), 1]])
    assert list(flow.teacher_outputs) == [1, -1]
    assert flow.kernel_lr_multiplier / flow.patch_dim == 1
    f = symbolic.to_jax(flow)
    m, v = jnp.asarray(SEED_M0), jnp.asarray(SEED_V0)
    for got, ref in zip(f(m, v), problem.rhs(m, v), strict=True):
        assert_close(got, ref)


def test_relu_kink_convention():
    """relu'(0) = 0 in the derived flow, as in the numeric registry (sympy's default is 1/2)."""
    problem = random_problem(2, 2, "relu", seed=5)
    f = symbolic.to_jax(symbolic.from_problem(problem, 2, exact=False))
    m = jnp.array([[0.0, 0.4], [-0.3, 0.0]])
    v = jnp.array([0.7, -1.1])
    for got, ref in zip(f(m, v), problem.rhs(m, v), strict=True):
        assert_close(got, ref)


def test_generated_rhs_vmaps():
    problem = random_problem(2, 2, "tanh", seed=2)
    f = symbolic.to_jax(symbolic.from_problem(problem, 2, exact=False))
    ms = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2, 2)))
    vs = jnp.asarray(np.random.default_rng(1).normal(size=(5, 2)))
    dm, dv = jax.vmap(f)(ms, vs)
    for i in range(5):
        assert_close(dm[i], problem.rhs(ms[i], vs[i])[0])
        assert_close(dv[i], problem.rhs(ms[i], vs[i])[1])


# --- Jacobian ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_jacobian_matches_jacfwd(activation):
    L, P = 2, 2
    problem = random_problem(P, 2, activation, seed=11)
    flow = symbolic.from_problem(problem, L, exact=False)
    J = symbolic.jacobian(flow)
    assert J.shape == (L * P + L,) * 2
    jac = symbolic.to_jax(flow, jacobian=True)

    def flat_rhs(x):
        dm, dv = problem.rhs(x[: L * P].reshape(L, P), x[L * P :])
        return jnp.concatenate([dm.ravel(), dv])

    for seed in range(2):
        m, v = random_state(L, P, seed)
        ref = jax.jacfwd(flat_rhs)(jnp.concatenate([m.ravel(), v]))
        assert_close(jac(m, v), ref)


# --- solve with the generated RHS -------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif("rhs" not in inspect.signature(cnntheory.solve).parameters, reason="solve has no rhs= keyword yet")
@pytest.mark.parametrize("activation", ["tanh"])
def test_solve_with_generated_rhs(activation):
    problem = cnntheory.shape_counting(activation=activation)
    f = symbolic.to_jax(symbolic.from_problem(problem, 2))
    m0, v0 = jnp.asarray(SEED_M0), jnp.asarray(SEED_V0)
    ts = jnp.linspace(0.0, 20.0, 11)
    ref = cnntheory.solve(problem, m0, v0, 20.0, ts=ts)
    got = cnntheory.solve(problem, m0, v0, 20.0, ts=ts, rhs=f)
    # Same adaptive steps up to round-off: measured agreement 1e-13 (tanh, t = 60).
    assert_close(got.m, ref.m, tol=1e-11)
    assert_close(got.v, ref.v, tol=1e-11)
    assert_close(got.loss, ref.loss, tol=1e-11)


@pytest.mark.slow
@pytest.mark.skipif("rhs" not in inspect.signature(cnntheory.solve).parameters, reason="solve has no rhs= keyword yet")
def test_solve_euler_relu_with_generated_rhs():
    """relu: the generated RHS gives the same gradient-descent (Euler) map as problem.rhs."""
    problem = cnntheory.shape_counting()
    f = symbolic.to_jax(symbolic.from_problem(problem, 2))
    m0, v0 = jnp.asarray(SEED_M0), jnp.asarray(SEED_V0)
    ts = jnp.linspace(0.0, 10.0, 6)
    ref = cnntheory.solve(problem, m0, v0, 10.0, ts=ts, method="euler", dt0=1e-2)
    got = cnntheory.solve(problem, m0, v0, 10.0, ts=ts, method="euler", dt0=1e-2, rhs=f)
    assert_close(got.m, ref.m)
    assert_close(got.v, ref.v)


# --- LaTeX / printing: Lovig's (2025) equations (1)-(4) ------------------------------------------------
def seed_equations(flow):
    """Equations (1)-(4) of Lovig (2025), term by term, in the flow's symbols (G where it writes m*)."""
    L, P, Lstar = flow.sizes
    sigma, dsigma, phi = (symbolic._abstract(a, k) for a, k in (("sigma", 0), ("sigma", 1), ("phi", 0)))
    m, v, C, G = flow.m, flow.v, flow.moments, flow.gram
    vs, ms = flow.teacher_head, flow.teacher_overlaps
    pq = list(itertools.product(range(P), repeat=2))
    eq1 = {
        (l, r): sum(
            v[l] * vs[k] * C[p, q] * phi(ms[k, p]) * dsigma(m[l, q]) * G[r, q] for k in range(Lstar) for p, q in pq
        )
        for l in range(L)
        for r in range(P)
    }
    eq2 = {
        (l, r): sum(v[l] * v[k] * C[p, q] * sigma(m[k, p]) * dsigma(m[l, q]) * G[r, q] for k in range(L) for p, q in pq)
        for l in range(L)
        for r in range(P)
    }
    eq3 = {
        l: sum(vs[k] * C[p, q] * phi(ms[k, p]) * sigma(m[l, q]) for k in range(Lstar) for p, q in pq) for l in range(L)
    }
    eq4 = {l: sum(v[k] * C[p, q] * sigma(m[k, p]) * sigma(m[l, q]) for k in range(L) for p, q in pq) for l in range(L)}
    return eq1, eq2, eq3, eq4


def seed_flow():
    return symbolic.derive(
        2, 2, 2, teacher_activation=None, student_activation=None, kernel_lr_multiplier=symbolic.D, head_lr_multiplier=1
    )


def test_derived_flow_is_seed_equations():
    flow = seed_flow()
    eq1, eq2, eq3, eq4 = seed_equations(flow)
    for (l, r), e in eq1.items():
        assert sp.expand(flow.dm[l, r] - (e - eq2[l, r])) == 0
    for l, e in eq3.items():
        assert sp.expand(flow.dv[l] - (e - eq4[l])) == 0


def test_latex_has_the_terms_of_the_seed():
    flow = seed_flow()
    names = symbolic._seed_names(flow)
    lines = symbolic.latex(flow).split("\\\\\n")
    assert lines[0].startswith("\\begin{aligned}") and lines[-1].endswith("\\end{aligned}")
    eq1, eq2, eq3, eq4 = seed_equations(flow)
    expected = [(f"\\dot{{m}}_{{{l + 1}{r + 1}}}", eq1[l, r], eq2[l, r]) for l in range(2) for r in range(2)]
    expected += [(f"\\dot{{v}}_{{{l + 1}}}", eq3[l], eq4[l]) for l in range(2)]
    assert len(lines) == len(expected)
    for line, (lhs, teacher, student) in zip(lines, expected, strict=True):
        line = line.removeprefix("\\begin{aligned}\n").removesuffix("\n\\end{aligned}")
        head, body = line.split(" &= ")
        assert head == lhs
        teacher_tex, student_tex = body.split(" - \\left(")
        for part, tex in ((teacher, teacher_tex), (student, student_tex)):
            terms = sp.Add.make_args(sp.expand(part))
            assert tex.count(" + ") == len(terms) - 1
            for term in terms:
                assert sp.latex(term, symbol_names=names) in tex
    assert "\\mathbb{E}_{\\pi}\\left[\\pi_{1} \\pi_{2}\\right]" in lines[0]
    assert "\\sigma'\\left(m_{11}\\right)" in lines[0] and "\\phi\\left(m^{*}_{12}\\right)" in lines[0]


def test_latex_plain_and_definitions():
    flow = symbolic.derive(1, 1, 1, teacher_activation="indicator", student_activation="relu")
    tex = symbolic.latex(flow, notation="plain")
    assert "C_{11}" in tex and "\\mathbb{E}" not in tex
    assert "\\eta_{K}" in tex and "{D}" in tex  # general learning rates stay symbolic
    assert "\\sigma\\left(x\\right) &= \\max\\left(0, x\\right)" in tex
    assert "\\sigma'\\left(x\\right) &= \\theta\\left(x, 0\\right)" in tex  # relu'(0) = 0
    with pytest.raises(ValueError, match="notation"):
        symbolic.latex(flow, notation="paper")


def test_cli_equations(capsys):
    assert main(["equations", "--sizes", "1,1"]) == 0
    text = capsys.readouterr().out
    assert "dm_11/dt" in text and "σ'(m₁₁)" in text and "φ(m*₁₁)" in text
    assert main(["equations", "--latex"]) == 0
    tex = capsys.readouterr().out
    assert "\\dot{m}_{22}" in tex and "\\dot{v}_{2}" in tex and "\\mathbb{E}_{\\pi}" in tex
    assert main(["equations", "--latex", "--sizes", "1,2,1", "--activation", "erf", "--plain"]) == 0
    tex = capsys.readouterr().out
    assert "C_{12}" in tex and "\\operatorname{erf}" in tex
    # a bad argument is one line on stderr and exit status 2 (the CLI's contract), not a traceback
    assert main(["equations", "--sizes", "1,0"]) == 2
    err = capsys.readouterr().err
    assert "--sizes: needs 2 to 3 comma-separated sizes" in err and "Traceback" not in err


# --- exact moments -----------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [(1, 1), (2, 1), (0.5, 1.5, 3), (sp.Rational(1, 3), 2, 5, 1)])
@pytest.mark.parametrize("pooling,M", [("sum", 1), ("sum", 3), ("mean", 4), ("mean", None)])
def test_exact_moments_match_numeric(alpha, pooling, M):
    N = None if M is None else M * M
    exact = symbolic.dirichlet_multinomial_moments(alpha, N, pooling)
    assert all(isinstance(x, sp.Rational) for x in exact)
    assert exact == exact.T
    alpha_f = np.array([float(a) for a in alpha])
    if M is None:
        numeric = cnntheory.dirichlet_moments(alpha_f)[1]
    else:
        assert N is not None
        numeric = cnntheory.count_moments(alpha_f, N) / (N**2 if pooling == "mean" else 1)
    np.testing.assert_allclose(np.asarray(exact, dtype=float), numeric, rtol=1e-15, atol=0)


def test_exact_moments_symbolic_and_errors():
    a, b, N = sp.symbols("a b N", positive=True)
    C = symbolic.dirichlet_multinomial_moments([a, b], N)
    assert sp.simplify(C[0, 1] - N * (N - 1) * a * b / ((a + b) * (a + b + 1))) == 0
    assert sp.simplify(C[0, 0] - (N * (N - 1) * a * (a + 1) / ((a + b) * (a + b + 1)) + N * a / (a + b))) == 0
    with pytest.raises(ValueError, match="pooling='mean'"):
        symbolic.dirichlet_multinomial_moments([1, 1], None, "sum")
    with pytest.raises(ValueError, match="alpha"):
        symbolic.dirichlet_multinomial_moments([1, -1], 4)


# --- stationary points (linear activation) ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("L,P", [(1, 2), (2, 2)])
def test_stationary_points_linear(L, P):
    problem = random_problem(P, 2, "linear", teacher_activation="indicator", seed=4)
    flow = symbolic.from_problem(problem, L)
    solutions = symbolic.stationary_points_linear(flow)
    assert solutions
    rng = np.random.default_rng(0)
    minimum_found = False
    for sol in solutions:
        free = [s for s in flow.state if s not in sol]
        for _ in range(3):
            point = {s: sp.Float(rng.uniform(0.5, 1.5)) for s in free}
            values = [float(sp.sympify(sol.get(s, s)).subs(point)) for s in flow.state]
            m, v = jnp.asarray(values[: L * P]).reshape(L, P), jnp.asarray(values[L * P :])
            dm, dv = problem.rhs(m, v)
            assert_close(dm, 0 * dm, tol=1e-10)
            assert_close(dv, 0 * dv, tol=1e-10)
            minimum_found |= bool(np.allclose(v @ m, problem.teacher_outputs(), atol=1e-10))
    assert minimum_found  # the global minima v^T m = b are among them
    m, v = random_state(L, P, 0)
    assert np.max(np.abs(np.concatenate([problem.rhs(m, v)[0].ravel(), problem.rhs(m, v)[1]]))) > 1e-3


# --- errors --------------------------------------------------------------------------------------------
def test_errors():
    flow = symbolic.derive(1, 1, teacher_activation="tanh", student_activation="tanh")
    with pytest.raises(ValueError, match="free parameters"):
        symbolic.to_jax(flow)
    with pytest.raises(ValueError, match="undefined activation"):
        symbolic.to_jax(
            symbolic.derive(
                1,
                1,
                student_activation=None,
                moments=[[1]],
                gram=[[1]],
                teacher_head=[1],
                teacher_overlaps=[[1]],
                kernel_lr_multiplier=1,
                head_lr_multiplier=1,
                patch_dim=1,
            )
        )
    with pytest.raises(ValueError, match="L must be a positive integer"):
        symbolic.derive(0, 2)
    with pytest.raises(ValueError, match="linear"):
        symbolic.stationary_points_linear(flow)
    with pytest.raises(ValueError, match="unknown activation"):
        symbolic.derive(1, 1, student_activation="relu6")
    with pytest.raises(ValueError, match="moments must have shape"):
        symbolic.derive(1, 2, moments=np.eye(3))
    # subs fills in parameters, then the flow compiles
    params = {s: 1 for s in flow.parameters}
    dm, dv = symbolic.to_jax(flow.subs(params))(jnp.ones((1, 1)), jnp.ones(1))
    assert dm.shape == (1, 1) and dv.shape == (1,)
