"""The webhook's promises a slip would break quietly: the bearer token reaches the
receiver, a shelved alarm's repeats and clears are held back (its other steps are not),
and (found by mutation testing, issue 15) the retry delays asked for, the session's
timeout, the queue, the journal and the restore."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging

import aiohttp
import pytest
from aiohttp import web

from gateway.alarms import webhook as webhook_module
from gateway.alarms.manager import AlarmManager, Transition
from gateway.alarms.webhook import WebhookSender
from gateway.backoff import Backoff
from gateway.clock import FakeClock
from gateway.config.models import WebhookConfig
from harness import running_gateway, wait_until, write_site

# A broken writer or sender (a mutant) fails fast instead of hanging the default 120 s.
pytestmark = pytest.mark.timeout(20)


async def test_the_receiver_gets_the_configured_bearer_token(
        tmp_path, free_port, unique_id, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HOOK_TOKEN", "hook-secret-42")
    seen: list[str | None] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    raw = {"site": {"id": unique_id},
           "webhooks": [{"url": f"http://127.0.0.1:{port}/hook", "token": {"env": "TEST_HOOK_TOKEN"}}],
           "devices": [{"id": "m1", "type": "synthetic", "kind": "meter", "fields": ["power"],
                        "poll_interval": 0.05}],
           "rules": [{"id": "always", "type": "threshold", "select": {"devices": ["m1"]},
                      "field": "power", "above": -1, "severity": 2}]}
    try:
        async with running_gateway(write_site(tmp_path, raw)):
            await wait_until(lambda: seen, 5, "the raised alarm at the webhook")
    finally:
        await runner.cleanup()
    assert seen[0] == "Bearer hook-secret-42"


def test_a_shelved_alarm_holds_back_its_repeats_and_clears_only() -> None:
    clock = FakeClock()
    sender = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:9/hook"))  # every event
    manager = AlarmManager(clock=clock, listeners=[sender.on_transition])

    def occur() -> None:
        manager.activate(rule="r", severity=2, device="d", kind="k", channel=None, location={},
                         message="m", value=1.0, ts=clock.time())

    def gone() -> None:
        manager.deactivate(rule="r", device="d", channel=None, value=0.0, ts=clock.time())

    occur()
    alarm = manager.find("r", "d", None)
    manager.shelve(alarm.id, by="wang", minutes=10)
    gone()   # cleared: held back
    occur()  # repeated: held back
    gone()
    manager.unshelve(alarm.id, by="wang")
    occur()  # shown again: sent
    manager.ack(alarm.id, by="wang")
    assert [e.event for e in sender._queue] == ["raised", "shelved", "unshelved", "repeated", "acked"]
    assert alarm.count == 3  # the held-back steps still happened


async def test_what_each_answer_of_the_receiver_means(free_port) -> None:
    from gateway.alarms.webhook import _Entry

    async def hook(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query["status"]))

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    answers = {}
    try:
        async with aiohttp.ClientSession() as session:
            for status in (200, 201, 204, 299, 300, 400, 401, 404, 408, 409, 429, 499, 500, 503):
                sender = WebhookSender(config=WebhookConfig(url=f"http://127.0.0.1:{port}/hook?status={status}"))
                answers[status] = await sender._post(session, _Entry("a", "raised", b"{}", seq=1))
    finally:
        await runner.cleanup()
    assert answers == {200: None, 201: None, 204: None, 299: None,
                       300: "HTTP 300", 408: "HTTP 408", 429: "HTTP 429", 500: "HTTP 500",
                       503: "HTTP 503",  # retried: the receiver may take it later
                       400: "rejected (HTTP 400)", 401: "rejected (HTTP 401)",
                       404: "rejected (HTTP 404)", 409: "rejected (HTTP 409)",
                       499: "rejected (HTTP 499)"}


async def test_a_failed_connection_is_told_without_the_secret_in_the_url(free_port) -> None:
    from gateway.alarms.webhook import _Entry, shown_url

    url = f"http://bot:pw@127.0.0.1:{free_port()}/hook?key=SECRET"
    assert shown_url(url) == f"http://...@127.0.0.1:{url.split(':')[-1].split('/')[0]}/hook?..."
    assert shown_url("https://example.invalid/hook") == "https://example.invalid/hook"
    sender = WebhookSender(config=WebhookConfig(url=url, timeout=2))
    async with aiohttp.ClientSession() as session:
        problem = await sender._post(session, _Entry("a", "raised", b"{}", seq=1))
    assert problem is not None and problem.startswith("ClientConnectorError")
    assert "SECRET" not in problem and "pw" not in problem


def test_the_body_is_sent_as_json_with_the_token_header() -> None:
    sender = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:9/hook"), token="t0k")
    assert sender._headers == {"Content-Type": "application/json", "Authorization": "Bearer t0k"}
    assert sender._sending is None
    assert "Authorization" not in WebhookSender(
        config=WebhookConfig(url="http://127.0.0.1:9/hook"))._headers


# -- the queue, the journal and the delivery loop (found by mutation testing, issue 15) ---------



class Journal:
    """What the sender tells its journal, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def webhook_saved(self, endpoint, seq, alarm_id, event, body, *, new) -> None:
        self.calls.append(("saved", endpoint, seq, alarm_id, event, body, new))

    def webhook_done(self, endpoint, seq) -> None:
        self.calls.append(("done", endpoint, seq))


