"""Saving results the way people open them: PNG figures, `.npz` arrays, JSON parameters."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any

import numpy as np


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if hasattr(value, "shape"):
        return np.asarray(value).tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    return value


def check_out_folder(out) -> pathlib.Path:
    """Check, before any work, that results can be written to the folder `out`; return it as a path.

    `out` may not exist yet (it is created when the results are saved), but every part of
    it that exists must be a folder, and the deepest existing one must take a new file
    (tried with a temporary file, removed at once: permissions, read-only file systems).
    Raises a `ValueError` naming `--out` otherwise.
    """
    out = pathlib.Path(out)
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == out else f"is under {existing}, which is a file"
        raise ValueError(f"argument --out: {str(out)!r} {what}, not a folder: name a folder (new or existing)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise ValueError(
            f"argument --out: cannot write in {str(existing)!r} ({reason}): name a folder you can write to"
        ) from None
    return out


def save_results(out, stem: str, *, arrays: dict, params: dict, figure=None, dpi: int = 200) -> dict[str, pathlib.Path]:
    """Write `<stem>.npz` (arrays + the parameters as a JSON string), `<stem>.json`, `<stem>.png`.

    Returns the paths written, by kind.
    """
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = _jsonable(params)
    paths = {"npz": out / f"{stem}.npz", "json": out / f"{stem}.json"}
    contents: dict[str, Any] = {"params": json.dumps(params), **{k: np.asarray(v) for k, v in arrays.items()}}
    np.savez(paths["npz"], **contents)
    paths["json"].write_text(json.dumps(params, indent=2) + "\n")
    if figure is not None:
        paths["png"] = out / f"{stem}.png"
        figure.savefig(paths["png"], dpi=dpi, bbox_inches="tight")
    return paths
