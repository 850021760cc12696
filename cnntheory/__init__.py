"""cnntheory: learning dynamics of convolutional networks in the teacher-student setting.

The public namespace only re-exports; each concept lives in its own module.

`import cnntheory` loads jax, diffrax and the core (data, problem, solve, results); every
public subpackage (`analysis`, `compare`, `energy`, `fluctuations`, `gaussian`, `simulate`,
`symbolic`) is imported on first attribute access (PEP 562), so that scipy, sympy,
matplotlib and scikit-learn are loaded only by the code that needs them.
`cnntheory.enable_compilation_cache()` keeps compiled programs across processes.
"""

import importlib
from typing import TYPE_CHECKING

import jax

# Theory runs in float64 throughout (set once, at import; never inside a jitted function).
jax.config.update("jax_enable_x64", True)

from ._activations import ACTIVATIONS, Activation, get_activation
from ._cache import clear_compilation_cache, enable_compilation_cache
from ._data import (
    PatchMixture,
    atoms_from_gram,
    count_moments,
    dirichlet_moments,
    extract_patches,
    shape_atoms,
)
from ._config import SolverConfig, SolverOptions
from ._distributed import initialize_distributed
from ._problem import TeacherStudent, shape_counting
from ._plots import mark_events, plot_loss, plot_order_parameters, trajectory_figure
from ._methods import DIFFRAX_SOLVERS, SCIPY_METHODS
from ._solve import solve, solve_batch, stack_problems
from ._trajectory import EVENT_KINDS, CnnTheoryError, Events, SolverError, Status, Trajectory

if TYPE_CHECKING:  # the type checker sees the subpackages as attributes; at run time they load lazily
    from . import analysis, compare, energy, fluctuations, gaussian, simulate, symbolic

from ._version import __version__

#: The public subpackages, loaded on first attribute access (one rule for all of them).
_SUBPACKAGES = ("analysis", "compare", "energy", "fluctuations", "gaussian", "simulate", "symbolic")


def __getattr__(name: str):
    # Only called for names not found in the module: import a subpackage on first use. The
    # import binds it as an attribute of this module, so later lookups never come back here.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBPACKAGES))
