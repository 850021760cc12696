"""The annotation checks of the test run, paused where a test hands the package bad input on purpose.

`tests/conftest.py` checks every annotated function of `cnntheory` (jaxtyping shapes and dtypes,
with beartype). A test of the package's own input validation (the `ValueError` a user sees) passes
arguments that the annotations reject, so the check would answer first with a `TypeCheckError`:

- `raises_unchecked(ValueError, match=...)`: `pytest.raises` with the checks paused inside it;
- `checks_paused()`: the pause alone.
"""

import contextlib
from collections.abc import Iterator

import jaxtyping
import pytest


@contextlib.contextmanager
def checks_paused() -> Iterator[None]:
    """Annotation checks off inside the block, restored (to what they were) after it."""
    previous = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", previous)


@contextlib.contextmanager
def raises_unchecked(
    expected_exception: type[BaseException] | tuple[type[BaseException], ...], *, match: str | None = None
) -> Iterator[pytest.ExceptionInfo]:
    """`pytest.raises(expected_exception, match=match)` with the annotation checks paused inside it."""
    with checks_paused(), pytest.raises(expected_exception, match=match) as info:
        yield info