class RecordingBackoff(Backoff):
    """The delays the sender asks for (their ceilings), recorded; it never waits."""

    made: list[RecordingBackoff] = []

    def __init__(self, **kw):
        super().__init__(**kw)
        self.kw = kw
        self.ceilings: list[float] = []
        RecordingBackoff.made.append(self)

    def next_delay(self) -> float:
        self.ceilings.append(min(self.cap, self.initial * (2 ** self.attempt)))
        super().next_delay()
        return 0.0


class Receiver:
    """A webhook receiver on loopback answering with the statuses it is given (then 204);
    ``gate`` (when set) holds each request until it is set."""

    def __init__(self, port: int, statuses: list[int] | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}/hook"
        self.port = port
        self.statuses = list(statuses or [])
        self.got: list[dict] = []
        self.headers: list[dict] = []
        self.gate: asyncio.Event | None = None
        self.tickets: asyncio.Queue | None = None  # when set: one answer per ticket put
        self.waiting = 0
        self._runner: web.AppRunner | None = None

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
            self.waiting -= 1
        if self.tickets is not None:
            await self.tickets.get()
        status = self.statuses.pop(0) if self.statuses else 204
        if 200 <= status < 300:
            self.got.append(json.loads(body))
        self.headers.append(dict(request.headers))
        return web.Response(status=status)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        if self.gate is not None:
            self.gate.set()
        await self._runner.cleanup()


@contextlib.asynccontextmanager
async def delivering(sender: WebhookSender):
    task = asyncio.create_task(sender.run(), name="test-webhook")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def sender_and_manager(url: str, **kw) -> tuple[WebhookSender, AlarmManager]:
    config = {k: kw.pop(k) for k in ("timeout", "max_retry_interval", "events", "min_severity")
              if k in kw}
    sender = WebhookSender(config=WebhookConfig(url=url, **config), **kw)
    manager = AlarmManager(clock=FakeClock(), listeners=[sender.on_transition])
    return sender, manager


def occur(manager: AlarmManager, device: str = "d", severity: int = 2):
    return manager.activate(rule="r", severity=severity, device=device, kind="k", channel=None,
                            location={}, message="m", value=1.0, ts=manager._clock.time(),
                            momentary=True)


