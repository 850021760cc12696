r"""Work shared over the processes of a `jax.distributed` run.

JAX's multi-process runtime runs the same script in every process (one per host, or several
per host); `jax.distributed.initialize()` joins them, detecting SLURM, Open MPI and other
cluster environments itself, after which `jax.process_count()` processes each drive their
own local devices. A sweep or a seed ensemble of `n` independent items is split into
contiguous **shares**, one per process, sizes differing by at most one:

$$\text{share}_p = [\,p\,q + \min(p, r),\ (p + 1)\,q + \min(p + 1, r)\,),\qquad q = \lfloor n / P \rfloor,\ r = n \bmod P,$$

so a process may have no work (`n < P`). Each process computes its share on its local
devices; the pieces are then exchanged with `jax.experimental.multihost_utils.process_allgather`
(padded to the largest share) and the labelled result is assembled, in item order, **on every
process** (the caller saves it on process 0 only). A share whose computation raised is not
dropped: its items are marked failed (NaN, `Status.FAILED`) and the failure is reported with
the process, the items and the exception's message.

In a single process nothing is exchanged: the computation runs as it always did and an
exception propagates.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable

import jax
import numpy as np

from ._validate import require

#: Bytes of the per-process header exchanged before the data (shapes, dtypes, an error).
_HEADER_BYTES = 8192


def initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None, **kwargs
) -> None:
    """Join this process to a multi-process run (`jax.distributed.initialize`, with the same
    arguments; all of them may be left out where JAX detects the cluster, e.g. under SLURM).

    On CPU the processes exchange results through gloo collectives, which this selects
    first (JAX's CPU default has none). Call it before anything else touches JAX's devices.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)


def share_bounds(n: int, index: int, count: int) -> tuple[int, int]:
    """`(start, stop)` of process `index`'s share of `n` items over `count` processes."""
    require(count >= 1 and 0 <= index < count, f"process index {index} must be in [0, {count})")
    q, r = divmod(n, count)
    start = index * q + min(index, r)
    return start, start + q + (1 if index < r else 0)


def _encode(header: dict) -> np.ndarray:
    raw = json.dumps(header).encode()
    if len(raw) > _HEADER_BYTES:  # an error message too long for the header: keep its end
        header = {**header, "error": "..." + header.get("error", "")[-2000:]}
        raw = json.dumps(header).encode()
    out = np.zeros(_HEADER_BYTES, np.uint8)
    out[: len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def _decode(buf: np.ndarray) -> dict:
    return json.loads(bytes(np.asarray(buf, np.uint8)).rstrip(b"\0").decode())


def _allgather(x: np.ndarray) -> np.ndarray:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x))


def _missing(shape: tuple[int, ...], dtype: np.dtype, status_code: int | None) -> np.ndarray:
    if status_code is not None and np.issubdtype(dtype, np.integer):
        return np.full(shape, status_code, dtype)
    return np.full(shape, np.nan if np.issubdtype(dtype, np.floating) else 0, dtype)


def gather_shares(
    n: int,
    compute: Callable[[int, int], dict[str, np.ndarray]],
    *,
    failed_status: int | None = None,
    what: str = "items",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Run `compute(start, stop)` on this process's share of `n` items and assemble every
    process's arrays (leading axis: the items), in item order, on every process.

    Returns `(arrays, failures)`: `failures` names each share that raised (process, items,
    message); its items are NaN, and integer arrays hold `failed_status` (e.g. the status
    codes) where given. Every share raising is a `RuntimeError` naming them all. With one
    process `compute(0, n)` runs directly and its exceptions propagate.
    """
    count, index = jax.process_count(), jax.process_index()
    if count == 1:
        return compute(0, n), []
    bounds = [share_bounds(n, p, count) for p in range(count)]
    start, stop = bounds[index]
    local: dict[str, np.ndarray] = {}
    header: dict = {"error": None, "arrays": {}}
    if stop > start:
        try:
            local = {k: np.asarray(v) for k, v in compute(start, stop).items()}
            header["arrays"] = {k: [list(v.shape[1:]), v.dtype.str] for k, v in local.items()}
        except Exception as err:  # noqa: BLE001  (reported with the share below, not dropped)
            header["error"] = f"{type(err).__name__}: {err}"
    headers = [_decode(h) for h in _allgather(_encode(header))]
    layout = next((h["arrays"] for h in headers if h["arrays"]), None)
    failures = [
        f"process {p} ({what} {bounds[p][0]}..{bounds[p][1] - 1}) failed: {h['error']}"
        for p, h in enumerate(headers)
        if h["error"] is not None
    ]
    if layout is None:
        raise RuntimeError("every share failed:\n" + "\n".join(failures or ["no process had any work"]))
    widest = max(b - a for a, b in bounds)
    out = {}
    for name, (trailing, dtype) in layout.items():
        dtype = np.dtype(dtype)
        mine = local.get(name, _missing((stop - start, *trailing), dtype, failed_status))
        padded = np.concatenate([mine, np.zeros((widest - mine.shape[0], *trailing), dtype)])
        every = _allgather(padded)
        pieces = []
        for p, (a, b) in enumerate(bounds):
            piece = every[p, : b - a]
            pieces.append(_missing(piece.shape, dtype, failed_status) if headers[p]["error"] is not None else piece)
        out[name] = np.concatenate(pieces)
    for line in failures:
        warnings.warn(line, RuntimeWarning, stacklevel=2)
    return out, failures
