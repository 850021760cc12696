r"""A persistent compilation cache: compiled XLA programs kept on disk between processes.

A new process pays for compiling every program it runs (seconds for a solve); with the cache
on, a second run with the same shapes and options loads the compiled programs from disk
instead. JAX's own persistent cache does the work (`jax_compilation_cache_dir`); this module
chooses the folder, keys it by version and turns it on or off:

    import cnntheory as ct
    ct.enable_compilation_cache()  # one line at the top of a script or notebook

The `cnntheory` command turns it on by itself. The folder is
`default_cache_dir() / "cnntheory-<version>_jax-<version>_jaxlib-<version>_<backend>"`: a new
cnntheory, jax or jaxlib, or another backend, starts an empty subfolder and never reuses a
program compiled by another (JAX's own key, a hash of the program, the compile options and
the devices, is used within it). `CNNTHEORY_NO_CACHE=1` turns the cache off everywhere;
`clear_compilation_cache()` deletes what is stored.

The cache is trusted code: keep it in a folder only you can write to.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import warnings

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

__all__ = ["clear_compilation_cache", "default_cache_dir", "enable_compilation_cache"]

#: Programs are written however fast they compiled (JAX's default skips those under 1 s): the
#: small eager operations of a script add up to a few tenths of a second per process.
MIN_COMPILE_TIME_SECS = 0.0

_PREFIX = "cnntheory-"


def default_cache_dir() -> pathlib.Path:
    """The per-user cache folder: `$CNNTHEORY_CACHE_DIR`, else `$XDG_CACHE_HOME/cnntheory/jax`,
    else `~/.cache/cnntheory/jax`."""
    if os.environ.get("CNNTHEORY_CACHE_DIR"):
        return pathlib.Path(os.environ["CNNTHEORY_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return pathlib.Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "cnntheory" / "jax"
    return pathlib.Path.home() / ".cache" / "cnntheory" / "jax"


def cache_disabled() -> bool:
    """True when `CNNTHEORY_NO_CACHE` is set to anything but `""` or `"0"`."""
    return os.environ.get("CNNTHEORY_NO_CACHE", "") not in ("", "0")


def version_key() -> str:
    """The name of the versioned subfolder: cnntheory, jax and jaxlib versions and the backend."""
    import jaxlib

    from . import __version__

    return f"{_PREFIX}{__version__}_jax-{jax.__version__}_jaxlib-{jaxlib.__version__}_{jax.default_backend()}"


def _base(directory, caller: str) -> pathlib.Path:
    if directory is None:
        return default_cache_dir()
    if not isinstance(directory, (str, os.PathLike)) or str(directory) == "":
        raise ValueError(
            f"{caller}: directory must be a folder path (str or pathlib.Path) or None for the per-user "
            f"default ({default_cache_dir()}), got {directory!r}"
        )
    return pathlib.Path(directory).expanduser()


def _active_dir() -> str | None:
    """The folder JAX's persistent cache uses now (`None`: off)."""
    return jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]  # a jax flag: no static attribute


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Keep the programs this process compiles on disk, and load them instead of compiling.

    **Arguments:**

    - `directory`: the cache folder (`None`: `default_cache_dir()`); programs go into its
      versioned subfolder (module docstring).

    **Returns:** the versioned folder in use, or `None` when `CNNTHEORY_NO_CACHE=1` turns the
    cache off, or when the default folder cannot be created (then with a warning: a cache is
    never a reason for a run to fail). An explicit `directory` that cannot be created is a
    `ValueError`. Calling it again with another folder moves the cache there.
    """
    if cache_disabled():
        return None
    base = _base(directory, "enable_compilation_cache")
    path = base / version_key()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if directory is not None:
            raise ValueError(
                f"enable_compilation_cache: cannot create the cache folder {path} ({err}); pass a writable "
                "directory, or set CNNTHEORY_NO_CACHE=1 to run without the cache"
            ) from None
        warnings.warn(f"cnntheory: no compilation cache ({path}: {err})", RuntimeWarning, stacklevel=2)
        return None
    if _active_dir() != str(path):
        _jax_cache.reset_cache()  # JAX opens its cache folder once; a new folder needs a fresh start
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def clear_compilation_cache(directory: str | os.PathLike | None = None) -> None:
    """Delete the compiled programs stored under `directory` (`None`: `default_cache_dir()`).

    Every versioned subfolder (this version's and stale ones) is removed; nothing else in
    `directory` is touched. A cache in use stays on, empty.
    """
    base = _base(directory, "clear_compilation_cache")
    if not base.is_dir():
        return
    for sub in base.iterdir():
        if sub.is_dir() and sub.name.startswith(_PREFIX):
            shutil.rmtree(sub)
    active = _active_dir()
    if active and pathlib.Path(active).parent == base:
        _jax_cache.reset_cache()  # forget the deleted folder's index; it is reopened, empty, on next use
        pathlib.Path(active).mkdir(parents=True, exist_ok=True)
