"""Figures of order-parameter trajectories (matplotlib).

matplotlib is imported inside each function, so `import cnntheory` stays free of it.
"""

from __future__ import annotations

import numpy as np

from ._solve import Trajectory


def _line_colors() -> list:
    """matplotlib's colour cycle (any colour spec: names, hex strings, RGB tuples)."""
    import matplotlib.pyplot as plt

    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _entry_color(colors: list, l: int, p: int, P: int):
    """The colour of entry `m_lp`'s line, shared by its trajectory and its event marks."""
    return colors[(l * P + p) % len(colors)]


def plot_order_parameters(
    traj: Trajectory, ax=None, *, title: str | None = None, legend: bool = True, events: bool = True
):
    """`m_lp(t)` (solid) and `v_l(t)` (dashed) of one solve on `ax`.

    `events`: mark the relu mode changes of `traj.events` on the axis `m = 0` (`mark_events`).
    """
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    t = np.asarray(traj.t)
    m, v = np.asarray(traj.m), np.asarray(traj.v)
    L, P = m.shape[1:]
    colors = _line_colors()
    for l in range(L):
        for p in range(P):
            ax.plot(t, m[:, l, p], color=_entry_color(colors, l, p, P), lw=1.6, label=f"$m_{{{l + 1}{p + 1}}}$")
    for l in range(L):
        ax.plot(t, v[:, l], color="0.25", ls=("--", ":", "-.")[l % 3], lw=1.4, label=f"$v_{{{l + 1}}}$")
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    if events:
        mark_events(traj, ax, colors)
    ax.set_xlabel("time $t$")
    ax.set_ylabel("order parameters")
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(ncol=2, fontsize=8, frameon=False)
    return ax


#: Marker of each event kind (`Events.kind`) in `mark_events`.
EVENT_MARKERS = {"cross": "x", "slide": "v", "exit": "^", "repulsive": "*", "step_dependent": "P"}


def mark_events(traj: Trajectory, ax, colors=None):
    """Mark each relu mode change of an unbatched solve at `(t, 0)`, where its entry `m_lp` meets 0.

    The marker says the kind (`EVENT_MARKERS`: crossing, start of a slide, exit from a slide,
    repulsive surface), the colour is the entry's line colour in `plot_order_parameters`.
    Each kind that occurs gets one legend entry.
    """
    if traj.events is None or np.ndim(traj.events.count) != 0:
        return ax
    colors = colors or _line_colors()
    P = np.shape(traj.m)[-1]
    labelled = set()
    for t, l, p, kind, _ in traj.events.to_list():
        color = _entry_color(colors, l, p, P)
        ax.plot(
            t,
            0.0,
            ls="none",
            marker=EVENT_MARKERS[kind],
            ms=8 if kind in ("repulsive", "step_dependent") else 6,
            mfc="none" if kind in ("slide", "exit") else color,
            mec=color,
            mew=1.3,
            zorder=3,
            label=None if kind in labelled else f"{kind} event",
        )
        labelled.add(kind)
    return ax


def plot_loss(traj: Trajectory, ax=None, *, label: str | None = None):
    """Population loss on a log scale."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    loss = np.asarray(traj.loss)
    ax.semilogy(np.asarray(traj.t), np.where(loss > 0, loss, np.nan), lw=1.6, label=label)
    ax.set_xlabel("time $t$")
    ax.set_ylabel(r"loss $\mathcal{L}$")
    return ax


def trajectory_figure(trajs: dict[str, Trajectory], *, suptitle: str | None = None):
    """One column per trajectory: order parameters on top, loss below."""
    import matplotlib.pyplot as plt

    n = len(trajs)
    fig, axes = plt.subplots(
        2, n, figsize=(5.0 * n, 6.0), sharex="col", gridspec_kw={"height_ratios": [2.2, 1]}, squeeze=False
    )
    for j, (name, traj) in enumerate(trajs.items()):
        plot_order_parameters(traj, axes[0, j], title=name, legend=(j == n - 1))
        plot_loss(traj, axes[1, j])
        axes[0, j].set_xlabel("")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
