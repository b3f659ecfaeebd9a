"""The service: one supervisor process wiring and watching the stage processes.

:class:`Service` is the one place the pipeline is composed (the stages themselves live in
:mod:`stream.stages`, the spectral path in :mod:`stream.spectral`)::

    with Service(ServiceConfig(path="spectral", ingest="tcp://127.0.0.1:*",
                               publish="tcp://127.0.0.1:*", backend="eager")) as service:
        print(service.bound_ingest, service.bound_publish)
        ...                                   # senders PUSH, clients SUB
        service.stop()                        # drain: every accepted message answered
        print(service.summary())              # per-stream accounting

Lifecycle: the constructor validates and does no I/O; :meth:`Service.start` makes a private
folder for the ``ipc://`` endpoints, spawns the stages (``multiprocessing`` spawn context:
publisher, engine workers, shards, ingest) and waits until each reports ready (workers: engine
loaded and warmed up) or raises :class:`~stream.errors.ServiceError` with the failing stage's
own error (an endpoint in use, missing weights); :meth:`Service.stop` drains (ingest stops
reading, an end marker flows down every path, workers flush their batches, the publisher sends
everything and closes), joins, kills leftovers and removes the folder; :meth:`Service.close` is
:meth:`stop` and is safe twice; ``with`` starts and closes.

Ingest starts last, once every engine is loaded: a sender that starts first waits in its own
socket's queue and loses nothing.

While it runs, a monitor thread of the supervisor reads the stages' reports (stats snapshots for
``/metrics`` and the per-stream summary) and supervises the processes: a stage that dies, or
that stops reporting for ``watchdog_s`` (it is then killed), is restarted on the same endpoints.
The messages a lost engine worker held are answered ``worker_lost`` by the dispatcher that
handed them out (:mod:`stream.dispatch`); what an ingest, shard or publisher held when it died
cannot be answered, and the final summary counts it as dropped ``lost_in_restart``. A stage
that dies again soon is restarted after a growing delay (0.25 s, doubling, at most 5 s). More than
``restart_budget`` restarts within ``restart_window_s`` stop the whole service with
:attr:`Service.failure` set (never half-dead, never restarting forever).

:func:`serve` runs a service until SIGINT/SIGTERM, logs the per-stream summary and returns the
process exit status (``sigstream run``).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import msgpack
import zmq

from engines.engine import BACKENDS as ENGINE_BACKENDS
from stream.accounting import StreamSummary, format_summaries, merge_ledgers
from stream.dispatch import DoorConfig
from stream.ecg import EcgPath
from stream.errors import ServiceError, StageError
from stream.metrics import Histogram, MetricsCollector, MetricsServer
from stream.queues import QueuePolicy
from stream.security import ServerSecurity, check_bind
from stream.spectral import SpectralPath
from stream.stages import (
    DispatchConfig,
    IngestConfig,
    PublisherConfig,
    ShardConfig,
    StageConfig,
    StageWiring,
    WorkerConfig,
    stage_main,
)
from stream.wire import WireLimits

__all__ = ["PATHS", "Service", "ServiceConfig", "serve"]

log = logging.getLogger(__name__)

PATHS: tuple[str, ...] = ("spectral", "ecg")
BACKENDS: tuple[str, ...] = ("auto", *ENGINE_BACKENDS)
_MONITOR_POLL_MS = 50
_BACKOFF_S = (0.25, 5.0)  # delay before restarting a stage that died again: first, most
_FAILURE_GRACE_S = 3.0  # after the service failed: time the stages get to drain, then killed
LOST_IN_RESTART = "lost_in_restart"


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Settings of one :class:`Service`.

    ``path``: the processing path (``"spectral"``, ``"ecg"``). ``ingest``/``publish``:
    endpoints to bind (``tcp://host:port``, ``tcp://127.0.0.1:*`` for a free port, or
    ``ipc://``). ``backend``/``model``/``weights``: the engine (``model``: ``None`` for the
    path's own, ``weights``: a file to use instead of the shipped weights of ``model``).
    ``templates``/``fuse_beats`` (ECG): the SQLite file of enrolled users, and how many beats
    the fused decision covers. ``shards``: per-stream stage processes (0: the per-stream
    stages run inside ingest, one hop less; use shards when per-stream DSP is heavy).
    ``workers``: engine worker processes; ``threads``: intra-op threads per worker (1 keeps
    workers from oversubscribing the cores). ``max_batch``: engine rows per call.
    ``max_wait_us``: longest time a message waits for batch companions, counted from its
    capture time (``t_ns``), so a message that already waited upstream or behind a busy engine
    is not held back again.
    ``queue_depth``/``queue_bytes``/``queue_policy``: the door, the bounded queue behind the
    ingest socket (messages, bytes; ``block``, ``drop-oldest``, ``reject``); ``deadline_ms``:
    longest wait there before a message is answered ``expired`` (``None``: the path's own,
    :attr:`deadline_ms` of the path, if it has one). ``restart_budget``/``restart_window_s``:
    stage restarts allowed within the window before the service gives up; ``watchdog_s``: a
    stage silent this long is killed and restarted. ``metrics_port``: serve
    Prometheus ``/metrics`` there (0: a free port, ``None``: no server). ``cache_dir``:
    compiled-engine cache. ``max_samples``: longest input served. ``max_payload_bytes``: wire
    limit of one payload; ZeroMQ disconnects a sender of a frame bigger than
    ``max_message_bytes`` (default: twice the payload limit plus 1 MiB) before allocating it.
    ``start_timeout_s``: engine build included. ``stop_timeout_s``: drain budget of
    :func:`serve`. ``stats_interval_s``: how often stages report to the supervisor.
    ``max_streams``: stream ids tracked per stage (the rest are counted together as ``*``).
    ``security``: CURVE keys of the ingest and publish sockets (:mod:`stream.security`);
    without them a non-loopback ``ingest``/``publish`` is refused unless ``insecure``.
    ``metrics_addr``: the address ``/metrics`` and health listen on (loopback by default).
    ``templates_key``: a key file that encrypts the ECG templates at rest.
    """

    path: str = "spectral"
    ingest: str = "tcp://127.0.0.1:5555"
    publish: str = "tcp://127.0.0.1:5556"
    backend: str = "auto"
    model: str | None = None
    templates: Path | None = None
    fuse_beats: int = 5
    shards: int = 0
    workers: int = 2
    max_batch: int = 32
    max_wait_us: int = 2000
    queue_depth: int = 1024
    queue_bytes: int = 64 * 1024 * 1024
    queue_policy: str = "drop-oldest"
    deadline_ms: int | None = None
    restart_budget: int = 10
    restart_window_s: float = 60.0
    watchdog_s: float = 5.0
    metrics_port: int | None = None
    cache_dir: Path | None = None
    threads: int | None = 1
    weights: Path | None = None
    max_samples: int = 1 << 16
    max_payload_bytes: int = 64 * 1024 * 1024
    max_message_bytes: int | None = None
    metrics_addr: str = "127.0.0.1"
    start_timeout_s: float = 300.0
    stop_timeout_s: float = 10.0
    stats_interval_s: float = 0.5
    max_streams: int = 4096
    security: ServerSecurity | None = None
    insecure: bool = False
    templates_key: Path | None = None

    def __post_init__(self) -> None:
        def bad(reason: str) -> ServiceError:
            return ServiceError(f"bad service configuration: {reason}")

        if self.path not in PATHS:
            raise bad(f"unknown path {self.path!r}; choose from {', '.join(PATHS)}")
        if self.backend not in BACKENDS:
            raise bad(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        for name in ("ingest", "publish"):
            endpoint = getattr(self, name)
            if not isinstance(endpoint, str) or not endpoint.startswith(("tcp://", "ipc://")):
                raise bad(f"{name} must be a tcp:// or ipc:// endpoint, got {endpoint!r}")
            check_bind(endpoint, secured=self.security is not None, insecure=self.insecure,
                       what=name)
        if self.ingest == self.publish and not self.ingest.endswith(":*"):
            raise bad("ingest and publish must be different endpoints")
        if self.path == "ecg" and self.templates is None:
            raise bad("the ecg path needs a template store (templates=PATH)")
        for name in ("workers", "max_batch", "queue_depth", "queue_bytes", "max_samples",
                     "max_payload_bytes", "max_streams", "fuse_beats"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(f"{name} must be a positive integer, got {value!r}")
        for name in ("shards", "restart_budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(f"{name} must be a non-negative integer, got {value!r}")
        if not isinstance(self.max_wait_us, int) or self.max_wait_us < 0:
            raise bad(f"max_wait_us must be a non-negative integer, got {self.max_wait_us!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise bad(f"threads must be a positive integer or None, got {self.threads!r}")
        try:
            QueuePolicy(self.queue_policy)
        except ValueError:
            raise bad(
                f"queue_policy must be one of {[p.value for p in QueuePolicy]}, "
                f"got {self.queue_policy!r}"
            ) from None
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise bad(f"metrics_port must be in 0..65535, got {self.metrics_port}")
        if self.max_message_bytes is not None and self.max_message_bytes <= self.max_payload_bytes:
            raise bad("max_message_bytes must be above max_payload_bytes (oversize messages "
                      "get a clean wire error only below it)")
        for name in ("start_timeout_s", "stop_timeout_s", "stats_interval_s",
                     "restart_window_s", "watchdog_s"):
            if not getattr(self, name) > 0:
                raise bad(f"{name} must be > 0")
        if self.watchdog_s <= 2 * self.stats_interval_s:
            raise bad("watchdog_s must be more than twice stats_interval_s (the stages' "
                      "sign of life)")
        if self.deadline_ms is not None and (
                not isinstance(self.deadline_ms, int) or self.deadline_ms < 1):
            raise bad(f"deadline_ms must be a positive integer or None, got {self.deadline_ms!r}")

    @property
    def message_limit_bytes(self) -> int:
        """ZeroMQ ``MAXMSGSIZE`` of the ingest socket."""
        if self.max_message_bytes is not None:
            return self.max_message_bytes
        return 2 * self.max_payload_bytes + (1 << 20)


def _make_path(config: ServiceConfig) -> SpectralPath | EcgPath:
    try:
        if config.path == "spectral":
            return SpectralPath(model=config.model or "resnet_unet", weights=config.weights,
                                max_samples=config.max_samples)
        if config.path == "ecg":
            assert config.templates is not None  # validated
            return EcgPath(templates=config.templates, templates_key=config.templates_key,
                           fuse_beats=config.fuse_beats,
                           weights=config.weights, max_samples=config.max_samples,
                           model=config.model or "embedding")
    except ValueError as exc:
        raise ServiceError(f"bad service configuration: {exc}") from exc
    raise ServiceError(f"unknown path {config.path!r}")  # unreachable: validated


class Service:
    """A running pipeline for one path. See the module docstring for the lifecycle.

    Public methods are called from one thread (the owner's); the monitor thread reads reports,
    supervises the processes and sends the dispatchers their notices.
    """

    def __init__(self, config: ServiceConfig) -> None:
        if not isinstance(config, ServiceConfig):
            raise ServiceError(f"expected a ServiceConfig, got {type(config).__name__}")
        self.config = config
        self.path = _make_path(config)
        self._state = "new"  # new -> running -> stopped
        self._lock = threading.Lock()
        self._ctx: zmq.Context[Any] | None = None
        self._control: zmq.Socket[Any] | None = None
        self._commands: dict[str, zmq.Socket[Any]] = {}  # dispatcher stage -> its command PUSH
        self._dir: str | None = None
        self._configs: dict[str, StageConfig] = {}
        self._procs: dict[str, multiprocessing.process.BaseProcess] = {}
        self._ready: dict[str, dict[str, Any]] = {}
        self._stopped: dict[str, int] = {}
        self._exited: set[str] = set()
        self._last_seen: dict[str, float] = {}
        self._restarts: dict[str, int] = {}
        self._restart_times: deque[float] = deque()
        self._relaunch_at: dict[str, float] = {}  # stage -> monotonic time of its restart
        self._retired: list[Mapping[str, Any]] = []  # ledgers of stage incarnations that died
        self._lossy_death = False  # an ingest, shard or publisher died holding messages
        self._collector = MetricsCollector()
        self._metrics: MetricsServer | None = None
        self._monitor: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._monitor_exit = threading.Event()
        self._failed = threading.Event()
        self._failure: StageError | None = None
        self._failure_at: float | None = None
        self._start_error: str | None = None
        self._started = False
        self._tearing_down = False

    # -- public API ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def bound_ingest(self) -> str:
        """The ingest endpoint actually bound (random ports resolved)."""
        return self._endpoint("ingest")

    @property
    def bound_publish(self) -> str:
        """The publish endpoint actually bound (random ports resolved)."""
        return self._endpoint("publisher")

    @property
    def metrics_port(self) -> int | None:
        return None if self._metrics is None else self._metrics.port

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        """What each stage reported when ready: ``endpoint`` (ingest, publisher), ``backend``
        and ``load_s`` (workers), ``pid``."""
        return {name: dict(info) for name, info in self._ready.items()}

    @property
    def ipc_dir(self) -> str | None:
        """The private folder of the internal ``ipc://`` endpoints while running."""
        return self._dir

    @property
    def pids(self) -> dict[str, int]:
        """Stage name -> process id (of the current incarnation)."""
        return {name: p.pid for name, p in self._procs.items() if p.pid is not None}

    @property
    def restarts(self) -> dict[str, int]:
        """Stage name -> how many times it was restarted."""
        return dict(self._restarts)

    @property
    def failure(self) -> StageError | None:
        """Why the service stopped on its own (restarts beyond the budget), else ``None``."""
        return self._failure

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the service fails (True) or ``timeout_s`` passes (False)."""
        return self._failed.wait(timeout_s)

    def start(self) -> None:
        """Spawn every stage and wait until each is ready; ingest last, once the engines are
        loaded. No-op when already running.

        Raises :class:`ServiceError` with the failing stage's error, after stopping whatever
        had started.
        """
        if self._state == "running":
            return
        if self._state != "new":
            raise ServiceError("a stopped service cannot be started again; make a new one")
        self._state = "running"
        try:
            self._spawn()
        except BaseException as exc:
            self._teardown(timeout_s=2.0)
            if isinstance(exc, (ServiceError, KeyboardInterrupt)):
                raise
            raise ServiceError(f"service failed to start: {exc}") from exc
        self._started = True
        self._monitor = threading.Thread(target=self._monitor_loop, name="sigstream-monitor",
                                         daemon=True)
        self._monitor.start()
        log.info("service ready: ingest %s, publish %s%s", self.bound_ingest, self.bound_publish,
                 f", metrics :{self.metrics_port}/metrics" if self._metrics else "")

    def stop(self, timeout_s: float | None = None) -> None:
        """Drain and stop: every message ingest accepted is answered, then the stages exit.

        Stages still alive after ``timeout_s`` (default ``config.stop_timeout_s``) are killed.
        Safe to call twice and on a service that never started.
        """
        with self._lock:
            if self._state != "running":
                self._state = "stopped"
                return
            self._teardown(timeout_s=self.config.stop_timeout_s if timeout_s is None
                           else timeout_s)
            self._state = "stopped"

    def close(self) -> None:
        """Same as :meth:`stop`; safe twice."""
        self.stop()

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def stats(self) -> dict[str, dict[str, Any]]:
        """The latest stats snapshot of each stage (see :meth:`StageStats.snapshot`)."""
        return self._collector.snapshots()

    def summary(self) -> dict[str, StreamSummary]:
        """Per-stream accounting over all stages and all their incarnations; final after
        :meth:`stop`. After an ingest, shard or publisher died, what it held is counted as
        dropped ``lost_in_restart`` (and answers it had taken in without reporting them as
        received are added to ``received``), so that the account still closes."""
        ledgers = [*self._retired,
                   *(s.get("ledger", {}) for s in self._collector.snapshots().values())]
        summaries = merge_ledgers(ledgers)
        if not (self._lossy_death and self._state == "stopped"):
            return summaries
        for stream, s in summaries.items():
            gap = s.unexplained
            if gap > 0:
                summaries[stream] = dataclasses.replace(
                    s, dropped={**s.dropped, LOST_IN_RESTART: gap})
            elif gap < 0:
                summaries[stream] = dataclasses.replace(s, received=s.received - gap)
        return summaries

    def latency(self) -> dict[str, Histogram]:
        """Capture-to-result latency histogram per stream."""
        return self._collector.latency()

    def summary_lines(self) -> list[str]:
        """The per-stream summary as log lines (accounting, then latency)."""
        lines = format_summaries(self.summary())
        for stream, hist in self.latency().items():
            p50, p99 = hist.quantile(0.5), hist.quantile(0.99)
            if p50 is not None and p99 is not None:
                lines.append(
                    f"{stream}: latency p50 <= {p50 * 1e3:.1f} ms, p99 <= {p99 * 1e3:.1f} ms, "
                    f"max {hist.max * 1e3:.1f} ms ({hist.count} results)"
                )
        if self._restarts:
            lines.append("restarts: " + ", ".join(f"{name} {n}" for name, n
                                                   in sorted(self._restarts.items())))
        return lines

    # -- start ---------------------------------------------------------------------------

    def _endpoint(self, stage: str) -> str:
        info = self._ready.get(stage)
        if info is None or "endpoint" not in info:
            raise ServiceError("the service is not running")
        return str(info["endpoint"])

    def _stage_configs(self, ipc: str) -> list[StageConfig]:
        cfg = self.config
        wiring = StageWiring(
            control=f"{ipc}/control",
            parent_pid=os.getpid(),
            hwm=min(cfg.queue_depth, 1024),
            stats_interval_s=cfg.stats_interval_s,
            max_streams=cfg.max_streams,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        publisher_input = f"{ipc}/publisher"
        worker_inputs = tuple(f"{ipc}/worker-{j}" for j in range(cfg.workers))
        dispatchers = ["ingest"] if not cfg.shards else [f"shard-{i}" for i in range(cfg.shards)]
        results = tuple(f"{ipc}/answers-{name}" for name in dispatchers)
        # One batch in each worker's hands: the backlog beyond that waits at the door, where
        # it is shed by age, not behind an engine (measured: two batches doubled the latency
        # under overload, bench/overload.py, for no throughput).
        credit = max(cfg.max_batch, 4)

        def dispatch(origin: int) -> DispatchConfig:
            return DispatchConfig(workers=worker_inputs, results=results[origin],
                                  origin=origin, credit=credit)

        # Stages end their drain (answering what they could not serve) before the supervisor's
        # join gives up on them: ingest reads for up to 2 s more first.
        drain_s = max(0.5, 0.7 * cfg.stop_timeout_s - 2.0)
        deadline_ms = cfg.deadline_ms if cfg.deadline_ms is not None else getattr(
            self.path, "deadline_ms", None)
        configs: list[StageConfig] = [
            PublisherConfig(
                name="publisher", wiring=wiring, endpoint=cfg.publish, inputs=publisher_input,
                upstream=1 + cfg.shards,
                security=cfg.security and cfg.security.for_publishing(),
            )
        ]
        configs += [
            WorkerConfig(
                name=f"worker-{j}", wiring=wiring, path=self.path, endpoint=worker_inputs[j],
                origins=results, backend=cfg.backend, cache_dir=cfg.cache_dir,
                max_batch=cfg.max_batch, max_wait_us=cfg.max_wait_us,
                queue_depth=credit * len(results) + cfg.max_batch, threads=cfg.threads,
            )
            for j in range(cfg.workers)
        ]
        configs += [
            ShardConfig(
                name=f"shard-{i}", wiring=wiring, path=self.path,
                endpoint=f"{ipc}/shard-{i}", command=f"{ipc}/command-shard-{i}",
                dispatch=dispatch(i), publisher=publisher_input, drain_s=drain_s,
            )
            for i in range(cfg.shards)
        ]
        configs.append(
            IngestConfig(
                name="ingest", wiring=wiring, endpoint=cfg.ingest, command=f"{ipc}/command-ingest",
                shards=tuple(f"{ipc}/shard-{i}" for i in range(cfg.shards)),
                publisher=publisher_input, input_kind=self.path.input_kind,
                limits=WireLimits(max_payload_bytes=cfg.max_payload_bytes),
                max_message_bytes=cfg.message_limit_bytes,
                door=DoorConfig(depth=cfg.queue_depth, max_bytes=cfg.queue_bytes,
                                policy=cfg.queue_policy, deadline_ms=deadline_ms),
                drain_s=drain_s, path=self.path,
                dispatch=None if cfg.shards else dispatch(0), security=cfg.security,
            )
        )
        return configs

    def _spawn(self) -> None:
        cfg = self.config
        self._dir = tempfile.mkdtemp(prefix="sigstream-")
        ipc = f"ipc://{self._dir}"
        self._ctx = zmq.Context()
        self._control = self._ctx.socket(zmq.PULL)
        self._control.linger = 0
        self._control.bind(f"{ipc}/control")

        if cfg.metrics_port is not None:
            self._metrics = MetricsServer(self._collector, port=cfg.metrics_port,
                                          addr=cfg.metrics_addr)
            try:
                self._metrics.start()
            except OSError as exc:
                self._metrics = None
                raise ServiceError(
                    f"cannot serve metrics on {cfg.metrics_addr}:{cfg.metrics_port}: {exc}"
                ) from exc

        configs = self._stage_configs(ipc)
        self._configs = {c.name: c for c in configs}
        for c in configs:
            if isinstance(c, (IngestConfig, ShardConfig)):
                sock = self._ctx.socket(zmq.PUSH)
                sock.linger = 0
                sock.connect(c.command)
                self._commands[c.name] = sock
        # Ingest last: nothing is accepted before every engine is loaded.
        for c in configs[:-1]:
            self._launch(c)
        self._await_ready()
        self._launch(configs[-1])
        self._await_ready()
        # A restarted ingest or publisher binds what the first one got (random ports resolved).
        for name in ("ingest", "publisher"):
            self._configs[name] = dataclasses.replace(
                self._configs[name], endpoint=self._endpoint(name))  # type: ignore[type-var]

    def _launch(self, stage_config: StageConfig) -> None:
        mp = multiprocessing.get_context("spawn")
        proc = mp.Process(target=stage_main, args=(stage_config,),
                          name=f"sigstream-{stage_config.name}", daemon=True)
        proc.start()
        self._procs[stage_config.name] = proc
        self._exited.discard(stage_config.name)
        self._collector.set_up(stage_config.name, True)

    def _await_ready(self) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        while len(self._ready) < len(self._procs):
            self._pump(_MONITOR_POLL_MS)
            if self._start_error is not None:
                raise ServiceError(self._start_error)
            for name, proc in self._procs.items():
                if name not in self._ready and proc.exitcode is not None:
                    self._pump(0)  # its last words may have just arrived
                    if self._start_error is not None:
                        raise ServiceError(self._start_error)
                    raise ServiceError(
                        f"stage {name} exited with code {proc.exitcode} before it was ready"
                    )
            if time.monotonic() > deadline:
                missing = sorted(set(self._procs) - set(self._ready))
                raise ServiceError(
                    f"stages {', '.join(missing)} not ready after {self.config.start_timeout_s} s"
                )

    # -- reports and supervision (monitor thread after start) --------------------------------

    def _pump(self, timeout_ms: int) -> None:
        """Read every pending stage report, waiting up to ``timeout_ms`` for the first."""
        control = self._control
        assert control is not None
        if not control.poll(timeout_ms, zmq.POLLIN):
            return
        while True:
            try:
                raw = control.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                report = msgpack.unpackb(raw, raw=False)
                self._on_report(report)
            except Exception:  # a garbled report must not kill the monitor
                log.exception("unreadable stage report")

    def _on_report(self, report: Mapping[str, Any]) -> None:
        event, stage = report.get("event"), str(report.get("stage"))
        proc = self._procs.get(stage)
        if proc is None or report.get("pid") != proc.pid:
            return  # the last words of an incarnation already replaced
        self._last_seen[stage] = time.monotonic()
        if event == "ready":
            self._ready[stage] = dict(report)
            log.debug("stage %s ready: %s", stage, report)
            if self._started and stage.startswith("worker-"):
                self._notify(f"up {stage.removeprefix('worker-')}")
                log.info("stage %s is back", stage)
        elif event == "stats":
            self._collector.update(report["stats"])
        elif event == "stopped":
            self._collector.update(report["stats"])
            self._stopped[stage] = int(report.get("status", 0))
        elif event == "failed":
            error = str(report.get("error", "unknown error"))
            if not self._started:
                if self._start_error is None:
                    self._start_error = f"stage {stage} failed to start: {error}"
            else:
                log.error("stage %s failed: %s", stage, error)

    def _notify(self, command: str) -> None:
        """Tell every dispatcher (ingest or the shards) about a worker."""
        for name, sock in self._commands.items():
            try:
                sock.send(command.encode(), zmq.NOBLOCK)
            except zmq.Again:
                log.error("could not tell %s %r", name, command)

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            log.error("%s; stopping the service", reason)
            self._failure = StageError(reason)
            self._failure_at = time.monotonic()
            self._stop_requested.set()
            self._failed.set()

    def _monitor_loop(self) -> None:
        stop_sent = False
        while not self._monitor_exit.is_set():
            if self._stop_requested.is_set() and not stop_sent:
                stop_sent = self._send_stop()
            self._pump(_MONITOR_POLL_MS)
            try:
                self._watch()
                self._relaunch_due()
            except Exception:  # supervision must outlive any one mistake
                log.exception("supervision failed")
            if (self._failure_at is not None
                    and time.monotonic() - self._failure_at > _FAILURE_GRACE_S):
                self._kill_all(grace_s=0.5)
                self._failure_at = None
        self._pump(0)

    def _send_stop(self) -> bool:
        try:
            self._commands["ingest"].send(b"stop", zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _watch(self) -> None:
        now = time.monotonic()
        for name, proc in list(self._procs.items()):
            if name in self._exited:
                continue
            if proc.exitcode is None:
                seen = self._last_seen.get(name)
                if (name in self._ready and seen is not None
                        and now - seen > self.config.watchdog_s
                        and not self._stop_requested.is_set()):
                    log.error("stage %s (pid %s) sent nothing for %.1f s: killing it", name,
                              proc.pid, now - seen)
                    proc.kill()
                continue
            self._exited.add(name)
            self._collector.set_up(name, False)
            self._pump(0)
            if self._tearing_down or (self._stopped.get(name) == 0 and proc.exitcode == 0):
                continue
            self._restart(name, proc)

    def _restart(self, name: str, proc: multiprocessing.process.BaseProcess) -> None:
        """A stage died (or was killed as stalled): account for it and start it again."""
        log.error("stage %s (pid %s) died with exit code %s", name, proc.pid, proc.exitcode)
        snapshot = self._collector.snapshots().get(name, {})
        self._retired.append(snapshot.get("ledger", {}))
        self._collector.update({"stage": name})  # the new incarnation counts from zero
        self._ready.pop(name, None)
        self._last_seen.pop(name, None)
        self._stopped.pop(name, None)
        if name.startswith("worker-"):
            self._notify(f"lost {name.removeprefix('worker-')}")
        else:
            self._lossy_death = True
        if self._stop_requested.is_set():
            return  # draining: the others finish without it
        now = time.monotonic()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.config.restart_window_s:
            self._restart_times.popleft()
        if len(self._restart_times) > self.config.restart_budget:
            self._fail(f"stage {name} died; {len(self._restart_times)} restarts within "
                       f"{self.config.restart_window_s:g} s exceed the budget of "
                       f"{self.config.restart_budget}")
            return
        self._restarts[name] = self._restarts.get(name, 0) + 1
        self._collector.count_restart(name)
        recent = sum(1 for t in self._restart_times if now - t < 2 * _BACKOFF_S[1])
        delay = min(_BACKOFF_S[0] * 2 ** (recent - 1), _BACKOFF_S[1])
        log.warning("restarting stage %s in %.2f s (restart %d)", name, delay,
                    self._restarts[name])
        self._relaunch_at[name] = now + delay

    def _relaunch_due(self) -> None:
        now = time.monotonic()
        for name, due in list(self._relaunch_at.items()):
            if self._stop_requested.is_set():
                self._relaunch_at.clear()
            elif now >= due:
                del self._relaunch_at[name]
                self._launch(self._configs[name])

    def _kill_all(self, *, grace_s: float) -> None:
        """Kill every stage still alive after ``grace_s`` (they ignore SIGTERM: it is the
        supervisor's to handle)."""
        alive = [p for p in self._procs.values() if p.is_alive()]
        end = time.monotonic() + grace_s
        for proc in alive:
            proc.join(max(0.0, end - time.monotonic()))
        for proc in alive:
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)

    # -- stop ----------------------------------------------------------------------------

    def _teardown(self, *, timeout_s: float) -> None:
        """Drain (when the monitor runs), join, kill leftovers, release everything."""
        monitor = self._monitor
        if monitor is not None and monitor.is_alive():
            self._stop_requested.set()
        elif "ingest" in self._commands and self._procs:
            self._send_stop()
        deadline = time.monotonic() + timeout_s
        for name, proc in list(self._procs.items()):
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("stage %s did not drain within %.1f s; killing it", name, timeout_s)
        self._tearing_down = True  # what is killed from here on was asked to stop
        self._kill_all(grace_s=0.0)
        if monitor is not None:
            self._monitor_exit.set()
            monitor.join(timeout=5.0)
            self._monitor = None
        elif self._control is not None:
            self._pump(0)
        for sock in (self._control, *self._commands.values()):
            if sock is not None:
                sock.close(linger=0)
        self._control = None
        self._commands = {}
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def serve(config: ServiceConfig) -> int:
    """Run a service until SIGINT or SIGTERM; drain; log the per-stream summary.

    Returns 0 after a clean stop, 1 when the service could not start or a stage died. Call from
    the main thread (it installs signal handlers, restored on return).
    """
    stop = threading.Event()
    starting = True

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal starting
        log.info("received %s: draining", signal.Signals(signum).name)
        stop.set()
        if starting:
            starting = False  # once: a second signal must not interrupt the clean-up
            raise KeyboardInterrupt  # abandon the start; start() stops what it spawned

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    service = Service(config)
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
