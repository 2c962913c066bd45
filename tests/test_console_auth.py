"""Console auth without a browser: password hashes, the users file, sessions, CSRF, roles, the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from pathlib import Path

import pytest
from http_support import AppClient

from console_support import OPERATOR, VIEWER, write_users
from gateway.runtime.app import Gateway
from gateway.cli import main as cli_main
from gateway.clock import FakeClock
from gateway.runtime.site import load_site
from gateway.console import add_console_routes
from gateway.console.passwords import hash_password, verify_password
from gateway.console.sessions import MAX_SESSIONS, SessionStore
from gateway.console.throttle import LoginThrottle
from gateway.console.users import User, UsersFile
from gateway.operations.http_app import App
from gateway.errors import ConfigError
from harness import write_site

# -- password hashes -----------------------------------------------------------------


def test_password_hash_verifies_only_the_right_password() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("", stored)
    assert hash_password("correct horse") != stored  # a fresh salt each time


@pytest.mark.parametrize("stored", [
    "", "plain-text-password", "scrypt$16384$8$1$only-five", "bcrypt$16384$8$1$AAAA$BBBB",
    "scrypt$x$8$1$AAAA$BBBB", "scrypt$16384$8$1$!!!$BBBB", "scrypt$1073741824$8$1$AAAA$BBBB",
])
def test_a_malformed_hash_never_matches(stored: str) -> None:
    assert verify_password("anything", stored) is False


def test_short_passwords_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        hash_password("short")


# -- the users file --------------------------------------------------------------------


def test_users_file_round_trip_is_private_and_holds_hashes_only(tmp_path: Path) -> None:
    path = write_users(tmp_path / "users.yaml")
    assert os.stat(path).st_mode & 0o777 == 0o600
    text = path.read_text()
    assert OPERATOR[1] not in text and VIEWER[1] not in text
    users = UsersFile(path=path).load()
    assert {n: u.role for n, u in users.items()} == {OPERATOR[0]: "operator", VIEWER[0]: "viewer"}
    assert users[OPERATOR[0]].can_act and not users[VIEWER[0]].can_act
    assert verify_password(OPERATOR[1], users[OPERATOR[0]].password_hash)


def test_users_file_refuses_plain_passwords_and_unknown_roles(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users:\n  wang: {role: operator, password: hunter22}\n"
                    "  li: {role: root, password: 'scrypt$16384$8$1$AAAA$BBBB'}\n")
    with pytest.raises(ConfigError) as err:
        UsersFile(path=path).load()
    keys = [key for key, _ in err.value.problems]
    assert "users.wang.password" in keys and "users.li.role" in keys
    assert "never a plain password" in str(err.value)
    with pytest.raises(ConfigError, match="user add"):
        UsersFile(path=tmp_path / "missing.yaml").load()


def test_users_file_is_reread_when_it_changes_and_a_broken_edit_keeps_the_last_good_copy(
        tmp_path: Path) -> None:
    path = write_users(tmp_path / "users.yaml")
    users = UsersFile(path=path)
    assert users.get(OPERATOR[0]) is not None and users.get("li") is None
    UsersFile(path=path).add("li", "viewer", hash_password("li-password"))
    assert users.get("li").role == "viewer"
    path.write_text("users: [this is: not valid")
    assert users.get("li") is not None  # the last good copy
    UsersFile(path=tmp_path / "users.yaml").save({"wang": User("wang", "viewer", hash_password("x" * 8))})
    assert users.get("li") is None and users.get("wang").role == "viewer"


def test_user_cli_adds_lists_and_removes(tmp_path: Path, monkeypatch, capsys) -> None:
    site = write_site(tmp_path, {"site": {"id": "s1"}, "console": {"users_file": "ops/users.yaml"}})
    monkeypatch.setattr("sys.stdin", io.StringIO("a-good-password\n"))
    assert cli_main(["user", "add", "wang", "--role", "operator", "-c", str(site),
                     "--password-stdin"]) == 0
    users_file = tmp_path / "ops" / "users.yaml"
    assert verify_password("a-good-password", UsersFile(path=users_file).load()["wang"].password_hash)
    monkeypatch.setattr("sys.stdin", io.StringIO("another-password\n"))
    assert cli_main(["user", "add", "wang", "--role", "viewer", "-f", str(users_file),
                     "--password-stdin"]) == 2
    assert "exists" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli_main(["user", "add", "li", "--role", "viewer", "-f", str(users_file),
                     "--password-stdin"]) == 2
    assert "at least 8" in capsys.readouterr().err
    assert cli_main(["user", "list", "-f", str(users_file)]) == 0
    assert capsys.readouterr().out.split() == ["wang", "operator"]
    assert cli_main(["user", "remove", "wang", "-f", str(users_file)]) == 0
    assert UsersFile(path=users_file).load() == {}
    assert cli_main(["user", "remove", "wang", "-f", str(users_file)]) == 2


# -- sessions and the login throttle -----------------------------------------------------


async def test_sessions_expire_after_idle_time_and_survive_a_restart_without_raw_tokens(
        tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "sessions.json"
    store = SessionStore(minutes=10, clock=clock, path=path)
    token, session = await store.create(User("wang", "operator", "h"))
    assert session.csrf and session.csrf != token
    clock.advance(9 * 60)
    assert store.get(token) is session  # used: the idle clock starts again
    await store.persist()
    assert token not in path.read_text() and os.stat(path).st_mode & 0o777 == 0o600
    restarted = SessionStore(minutes=10, clock=clock, path=path)
    restarted.load()
    again = restarted.get(token)
    assert again is not None and again.user == "wang" and again.csrf == session.csrf
    clock.advance(10 * 60)
    assert restarted.get(token) is None
    assert restarted.get("forged") is None and restarted.get(None) is None


async def test_logout_ends_a_session_and_their_number_is_bounded() -> None:
    clock = FakeClock()
    store = SessionStore(minutes=10, clock=clock)
    token, _ = await store.create(User("wang", "operator", "h"))
    await store.drop(token)
    assert store.get(token) is None
    first, _ = await store.create(User("wang", "operator", "h"))
    for _ in range(MAX_SESSIONS):
        clock.advance(0.001)
        await store.create(User("zhao", "viewer", "h"))
    assert len(store) == MAX_SESSIONS and store.get(first) is None  # the oldest went


def test_login_throttle_counts_attempts_before_checking_and_delays_grow() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock, account_free=3, address_free=10, base_delay=1, max_delay=8)
    who = {"account": "wang", "address": "10.0.0.1"}
    for _ in range(3):  # three attempts under way at once: none checked yet, all counted
        assert throttle.begin(**who) == 0
    assert throttle.begin(**who) == pytest.approx(1)  # the fourth waits, uncounted
    clock.advance(5)
    assert throttle.begin(**who) > 0  # and goes on waiting while those three are checked
    assert throttle.begin(account="li", address="10.0.0.1") == 0  # another name is free
    for _ in range(3):
        throttle.failed(**who)
    delays = []
    for _ in range(5):
        clock.advance(throttle.wait_for(**who))
        assert throttle.begin(**who) == 0
        throttle.failed(**who)
        delays.append(throttle.wait_for(**who))
    assert delays == [2, 4, 8, 8, 8]  # growing, capped: never a lock
    throttle.succeeded(**who)
    assert throttle.wait_for(**who) == 0


def test_login_throttle_table_is_bounded_and_never_forgets_the_account_under_attack() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock, account_free=5, max_tracked=1000)
    for _ in range(8):
        clock.advance(throttle.wait_for(account="wang", address="a"))
        throttle.begin(account="wang", address="a")
        throttle.failed(account="wang", address="a")
    locked = throttle.wait_for(account="wang", address="b")
    assert locked > 0
    for i in range(20 * 1000):  # a sweep of made-up names and addresses
        clock.advance(0.0001)
        guess = {"account": f"guess-{i}", "address": f"10.1.{i // 250}.{i % 250}"}
        throttle.begin(**guess)
        throttle.failed(**guess)
    assert len(throttle.accounts.counts) <= 1000 and len(throttle.addresses.counts) <= 1000
    assert throttle.accounts.counts["wang"].failures == 8
    assert throttle.wait_for(account="wang", address="b") == pytest.approx(locked - 2, abs=0.01)


# -- over HTTP ------------------------------------------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    write_users(tmp_path / "users.yaml")
    raw = {"site": {"id": "s1", "name": "Sunny Garden"}, "state_dir": str(tmp_path / "state"),
           "devices": [{"id": "meter", "type": "synthetic", "kind": "power_meter",
                        "fields": ["power"], "poll_interval": 60,
                        "location": {"building": "3", "unit": "1"}}],
           "console": {"users_file": "users.yaml", "audit_file": "audit.jsonl"}}
    return Gateway(load_site(write_site(tmp_path, raw)))


@pytest.fixture
async def client(gateway: Gateway):
    app = App()
    add_console_routes(app, gateway.views)
    async with AppClient(app) as c:
        yield c


async def login(client: AppClient, user: tuple[str, str]) -> str:
    """Log in; the CSRF token of the new session."""
    r = await client.post("/console/api/login", json={"user": user[0], "password": user[1]})
    assert r.status == 200, await r.text()
    me = await (await client.get("/console/api/me")).json()
    return me["csrf"]


def raise_alarm(gateway: Gateway, severity: int = 1):
    return gateway.alarms.activate(rule="smoke", severity=severity, device="meter", kind="power_meter",
                                   channel=None, location={"building": "3"}, message="smoke in B3",
                                   value=1.0, ts=time.time(), latch=True)


async def test_wrong_password_is_refused_without_a_session(client: AppClient, gateway) -> None:
    r = await client.post("/console/api/login", json={"user": OPERATOR[0], "password": "nope-nope"})
    assert r.status == 401 and "cg_session" not in r.cookies
    r = await client.post("/console/api/login", json={"user": "nobody", "password": OPERATOR[1]})
    assert r.status == 401
    r = await client.post("/console/api/login", json={"user": "x\nforged log line", "password": "p"})
    assert r.status == 401
    assert (await client.get("/console/api/me")).status == 401
    assert (await client.get("/console/events")).status == 401
    page = await client.get("/console/", allow_redirects=False)
    assert page.status == 302 and page.headers["Location"] == "/console/login"
    audit = [json.loads(line) for line in
             (Path(gateway.site.path).parent / "audit.jsonl").read_text().splitlines()]
    assert [(a["operator"], a["action"], a["ok"]) for a in audit] == [
        (OPERATOR[0], "login", False), ("nobody", "login", False),
        ("'x\\nforged log line'", "login", False)]


async def test_session_cookie_is_httponly_and_samesite_strict(client: AppClient) -> None:
    r = await client.post("/console/api/login", json={"user": OPERATOR[0], "password": OPERATOR[1]})
    morsel = r.cookies["cg_session"]
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/console"
    page = await client.get("/console/")
    assert page.status == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]


async def test_actions_need_the_csrf_token_and_the_same_origin(client: AppClient, gateway) -> None:
    csrf = await login(client, OPERATOR)
    alarm = raise_alarm(gateway)
    url = f"/console/api/alarms/{alarm.id}/ack"
    assert (await client.post(url, json={})).status == 403
    assert (await client.post(url, json={}, headers={"X-CSRF-Token": "wrong"})).status == 403
    r = await client.post(url, json={}, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert r.status == 403 and not alarm.acked
    r = await client.post(url, json={"note": "on my way"}, headers={"X-CSRF-Token": csrf})
    assert r.status == 200, await r.text()
    assert alarm.acked and (await r.json())["alarm"]["acked"] is True
    assert alarm.history[-1] == {"event": "acked", "ts": alarm.history[-1]["ts"], "by": OPERATOR[0],
                                 "note": "on my way"}


async def test_operator_can_reset_and_shelve_with_a_note_and_errors_say_why(
        client: AppClient, gateway) -> None:
    csrf = await login(client, OPERATOR)
    headers = {"X-CSRF-Token": csrf}
    alarm = raise_alarm(gateway)
    r = await client.post(f"/console/api/alarms/{alarm.id}/reset", json={}, headers=headers)
    assert r.status == 409 and "condition is still present" in (await r.json())["error"]
    r = await client.post(f"/console/api/alarms/{alarm.id}/shelve", json={"minutes": 30}, headers=headers)
    assert r.status == 400 and "note" in (await r.json())["error"]
    r = await client.post(f"/console/api/alarms/{alarm.id}/shelve",
                          json={"minutes": 30, "note": "detector being cleaned"}, headers=headers)
    assert r.status == 200 and alarm.shelved_until is not None
    gateway.alarms.deactivate(rule="smoke", device="meter", channel=None, value=0.0, ts=time.time())
    r = await client.post(f"/console/api/alarms/{alarm.id}/reset", json={"note": "checked"}, headers=headers)
    assert r.status == 200 and gateway.alarms.open_alarms() == []
    r = await client.post(f"/console/api/alarms/{alarm.id}/ack", json={}, headers=headers)
    assert r.status == 404
    r = await client.post(f"/console/api/alarms/{alarm.id}/explode", json={}, headers=headers)
    assert r.status == 404
    r = await client.post(f"/console/api/alarms/{alarm.id}/ack", data="{", headers=headers)
    assert r.status == 415
    entries = (await (await client.get("/console/api/history?event=shelved")).json())["entries"]
    assert [(e["by"], e["note"]) for e in entries] == [(OPERATOR[0], "detector being cleaned")]


async def test_viewer_sees_everything_and_changes_nothing(client: AppClient, gateway) -> None:
    csrf = await login(client, VIEWER)
    alarm = raise_alarm(gateway)
    me = await (await client.get("/console/api/me")).json()
    assert me["role"] == "viewer" and me["actions"] == []
    alarms = (await (await client.get("/console/api/alarms")).json())["alarms"]
    assert [a["id"] for a in alarms] == [alarm.id]
    devices = (await (await client.get("/console/api/devices")).json())["devices"]
    assert devices[0]["id"] == "meter" and devices[0]["location"] == {"building": "3", "unit": "1"}
    r = await client.post(f"/console/api/alarms/{alarm.id}/ack", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status == 403 and not alarm.acked
    audit = (Path(gateway.site.path).parent / "audit.jsonl").read_text()
    assert '"operator": "zhao", "action": "ack", "ok": false' in audit


def user_cli(monkeypatch, tmp_path: Path, *args: str, password: str | None = None) -> int:
    """``community-gateway user ...`` on the test site's users file, as an installer runs it."""
    if password is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        args = (*args, "--password-stdin")
    return cli_main(["user", *args, "-f", str(tmp_path / "users.yaml")])


