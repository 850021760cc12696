"""`solve` (`cnntheory.gaussian._solve`): the trajectory's conventions (shapes, the saved error is
the problem's error of the saved state, statuses and `raise_for_status`, argument checks). Its
accuracy is held elsewhere: online SGD at finite D follows it (test_simulate.py), and the
soft-committee-machine literature's plateaus and asymptotic errors come out of it
(test_literature.py)."""

import numpy as np
import pytest
from helpers_gaussian import Q0, R0, V0

from cnntheory import SolverError, Status
from cnntheory.gaussian import solve


def test_solve_conventions(problem):
    tr = solve(problem, Q0, R0, V0, 2.0, num_saves=5)
    assert tr.success and tr.status == 0 and "successfully" in tr.message
    assert tr.Q.shape == (5, 2, 2) and tr.R.shape == (5, 2, 2) and tr.v.shape == (5, 2) and tr.error.shape == (5,)
    np.testing.assert_allclose(np.asarray(tr.Q[0]), Q0)
    assert tr.loss is tr.error
    # The saved error is the error of the saved state.
    assert float(tr.error[-1]) == pytest.approx(float(problem.error(tr.Q[-1], tr.R[-1], tr.v[-1])), rel=1e-12)
    with pytest.raises(SolverError, match="max_steps"):
        solve(problem, Q0, R0, V0, 2.0, max_steps=2)
    failed = solve(problem, Q0, R0, V0, 2.0, max_steps=2, throw=False)
    assert failed.status == Status.MAX_STEPS and not failed.success
    with pytest.raises(SolverError, match="max_steps=2 reached"):
        failed.raise_for_status()  # the one path from a failed status to an error, shared with Trajectory
    assert tr.raise_for_status() is tr
    with pytest.raises(ValueError, match="R0"):
        solve(problem, Q0, R0[:, :1], V0, 2.0)
    with pytest.raises(ValueError, match="t1"):
        solve(problem, Q0, R0, V0, -1.0)
