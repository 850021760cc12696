r"""The names of the integration methods: a leaf module (it imports no other module of the package).

`SolverConfig` (`cnntheory._config`) checks a method against these names and the backends
(`cnntheory._integrate`: diffrax; `cnntheory._scipy`: `scipy.integrate.solve_ivp`) run
them; all three import them from here, so no backend imports the config that names it.
"""

from __future__ import annotations

import diffrax

__all__ = ["DIFFRAX_SOLVERS", "SCIPY_METHODS"]

#: The diffrax solvers by name (`"euler"`: fixed steps `dt0`, the gradient-descent map; the
#: others adaptive, PID step control).
DIFFRAX_SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
    "kvaerno3": diffrax.Kvaerno3,
    "kvaerno4": diffrax.Kvaerno4,
    "kvaerno5": diffrax.Kvaerno5,
    "euler": diffrax.Euler,
}

#: The `scipy.integrate.solve_ivp` methods (`"Radau"`, `"BDF"` and `"LSODA"` get the Jacobian).
SCIPY_METHODS = ("RK23", "RK45", "DOP853", "LSODA", "Radau", "BDF")
