"""Saving results the way people open them: PNG figures, `.npz` arrays, JSON parameters."""

from __future__ import annotations

import json
import pathlib
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
