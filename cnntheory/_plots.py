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
EVENT_MARKERS = {"cross": "x", "slide": "v", "exit": "^", "repulsive": "*"}


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
            ms=8 if kind == "repulsive" else 6,
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


def _cell_edges(x: np.ndarray) -> np.ndarray:
    """Edges of cells centred on the sorted grid points `x` (halfway between neighbours)."""
    mid = (x[1:] + x[:-1]) / 2
    return np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])


def grid_heatmap(ax, x, y, data, *, label: str = "", max_ticks: int = 10):
    """`data[i, j]` at `(x[j], y[i])` as a cell centred on that grid point, with a colour bar.

    The cells' edges lie halfway between grid points, so each cell's centre is the point
    computed; with at most `max_ticks` points per axis, the ticks are the grid points.
    """
    x, y, data = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(data, dtype=float)
    if x.size < 2 or y.size < 2 or data.shape != (y.size, x.size):
        raise ValueError(
            f"grid_heatmap needs >= 2 points per axis and data of shape (len(y), len(x)), got {data.shape}"
        )
    mesh = ax.pcolormesh(_cell_edges(x), _cell_edges(y), data, shading="flat")
    for axis, values in ((ax.xaxis, x), (ax.yaxis, y)):
        if values.size <= max_ticks:
            axis.set_ticks(values, [f"{v:.3g}" for v in values])
    ax.figure.colorbar(mesh, ax=ax, label=label)
    return mesh


def sweep_figure(x, y, panels: dict, *, xlabel: str, ylabel: str, suptitle: str | None = None):
    """One heatmap per entry of `panels` (`title -> data (len(y), len(x))`), cells centred on the grid."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels.items(), strict=True):
        grid_heatmap(ax, x, y, data, label=title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
