"""Benchmark scripts share BENCHMARKS.md: each rewrites only its own marked section."""

from __future__ import annotations

import platform
import re
from datetime import date
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEach section is written by the script it names; rerun that script to remake it.\n"


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {date.today()}"


def publish(name: str, markdown: str, write: bool = True) -> None:
    """A benchmark's table: into its section of BENCHMARKS.md (and printed), or only printed (--no-write)."""
    if write:
        write_section(name, markdown)
    else:
        print(markdown)


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the block between <!-- BEGIN name --> and <!-- END name -->."""
    text = path.read_text() if path.exists() else HEADER
    block = f"<!-- BEGIN {name} -->\n{markdown.strip()}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    print(markdown)
