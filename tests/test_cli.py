"""The `cnntheory` command line: the main job writes what it says, with the right numbers."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np

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


# --- bad arguments: tests/test_cli_arguments.py (one line on stderr, exit status 2, no work) -----


def _one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_negative_values_parse_as_values():
    args = build_parser().parse_args(["sweep", "--overlap-range", "-0.5", "-.25", "--eps", "-1e-3"])
    assert args.overlap_range == [-0.5, -0.25] and args.eps == -1e-3
    assert build_parser().parse_args(["shape-counting", "--m0", "-1,1,-.5,2"]).m0 == (-1.0, 1.0, -0.5, 2.0)


def test_command_line_prints_no_traceback(tmp_path):
    # The installed entry point end to end: the same path a user's shell takes.
    result = subprocess.run(
        [sys.executable, "-m", "cnntheory", "fixed-points", "--alpha", "-1,1", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert _one_line(result.stderr).startswith("cnntheory fixed-points: error: argument --alpha: needs 2")


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


# --- the outputs say what was computed --------------------------------------------------------


def test_equations_plain_and_seed_notation_differ_and_lines_fit_the_width(capsys):
    assert main(["equations", "--width", "80"]) == 0
    seed = capsys.readouterr().out
    assert main(["equations", "--plain", "--width", "80"]) == 0
    plain = capsys.readouterr().out
    assert "E[π₁π₂]" in seed and "C₁₂" not in seed and "C₁₂" in plain and "E[π" not in plain
    assert max(len(line) for line in seed.splitlines()) <= 80


def test_a_write_that_fails_after_the_work_is_one_line_status_1(tmp_path, capsys, monkeypatch):
    import cnntheory._io as io

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "save_results", full_disk)
    assert main(["equations"]) == 0  # writes nothing: unaffected
    capsys.readouterr()
    code = main(["shape-counting", "--activation", "sigmoid", "--t1", "1", "--num-points", "3", "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()  # a compile notice may come first
    assert err[-1] == "cnntheory shape-counting: error: [Errno 28] No space left on device"


def test_euler_takes_dt0(tmp_path):
    # --method euler --dt0 h is gradient descent with step h: the saved state is the GD map's.
    argv = ["shape-counting", "--activation", "sigmoid", "--alpha", "1,1", "--t1", "1", "--num-points", "11"]
    assert main([*argv, "--method", "euler", "--dt0", "0.1", "--out", str(tmp_path)]) == 0
    data = np.load(tmp_path / "shape_counting.npz")
    problem = ct.shape_counting(activation="sigmoid")
    m, v = jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([0.01, -0.01])
    for _ in range(10):  # ten explicit Euler steps of the order-parameter flow
        dm, dv = problem.rhs(m, v)
        m, v = m + 0.1 * dm, v + 0.1 * dv
    np.testing.assert_allclose(data["m_alpha_1_1"][-1], m, rtol=1e-12)
    assert json.loads((tmp_path / "shape_counting.json").read_text())["dt0"] == 0.1


def test_notice_prints_only_when_slow(capsys):
    import time

    from cnntheory._commands._notice import notice

    with notice("demo", "quick"):
        pass
    with notice("demo", "compiling something", after=0.05):
        time.sleep(0.3)
    assert capsys.readouterr().err == "cnntheory demo: compiling something ...\n"


def test_an_error_during_a_progress_bar_starts_its_own_line(capsys):
    from tqdm import tqdm

    from cnntheory._cli import _report

    bar = tqdm(total=10, desc="work")  # on stderr, its line not ended
    bar.update(3)
    _report("demo", ValueError("argument --x: bad\nvalue"))
    err = capsys.readouterr().err
    assert err.endswith("\ncnntheory demo: error: argument --x: bad value\n")
    assert not getattr(tqdm, "_instances", None)  # the bar was closed
