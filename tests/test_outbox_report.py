"""``community-gateway outbox``: the summary's text, the exit codes, and where the file is.

In-process (the CLI test in test_outbox_store.py runs a subprocess, which mutation
testing cannot see into)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gateway.config.models import GatewayConfig
from gateway.outbox import READING, SqliteOutbox
from gateway.outbox.location import outbox_path
from gateway.outbox.report import EXIT_CONFIG, EXIT_NO_OUTBOX, _outbox, format_summary


def site(tmp_path: Path, outbox: str = "{max_mb: 2}") -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(f"site: {{id: rep}}\nstate_dir: state\noutbox: {outbox}\n")
    return path


def args(config: Path, as_json: bool = False) -> argparse.Namespace:
    return argparse.Namespace(config=str(config), json=as_json)


def test_the_outbox_is_where_the_config_says_relative_to_the_config_file(tmp_path) -> None:
    folder = tmp_path / "sites"
    default = GatewayConfig.model_validate({"site": {"id": "a"}, "state_dir": "st"})
    assert outbox_path(default, folder / "a.yaml") == folder / "st" / "outbox.sqlite"
    absolute = GatewayConfig.model_validate({"site": {"id": "a"}, "state_dir": str(tmp_path / "st")})
    assert outbox_path(absolute, folder / "a.yaml") == tmp_path / "st" / "outbox.sqlite"
    given = GatewayConfig.model_validate({"site": {"id": "a"}, "state_dir": "st",
                                          "outbox": {"path": "q/o.db"}})
    assert outbox_path(given, folder / "a.yaml") == folder / "q" / "o.db"
    given_abs = GatewayConfig.model_validate({"site": {"id": "a"}, "state_dir": "st",
                                              "outbox": {"path": str(tmp_path / "o.db")}})
    assert outbox_path(given_abs, folder / "a.yaml") == tmp_path / "o.db"


def test_the_command_reads_the_outbox_and_prints_json(tmp_path, capsys) -> None:
    config = site(tmp_path)
    store = SqliteOutbox(path=tmp_path / "state" / "outbox.sqlite", budget_bytes=2 << 20)
    store.open(["influxdb"])
    store.append([(READING, "d1", 1.0, "m v=1 1", None)])
    try:
        assert _outbox(args(config, as_json=True)) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["rows"] == 1 and summary["budget_bytes"] == 2 * 1024 * 1024
        assert summary["sinks"]["influxdb"]["lag_rows"] == 1
        assert summary["gateway_process"]["pid"] > 0  # this process holds the lock
        assert _outbox(args(config)) == 0
        assert "rows waiting: 1 " in capsys.readouterr().out
    finally:
        store.close()
