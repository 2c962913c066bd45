"""Real servers on loopback for integration tests and the benchmark script.

Each server runs the Debian package's binary on 127.0.0.1, on a free port, with its
state in a private temporary directory. ``start()`` returns only once the server
really answers (TCP connect for Mosquitto, ``/health`` for VictoriaMetrics), polling
at a short interval under an overall deadline; ``stop()`` terminates, waits and
kills on timeout. ``restart()`` keeps the port and the data directory.

Standard library only: the benchmark script imports this module outside pytest.
``bash scripts/test.sh`` installs the binaries when they are missing.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LOOPBACK",
    "Mosquitto",
    "ServerBinaryMissing",
    "ServerStartError",
    "VictoriaMetrics",
    "find_binary",
    "free_port",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"
POLL_INTERVAL = 0.01
START_TIMEOUT = 15.0
# Loopback only: never route a test request through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
STOP_TIMEOUT = 10.0
INSTALL_HINT = "run `bash scripts/test.sh`, which installs the Debian packages it needs"

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "mosquitto")
MOSQUITTO_PASSWD_CANDIDATES = ("/usr/bin/mosquitto_passwd", "mosquitto_passwd")
VICTORIA_CANDIDATES = ("/usr/bin/victoria-metrics", "victoria-metrics")


class ServerBinaryMissing(RuntimeError):
    """The server's executable is not installed."""


