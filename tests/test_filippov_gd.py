"""The relu solver's default branch is gradient descent's own, at every non-smooth moment.

References: `helpers_gd` (plain gradient descent with `relu'(0) = 0` at several steps,
Richardson-extrapolated) and the three worked cases of `data/relu_gd_branch.json`
(several entries of one unit starting on their surfaces; a sliding entry leaving upward
when its head crosses 0; two sliding entries of one unit leaving to opposite sides), whose
gradient-descent limits were computed independently.
"""

import json
import pathlib

import numpy as np
import pytest
from helpers_gd import gradient_descent, richardson, stack_arrays

from cnntheory._data import PatchMixture, atoms_from_gram
from cnntheory._filippov import THETA_DECIDED
from cnntheory._problem import TeacherStudent
from cnntheory._solve import solve

CASES = json.loads((pathlib.Path(__file__).parent / "data" / "relu_gd_branch.json").read_text())["cases"]
IDS = ["joint-start", "leaves-up", "opposite-sides"]
TOL = dict(rtol=1e-10, atol=1e-12)
# Gradient descent's coarsest step per case: t1 / n (levels n, 2n, 4n, 8n).
GD_STEPS = (500, 14400, 97000)


def case_problem(case):
    """The case's problem: atoms with Gram `G`, per-atom teacher outputs `b`, moments `C`."""
    G = np.array(case["G"])
    mixture = PatchMixture(atoms_from_gram(G, round(case["D"] ** 0.5)), case["alpha"], case["M"], case["pooling"])
    # A linear teacher with kernels = unit vectors of the atoms' basis: b_p = v*_p.
    return TeacherStudent(
        mixture,
        np.array(case["b"]),
        teacher_overlaps=np.eye(G.shape[0]),
        teacher_activation="linear",
        student_activation="relu",
        kernel_lr_multiplier=case["eta_K"],
        head_lr_multiplier=case["eta_v"],
        moments=np.array(case["C"]),
    )


def case_solve(case, **kw):
    t1 = case["t1"]
    return solve(
        case_problem(case), np.array(case["m0"]), np.array(case["v0"]), t1, ts=np.array([0.0, t1]), **TOL, **kw
    )


@pytest.fixture(scope="module", params=range(3), ids=IDS)
def case(request):
    return CASES[request.param], GD_STEPS[request.param]


def test_gradient_descent_reference_reproduces_the_cases(case):
    case, n = case
    ms, vs = gradient_descent(
        stack_arrays([case_problem(case)]), np.array(case["m0"])[None], np.array(case["v0"])[None], case["t1"], 1, n, 4
    )
    (m_lim, m_coarse), (v_lim, _) = richardson(ms), richardson(vs)
    # The stored limit came from two other steps, whose difference is `gd_step_error`;
    # twice that bounds the gap between two converged extrapolations.
    tol = 2 * case["gd_step_error"] + 1e-9
    np.testing.assert_allclose(m_lim[0, -1], case["gd_limit_m"], rtol=0, atol=tol)
    np.testing.assert_allclose(v_lim[0, -1], case["gd_limit_v"], rtol=0, atol=tol)
    assert np.abs(m_lim - m_coarse).max() < tol  # converged in the step


def test_default_branch_is_the_gradient_descent_limit(case):
    case, _ = case
    sol = case_solve(case)
    assert sol.success
    # 1e-4: the bar, above every case's `gd_step_error` (<= 6.3e-5).
    np.testing.assert_allclose(np.asarray(sol.m[-1]), case["gd_limit_m"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(sol.v[-1]), case["gd_limit_v"], rtol=0, atol=1e-4)


def test_joint_start_record():
    """Both entries at 0 move up together (gradient descent's first step has F^- > 0 for both).

    Entry (0, 1) alone, with its sibling up, would sit on a repulsive surface: the record
    says the Filippov continuation is not unique there, and that gradient descent's was taken.
    """
    events = case_solve(CASES[0]).events.to_list()
    assert events == [(0.0, 0, 0, "cross", "m>0"), (0.0, 0, 1, "repulsive", "m>0")]


def test_head_crossing_record():
    """The sliding entry (1, 2) leaves upward when v_1 crosses 0: theta ~ 0.85 at that moment."""
    rep = case_solve(CASES[1]).events.of_kind("repulsive")
    assert [e[1:] for e in rep] == [(2, 1, "repulsive", "m<0"), (1, 2, "repulsive", "m>0")]
    assert abs(rep[1][0] - 0.0595) < 1e-3


def test_opposite_sides_record():
    """v_0 crosses 0 with m_00 and m_03 sliding: theta ~ 0.01 and ~ 0.88, down and up."""
    rep = case_solve(CASES[2]).events.of_kind("repulsive")
    assert [e[1:] for e in rep] == [(0, 0, "repulsive", "m<0"), (0, 3, "repulsive", "m>0")]
    assert rep[0][0] == rep[1][0]


def test_explicit_branches_stay_available():
    """The old default, "minus", settles the joint start one entry at a time (the issue's answer)."""
    minus = case_solve(CASES[0], repulsive="minus")
    np.testing.assert_allclose(np.asarray(minus.m[-1]), [[0.0380, -0.0076, 0.3380]], rtol=0, atol=1e-4)
    plus = case_solve(CASES[2], repulsive="plus")
    assert {e[4] for e in plus.events.of_kind("repulsive") if e[1] == 0} == {"m>0"}


def final_side_share(theta, num_phases=4000, steps=300, seed=0):
    """The share of gradient descent's runs that leave a repelling surface upward.

    The step-free map of a sliding entry near the moment `t*` its surface turns (F^- and
    F^+ both proportional to `t* - t`): `z <- z + kappa (theta if z <= 0 else theta - 1)`,
    `kappa` falling by 1 a step to 0; random phases of `t*` in the step and states in the
    chatter band stand for different step sizes.
    """
    rng = np.random.default_rng(seed)
    kappa = steps + rng.random(num_phases)
    z = (rng.random(num_phases) - (1 - theta)) * steps
    while np.any(kappa > 0):
        z = np.where(kappa > 0, z + kappa * np.where(z <= 0, theta, theta - 1), z)
        kappa = kappa - 1
    return float(np.mean(z > 0))


def test_repulsion_rule_majority_side():
    """The documented rule: beyond THETA_DECIDED >= 95% of steps leave to the majority side;
    at theta = 1/2 it is a coin toss (the "step_dependent" band)."""
    for theta in (THETA_DECIDED, 0.9, 0.99):
        assert final_side_share(theta) >= 0.95
        assert final_side_share(1 - theta) <= 0.05
    assert 0.4 < final_side_share(0.5) < 0.6
    assert 0.1 < final_side_share(0.65) < 0.9
