"""The README's "Sensing facilities" table, as written: every example config it names
passes ``community-gateway check``, every simulator command parses with the CLI's own
arguments (sub-command, options, scenario names), and no simulator or example site that
names a simulator is left out of the table."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import _parser

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ROW = re.compile(r"^\| (?P<kind>[^|]+) \| \[(?P<config>configs/[\w.-]+\.yaml)\]\((?P=config)\) "
                 r"\| `(?P<command>community-gateway simulate [^`]+)` \|$")
SECRET_ENV = re.compile(r"\{env: (\w+)\}")


def section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Sensing facilities\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def rows() -> list[dict[str, str]]:
    found = [m.groupdict() for m in map(ROW.match, section().splitlines()) if m]
    assert found, "no table rows in the README's Sensing facilities section"
    return found


def test_every_kind_is_in_the_table() -> None:
    kinds = " ".join(r["kind"].lower() for r in rows())
    for kind in ("charging cabinet", "door access", "fall radar", "thrown-object camera",
                 "perimeter", "key areas", "one-key", "alarm panel", "dc-09", "smoke detector",
                 "fire water", "heart-rate radar", "device faults", "fire remote-monitoring centre"):
        assert kind in kinds, kind
    # every simulator the CLI has is in the table
    simulate = next(a for a in _parser()._subparsers._group_actions[0].choices.items()
                    if a[0] == "simulate")[1]
    simulators = set(simulate._subparsers._group_actions[0].choices)
    listed = {shlex.split(r["command"])[2] for r in rows()}
    assert simulators == listed, simulators ^ listed
    # every example site whose header says how to simulate it is in the table
    configs = {r["config"] for r in rows()}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if "community-gateway simulate" in path.read_text(encoding="utf-8").split("\nsite:")[0]:
            assert f"configs/{path.name}" in configs, path.name


@pytest.mark.parametrize("command", sorted({r["command"] for r in rows()}))
def test_each_simulator_command_parses_as_written(command: str) -> None:
    args = _parser().parse_args(shlex.split(command)[1:])  # argparse exits on a bad one
    assert args.command == "simulate"


def test_each_example_config_passes_check() -> None:
    configs = sorted({r["config"] for r in rows()})
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    for config in configs:  # the secrets the files name, as an installer would set them
        for name in SECRET_ENV.findall((REPO / config).read_text(encoding="utf-8")):
            env[name] = "readme-check-secret-0123456789abcdef"
    for config in configs:
        run = subprocess.run(["community-gateway", "check", config], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)
        if run.returncode == 1:  # valid; only the console's users file is made at install
            problems = run.stderr.splitlines()[1:]
            assert f"{config}: valid" in run.stderr and len(problems) == 1 \
                and "users file not found" in problems[0], (config, run.stderr)
            continue
        assert run.returncode == 0, (config, run.stdout, run.stderr)
        assert f"{config}: OK" in run.stdout, run.stdout
