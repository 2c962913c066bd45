"""The test servers themselves: they start, answer, keep state across restart."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import aiomqtt
import pytest
import aiohttp

from servers import Mosquitto, ServerBinaryMissing, VictoriaMetrics, find_binary

TIMEOUT = 5.0


async def _next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(TIMEOUT):
        async for message in client.messages:
            return message
    raise AssertionError("message stream ended")


# -- Mosquitto ----------------------------------------------------------------------


async def test_mosquitto_publish_subscribe_round_trip(mosquitto: Mosquitto, unique_id: str) -> None:
    topic = f"test/{unique_id}/hello"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"hi", qos=1)
        message = await _next_message(client)
    assert message.topic.value == topic
    assert message.payload == b"hi"


async def test_mosquitto_keeps_retained_message_across_restart(
    mosquitto: Mosquitto, unique_id: str
) -> None:
    topic = f"test/{unique_id}/status"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish(topic, b"online", qos=1, retain=True)
    port = mosquitto.port

    mosquitto.restart()

    assert mosquitto.port == port
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(topic, qos=1)
        message = await _next_message(client)
    assert (message.payload, message.retain) == (b"online", True)


async def test_mosquitto_keeps_persistent_session_across_restart(
    mosquitto: Mosquitto, unique_id: str
) -> None:
    topic = f"test/{unique_id}/events"
    subscriber = dict(identifier=f"sub-{unique_id}", clean_session=False)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, **subscriber) as client:
        await client.subscribe(topic, qos=1)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish(topic, b"queued while away", qos=1)

    mosquitto.restart()

    async with aiomqtt.Client(mosquitto.host, mosquitto.port, **subscriber) as client:
        message = await _next_message(client)
    assert message.payload == b"queued while away"


# -- VictoriaMetrics ----------------------------------------------------------------


async def test_victoria_reads_back_an_influxdb_v2_write(
    victoria: VictoriaMetrics, unique_id: str
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{victoria.url}/api/v2/write",
                                params={"org": "o", "bucket": "b", "precision": "ns"},
                                headers={"Authorization": "Token x"},
                                data=f"m,site={unique_id} f=1.5 1700000000000000000") as resp:
            ok = resp.status == 204
    assert ok is True

    series = await victoria.wait_for_series_async(f'm_f{{site="{unique_id}"}}')

    assert len(series) == 1
    # VictoriaMetrics 1.79 drops org and bucket; a newer one may add the bucket as `db`.
    labels = {k: v for k, v in series[0]["metric"].items() if k != "db"}
    assert labels == {"__name__": "m_f", "site": unique_id}
    assert series[0]["values"] == [1.5]
    assert series[0]["timestamps"] == [1700000000000]


def test_victoria_names_one_series_per_field_and_keeps_data_across_restart(
    victoria: VictoriaMetrics, unique_id: str
) -> None:
    victoria.write_lines(
        [
            f"charger,site={unique_id},port=p1 power=812.5,temp=41i,relay=true 1700000000000000000",
            f"charger,site={unique_id},port=p1 power=815.0,temp=42i,relay=false 1700000001000000000",
        ]
    )
    victoria.flush()

    victoria.restart()

    series = victoria.export(f'{{__name__=~"charger_.*",site="{unique_id}"}}')
    by_name = {s["metric"]["__name__"]: s for s in series}
    assert sorted(by_name) == ["charger_power", "charger_relay", "charger_temp"]
    assert by_name["charger_power"]["values"] == [812.5, 815.0]
    assert by_name["charger_temp"]["values"] == [41, 42]
    assert by_name["charger_relay"]["values"] == [1, 0]
    assert by_name["charger_power"]["timestamps"] == [1700000000000, 1700000001000]
    assert by_name["charger_power"]["metric"]["port"] == "p1"


def test_victoria_stores_a_repeated_point_once(victoria: VictoriaMetrics, unique_id: str) -> None:
    line = f"door,site={unique_id} open=1 1700000000000000000"
    victoria.write_lines(line)
    victoria.write_lines(line)  # a retry after a lost acknowledgement

    series = victoria.wait_for_series(f'door_open{{site="{unique_id}"}}')

    assert series[0]["values"] == [1]


def test_wait_for_series_reports_what_it_saw_on_timeout(victoria: VictoriaMetrics) -> None:
    with pytest.raises(AssertionError, match="last export: \\[\\]"):
        victoria.wait_for_series("nothing_here", timeout=0.2)


def test_missing_binary_names_the_test_command() -> None:
    with pytest.raises(ServerBinaryMissing, match="bash scripts/test.sh"):
        find_binary(["/nonexistent/mosquitto"], "mosquitto")


# -- the leaked-task check in conftest.py ---------------------------------------------


def test_leaked_task_check_fails_only_tests_that_leak(pytester: pytest.Pytester) -> None:
    here = Path(__file__).parent
    pytester.makeconftest((here / "conftest.py").read_text())
    pytester.makepyfile(servers=(here / "servers.py").read_text())
    pytester.makeini(
        """
        [pytest]
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = function
        """
    )
    pytester.makepyfile(
        test_leaks=textwrap.dedent(
            """
            import asyncio
            import pytest

            async def test_leaks():
                asyncio.create_task(asyncio.sleep(3600), name="forgotten")

            async def test_cleans_up():
                task = asyncio.create_task(asyncio.sleep(3600))
                task.cancel()

            @pytest.mark.asyncio(loop_scope="module")
            async def test_leaks_in_module_loop():
                asyncio.create_task(asyncio.sleep(3600), name="forgotten-too")

            def test_sync():
                pass
            """
        )
    )

    result = pytester.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks *",
            "*left 1 asyncio task(s) running*",
            "*name='forgotten'*",
            "*ERROR at teardown of test_leaks_in_module_loop*",
            "*name='forgotten-too'*",
        ]
    )
