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
import matplotlib.pyplot as plt
import numpy as np
from jaxtyping import Array, Float

from .._problem import TeacherStudent


def kernels_from_order(problem: TeacherStudent, m: Float[Array, "*B L P"]) -> Float[Array, "*B L D"]:
    """In-span kernels `K = m G^+ mu` (exact inverse of `m = K mu^T / D` on the span)."""
    return jnp.asarray(m) @ jnp.linalg.pinv(problem.gram) @ problem.mixture.atoms


def filter_images(problem: TeacherStudent, m: Float[Array, "*B L P"]) -> Float[Array, "*B L k k"]:
    """The in-span kernels as `k x k` images (row-major, as the patches are flattened)."""
    k = problem.mixture.patch_size
    K = kernels_from_order(problem, m)
    return K.reshape(*K.shape[:-1], k, k)


def filters_figure(problem: TeacherStudent, times, theory_m, simulated_m=None, *, t=None):
    """Rows: student units (theory, then simulation if given); columns: `times`.

    `theory_m`, `simulated_m`: `(T, L, P)` order parameters saved at times `t` (`(T,)`);
    the nearest save time to each requested time is drawn. One colour scale per unit.
    """
    t = np.asarray(t)
    cols = [int(np.argmin(np.abs(t - s))) for s in times]
    sources = [("theory", np.asarray(theory_m))] + ([("simulation", np.asarray(simulated_m))] if simulated_m is not None else [])
    L = sources[0][1].shape[1]
    fig, axes = plt.subplots(L * len(sources), len(cols), figsize=(1.6 * len(cols), 1.7 * L * len(sources)), squeeze=False)
    images = {name: np.asarray(filter_images(problem, jnp.asarray(m[cols]))) for name, m in sources}
    for l in range(L):
        scale = max(np.abs(images[name][:, l]).max() for name, _ in sources) or 1.0
        for s, (name, _) in enumerate(sources):
            row = l * len(sources) + s
            for c, j in enumerate(cols):
                ax = axes[row, c]
                ax.imshow(images[name][c, l], cmap="RdBu_r", vmin=-scale, vmax=scale)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"t = {t[j]:.3g}", fontsize=9)
                if c == 0:
                    ax.set_ylabel(f"{name}\nunit {l + 1}", fontsize=8)
    fig.tight_layout()
    return fig
