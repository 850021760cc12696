"""`cnntheory energy` writes its figure, JSON and profiles."""

import json

from cnntheory._cli import main


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
