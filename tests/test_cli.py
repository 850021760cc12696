"""The `cnntheory` command line: the main job writes what it says, with the right numbers."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import cnntheory as ct
from cnntheory._cli import build_parser, main


def test_shape_counting_command_writes_figure_arrays_and_parameters(tmp_path, capsys):
    code = main(
        ["shape-counting", "--t1", "5", "--num-points", "11", "--activation", "sigmoid", "--out", str(tmp_path)]
    )
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
    ref = ct.solve(
        problem, jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.01, -0.01]), 5.0, ts=jnp.linspace(0, 5, 11)
    )
    np.testing.assert_allclose(data["m_alpha_2_1"], ref.m, atol=1e-12)
    np.testing.assert_allclose(data["loss_alpha_2_1"], ref.loss, atol=1e-12)


def test_every_subcommand_has_help():
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert "shape-counting" in subcommands
    for sub in subcommands.values():
        assert sub.format_help()


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "shape-counting" in capsys.readouterr().out


# --- bad arguments: one line on stderr, exit status 2, never a traceback ------------------------

BAD_ARGUMENTS = [
    (["shape-counting", "--overlap", "1.5"], "overlap must lie strictly between -1 and 1"),
    (["shape-counting", "--activation", "nope"], "unknown activation 'nope'"),
    (["shape-counting", "--t1", "-5"], "--t1: must be a finite number > 0"),
    (["shape-counting", "--m0", "1,2"], "--m0 needs 4 numbers"),
    (["shape-counting", "--method", "nope"], "unknown method 'nope'"),
    (["fixed-points", "--alpha", "0,1"], "Dirichlet parameters alpha must be finite and > 0"),
    # A negative list is a value, not an option: it reaches the Dirichlet check.
    (["fixed-points", "--alpha", "-1,1"], "Dirichlet parameters alpha must be finite and > 0, got [-1."),
    (["fixed-points", "--starts", "0"], "--starts: must be an integer >= 1"),
    (["sweep", "--t1", "0"], "--t1: must be a finite number > 0"),
    (["sweep", "--activation", "nope"], "unknown activation 'nope'"),
    (["simulate", "--lr", "-0.1"], "--lr: must be a finite number > 0"),
    (["simulate", "--alpha", "1,x"], "expected comma-separated numbers"),
    (["energy", "--images", "0"], "--images: must be an integer >= 1"),
    (["equations", "--sizes", "0,2"], "--sizes must be two or three positive integers"),
]


def _one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_bad_argument_is_one_line_and_status_2(argv, message, tmp_path, capsys):
    code = main([*argv, "--out", str(tmp_path)] if argv[0] != "equations" else argv)
    err = capsys.readouterr().err
    assert code == 2
    line = _one_line(err)
    assert line.startswith(f"cnntheory {argv[0]}: error: ") and message in line, line
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_negative_values_parse_as_values():
    args = build_parser().parse_args(["sweep", "--overlap-range", "-0.5", "-.25", "--eps", "-1e-3"])
    assert args.overlap_range == [-0.5, -0.25] and args.eps == -1e-3
    assert build_parser().parse_args(["shape-counting", "--alpha", "-1,1"]).alpha == [(-1.0, 1.0)]


def test_command_line_prints_no_traceback(tmp_path):
    # The installed entry point end to end: the same path a user's shell takes.
    result = subprocess.run(
        [sys.executable, "-m", "cnntheory", "fixed-points", "--alpha", "-1,1", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert _one_line(result.stderr).startswith("cnntheory fixed-points: error: Dirichlet parameters alpha")


def test_simulate_warns_past_the_stability_edge():
    from cnntheory._commands.simulate import stability_warning
    from cnntheory.analysis import stability_edge

    problem = ct.shape_counting(0.8, (1.0, 1.0), "relu", 4)
    m0, v0 = jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.01, -0.01])
    edge = stability_edge(problem, m0, v0)  # ~9.87 (tested against GD in tests/analysis/test_curvature.py)
    assert stability_warning(problem, m0, v0, 0.02) is None and stability_warning(problem, m0, v0, 0.99 * edge) is None
    warning = stability_warning(problem, m0, v0, 50.0)
    assert "\n" not in warning and "--lr 50 exceeds" in warning and f"{edge:.4g}" in warning


def test_fixed_points_command_counts_asymptotic_states_apart(tmp_path, capsys):
    assert main(["fixed-points", "--activation", "sigmoid", "--alpha", "2,1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "5 distinct fixed points and 232 asymptotic (saturated) states" in out
    assert out.index("fixed points:") < out.index("asymptotic states:")
    saved = json.loads((tmp_path / "fixed_points.json").read_text())["results"]["alpha_2_1"]
    assert (saved["fixed"], saved["asymptotic"]) == (5, 232)
    assert sum(p["asymptotic"] for p in saved["points"]) == 232


# --- the commands of cnntheory.gaussian and cnntheory.energy: they run and write their outputs --


def test_committee_command(tmp_path, capsys):
    assert (
        main(
            [
                "committee",
                "--K",
                "2",
                "--patches",
                "1",
                "2",
                "--t1",
                "300",
                "--lr",
                "1.0",
                "--num-points",
                "31",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    for ext in ("png", "npz", "json"):
        assert (tmp_path / f"committee.{ext}").exists()
    data = np.load(tmp_path / "committee.npz")
    assert data["committee_error"].shape == (1, 31) and data["patch_error_per_patch"].shape == (2, 31)
    assert "Saad-Solla plateau 0.011611" in capsys.readouterr().out


def test_energy_command_writes_its_outputs(tmp_path, capsys):
    code = main(
        [
            "energy",
            "--dataset",
            "digits",
            "--images",
            "128",
            "--steps",
            "20",
            "--seeds",
            "1",
            "--linear-steps",
            "8",
            "--linear-seeds",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    for suffix in ("png", "json", "npz"):
        assert (tmp_path / f"energy_digits.{suffix}").is_file()
    data = json.loads((tmp_path / "energy_digits.json").read_text())
    assert data["parameters"]["dataset"] == "digits" and -1 <= data["correlations"]["linear_vs_formula"]["r"] <= 1
    assert "wrote" in capsys.readouterr().out
