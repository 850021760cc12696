"""`find_fixed_point` and `reduced_flow_jacobian` (`cnntheory.gaussian._fixed_points`) against Saad & Solla's
symmetric plateau of the soft committee machine (closed form in tests/helpers_gaussian.py): the
fixed point found next to the symmetric point tends to their plateau error as eta -> 0, with an
O(eta) shift, and the Jacobian has the size of the free coordinates (upper triangle of Q, then R)."""

import numpy as np
from helpers_gaussian import near_symmetric_point, plateau_height

from cnntheory.gaussian import GaussianTeacherStudent, find_fixed_point, reduced_flow_jacobian


def test_fixed_point_tends_to_saad_solla_as_eta_vanishes():
    K = 3
    errs = []
    for eta in (1e-2, 1e-3):
        p = GaussianTeacherStudent(1, np.ones(K), np.eye(K), lr=eta)
        fp = find_fixed_point(p, *near_symmetric_point(K))
        errs.append(abs(fp.error / plateau_height(K) - 1))
        J = np.asarray(reduced_flow_jacobian(p, fp.Q, fp.R, fp.v))
        assert J.shape == (K * (K + 1) // 2 + K * K,) * 2
    # The shift is O(eta): ten times smaller eta, about ten times smaller shift.
    assert errs[1] < 0.15 * errs[0] and errs[1] < 2e-3
