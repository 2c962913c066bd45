"""The benchmark script runs: each benchmark once in quick mode, figures come out.

Nothing here judges speed or memory (the bench reports those, tests never assert
them); a missed target is not a failure. What must hold: the command exits 0,
every benchmark produces its figures, each with a number.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ["throughput", "latency", "modbus", "memory", "protocols", "drain", "fire_centre",
              "reconnect", "hub", "hub_console", "pi", "powercut"]

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_in_quick_mode(name: str, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", name, "--window", "0.5",
         "--memory-seconds", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    figures = [f for f in report["figures"] if f["bench"] == name]
    assert figures, proc.stdout
    for figure in figures:
        assert isinstance(figure["value"], (int, float)), figure
    # the table on stdout names every figure and the machine it ran on
    assert "python" in proc.stdout and "cpu" in proc.stdout
    for figure in figures:
        assert figure["name"] in proc.stdout


def test_unknown_benchmark_is_refused() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "--only", "nonsense"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
