"""`import cnntheory` loads jax, diffrax and the core only; every public subpackage on first use.

Each check runs in a fresh interpreter: this test session has loaded everything already.
"""

import json
import subprocess
import sys

import pytest

import cnntheory

SUBPACKAGES = ("analysis", "compare", "energy", "fluctuations", "gaussian", "simulate", "symbolic")
#: Loaded only by the code that needs them.
HEAVY = ("scipy", "sympy", "matplotlib", "sklearn", *(f"cnntheory.{name}" for name in SUBPACKAGES))


def _run(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def after_import() -> dict:
    """What a bare `import cnntheory` leaves in `sys.modules` (and its float64 switch)."""
    return _run(
        "import json, sys, jax, cnntheory\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'x64': jax.config.jax_enable_x64,"
        " 'dir': dir(cnntheory)}))"
    )


def test_import_loads_the_core(after_import):
    modules = set(after_import["modules"])
    assert {"jax", "diffrax", "cnntheory._solve", "cnntheory._problem", "cnntheory._trajectory"} <= modules
    assert after_import["x64"] is True


@pytest.mark.parametrize("heavy", HEAVY)
def test_import_does_not_load(after_import, heavy):
    loaded = [m for m in after_import["modules"] if m == heavy or m.startswith(heavy + ".")]
    assert not loaded, f"import cnntheory loaded {loaded[:5]} ({len(loaded)} modules)"


def test_subpackages_listed(after_import):
    assert set(SUBPACKAGES) <= set(after_import["dir"])
    assert set(SUBPACKAGES) <= set(dir(cnntheory))


def test_every_subpackage_loads_on_attribute_access():
    # One rule for all: attribute access imports the subpackage (and only it), as `import` would.
    out = _run(
        "import json, sys, importlib, cnntheory\n"
        f"names = {list(SUBPACKAGES)!r}\n"
        "res = {}\n"
        "for n in names:\n"
        "    before = f'cnntheory.{n}' in sys.modules\n"
        "    mod = getattr(cnntheory, n)\n"
        "    res[n] = [before, mod is sys.modules[f'cnntheory.{n}'], mod is importlib.import_module(f'cnntheory.{n}')]\n"
        "print(json.dumps(res))"
    )
    for name, (_, bound, same) in out.items():
        assert same and bound, name
    assert not out[SUBPACKAGES[0]][0]  # the first one accessed was not loaded before


PUBLIC = {
    "analysis": "find_plateaus",
    "compare": "compare",
    "energy": "energy_profile",
    "fluctuations": "moments",
    "gaussian": "solve",
    "simulate": "simulate",
    "symbolic": "to_jax",
}


def test_attribute_access_reaches_public_names():
    # e.g. `cnntheory.simulate.simulate` after a bare `import cnntheory` (an AttributeError before).
    out = _run(
        "import json, cnntheory\n"
        f"public = {PUBLIC!r}\n"
        "print(json.dumps({n: callable(getattr(getattr(cnntheory, n), f)) for n, f in public.items()}))"
    )
    assert out == {name: True for name in SUBPACKAGES}


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_subpackage'"):
        cnntheory.not_a_subpackage  # noqa: B018
    assert not hasattr(cnntheory, "not_a_subpackage")
