"""``community-gateway outbox``: the summary's text, the exit codes, and where the file is.

In-process (the CLI test in test_outbox_store.py runs a subprocess, which mutation
testing cannot see into)."""

from __future__ import annotations

import argparse
import json
import re
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
        out = capsys.readouterr().out
        assert out.startswith('{\n  "path": ')  # indented for a person, too
        summary = json.loads(out)
        assert summary["rows"] == 1 and summary["budget_bytes"] == 2 * 1024 * 1024
        assert summary["sinks"]["influxdb"]["lag_rows"] == 1
        assert summary["gateway_process"]["pid"] > 0  # this process holds the lock
        assert _outbox(args(config)) == 0
        assert "rows waiting: 1 " in capsys.readouterr().out
    finally:
        store.close()


def summary(**over) -> dict:
    # sizes just past a rounding point: a mega that is not 10**6 rounds the other way
    s = {"path": "/s/outbox.sqlite", "rows": 12345, "oldest_age_seconds": 119.4,
         "used_bytes": 2_550_001, "budget_bytes": 10_050_001, "file_bytes": 3_050_001,
         "dropped": 1500, "quarantined": 2000, "sinks": {}}
    return {**s, **over}


def test_the_summary_reads_as_a_few_lines() -> None:
    sinks = {"influxdb": {"cursor": 1000, "lag_rows": 2500, "oldest_unsent_age_seconds": 120.0,
                          "quarantined": 1234},
             "mqtt": {"cursor": 3500, "lag_rows": 0, "oldest_unsent_age_seconds": None,
                      "quarantined": 0}}
    proc = {"pid": 42, "write_bytes_per_hour": 1_235_001, "write_bytes": 7_650_001,
            "running_seconds": 7200.0}
    assert format_summary(summary(sinks=sinks, gateway_process=proc)).splitlines() == [
        "outbox /s/outbox.sqlite",
        "  rows waiting: 12,345   oldest: 119s ago",
        "  size: 2.6 MB used of a 10.1 MB budget (file 3.1 MB)",
        "  dropped for the budget: 1,500   quarantined: 2,000",
        "  gateway pid 42: 1.24 MB written to disk per hour (all files; 7.7 MB in 2.0 h)",
        "  sink influxdb: cursor 1,000, 2,500 rows behind, oldest unsent 2 min ago, quarantined 1,234",
        "  sink mqtt: cursor 3,500, up to date, quarantined 0",
    ]


def test_the_summary_says_when_no_gateway_runs_and_no_sink_is_known() -> None:
    lines = format_summary(summary(oldest_age_seconds=None, gateway_process=None)).splitlines()
    assert lines[1] == "  rows waiting: 12,345   oldest: -"
    assert lines[4:] == ["  no gateway running on this outbox (or its /proc not readable)",
                         "  no sinks recorded yet"]
    # no process line when the process was not looked up
    assert format_summary(summary()).splitlines()[4:] == ["  no sinks recorded yet"]


def test_ages_are_in_seconds_minutes_or_hours() -> None:
    from gateway.outbox.report import _age

    assert [_age(s) for s in (None, 0.4, 119.4, 120.0, 7199.0, 7200.0, 8101.0)] == [
        "-", "0s ago", "119s ago", "2 min ago", "120 min ago", "2.0 h ago", "2.3 h ago"]


def test_the_command_tells_why_it_has_nothing_to_show(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: {id: x}\noutbox: {max_mb: -1}\n")
    assert _outbox(args(bad)) == EXIT_CONFIG == 2
    assert "outbox.max_mb" in capsys.readouterr().err
    assert _outbox(args(site(tmp_path, "{store: memory}"))) == EXIT_NO_OUTBOX == 1
    assert "site.yaml: the outbox is kept in memory (outbox.store: memory); nothing to read" in \
        capsys.readouterr().err
    assert _outbox(args(site(tmp_path))) == EXIT_NO_OUTBOX  # no file yet
    assert "no such file" in capsys.readouterr().err


def test_the_parser_runs_the_command(tmp_path, capsys) -> None:
    from gateway.outbox.report import add_outbox_parser

    parser = argparse.ArgumentParser()
    add_outbox_parser(parser.add_subparsers())
    parsed = parser.parse_args(["outbox", "--json", str(site(tmp_path, "{store: memory}"))])
    assert parsed.json is True and parsed.handler(parsed) == EXIT_NO_OUTBOX
    assert parser.parse_args(["outbox", "x.yaml"]).json is False


def test_the_command_explains_itself_in_its_help() -> None:
    from gateway.outbox.report import add_outbox_parser

    parser = argparse.ArgumentParser(prog="community-gateway")
    sub = parser.add_subparsers()
    add_outbox_parser(sub)
    assert re.search(r"^ +outbox +show what waits in the site's outbox \(read-only\)$",
                     parser.format_help(), re.MULTILINE)
    text = " ".join(sub.choices["outbox"].format_help().split())
    assert ("Opens the site's outbox file read-only (also while the gateway runs) and prints "
            "its depth, the age of the oldest row, dropped and quarantined rows, and each "
            "sink's lag.") in text
    assert "config site config YAML file" in text and "--json print the numbers as JSON" in text