async def test_failures_are_retried_with_growing_delays_capped_and_reset_after_a_success(
        free_port, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO, logger="gateway.alarms.webhook")
    RecordingBackoff.made = []
    monkeypatch.setattr(webhook_module, "Backoff", RecordingBackoff)
    async with Receiver(free_port(), statuses=[503, 500, 429, 408, 503]) as receiver:
        sender, manager = sender_and_manager(receiver.url, max_retry_interval=3.0)
        async with delivering(sender):
            alarm = occur(manager)
            await wait_until(lambda: sender.sent == 1, 10, "delivered after 5 failures")
            [backoff] = RecordingBackoff.made
            assert backoff.kw == {"initial": 0.5, "cap": 3.0}
            assert backoff.ceilings == [0.5, 1.0, 2.0, 3.0, 3.0]
            assert sender.failures == 5 and sender.pending == 0
            assert caplog.text.count("unreachable (HTTP 503)") == 1  # once per outage
            assert caplog.text.count("answers again") == 1
            receiver.statuses = [500]
            manager.ack(alarm.id, by="op")  # acked + closed: one failure, then both
            await wait_until(lambda: sender.sent == 3, 10, "delivered after one failure")
            assert backoff.ceilings[5:] == [0.5]  # started over after the success
            assert caplog.text.count("unreachable") == 2 and caplog.text.count("answers again") == 2
    assert [b["event"] for b in receiver.got] == ["raised", "acked", "closed"]


async def test_a_refusal_ends_an_outage_too(free_port, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO, logger="gateway.alarms.webhook")
    monkeypatch.setattr(webhook_module, "Backoff", RecordingBackoff)
    async with Receiver(free_port(), statuses=[503, 422, 400]) as receiver:
        sender, manager = sender_and_manager(receiver.url)
        async with delivering(sender):
            occur(manager)
            occur(manager, "e")
            occur(manager, "f")
            await wait_until(lambda: sender.sent == 1, 10, "the third delivered")
            assert sender.rejected == 2 and sender.failures == 1
            assert caplog.text.count("answers again") == 1


async def test_the_session_has_the_configured_timeout_and_headers(free_port, monkeypatch) -> None:
    made: list[aiohttp.ClientSession] = []

    real = aiohttp.ClientSession

    def session(**kw) -> aiohttp.ClientSession:
        made.append(real(**kw))
        return made[-1]

    monkeypatch.setattr(webhook_module.aiohttp, "ClientSession", session)
    async with Receiver(free_port()) as receiver:
        sender, manager = sender_and_manager(receiver.url, timeout=7.5, token="tok")
        async with delivering(sender):
            occur(manager)
            await wait_until(lambda: sender.sent == 1, 10, "delivered")
            [session] = made
            assert session.timeout.total == 7.5
    assert receiver.headers[0]["Authorization"] == "Bearer tok"
    assert receiver.headers[0]["Content-Type"] == "application/json"


async def test_a_receiver_that_never_answers_times_out_and_is_retried(free_port, monkeypatch) -> None:
    monkeypatch.setattr(webhook_module, "Backoff", RecordingBackoff)
    async with Receiver(free_port()) as receiver:
        receiver.gate = asyncio.Event()  # holds every request: the sender's timeout ends it
        sender, manager = sender_and_manager(receiver.url, timeout=0.2)
        async with delivering(sender):
            occur(manager)
            await wait_until(lambda: sender.failures >= 1, 10, "a timeout counted")
            receiver.gate.set()
            await wait_until(lambda: sender.sent >= 1, 10, "delivered once answered")


async def test_a_delivered_entry_is_forgotten_and_a_later_repeat_queued_anew(free_port) -> None:
    journal = Journal()
    async with Receiver(free_port()) as receiver:
        sender, manager = sender_and_manager(receiver.url, journal=journal, key="k1")
        async with delivering(sender):
            alarm = occur(manager)
            occur(manager)  # repeated
            await wait_until(lambda: sender.sent == 2, 10, "both delivered")
            occur(manager)  # repeated again: its own entry, not folded into a delivered one
            await wait_until(lambda: sender.sent == 3, 10, "the third delivered")
    assert [(b["event"], b["alarm"]["count"]) for b in receiver.got] == [
        ("raised", 1), ("repeated", 2), ("repeated", 3)]
    assert sorted(c for c in journal.calls if c[0] == "done") == [
        ("done", "k1", 1), ("done", "k1", 2), ("done", "k1", 3)]
    assert ("saved", "k1", 1, alarm.id, "raised") == journal.calls[0][:5]
    assert sender.pending == 0 and sender._last == {}


