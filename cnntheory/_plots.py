"""Figures of order-parameter trajectories (matplotlib).

matplotlib is imported inside each function, so `import cnntheory` stays free of it.
"""

from __future__ import annotations

import numpy as np

from ._trajectory import Trajectory


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
    """`m_lp(t)` (solid) and `v_l(t)` (grey, dashed / dotted) of one solve on `ax`.

    A curve `m_lp` that would hide one drawn before it (closer than 1% of the axis span for
    half the time, e.g. `m_22` on `m_11` in shape counting with `alpha = (1, 1)`) is dashed,
    and its label says which curve it lies on.

    `events`: mark the relu mode changes of `traj.events` on the axis `m = 0` (`mark_events`).
    """
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    t = np.asarray(traj.t)
    m, v = np.asarray(traj.m), np.asarray(traj.v)
    L, P = m.shape[1:]
    colors = _line_colors()
    drawn: list[tuple[int, int]] = []
    span = max(
        float(np.nanmax([np.nanmax(m), np.nanmax(v), 0.0]) - np.nanmin([np.nanmin(m), np.nanmin(v), 0.0])), 1e-12
    )
    for l in range(L):
        for p in range(P):
            label = f"$m_{{{l + 1}{p + 1}}}$"
            style: str | tuple = "-"
            under = _coinciding(m, (l, p), drawn, span)
            if under is not None:  # dashed, so that the line it lies on shows between the dashes
                label, style = f"{label} (on $m_{{{under[0] + 1}{under[1] + 1}}}$)", (0, (3, 3))
            ax.plot(t, m[:, l, p], color=_entry_color(colors, l, p, P), lw=1.6, ls=style, label=label)
            drawn.append((l, p))
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


def _coinciding(m: np.ndarray, entry: tuple[int, int], drawn: list[tuple[int, int]], span: float):
    """The first drawn entry whose curve the curve of `entry` would hide, else None.

    Two curves hide each other where they are closer than about a line width: 1% of the
    axis's span `span`, for at least half of the time.
    """
    for other in drawn:
        close = np.abs(m[:, entry[0], entry[1]] - m[:, other[0], other[1]]) < 0.01 * span
        if np.mean(close) >= 0.5:
            return other
    return None


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
        plot_order_parameters(traj, axes[0, j], title=name)  # a legend each: labels may differ per panel
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


def explain_theory_vs_simulation(fig, label_values=None):
    """Axis labels and a key to `compare.plot_comparison`'s line styles (and its colours per label).

    The panels draw the theory as solid lines and the simulated seeds as a dashed mean with a
    +-1 std band, in the colour of the quantity; this adds that key to the first panel's
    legend, the y labels, and for the prediction panel a colour bar of the label values.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    axes = fig.axes
    for ax, ylabel in zip(axes, ("overlap $m_{lp}$", "head $v_l$", "loss", "mean prediction"), strict=False):
        ax.set_ylabel(ylabel)
    key = [
        Line2D([], [], color="0.2", lw=1.5, label="theory (ODE)"),
        Line2D([], [], color="0.2", lw=1.2, ls="--", label="simulation: seed mean"),
        Patch(color="0.2", alpha=0.2, lw=0, label="simulation: +-1 std"),
    ]
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].legend(handles=[*handles, *key], fontsize=7, ncol=2)
    if label_values is not None and len(axes) > 3:
        values = np.asarray(label_values, dtype=float)
        norm = plt.Normalize(values.min(), values.max() if values.max() > values.min() else values.min() + 1)
        mappable = plt.cm.ScalarMappable(norm=norm, cmap="coolwarm")
        fig.colorbar(mappable, ax=axes[3], label="label value y (lines: theory, dots: simulation)")
    fig.tight_layout()  # room for the new labels
    return fig
