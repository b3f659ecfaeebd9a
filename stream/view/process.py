"""Running the view: in the foreground (``sigstream view``), or as a child process beside a
service (``sigstream run ... --view-port``, ``sigstream demo``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from typing import Any

from stream.view.server import ViewConfig, ViewServer

__all__ = ["ViewProcess", "run_view"]

log = logging.getLogger(__name__)

_PARENT_CHECK_S = 1.0


def run_view(config: ViewConfig) -> int:
    """Serve the view until SIGINT or SIGTERM; returns the exit status (0)."""

    async def main() -> None:
        server = ViewServer(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        url = await server.start()
        log.info("view on %s (results %s%s)", url, config.connect,
                 f", inputs {config.mirror}" if config.mirror else "")
        try:
            await stop.wait()
        finally:
            await server.stop()

    asyncio.run(main())
    return 0


def _child(config: ViewConfig, report: Connection, log_settings: tuple[int, str]) -> None:
    """The view's process: ignores the terminal's signals (its parent stops it), and exits
    with its parent."""
    from stream.logs import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(*log_settings)
    parent = os.getppid()

    async def main() -> None:
        server = ViewServer(config)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            url = await server.start()
        except OSError as exc:
            report.send(("error", f"cannot serve the view on {config.host}:{config.port}: {exc}"))
            return
        report.send(("url", url))
        try:
            while os.getppid() == parent and not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), _PARENT_CHECK_S)
        finally:
            await server.stop()

    asyncio.run(main())


class ViewProcess:
    """The view in a child process: :meth:`start` returns its URL once it serves (or raises
    ``OSError`` when it cannot bind); :meth:`stop` (safe twice) ends it."""

    def __init__(self, config: ViewConfig) -> None:
        self.config = config
        self.url: str | None = None
        self._proc: Any = None

    def start(self, timeout_s: float = 30.0) -> str:
        from stream.logs import current_settings

        mp = multiprocessing.get_context("spawn")
        here, there = mp.Pipe(duplex=False)
        self._proc = mp.Process(target=_child, args=(self.config, there, current_settings()),
                                name="sigstream-view", daemon=True)
        self._proc.start()
        there.close()
        if not here.poll(timeout_s):
            self.stop()
            raise OSError(f"the view did not start within {timeout_s:g} s")
        try:
            kind, value = here.recv()
        except EOFError:
            kind, value = "error", "the view's process ended before it served (see its log)"
        if kind != "url":
            self.stop()
            raise OSError(value)
        self.url = value
        return value

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)
