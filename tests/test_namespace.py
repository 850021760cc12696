"""The public namespace: importing the package stays light."""

import subprocess
import sys


def test_import_does_not_load_matplotlib():
    # A fresh interpreter: this test session has matplotlib loaded already.
    code = (
        "import sys, cnntheory, cnntheory.analysis, cnntheory.energy, cnntheory.simulate, "
        "cnntheory.compare, cnntheory.symbolic\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')\n"
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
