"""mkdocs hooks: MathJax bundled into the site, and the benchmarks page built from the results.

**MathJax, offline.** The site must typeset its formulas without a network: the MathJax
files come from a Python package of the docs extra (`django-static-mathjax`, which ships
MathJax 3 as `mathjax/static/mathjax/es5/`) and are added to the site under
`javascripts/mathjax/`. The SVG output is used: it needs no web fonts, which browsers do
not load from `file://` pages.

**Benchmarks.** Each `benchmarks/results/<name>.json` becomes a section: what the script
measures (the first paragraph of `benchmarks/<name>.py`'s docstring), the markdown table the
script wrote beside it (`<name>.md`) when there is one, otherwise a table per list of
records; the figures `<name>*.png`; and the settings of the run, folded.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

from mkdocs.structure.files import File

MARKER = "<!-- benchmark-tables -->"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: Where the results' figures are served, relative to the site root.
FIGURES = "benchmark-figures"
#: What of MathJax's `es5/` folder the site needs (`tex-svg.js` loads the rest on demand).
MATHJAX_PARTS = ("tex-svg.js", "input/tex/extensions", "ui", "a11y", "adaptors")
#: The result files a script other than `benchmarks/<name>.py` writes.
SCRIPTS = {"solver_sizes": "solvers"}
#: Lists of records with more rows than this are folded.
FOLD_ROWS = 16


def _mathjax_root() -> Path:
    spec = importlib.util.find_spec("mathjax")
    root = Path(spec.origin).parent / "static" / "mathjax" / "es5" if spec and spec.origin else None
    if root is None or not (root / "tex-svg.js").is_file():
        raise RuntimeError(
            "the documentation bundles MathJax from the docs extra: pip install -e '.[docs]' "
            "(django-static-mathjax ships MathJax 3)"
        )
    return root


def on_files(files, config):
    root = _mathjax_root()
    for part in MATHJAX_PARTS:
        path = root / part
        for source in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            uri = f"javascripts/mathjax/{source.relative_to(root).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(source)))
    for figure in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"{FIGURES}/{figure.name}", abs_src_path=str(figure)))
    return files


# --- the benchmarks page ----------------------------------------------------------------------


def _cell(x) -> str:
    if isinstance(x, bool) or x is None:
        return {True: "yes", False: "no", None: ""}[x]
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, list) and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in x):
        shown = ", ".join(_cell(e) for e in x[:4])
        return f"[{shown}{', ...' if len(x) > 4 else ''}]"
    if isinstance(x, (list, dict)):
        text = json.dumps(x)
        return (text if len(text) <= 60 else text[:57] + "...").replace("|", "\\|")
    return str(x).replace("|", "\\|").replace("\n", " ")


def _header(key: str) -> str:
    """`first_call_s` -> `first call (s)`: a column name a person reads."""
    for suffix, unit in (("_seconds", "s"), ("_s", "s"), ("_ms", "ms"), ("_us", "us")):
        if key.endswith(suffix):
            return f"{key[: -len(suffix)].replace('_', ' ')} ({unit})"
    return key.replace("_", " ")


def _table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(_header(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _statistic(d: dict):
    """A summary a person reads for a dict of statistics (`mean`, `std`, `n`; a fit's `r`), else None."""
    if {"mean", "std"} <= d.keys() and all(isinstance(d[k], (int, float)) for k in ("mean", "std")):
        return f"{d['mean']:.3g} ± {d['std']:.2g}" + (f" (n = {d['n']})" if "n" in d else "")
    if "r" in d and isinstance(d["r"], (int, float)):
        return f"r = {d['r']:.3g}" + (f" at t = {d['t']:.4g}" if isinstance(d.get("t"), (int, float)) else "")
    return None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and _statistic(v) is not None:
            out[f"{prefix}{k}"] = _statistic(v)
        elif isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _transposed(data: dict) -> str:
    """A dict of records (e.g. one per data set) as one table: a row per quantity, a column per record."""
    flat = {name: _flatten(record) for name, record in data.items()}
    rows = list(dict.fromkeys(k for record in flat.values() for k in record))
    return _table([{"quantity": _header(r), **{name: flat[name].get(r) for name in flat}} for r in rows])


def _is_records(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)


def _is_record_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(r, dict) for r in value.values())


def _fold(title: str, body: str, kind: str = "note") -> str:
    """A collapsed admonition (pymdownx.details), the body indented under it."""
    return f'??? {kind} "{title}"\n\n' + "\n".join(("    " + line) if line else "" for line in body.splitlines()) + "\n"


def _results_tables(data: dict) -> list[str]:
    """The lists of records as tables (long ones folded), nested dicts of records transposed."""
    out = []
    for key, value in data.items():
        if _is_records(value):
            table = _table(value)
            title = f"{_header(key)} ({len(value)} rows)"
            out.append(
                _fold(title, table, "abstract") if len(value) > FOLD_ROWS else f"**{_header(key)}**\n\n{table}\n"
            )
        elif _is_record_dict(value):
            out.append(f"**{_header(key)}**\n\n{_transposed(value)}\n")
    return out


def _settings(data: dict) -> str:
    """Every other value (run settings, machine, scalar results) as one `setting | value` table."""
    flat = {}
    for key, value in data.items():
        if _is_records(value) or _is_record_dict(value):
            continue
        flat.update(_flatten({key: value}) if isinstance(value, dict) else {key: value})
    if not flat:
        return ""
    return _table([{"setting": _header(k), "value": v} for k, v in flat.items()])


def _summary(stem: str) -> str:
    script = ROOT / "benchmarks" / f"{SCRIPTS.get(stem, stem)}.py"
    if not script.is_file():
        return ""
    doc = ast.get_docstring(ast.parse(script.read_text())) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    return f"{first} (`python benchmarks/{script.name}`)"


def _title(stem: str) -> str:
    return stem.replace("_", " ").capitalize()


def _section(path: Path) -> str:
    stem, data = path.stem, json.loads(path.read_text())
    parts = [f"## {_title(stem)}", ""]
    summary = _summary(stem)
    if summary:
        parts += [summary, ""]
    table = path.with_suffix(".md")
    if table.exists():  # the script's own table: headings demoted below this section's
        lines = table.read_text().splitlines()
        parts += [("###" + line[1:]) if line.startswith("# ") else line for line in lines] + [""]
    else:
        parts += _results_tables(data)
    for figure in sorted(RESULTS.glob(f"{stem}*.png")):
        caption = _title(figure.stem)
        parts += [f"![{caption}]({FIGURES}/{figure.name})", "", f"*{caption}.*", ""]
    settings = _settings(data)
    extra = _results_tables(data) if table.exists() else []
    if settings or extra:
        body = "\n\n".join([settings, *extra]) if settings else "\n\n".join(extra)
        parts.append(_fold(f"Settings and raw numbers: benchmarks/results/{path.name}", body))
    return "\n".join(parts)


def render(results: Path = RESULTS) -> str:
    return "\n".join(_section(path) for path in sorted(results.glob("*.json")))


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, render())
    return markdown
