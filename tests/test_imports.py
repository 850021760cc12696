"""`import cnntheory` loads jax, diffrax and the core only; every public subpackage on first use.

Each check runs in a fresh interpreter: this test session has loaded everything already.
"""

import ast
import json
import pathlib
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


# --- the import graph of the package has no cycle ----------------------------------------------

PACKAGE_ROOT = pathlib.Path(cnntheory.__file__).parent


def _module_names() -> dict[str, pathlib.Path]:
    """Every module of the package by dotted name (a package by its `__init__.py`)."""
    names = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imported(node: ast.ImportFrom | ast.Import, module: str, is_package: bool, modules) -> set[str]:
    """The package's modules one import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & modules
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    base = ".".join(p for p in (package if node.level else "", node.module or "") if p)
    found = {base} & modules
    # `from .pkg import name`: `name` may be a submodule (imported too), else a name in `base`.
    return found | ({f"{base}.{alias.name}" for alias in node.names} & modules)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports at module level, `if TYPE_CHECKING:` blocks included.

    Imports inside functions are left out: they run on call, after every module has loaded
    (the package's lazy imports of scipy, matplotlib and subpackages).
    """
    names = _module_names()
    modules = set(names)
    graph = {}
    for module, path in names.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        todo: list[ast.stmt] = list(tree.body)
        while todo:
            node = todo.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, module, path.name == "__init__.py", modules)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):  # TYPE_CHECKING, try/except ImportError
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []):
                        todo.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
        graph[module] = edges - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as a list of nodes (first = last), or `None` (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_cycles():
    # The checker itself can fail: a cycle (through TYPE_CHECKING-style edges or not) is found.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_resolves_relative_imports():
    graph = import_graph()
    assert {"cnntheory._config", "cnntheory._methods"} <= set(graph)
    assert "cnntheory._methods" in graph["cnntheory._config"]
    assert "cnntheory._config" in graph["cnntheory._integrate"]  # a TYPE_CHECKING import
    assert "cnntheory._problem" in graph["cnntheory.gaussian._escape"] or graph["cnntheory.gaussian"]
    assert graph["cnntheory._methods"] == set()  # the leaf


def test_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


if __name__ == "__main__":  # print the graph: python tests/test_imports.py
    for name, edges in import_graph().items():
        print(name, "->", ", ".join(sorted(edges)) or "(leaf)")
