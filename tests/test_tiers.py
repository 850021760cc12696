"""The fast tier (`python -m pytest -m "not slow"`) touches every test module: each one keeps at
least one test without the `slow` mark. Read from the sources (no collection, no imports), so the
check itself is instant; a parametrised test counts as fast when the function carries no `slow`
mark (marks on single `pytest.param`s leave the others fast)."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_slow(decorators) -> bool:
    return any(ast.unparse(d).replace(" ", "") in ("pytest.mark.slow", "mark.slow", "slow") for d in decorators)


def _module_is_slow(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            if "slow" in ast.unparse(node.value):
                return True
    return False


def fast_tests(path: Path) -> list[str]:
    """The test functions of one module that the fast tier runs."""
    tree = ast.parse(path.read_text())
    if _module_is_slow(tree):
        return []
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test") and not _is_slow(node.decorator_list)
    ]


def test_every_test_module_has_a_fast_test():
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 30  # the walk found the suite
    without = [str(p.relative_to(TESTS)) for p in modules if not fast_tests(p)]
    assert not without, f"these test modules have no test in the fast tier (-m 'not slow'): {without}"


def test_the_reader_sees_marks():
    tree = ast.parse(
        "import pytest\n@pytest.mark.slow\ndef test_a(): pass\n@pytest.mark.parametrize('x', [1])\ndef test_b(x): pass\n"
    )
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not _is_slow(n.decorator_list)]
    assert names == ["test_b"]
    assert _module_is_slow(ast.parse("import pytest\npytestmark = pytest.mark.slow\n"))
    assert _module_is_slow(ast.parse("import pytest\npytestmark = [pytest.mark.slow]\n"))