async def next_event(response) -> tuple[str, dict]:
    name = None
    while True:
        line = (await response.content.readline()).decode()
        if not line:
            raise AssertionError("the stream ended")
        line = line.rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            return name, json.loads(line[6:])


@pytest.mark.parametrize("change", ["password", "role", "remove"])
async def test_a_password_or_role_change_through_the_cli_ends_that_users_sessions(
        client: AppClient, tmp_path, monkeypatch, change: str) -> None:
    await login(client, OPERATOR)
    other = AppClient(client.server)  # the viewer, in a browser of their own
    await other.start_server()
    try:
        await login(other, VIEWER)
        stream = await client.get("/console/events")
        assert [(await next_event(stream))[0] for _ in range(2)] == ["hello", "snapshot"]
        if change == "password":
            rc = user_cli(monkeypatch, tmp_path, "add", OPERATOR[0], "--role", "operator",
                          "--replace", password="a-new-night-shift")
        elif change == "role":
            rc = user_cli(monkeypatch, tmp_path, "add", OPERATOR[0], "--role", "viewer",
                          "--replace", password=OPERATOR[1])
        else:
            rc = user_cli(monkeypatch, tmp_path, "remove", OPERATOR[0])
        assert rc == 0
        async with asyncio.timeout(10):
            while (name_data := await next_event(stream))[0] != "auth":
                pass
        assert name_data[1] == {"reason": "session ended"}
        assert (await client.get("/console/api/me")).status == 401
        assert (await other.get("/console/api/me")).status == 200  # other users keep theirs
        if change != "remove":  # a fresh login works with what the file says now
            password = "a-new-night-shift" if change == "password" else OPERATOR[1]
            await login(client, (OPERATOR[0], password))
            me = await (await client.get("/console/api/me")).json()
            assert me["role"] == ("viewer" if change == "role" else "operator")
        stream.close()
    finally:
        await other.close()


