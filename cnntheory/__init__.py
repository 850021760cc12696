"""cnntheory: learning dynamics of convolutional networks in the teacher-student setting.

The public namespace only re-exports; each concept lives in its own module.
"""

import jax

# Theory runs in float64 throughout (set once, at import; never inside a jitted function).
jax.config.update("jax_enable_x64", True)

from ._activations import ACTIVATIONS, Activation, get_activation  # noqa: E402
from ._data import (  # noqa: E402
    PatchMixture,
    atoms_from_gram,
    count_moments,
    dirichlet_moments,
    extract_patches,
    shape_atoms,
)
from ._config import SolverConfig, SolverOptions  # noqa: E402
from ._problem import TeacherStudent, shape_counting  # noqa: E402
from ._plots import mark_events, plot_loss, plot_order_parameters, trajectory_figure  # noqa: E402
from ._solve import (  # noqa: E402
    DIFFRAX_SOLVERS,
    SCIPY_METHODS,
    SolverError,
    Trajectory,
    solve,
    solve_batch,
    stack_problems,
)
from ._trajectory import EVENT_KINDS, CnnTheoryError, Events, Status  # noqa: E402

from . import gaussian  # noqa: E402  (Gaussian patches; the committee machine is N = 1)
from . import fluctuations  # noqa: E402  (fluctuations of online SGD; cheap: nothing beyond jax and diffrax)

__version__ = "0.4.0"
