"""Figures: the order-parameter panel marks the relu events where their entries meet 0."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cnntheory._cli import main
from cnntheory._plots import EVENT_MARKERS, plot_order_parameters
from cnntheory._problem import shape_counting
from cnntheory._solve import solve

M0 = np.array([[0.3, 0.25], [0.2, 0.28]])
V0 = np.array([0.01, -0.01])


def _event_markers(ax):
    return [line for line in ax.lines if line.get_marker() in EVENT_MARKERS.values()]


def test_relu_events_are_marked_on_the_zero_axis():
    # From m_12 < 0: m_12 crosses 0 at t ~ 5.5 and starts sliding at t ~ 6.1.
    m0 = M0 * np.array([[1.0, -1.0], [1.0, 1.0]])
    traj = solve(shape_counting(alpha=(2.0, 1.0)), m0, V0, 10.0, ts=np.linspace(0, 10, 21))
    assert traj.events is not None
    events = traj.events.to_list()
    assert [e[3] for e in events] == ["cross", "slide"]
    fig, ax = plt.subplots()
    plot_order_parameters(traj, ax)
    marks = _event_markers(ax)
    assert len(marks) == len(events)
    for line, (t, _, _, kind, _) in zip(marks, events, strict=True):
        assert line.get_marker() == EVENT_MARKERS[kind]
        np.testing.assert_allclose(np.column_stack(line.get_data()), [[t, 0.0]])
    # One legend entry per kind that occurs.
    labels = [line.get_label() for line in marks if not line.get_label().startswith("_")]
    assert sorted(labels) == sorted({f"{e[3]} event" for e in events})
    plt.close(fig)


def test_smooth_and_batched_solves_mark_nothing():
    smooth = solve(shape_counting(alpha=(2.0, 1.0), activation="softplus"), M0, V0, 2.0)
    fig, ax = plt.subplots()
    plot_order_parameters(smooth, ax)
    assert _event_markers(ax) == []
    plt.close(fig)


def test_shape_counting_command_saves_the_events(tmp_path):
    # The default start: m_12 slides from t ~ 23.3 for alpha = (2, 1).
    assert main(["shape-counting", "--t1", "30", "--num-points", "11", "--out", str(tmp_path)]) == 0
    params = json.loads((tmp_path / "shape_counting.json").read_text())
    traj = solve(shape_counting(alpha=(2.0, 1.0)), M0, V0, 30.0, ts=np.linspace(0, 30, 11))
    saved = params["events"]["alpha_2_1"]
    assert [e["kind"] for e in saved] == ["slide"]
    assert traj.events is not None
    assert [(e["t"], e["unit"], e["atom"], e["kind"], e["to"]) for e in saved] == traj.events.to_list()


def test_a_curve_that_would_hide_another_is_dashed_and_says_so():
    # Shape counting with alpha = (1, 1): m_22 lies on m_11 most of the time.
    traj = solve(shape_counting(), M0, V0, 60.0, ts=np.linspace(0, 60, 61))
    m = np.asarray(traj.m)
    fig, ax = plt.subplots()
    plot_order_parameters(traj, ax)
    lines = {line.get_label(): line for line in ax.lines}
    close = np.mean(np.abs(m[:, 1, 1] - m[:, 0, 0]) < 0.01 * np.ptp(np.concatenate([m.ravel(), traj.v.ravel(), [0]])))
    assert close >= 0.5  # the case the rule is for
    assert lines["$m_{22}$ (on $m_{11}$)"].get_linestyle() == "--"
    assert lines["$m_{11}$"].get_linestyle() == "-" and lines["$m_{12}$"].get_linestyle() == "-"
    plt.close(fig)


def test_heatmap_cells_are_centred_on_the_grid_points():
    from cnntheory._plots import sweep_figure

    x, y = np.linspace(0.0, 3.0, 3), np.array([-0.5, 0.5])  # a sweep's grid: equally spaced
    data = np.arange(6.0).reshape(2, 3)
    fig = sweep_figure(x, y, {"value": data}, xlabel="x", ylabel="y")
    ax = fig.axes[0]
    mesh = ax.collections[0]
    np.testing.assert_array_equal(mesh.get_array().reshape(2, 3), data)
    coords = mesh.get_coordinates()  # (len(y) + 1, len(x) + 1, 2) cell corners
    np.testing.assert_allclose(coords[0, :, 0], [-0.75, 0.75, 2.25, 3.75])  # halfway between points
    np.testing.assert_allclose(coords[:, 0, 1], [-1.0, 0.0, 1.0])
    centres = (coords[0, 1:, 0] + coords[0, :-1, 0]) / 2
    np.testing.assert_allclose(centres, x)
    np.testing.assert_allclose(ax.get_xticks(), x)
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "y" and fig.axes[1].get_ylabel() == "value"  # colour bar
    plt.close(fig)
