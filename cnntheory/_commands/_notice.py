"""A line on stderr when a step is slow: what is being compiled or computed, so a first run is not silent."""

from __future__ import annotations

import contextlib
import sys
import threading

#: Seconds a step may take before its notice is printed.
NOTICE_AFTER = 3.0


def _say(line: str) -> None:
    """`line` on stderr, on a line of its own: above a progress bar that is drawing (tqdm.write)."""
    from tqdm import tqdm

    if getattr(tqdm, "_instances", None):
        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def notice(command: str, what: str, after: float = NOTICE_AFTER):
    """Print `cnntheory <command>: <what> ...` once if the block is still running after `after` seconds.

    JAX compiles a program on its first call (tens of seconds for relu's Filippov solver on
    two cores) and gives no sign of it; the block's own result is unchanged. `after=0`
    prints at once (before a block that draws a progress bar, whose line a later notice
    would break).
    """
    if after <= 0:
        _say(f"cnntheory {command}: {what} ...")
        yield
        return
    timer = threading.Timer(after, _say, (f"cnntheory {command}: {what} ...",))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
