"""Stage configurations: frozen and picklable, they cross the spawn boundary; and the markers
the stages exchange.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from stream.dispatch import DoorConfig
from stream.security import (
    ServerSecurity,
)
from stream.wire import (
    WireLimits,
)

log = logging.getLogger(__name__)


END = b"END"
"""The end marker: a one-frame message on an internal socket."""

DROP_CODES = frozenset({"dropped", "expired", "overloaded"})
"""Error codes of messages given up under load (counted as drops, not as errors)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StageWiring:
    """What every stage process needs besides its own settings.

    ``control``: the supervisor's PULL endpoint. ``parent_pid``: the supervisor; a stage whose
    parent changed exits. ``hwm``: high-water mark (messages) of internal sockets.
    ``linger_ms``: how long closing a socket may wait to deliver what is queued.
    ``log_level``, ``log_format``: the supervisor's (:func:`stream.logs.current_settings`).
    """

    control: str
    parent_pid: int
    hwm: int = 1024
    linger_ms: int = 2000
    stats_interval_s: float = 0.5
    max_streams: int = 4096
    log_level: int = logging.INFO
    log_format: str = "text"


@dataclass(frozen=True, kw_only=True)
class DispatchConfig:
    """A dispatcher's side of the worker hand-off: the workers' input endpoints, the endpoint
    it binds for their answers, its index among dispatchers, and the credit per worker."""

    workers: tuple[str, ...]
    results: str
    origin: int
    credit: int


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """``endpoint``: external PULL to bind; ``command``: ipc PULL for the supervisor's
    commands; ``shards``/``publisher``: ipc endpoints to connect; ``max_message_bytes``: ZeroMQ
    ``MAXMSGSIZE`` (a bigger frame disconnects its sender before anything is allocated);
    ``door``: the bounded queue behind the socket. ``path``: the served path (its input kind
    is checked here); with no ``shards``, ingest runs its per-stream stages itself and hands
    their output on through ``dispatch``. ``mirror``: an XPUB endpoint to bind, where every
    accepted input is sent again to whoever subscribes to its ``"<kind>/<stream>"`` topic
    (``None``: no mirror)."""

    name: str
    wiring: StageWiring
    endpoint: str
    command: str
    shards: tuple[str, ...]
    publisher: str
    path: Any  # a ServedPath
    limits: WireLimits
    max_message_bytes: int
    door: DoorConfig
    drain_s: float = 10.0
    dispatch: DispatchConfig | None = None
    security: ServerSecurity | None = None
    mirror: str | None = None


@dataclass(frozen=True, kw_only=True)
class ShardConfig:
    """``endpoint``: ipc PULL to bind; ``command``: ipc PULL for the supervisor's commands;
    ``dispatch``: the worker hand-off; ``publisher``: ipc endpoint to connect."""

    name: str
    wiring: StageWiring
    path: Any  # a ServedPath
    endpoint: str
    command: str
    dispatch: DispatchConfig
    publisher: str
    drain_s: float = 10.0


class BatchClock(ctypes.Structure):
    """A worker's batch times, in shared memory between the worker and the supervisor:
    ``since`` (monotonic seconds) when the batch now in hand started, 0 between batches;
    ``done`` when the last one ended. A worker sends nothing while it is in a batch, and one
    batch may take longer than ``watchdog_s`` (CT slices on the eager backend): with this clock
    the supervisor tells a long batch from a stalled process without a message per batch."""

    _fields_ = (("since", ctypes.c_double), ("done", ctypes.c_double))


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """``endpoint``: ipc PULL to bind; ``origins``: the dispatchers' answer endpoints, by
    origin index (their end markers tell it to stop); ``queue_depth``: its bounded queue (the
    dispatchers' credit keeps it from overflowing); ``max_batch`` (engine rows) and
    ``max_wait_us`` (counted from the capture time of the oldest message waiting): the
    batcher's bounds; ``threads``: intra-op threads of the engine; ``batch_clock``: a shared
    :class:`BatchClock`, the worker's only writer."""

    name: str
    wiring: StageWiring
    path: Any  # a ServedPath
    endpoint: str
    origins: tuple[str, ...]
    backend: str
    cache_dir: FsPath | None
    max_batch: int
    max_wait_us: int
    queue_depth: int
    threads: int | None
    batch_clock: Any  # multiprocessing.sharedctypes.RawValue(BatchClock)


@dataclass(frozen=True, kw_only=True)
class PublisherConfig:
    """``endpoint``: external PUB to bind; ``inputs``: ipc PULL to bind; ``upstream``: how
    many stages send it end markers (ingest and the shards); ``sndhwm``: messages queued per
    subscriber before ZeroMQ drops for that subscriber (with answers of at most a few KB this
    bounds a slow subscriber's cost in bytes); ``linger_ms``: time to flush at close."""

    name: str
    wiring: StageWiring
    endpoint: str
    inputs: str
    upstream: int
    sndhwm: int = 10_000
    linger_ms: int = 2000
    security: ServerSecurity | None = None


StageConfig = IngestConfig | ShardConfig | WorkerConfig | PublisherConfig
