"""Reverse-mode gradients through relu (Filippov) solves, against central finite differences.

The solve is differentiated through its checkpointed segment loop, with event times
differentiated implicitly; the mode choice itself is discrete. Finite differences are
valid where the event sequence does not change within the difference: the problems below
have slide events well inside the interval and no entry near 0 at the start.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_filippov import M0, V0, example_problem

from cnntheory._solve import solve

TOL = dict(rtol=1e-11, atol=1e-13)
#: Central differences with this step: truncation ~1e-10, solver noise ~1e-11 / 1e-5.
EPS = 1e-5


def output(problem, m0, v0, t1, ts):
    sol = solve(problem, m0, v0, t1, ts=ts, throw=False, **TOL)
    return jnp.sum(sol.m[-1] ** 2) + jnp.sum(jnp.sin(sol.v[-1])) + sol.loss[len(ts) // 2]


def central(f, x, direction):
    return (f(x + EPS * direction) - f(x - EPS * direction)) / (2 * EPS)


@pytest.mark.slow
def test_gradients_through_a_slide_match_finite_differences():
    """The issue's example up to t = 8: m_12 starts sliding at t ~ 6.1 (before the repulsion)."""
    problem, t1 = example_problem(), 8.0
    ts = jnp.linspace(0.0, t1, 5)
    m0, v0 = jnp.asarray(M0), jnp.asarray(V0)
    events = solve(problem, m0, v0, t1, ts=ts, **TOL).events.to_list()
    assert [e[3] for e in events] == ["slide"]
    grad = jax.grad(output, argnums=(0, 1, 2))
    g_problem, g_m, g_v = grad(problem, m0, v0, t1, ts)
    rng = np.random.default_rng(0)
    dm = jnp.asarray(rng.normal(size=m0.shape))
    np.testing.assert_allclose(
        float(jnp.sum(g_m * dm)), central(lambda x: output(problem, x, v0, t1, ts), m0, dm), rtol=1e-5
    )
    np.testing.assert_allclose(float(g_v[0]), central(lambda x: output(problem, m0, x, t1, ts), v0, 1.0), rtol=1e-5)
    # The problem's array fields: the teacher head and the moment matrix.
    for field in (lambda p: p.teacher_head, lambda p: p.moments):
        value = field(problem)
        d = jnp.asarray(rng.normal(size=value.shape))
        d = (d + d.T) / 2 if d.ndim == 2 else d

        def f(x, field=field):
            return output(eqx.tree_at(field, problem, x), m0, v0, t1, ts)

        np.testing.assert_allclose(float(jnp.sum(field(g_problem) * d)), central(f, value, d), rtol=1e-5)
