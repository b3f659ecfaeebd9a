"""Pipeline stages: what runs inside each process of a :class:`~stream.service.Service`.

::

    sender --PUSH--> ingest --(crc32(stream) % shards)--> shard k --(tagged)--> worker j
                     [door]                                  ^  |                  |
                       |                                     |  +-- answers <------+
                       +---- errors, answers ----------> publisher <-- answers ----+
                                                      (PUB, topic "<kind>/<stream>")

- **ingest** binds the external PULL and reads it greedily: every message is validated with
  :func:`stream.wire.decode` (wire errors and wrong kinds answered at once), ``seq`` is tracked
  per stream (ingest sees every stream in arrival order), and the message waits at the
  :class:`~stream.dispatch.Door` (bounded in messages and bytes, shedding by its policy, answering
  ``expired`` past the path's deadline) until there is room downstream. It then goes to shard
  ``crc32(stream) % shards`` — or, in a service without shards, through the path's per-stream
  stage right here (one hop less, for paths whose per-stream work is light, such as spectra).
- **shard** runs the path's per-stream stage (:class:`StreamStage`) on every message of its
  streams, in order, and hands the output to the engine workers.
- ingest (without shards) or each shard is a :class:`~stream.dispatch.Dispatcher`: it tags
  every message it hands to a worker, gets the answer back, and forwards it to the publisher,
  so it knows what each worker holds and answers ``worker_lost`` for it if that worker dies.
- **worker** loads the path's engine once (:meth:`Path.load_worker`), prepares each message into
  engine rows, batches rows across streams with :class:`engines.batcher.DynamicBatcher`
  (``max_batch`` rows or ``max_wait_us``, whichever first), makes one engine call per batch and
  sends one answer per message back to the dispatcher that sent it.
- **publisher** binds the external PUB and sends every answer; it is where answers are counted
  (delivered, errors and drops by code) and capture-to-result latency is measured.

Internal sockets are PUSH/PULL over ``ipc://`` in the service's private folder. A data message is
the sender's two frames ``[header, payload]`` (forwarded without re-encoding), prefixed with its
tag between a dispatcher and a worker; a message for the publisher is ``[topic, header,
payload]``; a one-frame message is the end marker :data:`END`, which flows down when the service
drains (ingest stops reading and empties its door, dispatchers wait for every answer, the
publisher sends everything and closes).

Every stage reports to the supervisor on a control socket (msgpack maps): ``ready`` (with the
endpoints it bound), ``failed`` (with the error), ``stats`` (a
:meth:`~stream.metrics.StageStats.snapshot`, a few times a second; the supervisor's watchdog
reads silence as a stall) and ``stopped``. The supervisor tells dispatchers on their command
socket when a worker is lost or back (``lost <j>``, ``up <j>``) and tells ingest to ``stop``.
Each stage is a single-threaded loop; :func:`stage_main` is the process entry point. Stage
processes ignore SIGINT and SIGTERM: a terminal or ``systemctl stop`` signals the whole process
group, and it is the supervisor that decides how to drain.
"""

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

from stream.dispatch import shard_of
from stream.errors import StageError, WireError
from stream.stages.base import Stage
from stream.stages.config import (
    DROP_CODES,
    END,
    DispatchConfig,
    IngestConfig,
    PublisherConfig,
    ShardConfig,
    StageConfig,
    StageWiring,
    WorkerConfig,
)
from stream.stages.ingest import IngestStage, ShardStage
from stream.stages.protocols import Path, PathWorker, StreamStage
from stream.stages.publisher import PublisherStage
from stream.stages.worker import WorkerStage

__all__ = [
    "DROP_CODES",
    "END",
    "DispatchConfig",
    "IngestConfig",
    "Path",
    "PathWorker",
    "PublisherConfig",
    "ShardConfig",
    "StageConfig",
    "StageWiring",
    "StreamStage",
    "WorkerConfig",
    "shard_of",
    "stage_main",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Process entry point


def stage_main(config: StageConfig) -> None:
    """Entry point of a stage process (``multiprocessing`` spawn target).

    SIGINT and SIGTERM are ignored here: a terminal or a service manager signals the whole
    process group, and it is the supervisor that decides how to drain (it kills a stage with
    SIGKILL when it must). Exits 0 after a clean drain, 1 on failure; either way the
    supervisor hears ``failed``/``stopped`` first. Never returns.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=config.wiring.log_level,
        format="%(asctime)s %(processName)s %(name)s %(levelname)s: %(message)s",
    )
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
