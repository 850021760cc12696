"""The test run checks more than a user's run: jaxtyping shapes and dtypes (with beartype)
on every annotated function and dataclass of `cnntheory`, and strict dtype promotion."""

import functools
import os

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

_raises = pytest.raises


@functools.wraps(_raises)
def _raises_unchecked(expected_exception, *args, **kwargs):
    """`pytest.raises`, with the annotation checks paused when a `ValueError` is expected.

    A test that hands the package bad input checks the package's own `ValueError` (what a
    user sees); the annotation check would otherwise reject the input first.
    """
    expected = expected_exception if isinstance(expected_exception, tuple) else (expected_exception,)
    if not any(isinstance(e, type) and issubclass(e, ValueError) for e in expected):
        return _raises(expected_exception, *args, **kwargs)
    if args:
        with _checks_paused():
            return _raises(expected_exception, *args, **kwargs)
    return _PausedRaises(_raises(expected_exception, **kwargs))


class _checks_paused:
    def __enter__(self):
        self.previous = jaxtyping.config.jaxtyping_disable
        jaxtyping.config.update("jaxtyping_disable", True)

    def __exit__(self, *exc):
        jaxtyping.config.update("jaxtyping_disable", self.previous)
        return False


class _PausedRaises:
    def __init__(self, context):
        self.context = context
        self.paused = _checks_paused()

    def __enter__(self):
        self.paused.__enter__()
        return self.context.__enter__()

    def __exit__(self, *exc):
        self.paused.__exit__(*exc)
        return self.context.__exit__(*exc)


pytest.raises = _raises_unchecked


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    One process compiles thousands of XLA programs over the suite; kept alive, their code
    mappings approach the kernel's per-process limit (`vm.max_map_count`, 65530 here), where
    XLA:CPU's compiler crashes. Modules share no compiled state that matters for speed.
    """
    yield
    jax.clear_caches()
