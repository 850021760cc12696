"""Old names that keep working for one release, with a `DeprecationWarning`.

Four shapes of rename, one helper each:

- a keyword (`renamed_keywords`): the old keyword is mapped to the new one; giving both is a
  `ValueError` (which one was meant is not knowable);
- arguments that were positional and are keyword-only now (`keyword_only_now`), because
  their positional order changed: the old order is honoured, with the warning;
- a function (`renamed_function`): the old name is a thin wrapper that warns and calls the new;
- an attribute of a result (`renamed_attribute`): a read-only property that warns and reads
  the new field.

The warning names the old and the new name, and says the old one goes in the next release.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_GOES = "it will be removed in the next release"


def _warn(message: str) -> None:
    # stacklevel 3: the warning points at the caller of the deprecated name, not at this helper.
    warnings.warn(message, DeprecationWarning, stacklevel=3)


def renamed_keywords(**old_to_new: str) -> Callable[[F], F]:
    """Decorator: accept each keyword `old` as `old_to_new[old]`, with a `DeprecationWarning`.

    `inspect.signature` of the decorated function shows the new names only
    (`functools.wraps` sets `__wrapped__`).
    """

    def decorate(fn: F) -> F:
        name = fn.__qualname__.removesuffix(".__init__")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise ValueError(
                        f"{name}: got both {old}= (its old name) and {new}=; pass only {new}={kwargs[new]!r}"
                    )
                _warn(f"{name}({old}=...) is deprecated, use {new}=...; {_GOES}")
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def keyword_only_now(*old_positional: str, after: int) -> Callable[[F], F]:
    """Decorator: arguments that used to be positional, in the order `old_positional`, after
    the first `after` positional ones (`self` included), still work that way for one release.

    They are keyword-only now: passing them by position warns (`DeprecationWarning`) and
    maps them by their old order; giving one both ways is a `ValueError`.
    """

    def decorate(fn: F) -> F:
        name = fn.__qualname__.removesuffix(".__init__")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            extra = args[after:]
            if extra:
                if len(extra) > len(old_positional):
                    raise TypeError(f"{name} takes at most {after + len(old_positional)} positional arguments")
                names = old_positional[: len(extra)]
                for key in names:
                    if key in kwargs:
                        raise ValueError(f"{name}: got {key} both by position and as {key}=; pass it only by name")
                _warn(
                    f"{name}: passing {', '.join(names)} by position is deprecated, they are keyword-only now "
                    f"(pass {names[0]}=..., ...); {_GOES}"
                )
                kwargs.update(zip(names, extra, strict=True))
                args = args[:after]
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def renamed_function(fn: F, old: str) -> F:
    """`fn` under its old name `old` (e.g. `"cnntheory.gaussian.escape_time"`), warning on each call."""
    new = f"{fn.__module__.split('._')[0]}.{fn.__name__}"

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _warn(f"{old} is deprecated, use {new} (same arguments, same result); {_GOES}")
        return fn(*args, **kwargs)

    wrapper.__doc__ = f"Deprecated name of `{new}`; {_GOES}."
    return wrapper  # type: ignore[return-value]


def renamed_attribute(old: str, new: str) -> property:
    """A read-only property `old` that warns and returns the field `new`."""

    def get(self):
        _warn(f"{type(self).__name__}.{old} is deprecated, use .{new}; {_GOES}")
        return getattr(self, new)

    return property(get, doc=f"Deprecated name of `{new}`; {_GOES}.")
