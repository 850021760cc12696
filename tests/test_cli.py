"""The `cnntheory` command line: the main job writes what it says, with the right numbers."""

import json

import jax.numpy as jnp
import numpy as np

import cnntheory as ct
from cnntheory._cli import build_parser, main


def test_shape_counting_command_writes_figure_arrays_and_parameters(tmp_path, capsys):
    code = main(["shape-counting", "--t1", "5", "--num-points", "11", "--activation", "sigmoid", "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    for kind in ("png", "npz", "json"):
        path = tmp_path / f"shape_counting.{kind}"
        assert path.exists() and str(path) in printed
    params = json.loads((tmp_path / "shape_counting.json").read_text())
    assert params["alphas"] == [[1.0, 1.0], [2.0, 1.0]] and params["activation"] == "sigmoid"
    data = np.load(tmp_path / "shape_counting.npz")
    assert json.loads(str(data["params"])) == params
    # The saved trajectory is the solve of the same problem (independent call, 1e-12: same solver, same inputs).
    problem = ct.shape_counting(activation="sigmoid", alpha=(2.0, 1.0))
    ref = ct.solve(problem, jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.01, -0.01]), 5.0, ts=jnp.linspace(0, 5, 11))
    np.testing.assert_allclose(data["m_alpha_2_1"], ref.m, atol=1e-12)
    np.testing.assert_allclose(data["loss_alpha_2_1"], ref.loss, atol=1e-12)


def test_every_subcommand_has_help():
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert "shape-counting" in subcommands
    for name, sub in subcommands.items():
        assert sub.format_help()


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "shape-counting" in capsys.readouterr().out
