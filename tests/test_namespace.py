"""The public namespace: importing the package stays light, every subpackage is reachable."""

import subprocess
import sys

import cnntheory


def test_import_does_not_load_matplotlib():
    # A fresh interpreter: this test session has matplotlib loaded already. Loading every
    # subpackage still leaves matplotlib out (the plots import it when they draw).
    code = (
        "import sys, cnntheory, cnntheory.analysis, cnntheory.energy, cnntheory.simulate, "
        "cnntheory.compare, cnntheory.symbolic, cnntheory.gaussian, cnntheory.fluctuations\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')\n"
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_cache_functions_exported():
    assert callable(cnntheory.enable_compilation_cache)
    assert callable(cnntheory.clear_compilation_cache)
    assert {"enable_compilation_cache", "clear_compilation_cache"} <= set(dir(cnntheory))
