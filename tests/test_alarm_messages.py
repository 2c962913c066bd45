"""Alarm message templates: placeholders filled, numbers formattable, a bad template never loses the alarm."""

from __future__ import annotations

from gateway.runtime.messages import render


def fill(template: str, *, channel: int | None = 3, value: float | None = 1234.5678) -> str:
    return render(template, language="en", rule="over-power", spec=None, device="charger-b3",
                  channel=channel, field="power", value=value, kind="threshold",
                  params={"limit": 1000.0})


def test_numbers_show_six_digits_and_take_a_format_spec() -> None:
    assert fill("{value} W") == "1234.57 W"
    assert fill("{value:.1f} W over {limit:.0f}") == "1234.6 W over 1000"
    assert fill("{value!s}") == "1234.57"


def test_a_template_that_cannot_be_filled_falls_back_to_the_default() -> None:
    # {channel:d} on an alarm without a channel raised TypeError out of the pipeline
    text = fill("port {channel:d}: {value:.1f} W", channel=None)
    assert text == "power 1234.57 at charger-b3 (charger-b3); limit 1000"
    assert fill("{0} and {", channel=None).startswith("power 1234.57")
    assert fill("{value:.1f}", value=None).startswith("power -")
