"""examples/walkthrough.py runs top to bottom, at small sizes, as a new user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pandas", reason='pip install -e ".[export]"')

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_the_walkthrough_runs_top_to_bottom(tmp_path: Path) -> None:
    out = tmp_path / "walkthrough"
    small = ["--epochs", "2", "--trials", "2", "--seeds", "2", "--subset", "300", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "walkthrough.py"), *small],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("1. own loop: adaburst reaches test accuracy") for line in lines)
    assert any(line.startswith("2. compare: the report is") for line in lines)
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    # Part 3 read both optimizers' reruns out of the DataFrame: two seeds each.
    counts = [line.split() for line in lines if line.split()[:1] in (["adamw"], ["adaburst"])]
    assert sorted((row[0], row[-1]) for row in counts) == [("adaburst", "2"), ("adamw", "2")]
    assert (out / "walkthrough_curves.png").read_bytes().startswith(PNG_MAGIC)
