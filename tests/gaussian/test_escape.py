"""`plateau_escape_time` (`cnntheory.gaussian._escape`) against Saad & Solla's law for leaving the symmetric
plateau of the soft committee machine: the escape time grows like log(1 / asymmetry) / lambda,
with lambda the unstable eigenvalue of the linearised flow at the symmetric saddle (from
`find_fixed_point`, itself held to the paper's plateau in test_fixed_points.py)."""

import numpy as np
import pytest
from helpers_gaussian import near_symmetric_point

from cnntheory.gaussian import GaussianTeacherStudent, find_fixed_point, plateau_escape_time


@pytest.mark.slow
@pytest.mark.parametrize("K", [2, 3])
def test_escape_time_grows_like_log_of_asymmetry_over_eigenvalue(K):
    """Saad & Solla: the plateau is left when the symmetry-breaking component, growing like
    eps exp(lambda alpha), becomes O(1): T = a + log(1/eps) / lambda."""
    p = GaussianTeacherStudent(1, np.ones(K), np.eye(K), lr=0.1)
    lam = float(np.real(find_fixed_point(p, *near_symmetric_point(K)).eigenvalues[0]))
    fit = plateau_escape_time(
        p, 0.2 * np.eye(K), 1e-3 * np.ones((K, K)), np.ones(K), [1e-4, 1e-6, 1e-8], 4000.0 * K, num_points=801
    )
    # Measured: slope within 1% of 1/lambda for K = 2 (the log-linear fit has r2 > 0.9999).
    assert fit.r2 > 0.999
    assert fit.slope == pytest.approx(1 / lam, rel=0.03)


def test_escape_time_argument_checks():
    p = GaussianTeacherStudent(1, np.ones(2), np.eye(2))
    Q, R, v = 0.2 * np.eye(2), 1e-3 * np.ones((2, 2)), np.ones(2)
    with pytest.raises(ValueError, match="eps_values"):
        plateau_escape_time(p, Q, R, v, [1e-4], 10.0)  # a fit needs two
    with pytest.raises(ValueError, match="eps_values"):
        plateau_escape_time(p, Q, R, v, [1e-4, -1e-6], 10.0)
    with pytest.raises(ValueError, match="fraction"):
        plateau_escape_time(p, Q, R, v, [1e-4, 1e-6], 10.0, fraction=1.5)
