"""Bad command lines a newcomer types: each must give one clear line on stderr and exit 2.

Shared by `tests/test_cli_arguments.py` (run in-process: every one is refused before any work)
and by a count over subprocesses (`python tests/cli_probes.py [ROOT]`, which also counts the
old behaviour of a checkout at ROOT: a traceback, a wrong exit status or a run that computes
before it fails all count as misses).

`FILE` in an argument list is replaced by the path of an existing file, `FILE/sub` by a
folder under it; `--out` is added (a fresh empty folder) when a probe names none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pathlib

# (argv, a fragment of the expected message)
PROBES: list[tuple[list[str], str]] = [
    (["shape-counting", "--overlap", "1.5"], "--overlap"),
    (["shape-counting", "--overlap", "nan"], "--overlap"),
    (["shape-counting", "--activation", "nope"], "--activation"),
    (["shape-counting", "--t1", "-5"], "--t1"),
    (["shape-counting", "--t1", "inf"], "--t1"),
    (["shape-counting", "--m0", "1,2"], "--m0"),
    (["shape-counting", "--m0", "1,2,x,4"], "--m0"),
    (["shape-counting", "--method", "nope"], "--method"),
    (["shape-counting", "--method", "euler"], "--dt0"),
    (["shape-counting", "--dt0", "-1", "--method", "euler"], "--dt0"),
    (["shape-counting", "--num-points", "1"], "--num-points"),
    (["shape-counting", "--num-points", "0"], "--num-points"),
    (["shape-counting", "--rtol", "0"], "--rtol"),
    (["shape-counting", "--rtol", "2"], "--rtol"),
    (["shape-counting", "--atol", "-1"], "--atol"),
    (["shape-counting", "--patches-per-side", "0"], "--patches-per-side"),
    (["shape-counting", "--k", "0"], "--k"),
    (["shape-counting", "--alpha", "0,1"], "--alpha"),
    (["shape-counting", "--alpha", "1"], "--alpha"),
    (["shape-counting", "--alpha", "1,1,1"], "--alpha"),
    (["shape-counting", "--eps", "nan"], "--eps"),
    (["shape-counting", "--pooling", "max"], "--pooling"),
    (["shape-counting", "--pooling", "sum"], "--pooling"),
    (["shape-counting", "--out", "FILE"], "--out"),
    (["shape-counting", "--out", "FILE/sub"], "--out"),
    (["shape-counting", "--out", "/proc/cnntheory-output"], "--out"),  # a read-only file system
    (["simulate", "--lr", "1000"], "--lr"),
    (["simulate", "--lr", "0"], "--lr"),
    (["simulate", "--batch", "0"], "--batch"),
    (["simulate", "--seeds", "0"], "--seeds"),
    (["simulate", "--steps", "0"], "--steps"),
    (["simulate", "--t1", "-1"], "--t1"),
    (["simulate", "--steps", "10", "--t1", "5"], "--t1"),
    (["simulate", "--record-every", "0"], "--record-every"),
    (["simulate", "--record-every", "1000", "--steps", "10"], "--record-every"),
    (["simulate", "--mode", "nope"], "--mode"),
    (["simulate", "--m0", "1"], "--m0"),
    (["simulate", "--band", "--mode", "population", "--activation", "softplus"], "--band"),
    (["simulate", "--band"], "--band"),
    (["simulate", "--method", "nope"], "--method"),
    (["simulate", "--k", "0"], "--k"),
    (["simulate", "--n-train", "0"], "--n-train"),
    (["simulate", "--overlap", "-1"], "--overlap"),
    (["simulate", "--patches-per-side", "0"], "--patches-per-side"),
    (["simulate", "--seed", "-1"], "--seed"),
    (["simulate", "--out", "FILE"], "--out"),
    (["fixed-points", "--alpha", "0,1"], "--alpha"),
    (["fixed-points", "--alpha", "-1,1"], "--alpha"),
    (["fixed-points", "--starts", "0"], "--starts"),
    (["fixed-points", "--units", "0"], "--units"),
    (["fixed-points", "--overlap", "2"], "--overlap"),
    (["fixed-points", "--out", "FILE"], "--out"),
    (["sweep", "--t1", "0"], "--t1"),
    (["sweep", "--activation", "nope"], "--activation"),
    (["sweep", "--overlaps", "0"], "--overlaps"),
    (["sweep", "--overlaps", "1"], "--overlaps"),
    (["sweep", "--overlap-range", "0.5", "0.1"], "--overlap-range"),
    (["sweep", "--overlap-range", "0", "1.5"], "--overlap-range"),
    (["sweep", "--skew-range", "-2", "0"], "--skew-range"),
    (["sweep", "--num-points", "1"], "--num-points"),
    (["sweep", "--chunk-size", "0"], "--chunk-size"),
    (["sweep", "--out", "FILE"], "--out"),
    (["sweep", "--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], "--coordinator"),
    (["sweep", "--num-processes", "2"], "--num-processes"),
    (["sweep", "--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], "--process-id"),
    (["sweep", "--process-id", "-1"], "--process-id"),
    (["committee", "--num-points", "0"], "--num-points"),
    (["committee", "--patches", "0"], "--patches"),
    (["committee", "--K", "0"], "--K"),
    (["committee", "--K", "-2"], "--K"),
    (["committee", "--lr", "0"], "--lr"),
    (["committee", "--t1", "0"], "--t1"),
    (["committee", "--out", "FILE"], "--out"),
    (["energy", "--images", "0"], "--images"),
    (["energy", "--patch", "0"], "--patch"),
    (["energy", "--patch", "30"], "--patch"),
    (["energy", "--dataset", "nope"], "--dataset"),
    (["energy", "--linear-steps", "0"], "--linear-steps"),
    (["energy", "--seed", "-1"], "--seed"),
    (["energy", "--out", "FILE"], "--out"),
    (["equations", "--sizes", "0,2"], "--sizes"),
    (["equations", "--sizes", "1,2,3,4"], "--sizes"),
    (["equations", "--activation", "nope"], "--activation"),
]


def materialise(argv: list[str], tmp) -> tuple[list[str], pathlib.Path | None]:
    """The argument list with `FILE` made real under `tmp`, and the output folder to watch."""
    import pathlib

    tmp = pathlib.Path(tmp)
    file = tmp / "a_file.txt"
    file.write_text("not a folder\n")
    argv = [a.replace("FILE", str(file)) for a in argv]
    if "--out" in argv or argv[0] == "equations":
        return argv, None
    out = tmp / "out"
    out.mkdir()
    return [*argv, "--out", str(out)], out


def _count(root: str, timeout: float) -> None:
    import os
    import subprocess
    import sys
    import tempfile

    good = 0
    for argv, _fragment in PROBES:
        with tempfile.TemporaryDirectory() as tmp:
            args, out = materialise(argv, tmp)
            try:
                r = subprocess.run(
                    [sys.executable, "-m", "cnntheory", *args], cwd=root, capture_output=True, text=True,
                    timeout=timeout, env={**os.environ, "MPLBACKEND": "Agg"},
                )  # fmt: skip
                lines = r.stderr.strip().splitlines()
                written = out is not None and any(out.iterdir())
                ok = r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr and not written
                what = f"exit {r.returncode}, {len(lines)} lines" + (", wrote files" if written else "")
                last = lines[-1] if lines else ""
            except subprocess.TimeoutExpired:
                ok, what, last = False, f"still computing after {timeout:g} s", ""
        good += ok
        print(f"{'ok  ' if ok else 'MISS'} {' '.join(argv)}: {what}: {last[:150]}", flush=True)
    print(f"{good} of {len(PROBES)} bad command lines: one line, exit 2, nothing written")


if __name__ == "__main__":
    import sys

    _count(sys.argv[1] if len(sys.argv) > 1 else ".", float(sys.argv[2]) if len(sys.argv) > 2 else 20.0)
