"""The version is written once, in `cnntheory/_version.py`: the package, the build metadata and
the citation file agree with it."""

import re
from pathlib import Path

import cnntheory
from cnntheory._version import __version__

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_written_once():
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert cnntheory.__version__ == __version__
    # (tomllib is Python 3.11+; the package supports 3.10, so read the two lines directly.)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]$', pyproject, flags=re.M)
    assert re.search(r'^version = \{ attr = "cnntheory\._version\.__version__" \}$', pyproject, flags=re.M)
    assert not re.search(r'^version = "', pyproject, flags=re.M)  # no second copy
    cited = re.findall(r"^version:\s*\"?([^\"\s]+)\"?\s*$", (ROOT / "CITATION.cff").read_text(), flags=re.M)
    assert cited == [__version__]