async def test_logging_out_ends_the_session(client: AppClient, tmp_path) -> None:
    csrf = await login(client, OPERATOR)
    r = await client.post("/console/api/logout", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status == 200
    assert (await client.get("/console/api/me")).status == 401


async def test_repeated_wrong_passwords_lock_the_name_for_a_while(client: AppClient) -> None:
    for _ in range(5):
        r = await client.post("/console/api/login", json={"user": OPERATOR[0], "password": "guess-guess"})
        assert r.status == 401
    r = await client.post("/console/api/login", json={"user": OPERATOR[0], "password": OPERATOR[1]})
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0


async def test_event_stream_sends_snapshot_then_each_transition(client: AppClient, gateway) -> None:
    await login(client, OPERATOR)
    before = raise_alarm(gateway, severity=2)
    r = await client.get("/console/events")
    assert r.headers["Content-Type"].startswith("text/event-stream")

    async def next_event() -> tuple[str, dict]:
        name = None
        while True:
            line = (await r.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                return name, json.loads(line[6:])

    name, hello = await next_event()
    assert name == "hello" and hello["version"]
    name, snapshot = await next_event()
    assert name == "snapshot" and [a["id"] for a in snapshot["alarms"]] == [before.id]
    assert snapshot["devices"][0]["id"] == "meter"
    gateway.alarms.ack(before.id, by="someone")
    name, transition = await next_event()
    assert name == "alarm" and transition["event"] == "acked" and transition["by"] == "someone"
    r.close()


def test_check_warns_about_a_console_that_cannot_work(tmp_path: Path) -> None:
    raw = {"site": {"id": "s1"}, "state_dir": str(tmp_path / "state"),
           "console": {"users_file": "users.yaml"}}
    site = load_site(write_site(tmp_path, raw))
    assert any("no 'http' section" in w for w in site.warnings)
    [blocker] = site.blockers  # valid, but the gateway would not start
    assert "users file not found" in blocker
    assert f"user add NAME --role operator --config {tmp_path / 'site.yaml'}" in blocker
    write_users(tmp_path / "users.yaml")
    raw["http"] = {"listen": "0.0.0.0:8080"}
    warnings = load_site(write_site(tmp_path, raw)).warnings
    assert any("unencrypted" in w for w in warnings)
    assert not any("users_file" in w for w in warnings)
    raw["http"] = {"listen": "127.0.0.1:8080"}
    (tmp_path / "users.yaml").write_text("users: {wang: {role: operator, password: plain}}\n")
    [blocker] = load_site(write_site(tmp_path, raw)).blockers
    assert "users.wang.password" in blocker


async def test_behind_a_tls_proxy_the_cookie_is_secure_and_the_proxy_origin_is_accepted(
        client: AppClient, gateway) -> None:
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "console.example",
             "Origin": "https://console.example"}
    r = await client.post("/console/api/login", json={"user": OPERATOR[0], "password": OPERATOR[1]},
                          headers=proxy)
    assert r.status == 200 and r.cookies["cg_session"]["secure"]
    r = await client.post("/console/api/login", json={"user": OPERATOR[0], "password": OPERATOR[1]},
                          headers={**proxy, "Origin": "https://elsewhere.example"})
    assert r.status == 403


def test_demo_console_gets_a_fresh_operator_each_run(tmp_path: Path) -> None:
    from gateway.console.demo_setup import enable_console

    raw = {"site": {"id": "demo"}, "state_dir": str(tmp_path / "state")}
    login = enable_console(raw, tmp_path, http_port=18080)
    assert login.url == "http://127.0.0.1:18080/console/" and login.user == "guard"
    site = load_site(write_site(tmp_path, raw))
    assert not [w for w in site.warnings if "console" in w]
    users = UsersFile(path=tmp_path / "console-users.yaml").load()
    assert verify_password(login.password, users["guard"].password_hash)
    again = enable_console(raw, tmp_path, http_port=18080)
    assert again.password != login.password


# -- the sessions file and its edges (found by mutation testing) ----------------------------


async def test_sessions_are_written_beside_their_file_in_new_directories_whatever_the_temp_dir(
        tmp_path: Path, monkeypatch) -> None:
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-temp-dir-here"))
    path = tmp_path / "state" / "console" / "sessions.json"
    store = SessionStore(minutes=10, clock=FakeClock(), path=path)
    token, session = await store.create(User("王", "operator", "h"))
    assert os.listdir(path.parent) == ["sessions.json"]  # no temporary file left behind
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert json.loads(path.read_bytes().decode("utf-8"))  # UTF-8 whatever the locale
    restarted = SessionStore(minutes=10, clock=FakeClock(), path=path)
    restarted.load()
    assert restarted.get(token).user == "王"
    assert len(token) == len(session.csrf) == 43  # 32 random bytes each


async def test_a_failed_write_reports_its_own_error_and_leaves_no_temporary_file(
        tmp_path: Path, monkeypatch, caplog) -> None:
    import gateway.console.sessions as sessions

    def replace_fails(src, dst):  # a disk that fills as the file is renamed into place
        raise OSError(28, "No space left on device")

    store = SessionStore(minutes=10, clock=FakeClock(), path=tmp_path / "sessions.json")
    monkeypatch.setattr(sessions.os, "replace", replace_fails)
    token, _ = await store.create(User("wang", "operator", "h"))
    assert store.get(token) is not None  # the session works; it just will not survive a restart
    assert os.listdir(tmp_path) == []
    assert "No space left on device" in caplog.text

    def replace_and_lose_the_temporary(src, dst):  # the cleanup's own failure must not hide it
        os.unlink(src)
        raise OSError(28, "No space left on device")

    caplog.clear()
    monkeypatch.setattr(sessions.os, "replace", replace_and_lose_the_temporary)
    await store.persist()
    assert "No space left on device" in caplog.text and "No such file" not in caplog.text


async def test_loading_keeps_only_live_sessions_of_known_roles_and_a_bad_file_is_logged(
        tmp_path: Path, caplog) -> None:
    clock = FakeClock()
    ttl = 10 * 60
    assert SessionStore(minutes=10, clock=clock).load() is None  # no file configured
    missing = SessionStore(minutes=10, clock=clock, path=tmp_path / "first-start.json")
    missing.load()  # a first start: nothing to load, nothing to complain about
    assert len(missing) == 0 and not caplog.records

    path = tmp_path / "sessions.json"

    def session(role: str, age: float) -> dict:
        return {"user": "wang", "role": role, "csrf": "c", "created": clock.time() - age,
                "last_seen": clock.time() - age}

    path.write_text(json.dumps({"live": session("operator", ttl - 1), "expired": session("operator", ttl),
                                "unknown-role": session("superuser", 0)}))
    store = SessionStore(minutes=10, clock=clock, path=path)
    store.load()
    assert set(store._sessions) == {"live"}
    assert not caplog.records

    for bad in ("{not json", "[]", '{"k": {"user": "wang"}}', '{"k": 3}'):
        path.write_text(bad)
        broken = SessionStore(minutes=10, clock=clock, path=path)
        broken.load()
        assert len(broken) == 0
    assert len([r for r in caplog.records if "unusable" in r.getMessage()]) == 4


async def test_the_file_is_rewritten_only_when_its_expiry_times_are_over_five_minutes_stale(
        tmp_path: Path) -> None:
    clock = FakeClock()
    assert SessionStore(minutes=10, clock=clock).persist_soon() is False  # no file to write
    path = tmp_path / "sessions.json"
    fresh = SessionStore(minutes=10, clock=clock, path=path)
    assert fresh.persist_soon() is True  # never written
    await fresh.create(User("wang", "operator", "h"))
    for store in (fresh, SessionStore(minutes=10, clock=clock, path=path)):
        store.load()  # as written, or as loaded: up to date
        assert store.persist_soon() is False
        clock.advance(300)
        assert store.persist_soon() is False
        clock.advance(0.001)
        assert store.persist_soon() is True


async def test_a_session_idle_for_exactly_its_lifetime_is_gone_and_logging_out_twice_is_harmless(
        tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "sessions.json"
    store = SessionStore(minutes=10, clock=clock, path=path)
    first, session = await store.create(User("wang", "operator", "h"))
    assert session.created == session.last_seen == clock.time()
    clock.advance(10 * 60)
    second, _ = await store.create(User("li", "viewer", "h"))
    assert len(store) == 1  # the first expired as the second logged in
    await store.drop(second)
    restarted = SessionStore(minutes=10, clock=clock, path=path)
    restarted.load()
    assert len(restarted) == 0 and restarted.get(second) is None  # the logout reached the file
    await store.drop(second)  # a second logout (another tab): nothing left to end
    await store.drop("never-issued")


def test_a_token_that_is_not_valid_unicode_is_simply_unknown() -> None:
    store = SessionStore(minutes=10, clock=FakeClock())
    assert store.get("\udcff\udc80") is None  # lone surrogates: hashed, not an error
