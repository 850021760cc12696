"""Reverse-mode gradients through relu solves with events, on random problems.

`jax.grad` of a scalar output (the loss at `t1` plus random weighted sums of `m(t1)` and
`v(t1)`) with respect to `m0`, `v0` and the problem's arrays (teacher head, moments, Gram
matrix, kernel learning-rate multiplier), each along a random direction, against central
finite differences. A difference is valid only where the event sequence (which entries
change mode, how, in which order) is the same at both perturbed points as at the base
point: the output is smooth there (event times move smoothly, diffrax differentiates them
implicitly), and a changed sequence is a jump in the output's derivative (skipped, and
counted). Problems start with no entry near 0 (a start exactly on a surface is a corner of
the output); a draw without events in the interval is replaced, and the set goes through
crossings, slides and exits.

Compile cost: one gradient program per shape (~80 s on a shared CPU core; each problem
then takes ~0.1 s). The problems of a
shape differ only in arrays: sum pooling enters through its moments (`moments=`), on a
mixture template whose static fields are the same for all.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnntheory._data import PatchMixture
from cnntheory._problem import TeacherStudent
from cnntheory._solve import solve
from cnntheory._trajectory import EVENT_KINDS

GRAD_TOL = dict(rtol=1e-11, atol=1e-13)
#: Central differences with this step: truncation `~EPS^2 |f'''|` ~1e-10, solver noise
#: `~1e-11 / EPS` ~1e-6 relative.
EPS = 1e-5
#: The bar on `|grad . d - FD| / max(|FD|, 1)`: ten times the noise of the difference (the
#: largest of 216 measured on 36 problems was 6.3e-7, median 4e-10).
RTOL = 1e-5
T1 = 8.0
#: (L, P, k, teacher, number of problems); pooling alternates mean (continuum) / sum (M = 2, 3).
SHAPES = [(2, 3, 3, "relu", 16), (4, 6, 3, "tanh", 16)]
FAST = [(2, 3, 3, "relu", 4)]
#: The directions: the start, and the problem's arrays.
FIELDS = {
    "teacher_head": lambda p: p.teacher_head,
    "moments": lambda p: p.moments,
    "gram": lambda p: p.gram,
    "kernel_lr_multiplier": lambda p: p.kernel_lr_multiplier,
}


def random_problem(rng, L, P, k, teacher, sum_pooling):
    """Unit-norm atoms, a random teacher head; sum pooling (`M` = 2 or 3) through its moments."""
    atoms = rng.normal(size=(P, k * k))
    atoms *= k / np.linalg.norm(atoms, axis=1, keepdims=True)
    alpha = rng.uniform(0.5, 2.0, P)
    template = PatchMixture(atoms, alpha, None, "mean")
    M = int(rng.integers(2, 4))
    moments = PatchMixture(atoms, alpha, M, "sum").moments if sum_pooling else None
    scale = 1.0 / M**2 if sum_pooling else 1.0
    problem = TeacherStudent(
        template,
        rng.normal(size=P),
        teacher_activation=teacher,
        student_activation="relu",
        kernel_lr_multiplier=scale * k * k,
        head_lr_multiplier=scale,
        moments=moments,
    )
    m0 = 0.3 * rng.normal(size=(L, P))
    m0 = np.where(np.abs(m0) < 0.02, 0.02 * np.sign(m0 + 1e-300), m0)  # away from the surfaces
    v0 = 0.7 * rng.normal(size=L)
    small = rng.random(L) < 0.5  # heads that cross 0 (slides turn repulsive, exits)
    v0[small] = 0.05 * rng.normal(size=small.sum())
    return problem, jnp.asarray(m0), jnp.asarray(v0)


def _output(problem, m0, v0, w, u):
    sol = solve(problem, m0, v0, T1, ts=jnp.array([0.0, T1]), throw=False, **GRAD_TOL)
    e = sol.events
    out = sol.loss[-1] + jnp.sum(w * sol.m[-1]) + jnp.sum(u * sol.v[-1])
    return out, (jnp.stack([e.unit, e.atom, e.kind, e.to]), e.count, sol.status)


_value_and_grad = eqx.filter_jit(jax.value_and_grad(_output, argnums=(0, 1, 2), has_aux=True))


def _forward(*args):
    # The gradient program's value (a separate forward program would be a second compile,
    # ~20 s, for runs of ~10 ms).
    return _value_and_grad(*args)[0]


def _direction(rng, x, symmetric=False):
    d = rng.normal(size=np.shape(x))
    return jnp.asarray((d + d.T) / 2 if symmetric else d)


def same_sequence(a, b):
    (rows_a, count_a, _), (rows_b, count_b, _) = a, b
    return int(count_a) == int(count_b) and bool(jnp.all(rows_a == rows_b))


def check_problem(rng, problem, m0, v0):
    """Per direction: `(name, relative error)`, or `(name, None)` where the sequence changed.

    `None` for a problem without events (the caller draws another).
    """
    w, u = _direction(rng, m0), _direction(rng, v0)
    (value, aux), (g_problem, g_m, g_v) = _value_and_grad(problem, m0, v0, w, u)
    assert int(aux[2]) == 0 and int(aux[1]) <= aux[0].shape[1], aux
    if int(aux[1]) == 0:
        return None
    cases = [("m0", g_m, lambda x: (problem, x, v0), m0), ("v0", g_v, lambda x: (problem, m0, x), v0)]
    for name, field in FIELDS.items():
        cases.append(
            (name, field(g_problem), lambda x, field=field: (eqx.tree_at(field, problem, x), m0, v0), field(problem))
        )
    out = []
    for name, g, args, x in cases:
        d = _direction(rng, x, symmetric=name in ("moments", "gram"))
        plus, minus = _forward(*args(x + EPS * d), w, u), _forward(*args(x - EPS * d), w, u)
        if not (same_sequence(plus[1], aux) and same_sequence(minus[1], aux)):
            out.append((name, None))
            continue
        fd = float(plus[0] - minus[0]) / (2 * EPS)
        out.append((name, abs(float(jnp.sum(g * d)) - fd) / max(abs(fd), 1.0)))
    kinds = {int(k) for k in np.asarray(aux[0][2])[: int(aux[1])]}
    return out, kinds


def run_shape(shape, seed):
    *dims, count = shape
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(10 * count):  # about half the draws have events
        problem, m0, v0 = random_problem(rng, *dims, sum_pooling=len(results) % 2 == 1)
        result = check_problem(rng, problem, m0, v0)
        if result is not None:
            results.append(result)
        if len(results) == count:
            break
    return results


def check(results):
    errors = [e for out, _ in results for _, e in out if e is not None]
    assert max(errors) < RTOL, sorted(errors)[-5:]
    # Most differences are valid (the sequence rarely changes within 1e-5).
    assert len(errors) >= 0.8 * sum(len(out) for out, _ in results)
    return errors


def test_fast_gradients_through_events_match_finite_differences():
    results = run_shape(FAST[0], 10)
    assert len(results) == FAST[0][-1]
    check(results)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SHAPES)), ids=["{}x{}".format(*s[:2]) for s in SHAPES])
def test_gradients_through_events_match_finite_differences(index):
    results = run_shape(SHAPES[index], index)
    assert len(results) == SHAPES[index][-1]
    check(results)
    # The set goes through crossings, slides and exits.
    seen = {EVENT_KINDS[k] for _, kinds in results for k in kinds}
    assert {"cross", "slide", "exit"} <= seen, seen
