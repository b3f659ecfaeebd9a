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
- **worker** loads the path's engine once (:meth:`ServedPath.load_worker`), prepares each
  message into engine rows, batches rows across streams with :class:`engines.batcher.DynamicBatcher`
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

from stream.dispatch import shard_of
from stream.stages.config import (
    DROP_CODES,
    END,
    BatchClock,
    DispatchConfig,
    IngestConfig,
    PublisherConfig,
    ShardConfig,
    StageConfig,
    StageWiring,
    WorkerConfig,
)
from stream.stages.process import stage_main
from stream.stages.protocols import PathWorker, ServedPath, StreamStage

__all__ = [
    "DROP_CODES",
    "END",
    "BatchClock",
    "DispatchConfig",
    "IngestConfig",
    "PathWorker",
    "PublisherConfig",
    "ServedPath",
    "ShardConfig",
    "StageConfig",
    "StageWiring",
    "StreamStage",
    "WorkerConfig",
    "shard_of",
    "stage_main",
]
