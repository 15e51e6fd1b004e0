"""What the library says about itself reads cleanly in the application's own logs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import logging, sys
    import posthog_logging
    {configure}
    client = posthog_logging.Client(
        "phc_diagnostics", host="http://127.0.0.1:9", debug=True, max_retries=1,
        shutdown_timeout=1,
    )
    client.capture("e", distinct_id="u")
    client.shutdown(1)
    """
)


def run(tmp_path: Path, configure: str) -> list[str]:
    """The script's stderr lines, with logging configured by ``configure``."""
    script = tmp_path / "app.py"
    script.write_text(SCRIPT.format(configure=configure))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def test_debug_lines_appear_once_where_the_application_logs(tmp_path: Path) -> None:
    """With ``debug=True`` and the application's own logging configured, each of the
    library's lines appears once, named once: no ``posthog_logging: posthog_logging:``."""
    lines = run(
        tmp_path,
        'logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s", '
        "stream=sys.stderr)",
    )
    ours = [line for line in lines if line.startswith("posthog_logging")]
    assert ours, lines
    assert not [line for line in ours if "posthog_logging: posthog_logging" in line]
    assert len(ours) == len(set(ours)), f"lines twice: {ours}"


def test_debug_lines_are_shown_without_logging_configured(tmp_path: Path) -> None:
    """With nothing configured, ``debug=True`` still shows the library's lines."""
    lines = run(tmp_path, "")
    assert any("retrying in" in line for line in lines), lines  # a DEBUG line
