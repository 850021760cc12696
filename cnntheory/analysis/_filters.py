r"""Student filters from the order parameters.

The flow moves only the part of each kernel inside the span of the atoms; with
`m_lp = K_l . mu_p / D` that part is

$$K_l^{\parallel} = \sum_{pq} m_{lp}\,(G^{+})_{pq}\,\mu_q,$$

(`G^+` the pseudo-inverse of the Gram matrix), so `m(t)` determines the in-span filter
exactly; the out-of-span part keeps its initial value for ever. A simulation records only
its measured `m`, so its in-span filters come from the same formula: theory and simulation
filters are compared on equal terms.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._problem import TeacherStudent
from .._typing import AnyArray


def kernels_from_order(problem: TeacherStudent, m: Float[AnyArray, "*B L P"]) -> Float[Array, "*B L D"]:
    """In-span kernels `K = m G^+ mu` (exact inverse of `m = K mu^T / D` on the span)."""
    return problem.mixture.in_span_kernels(m)


def filter_images(problem: TeacherStudent, m: Float[AnyArray, "*B L P"]) -> Float[Array, "*B L k k"]:
    """The in-span kernels as `k x k` images (row-major, as the patches are flattened)."""
    k = problem.mixture.patch_size
    K = kernels_from_order(problem, m)
    return K.reshape(*K.shape[:-1], k, k)


def moving_part(problem: TeacherStudent, kernels: Float[AnyArray, "T L D"]) -> Float[Array, "T L D"]:
    """Recorded kernels minus their initial out-of-span part: `K(t) - K_perp(0)`.

    Since the out-of-span part never moves, this is the in-span filter of a simulation,
    read from the kernels themselves rather than from the measured `m`.
    """
    kernels = jnp.asarray(kernels)
    m0 = problem.mixture.overlaps(kernels[0])
    return kernels - (kernels[0] - kernels_from_order(problem, m0))


def filters_figure(problem: TeacherStudent, times, theory_m, *, t, simulated_kernels=None, t_sim=None):
    """Rows: student units (theory, then simulation if given); columns: `times`.

    `theory_m`: `(T, L, P)` order parameters of a solve saved at `t`; the theory filters are
    `kernels_from_order`. `simulated_kernels`: `(T', L, D)` kernels of one simulated seed
    (`Simulation.kernels[s]`) recorded at `t_sim`, drawn as `moving_part`. The nearest
    record to each requested time is drawn; one colour scale per unit.
    """
    import matplotlib.pyplot as plt  # only when drawing: `import cnntheory` stays free of matplotlib

    k = problem.mixture.patch_size
    sources = [("theory", np.asarray(t), np.asarray(kernels_from_order(problem, jnp.asarray(theory_m))))]
    if simulated_kernels is not None:
        sources.append(("simulation", np.asarray(t_sim), np.asarray(moving_part(problem, simulated_kernels))))
    L = sources[0][2].shape[1]
    fig, axes = plt.subplots(
        L * len(sources), len(times), figsize=(1.6 * len(times), 1.7 * L * len(sources)), squeeze=False
    )
    for l in range(L):
        scale = max(np.abs(K[:, l]).max() for _, _, K in sources) or 1.0
        for s, (name, ts, K) in enumerate(sources):
            row = l * len(sources) + s
            for c, when in enumerate(times):
                j = int(np.argmin(np.abs(ts - when)))
                ax = axes[row, c]
                ax.imshow(K[j, l].reshape(k, k), cmap="RdBu_r", vmin=-scale, vmax=scale)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"t = {ts[j]:.3g}", fontsize=9)
                if c == 0:
                    ax.set_ylabel(f"{name}\nunit {l + 1}", fontsize=8)
    fig.tight_layout()
    return fig
