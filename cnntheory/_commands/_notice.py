"""A line on stderr when a step is slow: what is being compiled or computed, so a first run is not silent."""

from __future__ import annotations

import contextlib
import sys
import threading

#: Seconds a step may take before its notice is printed.
NOTICE_AFTER = 3.0


@contextlib.contextmanager
def notice(command: str, what: str, after: float = NOTICE_AFTER):
    """Print `cnntheory <command>: <what> ...` once if the block is still running after `after` seconds.

    JAX compiles a program on its first call (tens of seconds for relu's Filippov solver on
    two cores) and gives no sign of it; the block's own result is unchanged. `after=0`
    prints at once (before a block that draws a progress bar, whose line a later notice
    would break).
    """
    if after <= 0:
        print(f"cnntheory {command}: {what} ...", file=sys.stderr, flush=True)
        yield
        return
    timer = threading.Timer(after, lambda: print(f"cnntheory {command}: {what} ...", file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
