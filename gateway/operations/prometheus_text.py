"""The Prometheus text exposition format (version 0.0.4), written without prometheus_client.

The gateway only writes the values it already keeps, at scrape time: metric families
of counters and gauges with labels, no histograms, no timestamps. prometheus_client
cost a Pi 74 modules, ~4.7 MiB and ~1 s of imports for that (issue 16), so this
module writes the format itself, byte for byte as prometheus_client's
``generate_latest`` wrote it for the same families (tests/test_metrics_exposition.py
compares the two): a counter's series end in ``_total``, labels are sorted by name,
values are spelled as Go spells floats (``1.0``, ``1.7e+09``, ``NaN``, ``+Inf``,
``-Inf``).

Unlike ``generate_latest`` it never writes a series twice: a scraper rejects a scrape
holding two samples of one series (or a second TYPE line for one name), so a family
seen again is merged into the first of that name and a repeated series is skipped,
logged once and counted (``community_gateway_metrics_series_skipped_total``, shown
once there is one).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal, NamedTuple

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# What the format allows in names; anything else in a name becomes "_", as
# prometheus_client's default (underscore) escaping did.
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# The counter of skipped series: written by the registry itself, so not a family of ours.
SKIPPED = "community_gateway_metrics_series_skipped"

MetricType = Literal["counter", "gauge"]


class Sample(NamedTuple):
    """One series' value: its full name (a counter's ends in ``_total``) and labels."""

    name: str
    labels: dict[str, str]
    value: float


class MetricFamily:
    """One metric: a name, its HELP text, its type and its samples.

    A counter's name is given without ``_total`` (a trailing one is dropped); the
    exposition adds it to the name and to every sample, as the format asks.
    """

    __slots__ = ("name", "documentation", "type", "labelnames", "samples")

    def __init__(self, name: str, documentation: str, typ: MetricType,
                 labels: Sequence[str] | None = None):
        if typ not in ("counter", "gauge"):
            raise ValueError(f"metric {name}: type {typ!r} is not counter or gauge")
        for label in labels or ():
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"metric {name}: {label!r} is not a label name")
        self.name = name.removesuffix("_total") if typ == "counter" else name
        self.documentation = documentation
        self.type = typ
        self.labelnames = tuple(labels or ())
        self.samples: list[Sample] = []

    @property
    def exposed_name(self) -> str:
        """The name on the HELP and TYPE lines and of every sample."""
        return self.name + "_total" if self.type == "counter" else self.name

    def add_metric(self, values: Sequence[object], value: float) -> None:
        """A sample with ``values`` for the family's labels, in their order."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"metric {self.name}: {len(values)} label values for "
                             f"{len(self.labelnames)} labels {list(self.labelnames)}")
        self.samples.append(Sample(self.exposed_name,
                                   dict(zip(self.labelnames, map(str, values))), value))

    def __repr__(self) -> str:
        return f"MetricFamily({self.name!r}, {self.type}, {len(self.samples)} samples)"


# Something that returns the families it has at this moment (called at every scrape).
Collector = Callable[[], Iterable[MetricFamily]]


class CollectorRegistry:
    """The collectors of one process part; nothing global, so several gateways in one
    process (tests) do not mix."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []
        self.skipped_series = 0
        self._skips_logged: set[str] = set()

    def register(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def collect(self) -> Iterator[MetricFamily]:
        for collector in self._collectors:
            yield from collector()

    def skipped(self, what: str) -> None:
        """Count what was left out (a series given twice, or a family whose name another
        type holds); log each distinct one once, as it repeats at every scrape."""
        self.skipped_series += 1
        if what not in self._skips_logged and len(self._skips_logged) < 1000:
            self._skips_logged.add(what)
            log.warning("/metrics: %s; left out (counted in %s_total)", what, SKIPPED)


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of every family the registry's collectors hold now."""
    text = exposition(registry.collect(), skipped=registry.skipped)
    if registry.skipped_series:
        counter = MetricFamily(SKIPPED, "Series left out of /metrics: a name or series "
                               "given twice (each logged once)", "counter")
        counter.add_metric([], registry.skipped_series)
        text += exposition([counter])
    return text


def _log_skip(what: str) -> None:
    log.warning("/metrics: %s; left out", what)


def exposition(families: Iterable[MetricFamily],
               skipped: Callable[[str], None] = _log_skip) -> bytes:
    """``families`` in the text format, UTF-8; each name and each series once.

    A family whose name was seen before is merged into the first (same type) or left
    out (another type); a sample of a series already written is left out. Each is
    reported to ``skipped``.
    """
    merged: dict[str, tuple[MetricFamily, list[str]]] = {}
    series: set[str] = set()
    for family in families:
        name = metric_name(family.exposed_name)
        first = merged.get(name)
        if first is None:
            first = merged[name] = (family, [])
        elif first[0].type != family.type:
            skipped(f"{name} given as a {first[0].type} and again as a {family.type}")
            continue
        for sample in family.samples:
            line = sample_line(sample)
            key = line.rpartition(" ")[0]  # the name and labels: the series
            if key in series:
                skipped(f"series {key} given twice")
                continue
            series.add(key)
            first[1].append(line)
    out = []
    for name, (family, lines) in merged.items():
        out.append(f"# HELP {name} {escape_help(family.documentation)}\n"
                   f"# TYPE {name} {family.type}\n")
        out.extend(lines)
    # A lone surrogate (YAML's "\ud800" in a device's kind) cannot be UTF-8: it becomes
    # "?" rather than failing the whole scrape.
    return "".join(out).encode("utf-8", errors="replace")


def sample_line(sample: Sample) -> str:
    """``name{label="value",...} value`` and a newline; labels sorted by name."""
    labels = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(sample.labels.items()))
    braces = f"{{{labels}}}" if labels else ""
    return f"{metric_name(sample.name)}{braces} {format_value(sample.value)}\n"


def metric_name(name: str) -> str:
    """``name`` as the format allows it: each character it does not allow becomes "_"."""
    if _METRIC_NAME.fullmatch(name):
        return name
    name = _NOT_IN_NAME.sub("_", name)
    return "_" + name[1:] if name[:1].isdigit() else name


def escape_label_value(value: str) -> str:
    """Backslash, newline and double quote escaped, as the format requires in a label value."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def escape_help(text: str) -> str:
    """Backslash and newline escaped, as the format requires in a HELP text."""
    return text.replace("\\", r"\\").replace("\n", r"\n")


def format_value(value: float) -> str:
    """A value as Go (and so Prometheus) spells a float: ``NaN``, ``+Inf``, ``-Inf``,
    ``12.0``, ``1.7961452e+09`` (Go switches to an exponent sooner than Python)."""
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    text = repr(number)
    dot = text.find(".")
    if number > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text
