"""Shared fixtures: real servers on loopback, unique ids, and a check for leaked tasks.

Server fixtures are function-scoped: Mosquitto answers in about 10 ms and
VictoriaMetrics in about 30 ms, so every test gets its own fresh server. Tests that
use them are marked ``integration`` automatically (deselect with ``-m "not integration"``).

The server helpers live in ``tests/servers.py`` (standard library only, shared with
the benchmark script); import them as ``from servers import Mosquitto`` when a test
needs more than the fixtures give.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator

import pytest
import pytest_asyncio

from servers import Mosquitto, ServerBinaryMissing, VictoriaMetrics, free_port as _free_port

# A config without `state_dir` defaults to $STATE_DIRECTORY: point it at a private
# folder so no test (nor a daemon a test starts) writes to /var/lib on this machine.
os.environ["STATE_DIRECTORY"] = tempfile.mkdtemp(prefix="gateway-test-state-")

pytest_plugins = ["pytester"]

SERVER_FIXTURES = frozenset({"mosquitto", "victoria"})
# How long tasks a test cancelled get to finish before they count as leaked.
TASK_SETTLE_TIMEOUT = 0.5


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


# -- small helpers ------------------------------------------------------------


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a free TCP port on 127.0.0.1: ``port = free_port()``."""
    return _free_port


@pytest.fixture
def unique_id() -> str:
    """A short id unique to this test (``t`` + 8 hex digits), for site ids and topics."""
    return "t" + uuid.uuid4().hex[:8]


# -- real servers ---------------------------------------------------------------


def _started(server_factory: Callable[[], Mosquitto | VictoriaMetrics]):
    try:
        server = server_factory()
    except ServerBinaryMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A fresh Mosquitto on 127.0.0.1:``.port``, anonymous, with persistence (``.restart()``)."""
    server = _started(Mosquitto)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def victoria() -> Iterator[VictoriaMetrics]:
    """A fresh VictoriaMetrics at ``.url`` taking InfluxDB v2 writes; ``.export()`` reads back."""
    server = _started(VictoriaMetrics)
    try:
        yield server
    finally:
        server.close()


# -- no asyncio task may outlive its test -------------------------------------------


def _make_task_leak_check(loop_scope: str):
    @pytest_asyncio.fixture(loop_scope=loop_scope, name=f"_task_leak_check_{loop_scope}")
    async def check():
        before = asyncio.all_tasks()
        yield
        # Runs after the test's other function fixtures are torn down (it is set up
        # before them), so a task that a fixture stops in its teardown is fine.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TASK_SETTLE_TIMEOUT
        while True:
            leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
            if not leaked or loop.time() >= deadline:
                break
            await asyncio.sleep(0.01)  # let cancelled tasks run their cleanup
        if not leaked:
            return
        described = "\n".join(f"  {task!r}" for task in sorted(leaked, key=lambda t: t.get_name()))
        for task in leaked:
            task.cancel()
        # Reap them here so the failure is reported once, not again by the loop's close.
        await asyncio.wait(leaked, timeout=1.0)
        pytest.fail(f"test left {len(leaked)} asyncio task(s) running:\n{described}", pytrace=False)

    return check


for _scope in ("function", "class", "module", "package", "session"):
    globals()[f"_task_leak_check_{_scope}"] = _make_task_leak_check(_scope)


@pytest.fixture(autouse=True)
def _no_leaked_tasks(request: pytest.FixtureRequest) -> None:
    """Fail an async test that leaves tasks running in its event loop.

    The check runs inside the test's own loop: it picks the variant whose loop scope
    matches the test's ``asyncio`` marker (or ``asyncio_default_test_loop_scope``).
    """
    if not inspect.iscoroutinefunction(getattr(request.node, "obj", None)):
        return
    marker = request.node.get_closest_marker("asyncio")
    scope = None
    if marker is not None:
        scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    scope = scope or request.config.getini("asyncio_default_test_loop_scope") or "function"
    request.getfixturevalue(f"_task_leak_check_{scope}")
