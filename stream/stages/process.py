"""The entry point of a stage process: make the stage its configuration names, open it, run it,
report to the supervisor, and exit without the interpreter's slow teardown."""

from __future__ import annotations

import gc
import logging
import multiprocessing.util
import os
import signal
import sys
import traceback
from typing import Any

import zmq

from stream.errors import StageError, WireError
from stream.logs import configure_logging
from stream.stages.base import Stage
from stream.stages.config import (
    IngestConfig,
    PublisherConfig,
    ShardConfig,
    StageConfig,
    WorkerConfig,
)
from stream.stages.ingest import IngestStage, ShardStage
from stream.stages.publisher import PublisherStage
from stream.stages.worker import WorkerStage

__all__ = ["stage_main"]

log = logging.getLogger(__name__)


def stage_main(config: StageConfig) -> None:
    """Entry point of a stage process (``multiprocessing`` spawn target).

    SIGINT and SIGTERM are ignored here: a terminal or a service manager signals the whole
    process group, and it is the supervisor that decides how to drain (it kills a stage with
    SIGKILL when it must). Exits 0 after a clean drain, 1 on failure; either way the
    supervisor hears ``failed``/``stopped`` first. Never returns.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(config.wiring.log_level, config.wiring.log_format)
    ctx: zmq.Context[Any] = zmq.Context()
    stage: Stage | None = None
    status = 0
    try:
        stage = _make_stage(config, ctx)
        try:
            info = stage.open()
        except BaseException as exc:
            stage.report("failed", error=_describe(exc), during="start")
            status = 1
        else:
            # Everything allocated so far (torch, the engine, imports) lives as long as the
            # process: take it out of the collector's reach, so a full collection on the hot
            # path walks only the objects made since, not a heap of millions.
            gc.collect()
            gc.freeze()
            stage.report("ready", **info)
            stage.run()
    except BaseException as exc:
        log.exception("%s failed", config.name)
        if stage is not None:
            stage.report("failed", error=_describe(exc), during="run")
        status = 1
    finally:
        if stage is not None:
            stage.close()
            stage.report("stopped", stats=stage.stats.snapshot(), status=status)
            stage.close_control()
        ctx.term()
    # Every socket is closed and flushed: skip the interpreter teardown, which takes seconds
    # once torch is loaded and would only delay the supervisor's join. multiprocessing's own
    # finalizers still run, so semaphores that libraries created (the ONNX export does) are
    # released rather than reported as leaked by the resource tracker.
    try:
        getattr(multiprocessing.util, "_run_finalizers")()  # noqa: B009 - what exit runs
    except Exception:
        log.debug("multiprocessing finalizers failed", exc_info=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _make_stage(config: StageConfig, ctx: zmq.Context[Any]) -> Stage:
    if isinstance(config, IngestConfig):
        return IngestStage(config, ctx)
    if isinstance(config, ShardConfig):
        return ShardStage(config, ctx)
    if isinstance(config, WorkerConfig):
        return WorkerStage(config, ctx)
    if isinstance(config, PublisherConfig):
        return PublisherStage(config, ctx)
    raise TypeError(f"not a stage config: {type(config).__name__}")


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, (StageError, WireError)):
        text += "\n" + "".join(traceback.format_exception(exc, limit=-3)).rstrip()
    return text
