"""Dynamics analysis of the order-parameter flow: fixed points, plateaus, curvature,
schedules, filters and sweeps. Each concept lives in its own private module; this
namespace only re-exports."""

from ._fixed_points import KINDS, FixedPoint, find_fixed_points, fixed_point_families, fixed_point_table, flow_jacobian

__all__ = ["KINDS", "FixedPoint", "find_fixed_points", "fixed_point_families", "fixed_point_table", "flow_jacobian"]
