"""The benchmark suite runs (tiny sizes); it asserts no timing, only that it reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_bench_smoke_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    for title in ("## Start-up", "## Probe overhead", "## Backward overhead", "## End to end", "## Sweep executors",
                  "## Peak memory"):
        assert title in text
    assert "heavy modules imported by `initlab --help`: []" in text
