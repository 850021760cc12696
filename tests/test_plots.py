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
    assert [(e["t"], e["unit"], e["atom"], e["kind"], e["to"]) for e in saved] == traj.events.to_list()
