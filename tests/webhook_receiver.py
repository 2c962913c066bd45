"""A webhook endpoint on 127.0.0.1 for tests: it keeps what each POST brought."""

from __future__ import annotations

from aiohttp import web


class Receiver:
    """A webhook endpoint that keeps each POST's Idempotency-Key and body."""

    def __init__(self) -> None:
        self.posts: list[tuple[str | None, dict]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> "Receiver":
        async def hook(request: web.Request) -> web.Response:
            self.posts.append((request.headers.get("Idempotency-Key"), await request.json()))
            return web.Response(text="ok")

        app = web.Application()
        app.add_routes([web.post("/hook", hook)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def events(self) -> list[str]:
        return [body["event"] for _, body in self.posts]
