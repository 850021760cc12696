"""mkdocs hook: fill the benchmarks page from `benchmarks/results/*.json` (and its `.md` tables).

Each JSON file becomes a section: its scalar settings as a list, every list of records as
a table (numbers to four significant digits). A markdown table committed beside a JSON file
(same stem) is shown as written by its script.
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER = "<!-- benchmark-tables -->"
RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def _cell(x) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, list) and all(isinstance(e, (int, float)) for e in x):
        shown = ", ".join(_cell(e) for e in x[:4])
        return f"[{shown}{', ...' if len(x) > 4 else ''}]"
    if isinstance(x, (list, dict)):
        text = json.dumps(x)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(x).replace("|", "\\|")


def _table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _transposed(data: dict) -> str:
    """A dict of records (e.g. one per data set) as one table: a row per quantity, a column per record."""
    flat = {name: _flatten(record) for name, record in data.items()}
    rows = list(dict.fromkeys(k for record in flat.values() for k in record))
    return _table([{"quantity": r, **{name: flat[name].get(r, "") for name in flat}} for r in rows])


def _section(data, title: str, depth: int) -> list[str]:
    """Scalars as a bullet list, lists of records as tables, nested dicts as sub-sections."""
    out, scalars = [], []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            out += [f"{'#' * (depth + 1)} {title}: {key}", "", _table(value), ""]
        elif isinstance(value, dict) and value and all(isinstance(r, dict) for r in value.values()):
            out += [f"{'#' * (depth + 1)} {title}: {key}", "", _transposed(value), ""]
        elif isinstance(value, dict) and depth < 4:
            out += _section(value, f"{title}: {key}", depth + 1)
        else:
            scalars.append(f"- **{key}**: {_cell(value)}")
    return ([f"{'#' * depth} {title}", "", *scalars, ""] if scalars else []) + out


def render(results: Path = RESULTS) -> str:
    parts = []
    for path in sorted(results.glob("*.json")):
        parts.append(f"## {path.stem.replace('_', ' ').capitalize()}\n\nFrom `benchmarks/results/{path.name}`.\n")
        table = path.with_suffix(".md")
        if table.exists():
            parts.append(
                "\n".join(
                    line.replace("# ", "### ", 1) if line.startswith("# ") else line
                    for line in table.read_text().splitlines()
                )
                + "\n"
            )
        parts.append("\n".join(_section(json.loads(path.read_text()), "Data", 3)))
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, render())
    return markdown
