r"""Escape from the symmetric plateau as a function of the initial asymmetry.

Start at `R(0) = R0 + eps * direction`: near the plateau's saddle the symmetry-breaking
component grows like `eps exp(lambda alpha)` (`lambda` the unstable eigenvalue, see
`find_fixed_point`), so the escape time grows like `log(1/eps) / lambda`. `plateau_escape_time`
measures the time at which the error first falls below `fraction` of the plateau height
(the longest plateau that `cnntheory.analysis.find_plateaus` finds) and fits
`T = intercept + slope log(1/eps)` (an `cnntheory.analysis.EscapeFit`); `1 / slope`
estimates `lambda`.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import PRNGKeyArray
from typing_extensions import Unpack

from .._config import SolverConfig, SolverOptions, resolve_config
from .._deprecate import renamed_keywords
from .._keys import as_rng
from .._validate import require
from ..analysis._plateaus import EscapeFit, find_plateaus
from ._problem import GaussianTeacherStudent
from ._solve import SOLVE_DEFAULTS, solve


@renamed_keywords(seed="key")
def plateau_escape_time(
    problem: GaussianTeacherStudent,
    Q0,
    R0,
    v0,
    eps_values,
    t1: float,
    *,
    direction=None,
    fraction: float = 0.5,
    num_points: int = 2001,
    key: int | PRNGKeyArray = 0,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> EscapeFit:
    """Escape times for `R(0) = R0 + eps * direction`: when the error first falls below
    `fraction` of the plateau's height (default `direction`: a `U(0, 1)` draw from `key`, an
    int seed or a JAX key).

    Not `cnntheory.analysis.loss_drop_time`, which perturbs the head and measures the fall
    of the loss by `fraction` of its total drop `L(0) - L(t1)`.

    The solver options (`config`, or its fields as keywords) are as in `solve`.
    """
    config = resolve_config(config, options, caller="gaussian.plateau_escape_time", defaults=SOLVE_DEFAULTS)
    eps_values = np.asarray(eps_values, float)
    require(
        eps_values.ndim == 1 and eps_values.size >= 2 and np.all(eps_values > 0),
        "eps_values must be >= 2 positive numbers",
    )
    require(0 < fraction < 1, f"fraction must be in (0, 1), got {fraction}")
    R0 = np.asarray(R0, float)
    direction = as_rng(key).uniform(size=R0.shape) if direction is None else np.asarray(direction, float)
    ts = np.linspace(0.0, t1, num_points)
    found = []
    for eps in eps_values:
        traj = solve(problem, Q0, R0 + eps * direction, v0, t1, ts=ts, config=config)
        plateaus = find_plateaus(traj)
        require(bool(plateaus), f"no plateau for eps={eps}: lower eps or raise t1")
        plateau = max(plateaus, key=lambda p: p.length)
        err = np.asarray(traj.error)
        after = np.flatnonzero((ts > plateau.start) & (err < fraction * plateau.height))
        require(after.size > 0, f"the error did not leave the plateau before t1={t1} for eps={eps}: raise t1")
        j = int(after[0])
        level = fraction * plateau.height
        found.append(ts[j - 1] + (ts[j] - ts[j - 1]) * (err[j - 1] - level) / (err[j - 1] - err[j]))
    return EscapeFit.from_times(eps_values, found)