async def test_a_repeat_while_its_entry_is_being_sent_is_queued_after_it(free_port) -> None:
    async with Receiver(free_port()) as receiver:
        sender, manager = sender_and_manager(receiver.url)
        async with delivering(sender):
            occur(manager)
            await wait_until(lambda: sender.sent == 1, 10, "raised delivered")
            receiver.gate = asyncio.Event()
            occur(manager)  # repeated, count 2: being sent, held by the receiver
            await wait_until(lambda: receiver.waiting == 1, 10, "the repeat's POST held")
            occur(manager)  # repeated, count 3: not folded into the one already sent
            assert sender.pending == 2 and sender.coalesced == 0
            receiver.gate.set()
            await wait_until(lambda: sender.sent == 3, 10, "all delivered")
    assert [(b["event"], b["alarm"]["count"]) for b in receiver.got] == [
        ("raised", 1), ("repeated", 2), ("repeated", 3)]


@pytest.mark.timeout(5)
def test_documents_are_filtered_journalled_and_bounded() -> None:
    journal = Journal()
    sender = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:9/hook",
                                                events=["device_digest", "raised"]),
                           journal=journal, key="k", max_pending=2)
    sender.on_document("device_digest", {"offline": ["m1"]})
    sender.on_document("other", {"x": 1})  # not in events
    assert [(e.event, json.loads(e.body)) for e in sender._queue] == [
        ("device_digest", {"offline": ["m1"]})]
    assert journal.calls == [("saved", "k", 1, "device_digest", "device_digest",
                              sender._queue[0].body, True)]
    assert sender._wake.is_set()
    sender.on_document("device_digest", {"offline": []})
    sender.on_document("device_digest", {"offline": ["m2"]})  # past 2: the oldest goes
    assert [json.loads(e.body) for e in sender._queue] == [{"offline": []}, {"offline": ["m2"]}]
    assert [e.seq for e in sender._queue] == [2, 3]  # each its own journal row
    assert sender.dropped == 1 and journal.calls[-1] == ("done", "k", 1)
    every = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:9/hook"))
    every.on_document("device_digest", {})
    assert every.pending == 1


def test_restored_entries_go_first_in_order_and_new_ones_follow() -> None:
    journal = Journal()
    sender, manager = sender_and_manager("http://127.0.0.1:9/hook", journal=journal, key="k")
    assert not sender._wake.is_set()
    sender.restore([])
    assert not sender._wake.is_set() and sender.restored == 0
    sender.restore([(7, "a1", "raised", b"{7}"), (9, "a1", "repeated", b"{9}")])
    assert sender._wake.is_set() and sender.restored == 2 and sender.pending == 2
    assert [e.body for e in sender._queue] == [b"{7}", b"{9}"]
    alarm = occur(manager)
    assert [(e.seq, e.event) for e in sender._queue] == [(7, "raised"), (9, "repeated"),
                                                         (10, "raised")]
    assert journal.calls == [("saved", "k", 10, alarm.id, "raised", sender._queue[2].body, True)]


@pytest.mark.timeout(5)  # a drop that finds nothing would loop: fail, do not hang
def test_restored_entries_past_max_pending_drop_the_superseded_then_the_oldest() -> None:
    journal = Journal()
    sender = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:9/hook"), journal=journal,
                           key="k", max_pending=2)
    sender.restore([(1, "b", "raised", b"1"), (2, "a", "raised", b"2"), (3, "c", "raised", b"3"),
                    (4, "a", "repeated", b"4")])
    # "a"'s raised (not the oldest) is superseded by its repeat: it goes first; then the oldest
    assert [e.seq for e in sender._queue] == [3, 4]
    assert sender.dropped == 2 and journal.calls == [("done", "k", 2), ("done", "k", 1)]
    assert sender.restored == 4
    assert sender._last["a"].seq == 4 and "b" not in sender._last
    sender.restore([(9, "d", "raised", b"9")])  # counted on top
    assert sender.restored == 5


