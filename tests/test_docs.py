"""Every Python code block of the README and the documentation runs as written, pasted alone.

Each ```python block is executed in a fresh namespace (as a newcomer pastes it into a new
session), in a scratch folder, with matplotlib drawing off screen. A block that needs a name
must import or define it itself. Blocks of other languages (shell commands) are not run;
the commands they show are tested by tests/test_cli*.py.
"""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks():
    for path in DOCUMENTS:
        text = path.read_text()
        for match in _BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            yield pytest.param(match.group(1), id=f"{path.relative_to(ROOT)}:{line}")


BLOCKS = list(_blocks())


def test_the_documents_have_code_blocks():
    assert len(BLOCKS) >= 8  # the README's tour, own problem, simulation, symbolic, energy, gaussian; the docs' home


@pytest.mark.slow
@pytest.mark.parametrize("code", BLOCKS)
def test_code_block_runs_as_written(code, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<code block>", "exec"), {"__name__": "__main__"})  # noqa: S102 - the documentation's own code
    plt.close("all")
