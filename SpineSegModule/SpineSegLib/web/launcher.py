"""The SpineSeg web server: one front door, one process per browser session.

``GET /`` starts a session (a :mod:`SpineSegLib.web.app` process on a free local port) and redirects the browser
to ``/s/<id>/``; everything under that path, HTTP and the trame WebSocket, is proxied to the session's process.
Reloading the page keeps the session; another tab gets its own. A session whose process dies (or that nobody
has used for ``session_timeout`` seconds) is reaped; the others and the front door go on. ``GET /health`` reports
the sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from .. import process as _process
from .app import CONFIG_ENV
from .controller import WebConfig

log = logging.getLogger("spineseg.web")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "host"}
START_TIMEOUT_S = 120.0


@dataclass
class Session:
    sid: str
    port: int
    process: subprocess.Popen
    folder: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.folder / "session.log").read_text(errors="replace").splitlines()[-lines:])
        return ""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Launcher:
    def __init__(self, config: WebConfig, max_sessions: int = 8, session_timeout: int = 600,
                 workdir: str | Path | None = None):
        self.config = config
        self.max_sessions = max_sessions
        self.session_timeout = session_timeout
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="spineseg-web-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sessions: dict[str, Session] = {}
        self._client: aiohttp.ClientSession | None = None
        self._starting = asyncio.Lock()

    # --- sessions -------------------------------------------------------------------------------------------------
    async def start_session(self) -> Session:
        async with self._starting:  # one start at a time: starting is CPU-heavy
            self.reap()
            if len(self.sessions) >= self.max_sessions:
                raise web.HTTPServiceUnavailable(text=f"SpineSeg already runs {self.max_sessions} sessions; close "
                                                      "a tab or try again later.")
            sid = secrets.token_urlsafe(9)
            folder = self.workdir / sid
            folder.mkdir(parents=True)
            config_path = folder / "config.json"
            config_path.write_text(json.dumps(asdict(self.config)), encoding="utf-8")
            port = free_port()
            command = [sys.executable, "-m", "SpineSegLib.web.app", "--host", "127.0.0.1", "--port", str(port),
                       "--timeout", str(self.session_timeout), "--spineseg-config", str(config_path)]
            env = _process.subprocess_environment({CONFIG_ENV: str(config_path)})
            with open(folder / "session.log", "wb") as out:
                popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, cwd=str(folder), start_new_session=(os.name == "posix"))
            session = Session(sid, port, popen, folder)
            self.sessions[sid] = session
            log.info("session %s: process %s on port %s", sid, popen.pid, port)
            await self._wait_ready(session)
            return session

    async def _wait_ready(self, session: Session) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        url = f"http://127.0.0.1:{session.port}/index.html"
        while time.monotonic() < deadline:
            if not session.alive:
                self.stop_session(session.sid)
                raise web.HTTPInternalServerError(text="The SpineSeg session could not start:\n"
                                                       + session.log_tail())
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                async with self.client.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
        self.stop_session(session.sid)
        raise web.HTTPGatewayTimeout(text="The SpineSeg session took too long to start.")

    def stop_session(self, sid: str) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        if session.alive:
            _process.kill_process_tree(session.process.pid, timeout=3.0)
        shutil.rmtree(session.folder, ignore_errors=True)

    def reap(self) -> None:
        for sid, session in list(self.sessions.items()):
            if not session.alive:
                log.info("session %s ended (exit code %s)", sid, session.process.returncode)
                self.stop_session(sid)

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(auto_decompress=False)
        return self._client

    # --- HTTP -----------------------------------------------------------------------------------------------------
    def application(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024**3)
        app.router.add_get("/", self.new_session)
        app.router.add_get("/health", self.health)
        app.router.add_route("*", "/s/{sid}", self.add_slash)
        app.router.add_route("*", "/s/{sid}/{tail:.*}", self.proxy)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app) -> None:
        app["reaper"] = asyncio.create_task(self._reap_forever())

    async def _on_cleanup(self, app) -> None:
        app["reaper"].cancel()
        for sid in list(self.sessions):
            self.stop_session(sid)
        if self._client is not None:
            await self._client.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(5)
            self.reap()

    async def new_session(self, request: web.Request) -> web.Response:
        session = await self.start_session()
        raise web.HTTPFound(f"/s/{session.sid}/")

    async def health(self, request: web.Request) -> web.Response:
        self.reap()
        return web.json_response({"status": "ok", "sessions": len(self.sessions),
                                  "max_sessions": self.max_sessions})

    async def add_slash(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/s/{request.match_info['sid']}/")

    def _session(self, request: web.Request) -> Session:
        session = self.sessions.get(request.match_info["sid"])
        if session is None or not session.alive:
            if session is not None:
                self.stop_session(session.sid)
            raise web.HTTPGone(text="This SpineSeg session has ended. Open the start page again for a new one.",
                               headers={"Refresh": "3; url=/"})
        return session

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        tail = request.match_info["tail"]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._proxy_websocket(request, session, tail)
        url = f"http://127.0.0.1:{session.port}/{tail}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            async with self.client.request(request.method, url, params=request.query, headers=headers,
                                           data=await request.read(), allow_redirects=False) as upstream:
                body = await upstream.read()
                response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                if upstream.status in (301, 302, 303, 307, 308) and "Location" in response_headers:
                    response_headers["Location"] = _rebase(response_headers["Location"], session.sid)
                return web.Response(status=upstream.status, body=body, headers=response_headers)
        except aiohttp.ClientError as error:
            raise web.HTTPBadGateway(text=f"The SpineSeg session does not answer ({error}).") from error

    async def _proxy_websocket(self, request: web.Request, session: Session, tail: str) -> web.WebSocketResponse:
        browser = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await browser.prepare(request)
        try:
            async with self.client.ws_connect(f"ws://127.0.0.1:{session.port}/{tail}", max_msg_size=0) as upstream:
                await asyncio.gather(_pump(browser, upstream), _pump(upstream, browser))
        except aiohttp.ClientError as error:
            log.warning("session %s: websocket failed: %s", session.sid, error)
        finally:
            await browser.close()
        return browser


async def _pump(source, target) -> None:
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await target.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await target.send_bytes(message.data)
        else:
            break
    with contextlib.suppress(Exception):
        await target.close()


def _rebase(location: str, sid: str) -> str:
    if location.startswith("/"):
        return f"/s/{sid}{location}"
    return location


def serve(host: str = "127.0.0.1", port: int = 8080, config: WebConfig | None = None, max_sessions: int = 8,
          session_timeout: int = 600, on_ready=None) -> None:
    """Run the web server until SIGINT/SIGTERM (``spineseg web``); ``on_ready(url)`` once it listens (``port`` 0:
    a free port, reported in the URL)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    asyncio.run(_serve(Launcher(config or WebConfig(), max_sessions=max_sessions, session_timeout=session_timeout),
                       host, port, on_ready))


async def _serve(launcher: Launcher, host: str, port: int, on_ready) -> None:
    import signal

    runner = web.AppRunner(launcher.application(), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        actual = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        if on_ready is not None:
            shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
            on_ready(f"http://{shown}:{actual}/")
        await stop.wait()
    finally:
        await runner.cleanup()