def test_a_restored_repeat_takes_the_next_repeat_of_its_alarm() -> None:
    sender, manager = sender_and_manager("http://127.0.0.1:9/hook")
    alarm = occur(manager)
    sender._queue.clear()
    sender._last.clear()
    sender.restore([(5, alarm.id, "repeated", b"old")])
    occur(manager)  # repeated: replaces the restored entry's body
    assert [(e.seq, e.event) for e in sender._queue] == [(5, "repeated")]
    assert b'"count": 2' in sender._queue[0].body and sender.coalesced == 1


@pytest.mark.timeout(5)
def test_max_pending_is_at_least_one_and_the_drop_skips_the_entry_being_sent() -> None:
    sender, manager = sender_and_manager("http://127.0.0.1:9/hook", max_pending=0)
    assert sender.max_pending == 1
    occur(manager, "a")
    sender._sending = sender._queue[0]
    occur(manager, "b")  # past 1: the one being sent stays, the other goes
    assert [e.alarm_id for e in sender._queue] == [sender._sending.alarm_id]
    assert sender.dropped == 1
    sender._queue.clear()
    sender._queue.append(sender._sending)
    sender._drop_one()  # nothing else to drop: nothing happens
    assert sender.pending == 1 and sender.dropped == 1


@pytest.mark.timeout(5)
def test_a_dropped_entry_leaves_the_alarm_without_a_latest_entry(caplog) -> None:
    journal = Journal()
    sender, manager = sender_and_manager("http://127.0.0.1:9/hook", max_pending=1,
                                         journal=journal, key="k")
    a = occur(manager, "a")
    b = occur(manager, "b")  # drops a's raised (the oldest)
    assert sender._last == {b.id: sender._queue[0]}
    occur(manager, "a")  # a repeat of a: a new entry, not folded into the dropped one
    assert [(e.alarm_id, e.event) for e in sender._queue] == [(a.id, "repeated")]
    assert caplog.text.count("more than 1 transitions queued") == 1  # said once
    assert sender.dropped == 2


def test_the_journal_key_is_a_hash_of_the_url() -> None:
    url = "http://127.0.0.1:9/hook?key=SECRET"
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    assert webhook_module.endpoint_key(url) == key
    assert WebhookSender(config=WebhookConfig(url=url)).key == key
    assert WebhookSender(config=WebhookConfig(url=url), key="given").key == "given"


def test_a_shelved_latched_alarm_holds_back_its_condition_cleared() -> None:
    sender, manager = sender_and_manager("http://127.0.0.1:9/hook")
    alarm = manager.activate(rule="r", severity=2, device="d", kind="k", channel=None,
                             location={}, message="m", value=1.0, ts=0.0, latch=True)
    manager.shelve(alarm.id, by="op", minutes=5)
    manager.deactivate(rule="r", device="d", channel=None, value=0.0, ts=1.0)
    assert [e.event for e in sender._queue] == ["raised", "shelved"]
    assert manager.get(alarm.id).condition is False  # it happened, only not sent


def test_escalations_coalesce_like_repeats_and_other_events_do_not() -> None:
    sender, manager = sender_and_manager("http://127.0.0.1:9/hook")
    manager.escalate_after = 60
    alarm = manager.activate(rule="r", severity=1, device="d", kind="k", channel=None,
                             location={}, message="m", value=1.0, ts=0.0)
    now = manager._clock.time()
    manager.tick(now + 60)
    manager.tick(now + 120)  # escalated again: replaces the queued escalation
    assert [e.event for e in sender._queue] == ["raised", "escalated"]
    assert b'"severity": 0' in sender._queue[1].body and sender.coalesced == 1
    manager.shelve(alarm.id, by="op", minutes=1)
    manager.shelve(alarm.id, by="op", minutes=2)  # not coalesced: each shelve is sent
    assert [e.event for e in sender._queue] == ["raised", "escalated", "shelved", "shelved"]


def test_a_coalesced_entry_is_saved_again_in_the_journal() -> None:
    journal = Journal()
    sender, manager = sender_and_manager("http://127.0.0.1:9/hook", journal=journal, key="k")
    alarm = occur(manager)
    occur(manager)
    occur(manager)  # replaces the queued repeat
    assert [c[:5] + (c[6],) for c in journal.calls] == [
        ("saved", "k", 1, alarm.id, "raised", True), ("saved", "k", 2, alarm.id, "repeated", True),
        ("saved", "k", 2, alarm.id, "repeated", False)]
    assert journal.calls[-1][5] == sender._queue[1].body and b'"count": 3' in journal.calls[-1][5]


