"""`save_results`: the files people open, and parameters that survive the round trip."""

import json
import pathlib

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cnntheory._io import save_results


def test_arrays_parameters_and_figure_round_trip(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    arrays = {"t": np.linspace(0, 1, 5), "m": jnp.ones((5, 2, 2))}
    params = {
        "lr": np.float64(0.1),
        "alpha": (2.0, 1.0),
        "shape": jnp.array([2, 2]),
        "out": pathlib.Path("x"),
        "nested": {1: [np.int64(3)]},
    }
    paths = save_results(tmp_path / "new" / "folder", "run", arrays=arrays, params=params, figure=fig)
    plt.close(fig)
    assert set(paths) == {"npz", "json", "png"} and all(p.exists() for p in paths.values())
    expected = {"lr": 0.1, "alpha": [2.0, 1.0], "shape": [2, 2], "out": "x", "nested": {"1": [3]}}
    assert json.loads(paths["json"].read_text()) == expected
    data = np.load(paths["npz"])
    assert json.loads(str(data["params"])) == expected
    np.testing.assert_array_equal(data["m"], np.ones((5, 2, 2)))
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_figure_no_png(tmp_path):
    paths = save_results(tmp_path, "run", arrays={}, params={})
    assert set(paths) == {"npz", "json"} and not (tmp_path / "run.png").exists()
