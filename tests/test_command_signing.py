"""Signed operators' commands: the envelope, the documented test vector, what the verifier
refuses, its bounded replay cache and per-alarm rate limit (clock injected), the command
keys in the site config and in ``check``."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
import yaml

from gateway.alarms.commands import CommandError, parse_command
from gateway.alarms.signing import CommandRefused, CommandVerifier, mac_input, sign
from gateway.cli import main
from gateway.clock import FakeClock
from gateway.runtime.site import load_site
from gateway.errors import ConfigError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "alarms.md"

# The worked example of docs/alarms.md.
VECTOR_SECRET = "7f3c9a1e5b2d8f4a6c0e1b3d5f7a9c2e4b6d8f0a1c3e5a7b9d2f4a6c8e0b1d3f"
VECTOR_TOPIC = "community/b3/alarms/mwqx4hym-001/ack"
VECTOR_BODY = '{"by":"guard wang","note":"on my way"}'
VECTOR_ISSUED = 1796119200  # 2026-12-01T10:00:00Z
VECTOR_NONCE = "3f8a9c0d2b7e4f61a5c8d9e0f1a2b3c4"
VECTOR_SIG = "6c07e552b5df28cce6e0650a1ef9f6f53647a9a9e44710ed943d28e27773691d"
VECTOR_PAYLOAD = (
    '{"key":"hub-compound","issued_at":1796119200,"nonce":"3f8a9c0d2b7e4f61a5c8d9e0f1a2b3c4",'
    '"body":"{\\"by\\":\\"guard wang\\",\\"note\\":\\"on my way\\"}",'
    '"sig":"6c07e552b5df28cce6e0650a1ef9f6f53647a9a9e44710ed943d28e27773691d"}')

SECRET = "s" * 32
KEYS = {"hub": SECRET.encode(), "room": ("r" * 40).encode()}
TOPIC = "community/b3/alarms/a1/ack"


def test_the_documented_test_vector() -> None:
    payload = sign(VECTOR_TOPIC, VECTOR_BODY, key="hub-compound", secret=VECTOR_SECRET,
                   issued_at=VECTOR_ISSUED, nonce=VECTOR_NONCE)
    assert payload.decode() == VECTOR_PAYLOAD
    # As an outside client would do it, from the description alone.
    text = ("community-gateway command v1\n" + VECTOR_TOPIC + "\nhub-compound\n"
            + str(VECTOR_ISSUED) + "\n" + VECTOR_NONCE + "\n" + VECTOR_BODY)
    assert text.encode() == mac_input(VECTOR_TOPIC, "hub-compound", VECTOR_ISSUED, VECTOR_NONCE,
                                      VECTOR_BODY)
    assert hmac.new(VECTOR_SECRET.encode(), text.encode(), hashlib.sha256).hexdigest() == VECTOR_SIG
    docs = DOCS.read_text()
    for part in (VECTOR_SECRET, VECTOR_SIG, VECTOR_NONCE, str(VECTOR_ISSUED), VECTOR_PAYLOAD):
        assert part in docs, f"docs/alarms.md lost the example's {part!r}"
    verifier = CommandVerifier({"hub-compound": VECTOR_SECRET.encode()},
                               clock=FakeClock(VECTOR_ISSUED + 1))
    command = verifier.verify(VECTOR_TOPIC, "mwqx4hym-001", payload)
    assert (command.key, command.body) == ("hub-compound", VECTOR_BODY)


def verifier(clock: FakeClock, **kwargs) -> CommandVerifier:
    return CommandVerifier(KEYS, clock=clock, **kwargs)


def signed(clock: FakeClock, body: dict | str = '{"by":"wang"}', *, topic: str = TOPIC,
           key: str = "hub", secret: str = SECRET, **kwargs) -> bytes:
    return sign(topic, body, key=key, secret=secret, clock=clock, **kwargs)


def refusal(v: CommandVerifier, payload: bytes, topic: str = TOPIC) -> CommandRefused:
    with pytest.raises(CommandRefused) as info:
        v.verify(topic, topic.split("/")[3], payload)
    return info.value


def test_a_good_command_is_taken_once() -> None:
    clock = FakeClock()
    v = verifier(clock)
    payload = signed(clock)
    command = v.verify(TOPIC, "a1", payload)
    assert command.key == "hub" and json.loads(command.body) == {"by": "wang"}
    refused = refusal(v, payload)
    assert refused.status == 401 and "replayed" in refused.detail


@pytest.mark.parametrize("payload, status, words", [
    (b'{"by": "guard wang"}', 401, "unsigned"),
    (b"not json", 400, "not JSON"),
    (b"[1, 2]", 400, "signed command"),
    (b'{"key": "hub", "sig": "00"}', 400, "missing"),
    (json.dumps({"key": "hub", "issued_at": "now", "nonce": "n", "body": {}, "sig": "x",
                 "extra": 1}).encode(), 400, "unknown keys"),
    (json.dumps({"key": "hub", "issued_at": True, "nonce": "short", "body": {}, "sig": "x"}).encode(),
     400, "issued_at: Unix seconds, an integer; nonce: 16 to 64"),
])
def test_malformed_and_unsigned_commands_are_refused(payload, status, words) -> None:
    refused = refusal(verifier(FakeClock()), payload)
    assert refused.status == status and words in refused.detail, refused.detail


def test_forged_and_misdirected_commands_are_refused() -> None:
    clock = FakeClock()
    v = verifier(clock)
    assert "bad signature" in refusal(v, signed(clock, secret="x" * 32)).detail
    assert "unknown key 'intruder'" in refusal(v, signed(clock, key="intruder")).detail
    # the room's key signing as the hub
    assert "bad signature" in refusal(v, signed(clock, key="hub", secret="r" * 40)).detail
    # a good signature moved to another alarm or another command
    good = signed(clock)
    assert "bad signature" in refusal(v, good, "community/b3/alarms/a2/ack").detail
    assert "bad signature" in refusal(v, good, "community/b3/alarms/a1/reset").detail
    # a body changed in flight
    envelope = json.loads(good)
    envelope["body"] = '{"by":"someone else"}'
    assert "bad signature" in refusal(v, json.dumps(envelope).encode()).detail
    assert v.tracked == 0  # nothing unauthenticated is remembered


def test_stale_and_future_commands_are_refused() -> None:
    clock = FakeClock()
    v = verifier(clock)
    now = int(clock.time())
    assert "stale" in refusal(v, signed(clock, issued_at=now - 61)).detail
    assert "future" in refusal(v, signed(clock, issued_at=now + 6)).detail
    v.verify(TOPIC, "a1", signed(clock, issued_at=now - 60))
    v.verify(TOPIC, "a1", signed(clock, issued_at=now + 5))  # a sender's clock a little ahead


def test_the_replay_cache_holds_only_what_could_still_be_fresh() -> None:
    clock = FakeClock()
    v = verifier(clock, per_alarm_per_minute=1000)
    old = signed(clock)
    v.verify(TOPIC, "a1", old)
    for _ in range(30):
        clock.advance(1)
        v.verify(TOPIC, "a1", signed(clock))
    assert v.tracked == 31
    clock.advance(31)  # the first command is past its 60 s, the rest are not
    v.verify(TOPIC, "a1", signed(clock))
    assert v.tracked == 31
    assert "stale" in refusal(v, old).detail  # forgotten, and still refused
    clock.advance(61)
    v.verify(TOPIC, "a1", signed(clock))
    assert v.tracked == 1


def test_past_its_bound_the_cache_refuses_rather_than_forgets() -> None:
    clock = FakeClock()
    v = verifier(clock, max_tracked=3, per_alarm_per_minute=100)
    for i in range(3):
        v.verify(TOPIC, "a1", signed(clock))
    refused = refusal(v, signed(clock))
    assert refused.status == 429 and "too many commands" in refused.detail
    clock.advance(61)
    v.verify(TOPIC, "a1", signed(clock))


def test_commands_are_rate_limited_per_alarm() -> None:
    clock = FakeClock()
    v = verifier(clock, per_alarm_per_minute=3)
    other = "community/b3/alarms/a2/ack"
    for _ in range(3):
        v.verify(TOPIC, "a1", signed(clock))
        clock.advance(1)
    refused = refusal(v, signed(clock))
    assert refused.status == 429 and "at most 3 commands per alarm per minute" in refused.detail
    v.verify(other, "a2", signed(clock, topic=other))  # another alarm is not held back
    # strangers cannot use up an alarm's allowance
    clock.advance(58)
    for _ in range(10):
        refusal(v, signed(clock, secret="x" * 32))
    v.verify(TOPIC, "a1", signed(clock))  # the first of the three is a minute old now


def test_sign_refuses_what_would_make_the_input_ambiguous() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="newline"):
        signed(clock, topic="community/b3/alarms/a1\n/ack")
    with pytest.raises(ValueError, match="key name"):
        signed(clock, key="hub\nroom")
    assert "holds a newline" in refusal(verifier(clock), signed(clock), TOPIC + "\n").detail


def test_the_key_is_who_did_it_and_a_typed_name_goes_with_it() -> None:
    assert parse_command("ack", "a1", '{"by": "guard wang"}', via="hub").by == "guard wang via hub"
    assert parse_command("ack", "a1", "{}", via="hub").by == "hub"
    assert parse_command("shelve", "a1", {"minutes": 5}, via="hub").by == "hub"
    with pytest.raises(CommandError, match="by"):  # unsigned paths (HTTP) still need a name
        parse_command("ack", "a1", "{}")


# -- the site config ------------------------------------------------------------------


def site(tmp_path: Path, commands: object) -> Path:
    path = tmp_path / "site.yaml"
    raw = {"site": {"id": "b3"}, "state_dir": str(tmp_path / "state"),
           "mqtt": {"host": "127.0.0.1", "commands": commands}}
    path.write_text(yaml.safe_dump(raw))
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_site(path)
    return str(info.value)


def test_commands_are_off_unless_configured(tmp_path) -> None:
    path = site(tmp_path, None)
    assert load_site(path).config.mqtt.commands is None


def test_command_keys_are_checked(tmp_path) -> None:
    assert "mqtt.commands" in config_error(site(tmp_path, {"enabled": True}))
    assert "at least one entry in 'keys'" in config_error(site(tmp_path, {"keys": []}))
    twice = {"keys": [{"name": "hub", "secret": {"env": "A"}}, {"name": "hub", "secret": {"env": "B"}}]}
    assert "repeated: hub" in config_error(site(tmp_path, twice))
    inline = {"keys": [{"name": "hub", "secret": "0123456789abcdef0123456789abcdef"}]}
    error = config_error(site(tmp_path, inline))
    assert "mqtt.commands.keys[0].secret" in error and "0123456789abcdef" not in error
    assert "mqtt.commands.keys[0].name" in config_error(
        site(tmp_path, {"keys": [{"name": "hub room", "secret": {"env": "A"}}]}))
    assert load_site(site(tmp_path, {"enabled": False})).config.mqtt.commands.enabled is False


def test_check_refuses_a_short_command_key(tmp_path, monkeypatch, capsys) -> None:
    path = site(tmp_path, {"keys": [{"name": "hub", "secret": {"env": "TEST_CMD_KEY"}}]})
    monkeypatch.setenv("TEST_CMD_KEY", "too-short")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "mqtt.commands.keys[0].secret" in err and "at least 32 characters" in err
    assert "too-short" not in err
    monkeypatch.setenv("TEST_CMD_KEY", "k" * 32)
    assert main(["check", str(path)]) == 0


def test_a_short_command_key_stops_the_gateway_before_it_starts(tmp_path, monkeypatch) -> None:
    from gateway.runtime.app import Gateway

    path = site(tmp_path, {"keys": [{"name": "hub", "secret": {"env": "TEST_CMD_KEY"}}]})
    monkeypatch.setenv("TEST_CMD_KEY", "too-short")
    with pytest.raises(ConfigError, match=r"mqtt\.commands\.keys\[0\]\.secret"):
        Gateway(load_site(path))
    monkeypatch.setenv("TEST_CMD_KEY", "k" * 32)
    assert Gateway(load_site(path)).mqtt.commands.key_names == ["hub"]


def test_sign_command_prints_a_payload_the_gateway_takes(monkeypatch, capsys) -> None:
    monkeypatch.setenv("TEST_SIGN_KEY", SECRET)
    assert main(["sign-command", "shelve", "a1", "--site", "b3", "--key", "hub",
                 "--secret-env", "TEST_SIGN_KEY", "--by", "wang", "--minutes", "30"]) == 0
    payload = capsys.readouterr().out.strip().encode()
    command = CommandVerifier(KEYS, clock=FakeClock(time.time())).verify(
        "community/b3/alarms/a1/shelve", "a1", payload)
    assert command.key == "hub" and json.loads(command.body) == {"by": "wang", "minutes": 30.0}
    monkeypatch.delenv("TEST_SIGN_KEY")
    assert main(["sign-command", "ack", "a1", "--site", "b3", "--key", "hub",
                 "--secret-env", "TEST_SIGN_KEY"]) == 1
    assert "no secret" in capsys.readouterr().err


def test_the_documented_commands_section_loads(tmp_path) -> None:
    text = DOCS.read_text(encoding="utf-8")
    block = text[text.index("### Signed commands over MQTT"):].split("```yaml\n", 1)[1]
    raw = {"site": {"id": "b3"}, "state_dir": str(tmp_path / "state"),
           **yaml.safe_load(block.split("```", 1)[0])}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    commands = load_site(path).config.mqtt.commands
    assert commands.enabled and [k.name for k in commands.keys] == ["hub-compound"]
    assert commands.max_per_alarm_per_minute == 10
