"""Dynamics analysis of the order-parameter flow: fixed points, plateaus, curvature,
schedules, filters and sweeps. Each concept lives in its own private module; this
namespace only re-exports."""

from .._deprecate import renamed_function
from ._curvature import Landscape, hessian, hessian_spectrum, landscape, parameter_loss, sharpness, stability_edge
from ._filters import filter_images, filters_figure, kernels_from_order, moving_part
from ._fixed_points import (
    KINDS,
    FixedPoint,
    count_kinds,
    find_fixed_points,
    fixed_point_families,
    fixed_point_table,
    flow_jacobian,
)
from ._plateaus import EscapeFit, Plateau, find_plateaus, loss_drop_time, plateau_mask
from ._schedule import Schedule, restrict_atoms, simulate_schedule, solve_schedule
from ._sweep import SweepResult, sweep

__all__ = [
    "KINDS",
    "EscapeFit",
    "FixedPoint",
    "Landscape",
    "Plateau",
    "Schedule",
    "SweepResult",
    "count_kinds",
    "filter_images",
    "filters_figure",
    "moving_part",
    "find_fixed_points",
    "find_plateaus",
    "loss_drop_time",
    "fixed_point_families",
    "fixed_point_table",
    "flow_jacobian",
    "hessian",
    "hessian_spectrum",
    "kernels_from_order",
    "landscape",
    "parameter_loss",
    "plateau_mask",
    "restrict_atoms",
    "sharpness",
    "simulate_schedule",
    "solve_schedule",
    "stability_edge",
    "sweep",
]

# Old names, for one release (not in `__all__`).
escape_time = renamed_function(loss_drop_time, "cnntheory.analysis.escape_time")