def test_the_body_is_ascii_json_even_for_chinese_text() -> None:
    sender, manager = sender_and_manager("http://127.0.0.1:9/hook")
    manager.activate(rule="r", severity=2, device="d", kind="k", channel=None, location={},
                     message="3号楼充电桩过热", value=1.0, ts=0.0)
    body = sender._queue[0].body
    assert body.isascii() and "\\u5145" in body.decode()
    assert json.loads(body)["alarm"]["message"] == "3号楼充电桩过热"


async def test_the_overflow_error_is_said_again_only_once_the_queue_fell_below_half(
        free_port, caplog) -> None:
    said = "more than 5 transitions queued"
    async with Receiver(free_port()) as receiver:
        receiver.tickets = asyncio.Queue()
        sender, manager = sender_and_manager(receiver.url, max_pending=5)
        devices = iter(range(100))

        def occur_n(n: int) -> None:
            for _ in range(n):
                occur(manager, f"d{next(devices)}")

        async def deliver(n: int) -> None:
            goal = sender.sent + n
            for _ in range(n):
                receiver.tickets.put_nowait(None)
            await wait_until(lambda: sender.sent == goal, 10, f"{goal} delivered")

        async with delivering(sender):
            occur_n(6)  # one too many: said
            assert caplog.text.count(said) == 1 and sender.pending == 5
            await deliver(3)  # 2 left: half of 5, rounded down; not below it
            occur_n(4)  # past 5 again: dropped, not said again
            assert caplog.text.count(said) == 1 and sender.dropped == 2
            await deliver(4)  # 1 left: below half
            occur_n(5)
            assert caplog.text.count(said) == 2 and sender.dropped == 3
            receiver.tickets.put_nowait(None)
            receiver.tickets = None


# -- the hub's replicas: keys, holding, forgetting (mutation testing after the merge) ----------


def keyed(t: Transition) -> tuple[str, bool]:
    """A delivery key per alarm, event and occurrence; the operator's steps are not shared."""
    return f"{t.alarm['id']}-{t.event}-{t.alarm['count']}", t.by is None


def transition(event: str, alarm_id: str = "a1", count: int = 1, by: str | None = None) -> Transition:
    return Transition(event, {"id": alarm_id, "severity": 2, "count": count}, 1.0, by=by)


def test_keyed_entries_carry_their_key_and_share_and_are_never_coalesced() -> None:
    sender = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:9/hook"), delivery_key=keyed)
    sender.on_transition(transition("raised"))
    sender.on_transition(transition("repeated", count=2))
    sender.on_transition(transition("repeated", count=3))  # its own key: the sender delivers both
    sender.on_transition(transition("acked", count=3, by="wang"))
    assert [(e.event, e.key, e.shared) for e in sender._queue] == [
        ("raised", "a1-raised-1", True), ("repeated", "a1-repeated-2", True),
        ("repeated", "a1-repeated-3", True), ("acked", "a1-acked-3", False)]
    assert sender.coalesced == 0
    plain = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:9/hook"))  # the gateway's
    plain.on_transition(transition("raised"))
    assert (plain._queue[0].key, plain._queue[0].shared) == (None, False)
    assert plain.holding is False


