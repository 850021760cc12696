"""The test run checks more than a user's run: jaxtyping shapes and dtypes (with beartype)
on every annotated function and dataclass of `cnntheory`, and strict dtype promotion. A test
that hands the package bad input on purpose pauses the annotation checks with
`helpers_checks.raises_unchecked` (the package's own `ValueError` is what it checks)."""

import os
from pathlib import Path

import jax
import jaxtyping
import pytest

# The package turns float64 on at import; make sure tests see it even if a test
# module imports jax first.
jax.config.update("jax_enable_x64", True)
# No implicit promotion (an int array meeting a float one, float32 meeting float64):
# the package casts explicitly.
jax.config.update("jax_numpy_dtype_promotion", "strict")
# The `cnntheory` command turns the persistent compilation cache on: never in the user's
# cache folder from a test (tests/test_cache.py turns it on in a temporary one).
os.environ["CNNTHEORY_NO_CACHE"] = "1"

# Before the package is first imported, so that every cnntheory module is checked. The
# PEP 484 numeric tower lets an int stand for a float (as the annotations mean it).
jaxtyping.install_import_hook("cnntheory", "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))")

import cnntheory  # noqa: E402,F401


def _mapping_budget() -> tuple[Path, int] | None:
    """`(maps file, threshold)`: clear JAX's caches once this process holds more memory mappings
    than the threshold, half the kernel's per-process limit; None where `/proc` does not say."""
    maps, limit = Path("/proc/self/maps"), Path("/proc/sys/vm/max_map_count")
    try:
        maps.read_bytes()
        return maps, int(limit.read_text()) // 2
    except (OSError, ValueError):
        return None


_BUDGET = _mapping_budget()


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after a test module, when they hold too many memory mappings.

    One process compiles thousands of XLA programs over the suite; kept alive, their code
    mappings approach the kernel's per-process limit (`vm.max_map_count`, 65530 here), where
    XLA:CPU's compiler crashes. Clearing after every module made each module recompile the
    programs it shares with the others (the one-problem solves, the Gaussian integrals), so the
    caches are dropped only past half the limit (no module adds that many). Without `/proc` to
    count, after every module as before.
    """
    yield
    if _BUDGET is None or _BUDGET[0].read_bytes().count(b"\n") > _BUDGET[1]:
        jax.clear_caches()