class ServerStartError(RuntimeError):
    """The server exited or did not answer before the deadline."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_binary(candidates: Sequence[str], package: str) -> str:
    """Return the first executable among ``candidates`` (absolute paths or names on PATH)."""
    for candidate in candidates:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    raise ServerBinaryMissing(
        f"{candidates[0]} not found (Debian package `{package}`); {INSTALL_HINT}"
    )


def wait_for_port(host: str, port: int, timeout: float = START_TIMEOUT) -> None:
    """Poll until a TCP connect to ``host:port`` succeeds, or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(POLL_INTERVAL)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Server:
    """Common process handling: a tmp dir, a log file, start/stop/restart/kill."""

    name = "server"

    def __init__(self, port: int | None = None, *, start_timeout: float = START_TIMEOUT) -> None:
        self.host = LOOPBACK
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.start_timeout = start_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{self.name}-")
        self.dir = Path(self._tmp.name)
        self.log_path = self.dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False

    # subclasses fill these in
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running server, if any."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the server and return once it answers; raise ``ServerStartError`` if not."""
        if self.running:
            return
        # A port picked by free_port() can be taken by someone else before the server
        # binds it; on the first start only, try a fresh one. restart() keeps the port.
        attempts = 1 if (self._fixed_port or self._started_once) else 3
        for attempt in range(attempts):
            try:
                self._spawn_and_wait()
                self._started_once = True
                return
            except ServerStartError:
                if attempt + 1 == attempts:
                    raise
                self.port = free_port()

    def _spawn_and_wait(self) -> None:
        command = self._command()
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} starting: {' '.join(command)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # a Ctrl-C in the terminal goes to pytest, not here
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise ServerStartError(
                    f"{self.name} exited with code {code} while starting on port {self.port}; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self._ready():
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.name} did not answer on port {self.port} within "
                    f"{self.start_timeout}s; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(POLL_INTERVAL)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate the server (SIGTERM: it saves its state), kill it after ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the server, as in a crash: nothing is saved on the way out."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same port with the same data directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its temporary directory."""
        self.stop()
        self._tmp.cleanup()

    def log(self) -> str:
        """The server's log so far (handy in assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} dir={self.dir}>"


class Mosquitto(_Server):
    """Eclipse Mosquitto (Debian ``mosquitto``) with persistence in a private directory.

    Persistence is on, so retained messages and persistent sessions (clean_session
    false / session expiry) survive ``restart()``. Mosquitto writes its database on
    SIGTERM (``stop()``), not on ``kill()``.

    Anonymous by default. With ``users`` (name -> password) every client must log in
    (a password file made by ``mosquitto_passwd``); ``acl_file`` then says what each
    user may publish and read (e.g. deploy/mosquitto/community.acl).
    """

    name = "mosquitto"

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_config: Iterable[str] = (),
        binary: str | None = None,
        start_timeout: float = START_TIMEOUT,
        users: Mapping[str, str] | None = None,
        acl_file: Path | None = None,
    ) -> None:
        self.binary = binary or find_binary(MOSQUITTO_CANDIDATES, "mosquitto")
        self.extra_config = list(extra_config)
        super().__init__(port, start_timeout=start_timeout)
        self.config_path = self.dir / "mosquitto.conf"
        self.persistence_dir = self.dir / "persistence"
        self.persistence_dir.mkdir()
        self.password_file: Path | None = None
        self.acl_file = Path(acl_file).resolve() if acl_file is not None else None
        if users:
            self.password_file = self.dir / "passwd"
            self._write_passwords(users)

    def _write_passwords(self, users: Mapping[str, str]) -> None:
        assert self.password_file is not None
        tool = find_binary(MOSQUITTO_PASSWD_CANDIDATES, "mosquitto")
        self.password_file.touch(mode=0o600)
        for name, password in users.items():
            subprocess.run([tool, "-b", str(self.password_file), name, password], check=True,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
            "persistence true",
            # mosquitto concatenates location and file name: the trailing slash matters
            f"persistence_location {self.persistence_dir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to user `mosquitto`, which cannot write
            # our private tmp dir. `user root` (the current user) keeps it as is.
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        lines.extend(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        self._write_config()  # the port may have changed after a failed first bind
        return [self.binary, "-c", str(self.config_path)]

    def _ready(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=0.5).close()
            return True
        except OSError:
            return False


class VictoriaMetrics(_Server):
    """VictoriaMetrics single node (Debian ``victoria-metrics``) with a private data dir.

    Writes: the InfluxDB v2 write API at ``/api/v2/write`` (and v1 at ``/write``).
    Line ``m,site=s f=1.5 <ns>`` becomes series ``m_f{site="s"}`` with a millisecond
    timestamp. In 1.79 ``org`` and ``bucket`` of a v2 write are ignored (no label);
    a v1 ``/write?db=X`` adds the label ``db="X"``. Booleans are stored as 1/0;
    string fields as 0 (VictoriaMetrics only stores numbers).

    Newly written points are searchable only after an in-memory buffer is flushed
    (about every second, and a new series takes longer to be indexed): call
    ``flush()`` or use ``wait_for_series()``, which flushes on every poll.

    ``dedup=True`` (the default) passes ``-dedup.minScrapeInterval=1ms`` so a point
    written twice (same series and millisecond) reads back once, as InfluxDB's
    overwrite semantics would have it; set ``dedup=False`` to see raw duplicates.
    """

    name = "victoria-metrics"

    def __init__(
        self,
        port: int | None = None,
        *,
        dedup: bool = True,
        extra_args: Iterable[str] = (),
        binary: str | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.binary = binary or find_binary(VICTORIA_CANDIDATES, "victoria-metrics")
        self.dedup = dedup
        self.extra_args = list(extra_args)
        super().__init__(port, start_timeout=start_timeout)
        self.data_dir = self.dir / "data"

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (what an InfluxDB client takes)."""
        return f"http://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        args = [
            self.binary,
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            # make points visible to queries at once, not after the default 30s
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerTimezone=UTC",
        ]
        if self.dedup:
            args.append("-dedup.minScrapeInterval=1ms")
        args.extend(self.extra_args)
        return args

    def _ready(self) -> bool:
        try:
            with _OPENER.open(self.url + "/health", timeout=0.5) as resp:
                return resp.status == 200
        except (OSError, http.client.HTTPException):
            return False

    # -- HTTP helpers -------------------------------------------------------

    def _request(self, path: str, data: bytes | None = None, timeout: float = 10.0) -> bytes:
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.read()

    def flush(self) -> None:
        """Make every point received so far searchable (``/internal/force_flush``)."""
        self._request("/internal/force_flush")

    def write_lines(self, lines: str | Iterable[str], *, precision: str = "ns") -> None:
        """Write InfluxDB line protocol through ``/api/v2/write`` (org/bucket are ignored)."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        query = urllib.parse.urlencode({"org": "o", "bucket": "b", "precision": precision})
        self._request(f"/api/v2/write?{query}", data=body.encode())

    def export(self, match: str, *, flush: bool = True) -> list[dict[str, Any]]:
        """All samples of the series matching ``match`` (a series selector), flushed first.

        Each item: ``{"metric": {"__name__": ..., label: value}, "values": [...],
        "timestamps": [ms, ...]}``, one item per series, oldest sample first.
        """
        if flush:
            self.flush()
        query = urllib.parse.urlencode({"match[]": match})
        body = self._request(f"/api/v1/export?{query}")
        series = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        series.sort(key=lambda s: sorted(s["metric"].items()))
        return series

    def wait_for_series(
        self,
        match: str,
        predicate: Callable[[list[dict[str, Any]]], bool] | None = None,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Poll ``export(match)`` until ``predicate(series)`` holds (default: any series).

        Returns the series; raises ``AssertionError`` with the last export on timeout.
        Blocking: from a coroutine use ``wait_for_series_async``.
        """
        check = predicate or bool
        deadline = time.monotonic() + timeout
        while True:
            series = self.export(match)
            if check(series):
                return series
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"series {match!r} did not satisfy the predicate within {timeout}s; "
                    f"last export: {series!r}"
                )
            time.sleep(0.05)

    async def export_async(self, match: str, *, flush: bool = True) -> list[dict[str, Any]]:
        """``export()`` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.export, match, flush=flush)

    async def wait_for_series_async(
        self,
        match: str,
        predicate: Callable[[list[dict[str, Any]]], bool] | None = None,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """``wait_for_series()`` for coroutines: the code under test keeps running meanwhile."""
        check = predicate or bool
        deadline = time.monotonic() + timeout
        while True:
            series = await self.export_async(match)
            if check(series):
                return series
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"series {match!r} did not satisfy the predicate within {timeout}s; "
                    f"last export: {series!r}"
                )
            await asyncio.sleep(0.05)
