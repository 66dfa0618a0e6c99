"""Copy the benchmark tables in benchmarks/results/*.md into README.md.

Each table goes between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers, so
the README always shows the latest measured numbers, never hand-edited ones.

    .venv/bin/python benchmarks/update_readme.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for result in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        name = result.stem
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        if pattern.search(text):
            body = result.read_text().strip() + "\n"
            text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), text)
            print(f"README: updated {name}")
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, readme)


if __name__ == "__main__":
    main()
