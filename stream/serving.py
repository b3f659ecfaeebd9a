"""A service as a program (``sigstream run``): :func:`serve` runs a
:class:`~stream.service.Service` until SIGINT or SIGTERM, drains it, logs the per-stream summary
and returns the process exit status."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from stream.errors import ServiceError
from stream.service import Service
from stream.service_config import ServiceConfig

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(config: ServiceConfig) -> int:
    """Run a service until SIGINT or SIGTERM; drain; log the per-stream summary. Returns 0
    after a clean stop, 1 when the service could not start or a stage died. Call from the main
    thread (it installs signal handlers, restored on return)."""
    stop = threading.Event()
    starting = True
    service = Service(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal starting
        log.info("received %s: draining", signal.Signals(signum).name)
        stop.set()
        # Before every stage is up, abandon the start (start() stops what it spawned); once
        # it is up, a signal drains like any stop. Once: a second must not break the clean-up.
        if starting and not service.started:
            starting = False
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            service.start()
        except ServiceError as exc:
            log.error("%s", exc)
            return 1
        except KeyboardInterrupt:
            log.info("stopped while starting")
            return 0
        finally:
            starting = False
        log.info("serving path %s until Ctrl-C / SIGTERM", config.path)
        while not stop.wait(0.2):
            if service.failure is not None:
                break
        service.stop(config.stop_timeout_s)
        for line in service.summary_lines():
            log.info("summary %s", line)
        if service.failure is not None:
            log.error("service stopped because %s", service.failure)
            return 1
        return 0
    finally:
        service.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
