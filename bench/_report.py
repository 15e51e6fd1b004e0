"""What the benchmark scripts share for reporting: a markdown table, the machine, and
writing a run's figures into a docs page between markers."""

from __future__ import annotations

import os
import pathlib
import platform
from typing import Any

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def table(rows: list[dict[str, Any]]) -> str:
    """Rows of one shape as a markdown table, headed by the first row's keys."""

    def cell(value: Any) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(row[k]) for k in head) + " |" for row in rows]
    return "\n".join(lines)


def cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine() -> str:
    """The interpreter and machine, in a few words."""
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {cpus()} CPUs"
    )


def write_between_markers(page: str, marker: str, text: str) -> None:
    """Replace what lies between ``<!-- marker -->`` and ``<!-- /marker -->`` in
    ``docs/page`` with ``text``."""
    path = DOCS / page
    doc = path.read_text()
    begin, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    before, found, rest = doc.partition(begin)
    if not found or end not in rest:
        raise SystemExit(f"{path} has no {begin} ... {end} markers")
    _, _, after = rest.partition(end)
    path.write_text(f"{before}{begin}\n{text}\n{end}{after}")
