"""Drawing a predicted band: `draw_band`."""

from __future__ import annotations

import numpy as np

from ._result import Fluctuations

# --- plotting ------------------------------------------------------------------------------


def draw_band(axes, fluct: Fluctuations, *, width: float = 2.0, color: str = "0.3"):
    """Draw the predicted mean (dotted) and a `+- width` sigma band of `fluct` on two axes.

    `axes[0]` gets every `m_lp`, `axes[1]` every `v_l` (the layout of
    `cnntheory.compare.plot_comparison`). Needs matplotlib axes; imports nothing itself.
    """
    t = np.asarray(fluct.t)
    L, P = fluct.mean_m.shape[1:]
    series = [(axes[0], fluct.mean_m[:, l, p], fluct.std_m[:, l, p]) for l in range(L) for p in range(P)]
    series += [(axes[1], fluct.mean_v[:, l], fluct.std_v[:, l]) for l in range(L)]
    for i, (ax, mean_j, std_j) in enumerate(series):
        mean, std = np.asarray(mean_j), np.asarray(std_j)
        first = i == 0 or (ax is axes[1] and i == L * P)
        ax.plot(t, mean, ":", color=color, lw=1.2, label="fluctuation theory" if first else None)
        ax.fill_between(
            t,
            mean - width * std,
            mean + width * std,
            color=color,
            alpha=0.15,
            lw=0,
            label=f"$\\pm{width:g}\\sigma$ (theory)" if first else None,
        )
    for ax in axes[:2]:
        ax.legend(fontsize=7, ncol=2)
