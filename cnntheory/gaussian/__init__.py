r"""Gaussian patches: the high-dimensional online-SGD theory of the CNN.

An image is `N` patches of i.i.d. `N(0, 1)` pixels, pre-activations `K . x_i / sqrt(D)`
(against `1/D` in the Dirac-mixture model of `cnntheory.TeacherStudent`), online SGD with
time `alpha = steps / D`, `D -> infinity`. With `N = 1` it is the soft committee machine
of Saad & Solla (1995) and Goldt et al. (2019). See `GaussianTeacherStudent` for the
equations and what weight sharing adds.
"""

from .._deprecate import renamed_function
from ._escape import plateau_escape_time
from ._fixed_points import GaussianFixedPoint, find_fixed_point, reduced_flow_jacobian
from ._integrals import CLOSED_FORMS, closed_form, expectation, gaussian_expectation, hermite_rule
from ._problem import POOLINGS, GaussianTeacherStudent
from ._simulate import GaussianSimulation, gaussian_network, kernels_from_overlaps, simulate
from ._solve import GaussianTrajectory, solve

__all__ = [
    "CLOSED_FORMS",
    "POOLINGS",
    "plateau_escape_time",
    "GaussianFixedPoint",
    "find_fixed_point",
    "reduced_flow_jacobian",
    "GaussianTeacherStudent",
    "GaussianTrajectory",
    "solve",
    "GaussianSimulation",
    "kernels_from_overlaps",
    "gaussian_network",
    "simulate",
    "closed_form",
    "expectation",
    "gaussian_expectation",
    "hermite_rule",
]

# Old names, for one release (not in `__all__`).
escape_time = renamed_function(plateau_escape_time, "cnntheory.gaussian.escape_time")
flow_jacobian = renamed_function(reduced_flow_jacobian, "cnntheory.gaussian.flow_jacobian")
network = renamed_function(gaussian_network, "cnntheory.gaussian.network")
