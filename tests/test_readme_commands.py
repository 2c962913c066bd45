"""The README's commands, run as written, from a fresh checkout's point of view.

They name the fixed ports of the README (5020, 8080, 1883, 8428), so they run in a
private network namespace (``unshare --net``, root only) with nothing but a loopback
interface: whatever listens on those ports on this machine is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Quick start / Configuration / "Running it on a Raspberry Pi", in the README's words.
# Waiting is on conditions: `tail --count` returns once it has seen that many lines.
SCRIPT = r"""
set -eu
ip link set lo up
community-gateway check configs/charging-site.yaml
community-gateway simulate cabinet --scenario overpower --tcp 127.0.0.1:5020 >"$OUT/sim.log" 2>&1 &
sim=$!
community-gateway run configs/charging-site.yaml >"$OUT/run.log" 2>&1 &
gw=$!
# the local API answers once the gateway has started (bounded: 300 tries)
for _ in $(seq 300); do
    community-gateway alarms list >/dev/null 2>&1 && break
    kill -0 "$gw"  # still running (set -e: stop here if it exited)
    sleep 0.2
done
timeout 60 community-gateway tail --kind ev_charging --count 4 >"$OUT/tail.txt"
timeout 60 community-gateway tail --alarms-only --count 1 >"$OUT/tail-alarms.txt"
community-gateway alarms list >"$OUT/alarms.txt"
kill -TERM "$gw"
rc=0; wait "$gw" || rc=$?
echo "gateway exit $rc" >"$OUT/exit.txt"
kill -TERM "$sim"; wait "$sim" || true
"""


@pytest.fixture
def netns() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip for a private network namespace")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --net is not allowed here: {probe.stderr.decode().strip()}")


def test_readme_run_tail_and_alarms_work_as_written(netns, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "OUT": str(tmp_path),
           "STATE_DIRECTORY": str(tmp_path / "state")}
    for name in ("INFLUX_TOKEN", "MQTT_PASSWORD", "GATEWAY_API_TOKEN"):
        env.pop(name, None)  # the README sets none of them
    run = subprocess.run(["unshare", "--net", "bash", "-c", SCRIPT], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=240)
    logs = {p.name: p.read_text() for p in tmp_path.glob("*.*") if p.is_file()}
    assert run.returncode == 0, (run.stdout, run.stderr, logs)
    assert "configs/charging-site.yaml: OK" in run.stdout
    assert (tmp_path / "exit.txt").read_text().strip() == "gateway exit 0", logs
    # state is kept per site id, and the start says where
    assert f"state in {tmp_path / 'state' / 'sunny-garden-b3'}" in logs["run.log"]
    assert "INFLUX_TOKEN" not in logs["run.log"]
    readings = logs["tail.txt"].splitlines()
    assert len(readings) == 4 and all("reading  charger-b3" in r for r in readings)
    assert "over power" in logs["tail-alarms.txt"], logs
    assert "over power" in logs["alarms.txt"] and "charger-b3" in logs["alarms.txt"], logs