def test_forget_drops_the_queued_entry_with_that_key_unless_it_is_being_sent() -> None:
    journal = Journal()
    sender = WebhookSender(config=WebhookConfig(url="http://127.0.0.1:9/hook"), journal=journal,
                           key="k", delivery_key=keyed)
    sender.on_transition(transition("raised"))
    sender.on_transition(transition("cleared"))
    sender.on_transition(transition("raised", alarm_id="a2"))
    raised, cleared, other = sender._queue
    journal.calls.clear()
    assert not sender.forget("a1-repeated-1") and sender.pending == 3  # no such key
    sender._sending = raised
    assert not sender.forget("a1-raised-1") and sender.pending == 3  # being sent: it stays
    sender._sending = None
    assert sender.forget("a1-raised-1") is True  # not a1's latest: its latest stays known
    assert sender._last == {"a1": cleared, "a2": other}
    assert sender.forget("a1-cleared-1") is True  # a1's latest: a1 has none queued now
    assert sender._last == {"a2": other} and list(sender._queue) == [other]
    assert journal.calls == [("done", "k", 1), ("done", "k", 2)]
    assert sender.forgotten == 2 and sender.sent == 0 and sender.dropped == 0


async def test_a_held_sender_sends_its_own_entries_past_the_shared_ones_until_released(
        free_port) -> None:
    done: list[str] = []
    async with Receiver(free_port()) as receiver:
        sender = WebhookSender(config=WebhookConfig(url=receiver.url), delivery_key=keyed,
                               on_done=done.append)
        sender.hold(True)
        assert sender.holding is True
        sender.on_transition(transition("raised"))
        sender.on_transition(transition("cleared"))
        sender.on_transition(transition("acked", by="wang"))  # this replica's own step
        async with delivering(sender) as task:
            await wait_until(lambda: sender.sent == 1, 10, "the operator's ack")
            assert [b["event"] for b in receiver.got] == ["acked"]
            assert receiver.headers[0]["Idempotency-Key"] == "a1-acked-1"
            assert [e.event for e in sender._queue] == ["raised", "cleared"]  # held, in order
            assert done == ["a1-acked-1"]
            assert sender.forget("a1-cleared-1")  # the sender delivered that one
            # the loop, with only held entries queued, waits for a change (it does not end)
            assert not task.done() and sender.sent == 1
            sender.hold(True)  # no change
            sender.hold(False)  # this replica takes over: what is left goes
            assert sender.holding is False
            await wait_until(lambda: sender.sent == 2, 10, "the held raise")
            assert not task.done()
    assert [b["event"] for b in receiver.got] == ["acked", "raised"]
    assert receiver.headers[1]["Idempotency-Key"] == "a1-raised-1"
    assert done == ["a1-acked-1", "a1-raised-1"] and sender.pending == 0


async def test_on_done_is_told_refused_keyed_entries_too_and_only_keyed_ones(free_port) -> None:
    done: list[str] = []
    async with Receiver(free_port(), statuses=[400]) as receiver:
        sender = WebhookSender(config=WebhookConfig(url=receiver.url), delivery_key=keyed,
                               on_done=done.append)
        sender.on_transition(transition("raised"))  # refused for good: done all the same
        sender.on_document("device_digest", {"offline": []})  # no key: no header, not told
        sender.on_transition(transition("cleared"))
        async with delivering(sender):
            await wait_until(lambda: sender.sent == 2, 10, "the digest and the clear")
    assert sender.rejected == 1 and done == ["a1-raised-1", "a1-cleared-1"]
    assert [h.get("Idempotency-Key") for h in receiver.headers] == [
        "a1-raised-1", None, "a1-cleared-1"]


async def test_keyed_entries_go_without_an_on_done(free_port) -> None:
    async with Receiver(free_port()) as receiver:
        sender = WebhookSender(config=WebhookConfig(url=receiver.url), delivery_key=keyed)
        sender.on_transition(transition("raised"))
        sender.on_transition(transition("cleared"))
        async with delivering(sender):
            await wait_until(lambda: sender.sent == 2, 10, "both delivered")
    assert [h.get("Idempotency-Key") for h in receiver.headers] == ["a1-raised-1", "a1-cleared-1"]


async def test_a_sender_without_delivery_keys_is_never_held_back(free_port) -> None:
    async with Receiver(free_port()) as receiver:
        sender = WebhookSender(config=WebhookConfig(url=receiver.url))
        sender.hold(True)  # nothing of its own is shared
        sender.on_transition(transition("raised"))
        async with delivering(sender):
            await wait_until(lambda: sender.sent == 1, 10, "delivered while holding")
    assert "Idempotency-Key" not in receiver.headers[0]
