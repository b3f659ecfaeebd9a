"""Running the view: in the foreground (``sigstream view``), or as a child process beside a
service (``sigstream run ... --view-port``, ``sigstream demo``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from stream.view.server import ViewConfig, ViewServer

__all__ = ["ViewProcess", "run_view"]

log = logging.getLogger(__name__)

_PARENT_CHECK_S = 1.0


async def _serve(config: ViewConfig, *, stop_on: tuple[signal.Signals, ...],
                 on_url: Callable[[str], None], parent: int | None = None) -> None:
    """Serve until one of ``stop_on`` arrives or, with ``parent``, that process is gone;
    ``on_url`` hears the page's URL once it is served."""
    server = ViewServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_on:
        loop.add_signal_handler(sig, stop.set)
    try:
        on_url(await server.start())
        while not stop.is_set() and (parent is None or os.getppid() == parent):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), _PARENT_CHECK_S)
    finally:
        await server.stop()


def run_view(config: ViewConfig) -> int:
    """Serve the view until SIGINT or SIGTERM; returns the exit status (0)."""
    inputs = f", inputs {config.mirror}" if config.mirror else ""
    asyncio.run(_serve(config, stop_on=(signal.SIGINT, signal.SIGTERM),
                       on_url=lambda url: log.info("view on %s (results %s%s)", url,
                                                   config.connect, inputs)))
    return 0


def _child(config: ViewConfig, report: Connection, log_settings: tuple[int, str]) -> None:
    """The view's process: ignores the terminal's signals (its parent stops it), and exits
    with its parent."""
    from stream.logs import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(*log_settings)
    try:
        asyncio.run(_serve(config, stop_on=(signal.SIGTERM,),
                           on_url=lambda url: report.send(("url", url)), parent=os.getppid()))
    except OSError as exc:
        report.send(("error", f"cannot serve the view on {config.host}:{config.port}: {exc}"))


class ViewProcess:
    """The view in a child process: :meth:`start` returns its URL once it serves (or raises
    ``OSError`` when it cannot bind); :meth:`stop` (safe twice) ends it."""

    def __init__(self, config: ViewConfig) -> None:
        self.config = config
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
