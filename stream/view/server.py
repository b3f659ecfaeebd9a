"""The web server of ``sigstream view``: aiohttp (HTTP, WebSocket, the page's static files)
and ZeroMQ (asyncio sockets) on one event loop.

- A SUB socket on the service's results feeds :class:`~stream.view.state.ViewState`: with
  the service's metrics URL, only errors (their reasons) and the results of the streams a
  page draws, the overview coming from the service's own counts (``/streams``); without it,
  every topic (headers for the overview, bodies of errors and of the streams drawn). A SUB on
  the service's mirror asks only for the inputs of the streams a page chose. Both are plain
  subscribers: when the view falls behind, ZeroMQ drops at the publisher for the view alone;
  the service is never slowed.
- Every ``interval_s`` each page connected to ``/ws`` gets one snapshot (JSON) for the
  stream it chose (``{"choose": "<stream>"}``). A page that has not taken the last one
  yet is skipped, and the skip counted: a slow or stalled browser costs neither the service
  nor the other pages anything.
- ``/readyz`` (stages and queues) and ``/streams`` of the service, never its ``/metrics``
  (which grows with the streams' labels: 1.8 MB for 1,000 of them, 0.4 s of the supervisor's
  CPU to render and 0.6-0.9 s of the view's to parse; ``python -m bench.view`` prints both),
  and ``/metrics`` of any other process a path draws as meters (a codec link end), are read
  every second.
- ``GET /api/state?stream=NAME`` is the same snapshot once, for scripts (the stream's panel
  fills from the next call on, for 30 s after the last).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgpack
import zmq
import zmq.asyncio
from aiohttp import WSMsgType, web
from prometheus_client.parser import text_string_to_metric_families

from stream.errors import WireError
from stream.security import ClientSecurity
from stream.view.state import ViewState
from stream.wire import ERROR_KIND, RESULT_PREFIX, Message, decode

__all__ = ["ViewConfig", "ViewServer"]

log = logging.getLogger(__name__)

_RECV_BURST = 2000
_READ_PAUSE_S = 0.02
_MAX_CLIENT_MESSAGE = 4096
_MAX_STREAM_NAME = 256
_API_CHOICE_S = 30.0
_API_CHOICES = 16  # streams drawn at once for /api/state callers


@dataclass(frozen=True, kw_only=True)
class ViewConfig:
    """``connect``: the service's results (PUB) endpoint; ``mirror``: its input mirror
    (``None``: results only); ``metrics``: its metrics URL (``/readyz``, ``/streams``);
    ``meters``: ``/metrics`` URLs of other processes (codec link ends); ``host``/``port``:
    where the page is served (port 0: a free one); ``interval_s``: seconds between updates
    of a page; ``security``: CURVE client keys for the service's sockets."""

    connect: str
    mirror: str | None = None
    metrics: str | None = None
    meters: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8080
    interval_s: float = 0.25
    security: ClientSecurity | None = None
    scrape_s: float = 1.0
    max_streams: int = 4096

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and 0.02 <= self.interval_s <= 10):
            raise ValueError(f"interval_s must be within 0.02-10 s, got {self.interval_s}")


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    chosen: str | None = None
    sending: asyncio.Task[None] | None = None


