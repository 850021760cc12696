"""Bad command lines, per subcommand: one line on stderr, exit status 2, nothing written, no work.

The probes (`tests/cli_probes.py`) are what a newcomer types. Every one must be refused
before the command imports the package or computes anything: `_load_package` (the step
that precedes any work) fails the test if it is reached. The help of every subcommand
shows each option's default and the allowed range of each number.
"""

import subprocess
import sys

import pytest
from cli_probes import PROBES, materialise

import cnntheory as ct
from cnntheory import _cli
from cnntheory._commands import _types as T


def _one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    def refuse():
        raise AssertionError("a bad command line reached the work")

    monkeypatch.setattr(_cli, "_load_package", refuse)


@pytest.mark.parametrize("argv, fragment", PROBES, ids=[" ".join(a) for a, _ in PROBES])
def test_bad_command_line(argv, fragment, tmp_path, capsys, no_work):
    args, out = materialise(argv, tmp_path)
    before = sorted(tmp_path.rglob("*"))
    code = _cli.main(args)
    err = capsys.readouterr().err
    assert code == 2
    line = _one_line(err)
    assert line.startswith(f"cnntheory {argv[0]}: error: ") and fragment in line, line
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even the output folder
    assert out is None or not any(out.iterdir())


def _subcommands():
    subparsers = _cli.build_parser()._subparsers
    assert subparsers is not None
    return subparsers._group_actions[0].choices


def test_every_option_shows_its_default_and_every_number_its_range():
    for name, sub in _subcommands().items():
        help_text = "".join(sub.format_help().split())  # wrapping may break a line at a hyphen
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            shown = " ".join(sub._get_formatter()._expand_help(action).split())
            assert "".join(shown.split()) in help_text, (name, action.dest)
            assert "default" in shown, (name, action.dest, shown)
            if action.type not in (None, str) and action.choices is None and action.dest != "out":
                assert getattr(action.type, "range_text", None), (name, action.dest)
                assert action.type.range_text in shown, (name, action.dest)


def test_the_names_options_accept_are_the_package_registries():
    from cnntheory.energy import DATASETS

    assert sorted(T.ACTIVATION_NAMES) == sorted(ct.ACTIVATIONS)
    assert list(T.METHOD_NAMES) == [*ct.DIFFRAX_SOLVERS, *ct.SCIPY_METHODS]
    assert tuple(T.DATASET_NAMES) == tuple(DATASETS)
    assert sorted(T.NONSMOOTH_ACTIVATIONS) == sorted(n for n, a in ct.ACTIVATIONS.items() if not a.smooth)


def test_ranges_accept_their_bounds_and_refuse_past_them():
    import argparse

    assert T.seed("0") == 0 and T.seed(str(T.MAX_SEED)) == T.MAX_SEED
    assert T.Range(float, gt=-1, lt=1)("0.99") == 0.99 and T.num_points("2") == 2
    for kind, text in ((T.seed, "-1"), (T.seed, str(T.MAX_SEED + 1)), (T.overlap, "1"), (T.num_points, "1")):
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            kind(text)
    assert T.alpha("2,1") == (2.0, 1.0) and T.m0("1,2,3,-4") == (1.0, 2.0, 3.0, -4.0)


def test_help_answers_without_importing_jax():
    # The console script's launcher, in a fresh interpreter: help for the tool and every subcommand.
    code = (
        "import sys, cnntheory_cli\n"
        "for argv in [['--help'], *[[c, '--help'] for c in sys.argv[1:]]]:\n"
        "    try:\n"
        "        cnntheory_cli.main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (argv, e.code)\n"
        "print('jax' in sys.modules, 'cnntheory.simulate' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *_subcommands()], capture_output=True, text=True, check=True
    )  # fmt: skip
    assert result.stdout.strip().splitlines()[-1] == "False False"
    assert "usage: cnntheory sweep" in result.stdout


def test_a_bad_command_line_answers_without_importing_jax(tmp_path):
    code = (
        "import sys, cnntheory_cli\n"
        "status = cnntheory_cli.main(['simulate', '--lr', '1000', '--out', sys.argv[1]])\n"
        "print(status, 'jax' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["2", "False"]
    assert "argument --lr: --lr 1000 is larger than the final time 40" in _one_line(result.stderr)
