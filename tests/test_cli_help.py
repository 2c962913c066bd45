"""`--help` of the commands an installer starts with says what they do."""

from __future__ import annotations

import subprocess
import sys


def help_of(*command: str) -> str:
    run = subprocess.run([sys.executable, "-m", "gateway", *command, "--help"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return " ".join(run.stdout.split())  # argparse wraps lines


def test_demo_help_describes_every_simulated_kind() -> None:
    text = help_of("demo")
    for part in ("charging cabinet", "fall-detection radar", "access terminal",
                 "thrown-object camera", "console", "no open alarms"):
        assert part in text, part


def test_run_help_has_a_description() -> None:
    text = help_of("run")
    assert "SIGHUP" in text and "state_dir" in text and "site id" in text


def test_check_help_gives_its_exit_statuses() -> None:
    text = help_of("check")
    assert "0 the gateway would start" in text and "1 the file is valid" in text
