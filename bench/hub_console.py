"""The hub's console in a real Chromium (issue 11): publish-to-screen latency with 200
gateways, and how fast the alarm page renders each live update with 5,000 open alarms.

The hub runs in this process (its core) with its console; a scoped operator
(subdistrict Riverside, which every simulated gateway is in) is logged in on the
alarm page of Debian's Chromium, driven by Playwright, on the servers' core with
Mosquitto and the simulated gateways (bench/hub_load.py).

The page is instrumented before its own scripts run (``add_init_script``): the
``EventSource`` it opens gets a first listener that notes, per alarm id and count,
when the stream message arrived and the gateway's publish time (``details.sent``,
wall clock); a ``MutationObserver`` notes when the row for that id and count is put
in the DOM (publish-to-DOM latency; the list is windowed, so only rows on the screen
are ever put in the DOM).

"Rendered" is per stream message, whether its row is on the screen or not: the
probe's listener runs before the console's and asks for an animation frame; the
console's own listener then asks for the frame in which it redraws the list, which
is the same frame (callbacks asked for in one task run in the next frame, in order).
From the probe's frame callback a task is queued: it runs once that frame's style,
layout and paint are done. Message arrival to that task is the figure. Chromium's
long-animation-frame entries (frames over 50 ms) are counted beside it.

- latency: 200 gateways (20 quick), 5 alarms each, 200 transitions/s. Publish (the
  gateway's wall clock) to the row in the page's DOM (``performance.timeOrigin +
  performance.now()``, the same machine's clock). Target p99 <= 1 s.
- 5,000 open alarms (500 gateways x 10; 500 quick): first the page's load (reload to
  the list drawn: the first screen of rows, and the list's ``aria-rowcount`` saying
  every alarm; before the windowed list, every row in the DOM), then live updates at
  50 transitions/s: from the stream message's arrival in the page to the end of the
  frame that drew it. Target p99 <= 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Figure, at_most, info, on_server_cpus, percentile, wait_until

BENCH = "hub_console"
CHROMIUM = "/usr/bin/chromium"  # Debian's, as the console tests (tests/console_support.py)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
USER = ("bench-operator", "bench-operator-pass-1")
VIEWPORT = {"width": 1920, "height": 1080}
UPDATES = 50  # transitions/s with 5,000 open alarms: bench.hub_load's lowest (50 batches a second)

# Runs in the page before app.js: see the module's docstring.
PROBE = """
(() => {
  const B = window.__bench = {waiting: new Map(), latency: [], render: [], dom: [], superseded: 0,
                               longFrames: []};
  if ((PerformanceObserver.supportedEntryTypes || []).includes("long-animation-frame")) {
    new PerformanceObserver((list) => {
      // each long frame's split: its scripts, then style and layout, then the rest of the
      // rendering (paint, commit); where a frame's time goes, for the figure's note
      for (const e of list.getEntries()) {
        const end = e.startTime + e.duration;
        const scripts = (e.scripts || []).map((x) => [x.duration, (x.sourceFunctionName || "?") + "@"
          + String(x.sourceURL || "").split("/").pop().split("?")[0]]);
        B.longFrames.push({duration: e.duration, scripts: scripts.reduce((sum, x) => sum + x[0], 0),
          layout: e.styleAndLayoutStart ? end - e.styleAndLayoutStart : 0,
          render: e.renderStart ? end - e.renderStart : 0, top: scripts.sort((x, y) => y[0] - x[0])[0] || null});
      }
    }).observe({type: "long-animation-frame"});
  }
  const Original = window.EventSource;
  function Probed(url, init) {
    const source = new Original(url, init);
    source.addEventListener("alarm", (e) => {   // first listener: before the console's
      const arrived = performance.now();
      const a = JSON.parse(e.data).alarm || {};
      const sent = a.details && a.details.sent;
      if (typeof sent !== "number") return;
      // the frame the console draws this message in (see the module's docstring)
      requestAnimationFrame(() => setTimeout(() => B.render.push(performance.now() - arrived), 0));
      const prev = B.waiting.get(a.id);
      if (prev) B.superseded += 1;   // two updates of one alarm before a render: one row
      B.waiting.set(a.id, {count: String(a.count), sent, arrived});
    });
    return source;
  }
  Probed.prototype = Original.prototype;
  window.EventSource = Probed;
  new MutationObserver((records) => {
    const now = performance.now();
    for (const r of records) for (const node of r.addedNodes) {
      if (node.nodeType !== 1 || !node.dataset || !node.dataset.alarmId) continue;
      const w = B.waiting.get(node.dataset.alarmId);
      const count = node.querySelector(".c-count");
      if (!w || !count || count.textContent.replace("\\u00d7", "") !== w.count) continue;
      B.waiting.delete(node.dataset.alarmId);
      B.latency.push(performance.timeOrigin + now - w.sent * 1000);
      B.dom.push(now - w.arrived);
    }
  }).observe(document, {childList: true, subtree: true});
})();
"""


def _hub_config(port: int, http_port: int, state: Path, users: Path):
    from gateway.hub.config import HubConfig

    return HubConfig.model_validate({
        "hub": {"id": "bench"}, "broker": {"host": "127.0.0.1", "port": port},
        "scope": {"subdistrict": "Riverside"}, "state_dir": str(state),
        "http": {"listen": f"127.0.0.1:{http_port}"}, "console": {"users_file": str(users)},
        "alarms": {"silent_after_intervals": 100}})


def _users(path: Path) -> Path:
    from gateway.console.passwords import hash_password
    from gateway.console.users import UserScope, UsersFile

    UsersFile(path=path).add(USER[0], "operator", hash_password(USER[1]),
                             scope=UserScope(subdistrict="Riverside"))
    return path


@contextlib.asynccontextmanager
async def _hub(port: int, tmp: Path, name: str):
    from gateway.hub.service import Hub
    from servers import free_port

    http_port = free_port()
    hub = Hub(_hub_config(port, http_port, tmp / name, _users(tmp / f"{name}-users.yaml")))
    task = asyncio.create_task(hub.run(), name=f"bench-hub-{name}")
    try:
        await wait_until(lambda: hub.link.synced.is_set() and hub.http.listening, 15,
                         "the hub's first sync and its console")
        yield hub, f"http://127.0.0.1:{http_port}"
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


@contextlib.asynccontextmanager
async def _chromium():
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `bash scripts/test.sh`, which installs "
                           "Debian's chromium")
    with on_server_cpus():  # the driver and the browser it starts: not on the hub's core
        manager = async_playwright()
        p = await manager.__aenter__()
    try:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
    finally:
        await manager.__aexit__(None, None, None)


async def _open_console(browser, base: str):
    page = await browser.new_page(viewport=VIEWPORT)
    await page.add_init_script(PROBE)
    await page.goto(f"{base}/console/")
    await page.fill("#user", USER[0])
    await page.fill("#password", USER[1])
    await page.click("#login-submit")
    await page.wait_for_selector('#live[data-live="yes"]', timeout=30000)
    return page


async def _load(port: int, *, gateways: int, rate: float, seconds: float, alarms: int) -> None:
    with on_server_cpus():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.hub_load", "--port", str(port), "--gateways",
            str(gateways), "--rate", str(rate), "--seconds", str(seconds), "--alarms", str(alarms),
            stdout=asyncio.subprocess.DEVNULL)
    if await proc.wait() != 0:
        raise RuntimeError(f"bench.hub_load exited with {proc.returncode}")


async def _rows(page) -> int:
    return await page.evaluate("document.querySelectorAll('#alarm-list article.alarm').length")


async def _listed(page) -> int:
    """How many alarms the list holds: its aria-rowcount once it has drawn rows (the windowed
    list keeps only the screen's rows in the DOM), else the rows in the DOM."""
    return await page.evaluate(
        "(() => { const list = document.getElementById('alarm-list');"
        " const rows = list.querySelectorAll('article.alarm').length;"
        " const count = Number(list.getAttribute('aria-rowcount'));"
        " return rows && count ? count : rows; })()")


async def run(opts) -> list[Figure]:
    from bench.hub import _broker

    figures: list[Figure] = []
    seconds = 3.0 if opts.quick else 20.0
    with tempfile.TemporaryDirectory(prefix="bench-hub-console-") as d:
        tmp = Path(d)
        some = 20 if opts.quick else 200
        rate = 20 if opts.quick else 200
        with _broker() as broker:
            async with _hub(broker.port, tmp, "latency") as (hub, base), _chromium() as browser:
                page = await _open_console(browser, base)
                await _load(broker.port, gateways=some, rate=rate, seconds=seconds, alarms=5)
                await asyncio.sleep(1.0)  # the last rows' frames
                probe = await page.evaluate("({latency: __bench.latency, render: __bench.render,"
                                            " superseded: __bench.superseded})")
        lat = probe["latency"]
        figures.append(at_most(
            BENCH, f"publish to row in the console's DOM p99, {some} gateways",
            percentile(lat, 99), 1000, "ms",
            f"p50 {percentile(lat, 50):.0f} ms over {len(lat):,} rows at {rate} transitions/s "
            f"({probe['superseded']} updates folded into a later one or to rows off the screen, "
            f"which the windowed list does not build); Chromium"))

        many = 50 if opts.quick else 500
        with _broker() as broker:
            async with _hub(broker.port, tmp, "open") as (hub, base), _chromium() as browser:
                # 10 open alarms per gateway, raised in 2 s (then repeated: the load is timed,
                # so a slow machine still raises them all)
                await _load(broker.port, gateways=many, rate=many * 10 / 2, seconds=6, alarms=10)
                await wait_until(lambda: len(hub.live.open_alarms()) >= many * 10, 60,
                                 "every alarm open in the hub")
                page = await _open_console(browser, base)
                start = time.perf_counter()
                await page.reload()
                # polled from here (the console's CSP forbids wait_for_function's eval): to ~10 ms
                while await _listed(page) < many * 10:
                    if time.perf_counter() - start > 120:
                        raise RuntimeError(f"the page showed {await _listed(page)} of "
                                           f"{many * 10} alarms after 120 s")
                    await asyncio.sleep(0.01)
                first_load = time.perf_counter() - start
                await page.evaluate("__bench.render.length = 0; __bench.latency.length = 0;"
                                    " __bench.dom.length = 0; __bench.longFrames.length = 0")
                await _load(broker.port, gateways=many, rate=UPDATES, seconds=seconds, alarms=10)
                await asyncio.sleep(1.0)
                probe = await page.evaluate("({latency: __bench.latency, render: __bench.render,"
                                            " dom: __bench.dom, superseded: __bench.superseded,"
                                            " longFrames: __bench.longFrames})")
                rows = await _rows(page)
        render, dom, frames = probe["render"], probe["dom"], probe["longFrames"]
        long_frames = [f["duration"] for f in frames]
        # where the long frames' time went (Chromium's long-animation-frame entries)
        split = (f"; their medians: scripts {percentile([f['scripts'] for f in frames], 50):.0f}, "
                 f"style and layout {percentile([f['layout'] for f in frames], 50):.0f}, "
                 f"rendering from its start {percentile([f['render'] for f in frames], 50):.0f} ms"
                 if frames else "")
        heaviest = sorted((f["top"] for f in frames if f["top"]), reverse=True)[:3]
        if heaviest:
            split += "; heaviest scripts " + ", ".join(f"{name} {ms:.0f} ms" for ms, name in heaviest)
        figures.append(at_most(
            BENCH, f"live update rendered p99, {many * 10:,} open alarms", percentile(render, 99),
            100, "ms", f"p50 {percentile(render, 50):.0f} ms over {len(render):,} updates "
                       f"at {UPDATES}/s (stream message in the page to the end of the frame "
                       f"that drew it); {rows:,} rows in the DOM; rows on the screen to the DOM "
                       f"p50 {percentile(dom, 50):.0f}, p99 {percentile(dom, 99):.0f} ms over "
                       f"{len(dom):,}; {len(long_frames)} frames over 50 ms"
                       + (f" (longest {max(long_frames):.0f} ms)" if long_frames else "") + split))
        figures.append(info(
            BENCH, f"first load of the alarm page, {many * 10:,} open alarms", first_load * 1000,
            "ms", "reload to the list drawn (its first screen of rows, aria-rowcount every alarm)"))
    return figures