class ViewServer:
    """The view on a running event loop: :meth:`start`, then :meth:`stop`
    (:mod:`stream.view.process` runs one in its own process)."""

    def __init__(self, config: ViewConfig, state: ViewState | None = None) -> None:
        self.config = config
        self.state = state or ViewState(max_streams=config.max_streams)
        self._live: set[_Client] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._runner: web.AppRunner | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._mirror: zmq.asyncio.Socket | None = None
        self._results: zmq.asyncio.Socket | None = None
        self._topics: set[str] = set()  # mirror subscriptions
        self._result_topics: set[str] = {""}  # results subscriptions
        self._api_chosen: dict[str, float] = {}  # stream -> until when (/api/state)

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> str:
        """Bind the page, connect the sockets, start the loops; returns the page's URL."""
        cfg = self.config
        app = web.Application(client_max_size=_MAX_CLIENT_MESSAGE)
        static = resources.files("stream.view") / "static"
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_static("/static/", str(static), follow_symlinks=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port)
        await site.start()
        port = self._runner.addresses[0][1]  # port 0: the one the system chose
        # The page is bound (a port in use raises before anything else starts): now the
        # sockets and the loops.
        self._ctx = zmq.asyncio.Context()
        self._results = results = self._subscriber(cfg.connect)
        results.setsockopt(zmq.SUBSCRIBE, b"")  # until the service's own counts come
        self._tasks.append(asyncio.create_task(self._read(results, self._on_result)))
        if cfg.mirror is not None:
            self._mirror = self._subscriber(cfg.mirror)
            self._tasks.append(asyncio.create_task(self._read(self._mirror, self._on_input)))
        self._tasks.append(asyncio.create_task(self._tick()))
        self._tasks.append(asyncio.create_task(self._scrape()))
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        return f"http://{host}:{port}/"

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in list(self._live):
            with contextlib.suppress(Exception):
                await client.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)

    # -- the service's sockets ---------------------------------------------------------------

    def _subscriber(self, endpoint: str) -> zmq.asyncio.Socket:
        assert self._ctx is not None
        sock = self._ctx.socket(zmq.SUB)
        sock.linger = 0
        if self.config.security is not None:
            self.config.security.apply(sock)
        sock.rcvhwm = 10_000
        sock.connect(endpoint)
        return sock

    async def _read(self, sock: zmq.asyncio.Socket,
                    handle: Callable[[list[Any]], None]) -> None:
        # Wait on the asyncio socket, then take what is queued through a plain shadow of it:
        # a future per message would cost more than the message. Waking at most every
        # _READ_PAUSE_S lets messages gather: the view's cost grows with wake-ups, not rate.
        queued: zmq.Socket[Any] = zmq.Socket.shadow(sock.underlying)
        while True:
            await sock.poll()  # readable
            await asyncio.sleep(_READ_PAUSE_S)
            for _ in range(_RECV_BURST):
                try:
                    frames = queued.recv_multipart(zmq.NOBLOCK)  # small: copies are cheaper
                except zmq.Again:
                    break
                try:
                    handle(frames)
                except Exception:  # one message must never end the view
                    self.state.counts["invalid"] += 1
                    log.debug("view: a message it could not read", exc_info=True)

    def _on_result(self, frames: list[Any]) -> None:
        # The overview needs headers only: a body is decoded (and the whole message checked)
        # for an error, or for a stream a page draws.
        try:
            header = msgpack.unpackb(frames[1]) if len(frames) == 3 else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or not isinstance(header.get("stream"), str):
            self.state.counts["invalid"] += 1
            return
        if header.get("kind") != ERROR_KIND and not self.state.drawing(header["stream"]):
            self.state.result(header, None)
        elif (msg := self._decoded(frames)) is not None:
            self.state.result(msg.header, msg.payload)

    def _on_input(self, frames: list[Any]) -> None:
        if (msg := self._decoded(frames)) is not None:
            self.state.mirrored(msg.header, msg.payload)

    def _decoded(self, frames: list[Any]) -> Message | None:
        """The message, checked as every client checks it; ``None`` (counted) if invalid."""
        try:
            return decode(frames, topic=True)
        except WireError:
            self.state.counts["invalid"] += 1
            return None

    def _follow_choices(self) -> None:
        now = time.monotonic()
        self._api_chosen = {k: t for k, t in self._api_chosen.items() if t > now}
        chosen = {c.chosen for c in self._live if c.chosen} | set(self._api_chosen)
        topics = self.state.choose(chosen)
        if self._mirror is not None:
            self._topics = _resubscribe(self._mirror, self._topics, topics)
        if self._results is not None and self.state.service_counts:
            # The overview comes from the service's counts: results of the drawn streams
            # (the topic is a prefix: the state keeps only the stream's own) and errors.
            wanted = {f"{ERROR_KIND}/"} | {f"{RESULT_PREFIX}{path}/{name}" for name in chosen
                                           if (path := self.state.path_of(name)) is not None}
            self._result_topics = _resubscribe(self._results, self._result_topics, wanted)

    # -- pages -------------------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_s)
            try:
                self._push()
            except Exception:  # a bug in a snapshot must not stop the pages' updates
                log.exception("view: an update failed")

    def _push(self) -> None:
        self._follow_choices()
        frames: dict[str | None, str] = {}
        for client in list(self._live):
            if client.ws.closed:
                self._live.discard(client)
                continue
            if client.sending is not None and not client.sending.done():
                self.state.counts["skipped_updates"] += 1
                continue
            if client.chosen not in frames:
                frames[client.chosen] = self.state.snapshot_json(client.chosen)
            client.sending = asyncio.create_task(self._send(client, frames[client.chosen]))
        self.state.counts["pages"] = len(self._live)

    async def _send(self, client: _Client, text: str) -> None:
        try:
            await client.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            self._live.discard(client)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        page = resources.files("stream.view") / "static" / "index.html"
        return web.Response(text=page.read_text(encoding="utf-8"), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def _api_state(self, request: web.Request) -> web.StreamResponse:
        chosen = _stream_name(request.query.get("stream"))
        if chosen is not None and (chosen in self._api_chosen
                                   or len(self._api_chosen) < _API_CHOICES):
            # Drawn for a while: the next call shows its panel.
            self._api_chosen[chosen] = time.monotonic() + _API_CHOICE_S
            self._follow_choices()
        return web.Response(text=self.state.snapshot_json(chosen),
                            content_type="application/json")

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=_MAX_CLIENT_MESSAGE, heartbeat=10.0)
        await ws.prepare(request)
        client = _Client(ws)
        self._live.add(client)
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    request_body = json.loads(message.data)
                except ValueError:
                    self.state.counts["bad_requests"] += 1
                    continue
                chosen = _stream_name(request_body.get("choose")) if isinstance(
                    request_body, dict) else None
                if chosen is None:
                    self.state.counts["bad_requests"] += 1
                    continue
                client.chosen = chosen
                self._follow_choices()
        finally:
            self._live.discard(client)
        return ws

    # -- scrapes -----------------------------------------------------------------------------

    async def _scrape(self) -> None:
        while True:
            try:
                await self._scrape_once()
            except Exception:  # one odd answer must not end the reads
                log.exception("view: a health or meters read failed")
            await asyncio.sleep(self.config.scrape_s)

    async def _scrape_once(self) -> None:
        cfg = self.config
        if cfg.metrics is not None:
            base = cfg.metrics.rstrip("/").removesuffix("/metrics")
            self.state.readiness(await asyncio.to_thread(_readiness, f"{base}/readyz"))
            counts = await asyncio.to_thread(_json_document, f"{base}/streams")
            if counts is not None:
                self.state.counted(counts)
                self._follow_choices()
        for url in cfg.meters:
            families = await asyncio.to_thread(_families, url)
            if families is not None:
                self.state.scraped_meters(url, families)


def _resubscribe(sock: zmq.asyncio.Socket, before: set[str], after: set[str]) -> set[str]:
    for topic in after - before:  # subscribe first: nothing is missed in between
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    for topic in before - after:
        sock.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
    return after


def _stream_name(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= _MAX_STREAM_NAME:
        return value
    return None


def _families(url: str) -> dict[str, list[tuple[str, dict[str, str], float]]] | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            text = response.read(8 << 20).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError):
        return None
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    try:
        for family in text_string_to_metric_families(text):
            out[family.name] = [(s.name, dict(s.labels), float(s.value)) for s in family.samples]
    except ValueError:
        return None
    return out


def _json_document(url: str) -> dict[str, Any] | None:
    """A JSON object from ``url``; ``None`` when there is none (a service without
    ``/streams``, or not reachable)."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            body = json.loads(response.read(64 << 20))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _readiness(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            body = response.read(1 << 16)
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(1 << 16), exc.code
    except OSError as exc:
        return {"ready": False, "status": None, "reason": f"unreachable: {exc}"}
    try:
        detail = json.loads(body)
    except ValueError:
        detail = body.decode("utf-8", "replace")[:200]
    return {"ready": status == 200, "status": status, "detail": detail}
