"""Screenshot every page of the built site in headless Chromium, opened from `file://`.

    python -m mkdocs build --strict && python docs/screenshots.py [SITE] [OUT]

`SITE` defaults to `site/`, `OUT` to `site-screenshots/`: one PNG per page (the top
`--height` pixels), named after the page's path. The pages are opened from disk, as the
README says to open them, so a missing file, a directory URL or a formula left as raw TeX
shows in the images. The browser is Debian's `chromium` (`apt-get install chromium`), or any
Chromium on the PATH; as root it runs without its sandbox. Not a CI step: look at the images.
Also reports, per page, formulas MathJax did not typeset (a `mjx-merror` or `$$` left in the
page text, read from the DOM Chromium dumps).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
_PROSE = re.compile(r"<(script|style|pre|code|textarea)\b.*?</\1>", re.DOTALL | re.IGNORECASE)


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no Chromium found: apt-get install chromium")


def _flags(width: int, height: int) -> list[str]:
    flags = ["--headless", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}"]
    flags += ["--virtual-time-budget=30000", "--allow-file-access-from-files"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")
    return flags


def shoot(site: Path, out: Path, width: int = 1280, height: int = 2400) -> list[tuple[Path, str]]:
    """Screenshot every `*.html` page of `site` into `out`; returns `(png, problems)` per page."""
    browser = _browser()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for page in sorted(site.rglob("*.html")):
        if page.name == "404.html":
            continue
        rel = page.relative_to(site)
        png = out / (str(rel.with_suffix("")).replace(os.sep, "__") + ".png")
        url = page.resolve().as_uri()
        subprocess.run([browser, *_flags(width, height), f"--screenshot={png}", url], capture_output=True, timeout=120)
        dom = subprocess.run(
            [browser, *_flags(width, height), "--dump-dom", url], capture_output=True, text=True, timeout=120
        ).stdout
        problems = []
        if "mjx-merror" in dom:
            problems.append("MathJax error")
        text = _PROSE.sub("", dom)  # scripts, styles and code may show TeX delimiters as written
        if "$$" in text or "\\(" in text or "\\[" in text:
            problems.append("formulas left as TeX")
        results.append((png, ", ".join(problems) or "ok"))
        print(f"{png}: {results[-1][1]}", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", type=Path, default=Path("site"))
    parser.add_argument("out", nargs="?", type=Path, default=Path("site-screenshots"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args()
    results = shoot(args.site, args.out, args.width, args.height)
    return 0 if all(problems == "ok" for _, problems in results) else 1


if __name__ == "__main__":
    sys.exit(main())
