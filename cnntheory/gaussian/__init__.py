r"""Gaussian patches: the high-dimensional online-SGD theory of the CNN.

An image is `N` patches of i.i.d. `N(0, 1)` pixels, pre-activations `K . x_i / sqrt(D)`
(against `1/D` in the Dirac-mixture model of `cnntheory.TeacherStudent`), online SGD with
time `alpha = steps / D`, `D -> infinity`. With `N = 1` it is the soft committee machine
of Saad & Solla (1995) and Goldt et al. (2019). See `GaussianTeacherStudent` for the
equations and what weight sharing adds.
"""

from ._escape import escape_time
from ._fixed_points import GaussianFixedPoint, find_fixed_point, flow_jacobian
from ._integrals import CLOSED_FORMS, closed_form, expectation, gaussian_expectation, hermite_rule
from ._problem import POOLINGS, GaussianTeacherStudent
from ._simulate import GaussianSimulation, kernels_from_overlaps, network, simulate
from ._solve import GaussianTrajectory, solve

__all__ = [
    "CLOSED_FORMS",
    "POOLINGS",
    "escape_time",
    "GaussianFixedPoint",
    "find_fixed_point",
    "flow_jacobian",
    "GaussianTeacherStudent",
    "GaussianTrajectory",
    "solve",
    "GaussianSimulation",
    "kernels_from_overlaps",
    "network",
    "simulate",
    "closed_form",
    "expectation",
    "gaussian_expectation",
    "hermite_rule",
]
