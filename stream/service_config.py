"""A service's settings, and how they become its stage processes.

:class:`ServiceConfig` is the one frozen configuration of a :class:`~stream.service.Service`,
validated before any I/O; :func:`stage_configs` composes the stages it runs (the one place a
pipeline is wired; the stages themselves live in :mod:`stream.stages`).
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.errors import ConfigError
from stream.queues import QueuePolicy

if TYPE_CHECKING:  # the command line imports this module for its defaults: it stays light
    from stream.security import ServerSecurity
    from stream.stages import ServedPath, StageConfig

__all__ = ["BACKENDS", "ServiceConfig", "make_path", "stage_configs"]

#: ``auto`` and the engines' backends (:data:`engines.engine.BACKENDS`, spelled out so the
#: command line loads no numpy; a test pins them).
BACKENDS: tuple[str, ...] = ("auto", "eager", "onnxruntime", "tensorrt")


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Settings of one :class:`Service`.

    ``path``: the name of a served path (:func:`stream.paths.served_paths`); ``settings``: its
    own configuration section (:attr:`stream.paths.PathSpec.settings`; ``None`` for a path
    without one, or to take the section's defaults). ``ingest``/``publish``:
    endpoints to bind (``tcp://host:port``, ``tcp://127.0.0.1:*`` for a free port, or
    ``ipc://``). ``backend``/``model``/``weights``: the engine (``model``: ``None`` for the
    path's own, ``weights``: a file to use instead of the shipped weights of ``model``).
    ``shards``: per-stream stage processes (0: the per-stream
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
    stage silent this long is killed and restarted; ``batch_timeout_s``: the same for a worker
    that has been this long in one batch (engine call and results), during which it is silent
    by nature. ``metrics_port``: serve Prometheus ``/metrics`` there (0: a free port, ``None``:
    no server). ``cache_dir``:
    compiled-engine cache. ``max_samples``: longest input served. ``max_payload_bytes``: wire
    limit of one payload; ZeroMQ disconnects a sender of a frame bigger than
    ``max_message_bytes`` (default: twice the payload limit plus 1 MiB) before allocating it.
    ``start_timeout_s``: engine build included. ``stop_timeout_s``: drain budget of
    :func:`serve`. ``stats_interval_s``: how often stages report to the supervisor.
    ``max_streams``: stream ids tracked per stage (the rest are counted together as ``*``).
    ``security``: CURVE keys of the ingest and publish sockets (:mod:`stream.security`);
    without them a non-loopback ``ingest``/``publish`` is refused unless ``insecure``.
    ``metrics_addr``: the address ``/metrics`` and health listen on (loopback by default).
    ``mirror``: an endpoint where ingest sends every accepted input again to the subscribers of
    its ``"<kind>/<stream>"`` topic (``sigstream view`` draws them; ``None``: no mirror); it
    takes the keys that may send.
    """

    path: str
    ingest: str = "tcp://127.0.0.1:5555"
    publish: str = "tcp://127.0.0.1:5556"
    backend: str = "auto"
    model: str | None = None
    settings: Any = None
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
    batch_timeout_s: float = 60.0
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
    mirror: str | None = None

    def __post_init__(self) -> None:
        def bad(reason: str) -> ConfigError:
            return ConfigError(f"bad service configuration: {reason}")

        from stream.paths import path_spec, served_paths
        from stream.security import check_bind

        served = [spec.name for spec in served_paths()]
        if self.path not in served:
            raise bad(f"unknown path {self.path!r}; the service runs {', '.join(served)}")
        spec = path_spec(self.path)
        if spec.settings is None and self.settings is not None:
            raise bad(f"the {self.path} path has no settings, got {self.settings!r}")
        if spec.settings is not None and self.settings is None:
            try:  # the section's defaults, where it has them
                object.__setattr__(self, "settings", spec.settings())
            except TypeError:
                raise bad(f"the {self.path} path needs its settings: "
                          f"settings={spec.settings.__name__}(...)") from None
        if spec.settings is not None and not isinstance(self.settings, spec.settings):
            raise bad(f"the {self.path} path's settings are a {spec.settings.__name__}, got "
                      f"{type(self.settings).__name__}")
        if self.model is not None and self.model not in spec.models:
            raise bad(f"the {self.path} path has no model {self.model!r}; choose from "
                      f"{', '.join(spec.models)}")
        if self.backend not in BACKENDS:
            raise bad(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        for name in ("ingest", "publish") + (("mirror",) if self.mirror is not None else ()):
            endpoint = getattr(self, name)
            if not isinstance(endpoint, str) or not endpoint.startswith(("tcp://", "ipc://")):
                raise bad(f"{name} must be a tcp:// or ipc:// endpoint, got {endpoint!r}")
            check_bind(endpoint, secured=self.security is not None, insecure=self.insecure,
                       what=name)
        bound = [e for e in (self.ingest, self.publish, self.mirror)
                 if e is not None and not e.endswith(":*")]
        if len(set(bound)) < len(bound):
            raise bad("ingest, publish and mirror must be different endpoints")
        for name in ("workers", "max_batch", "queue_depth", "queue_bytes", "max_samples",
                     "max_payload_bytes", "max_streams"):
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
                     "restart_window_s", "watchdog_s", "batch_timeout_s"):
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


def make_path(config: ServiceConfig) -> ServedPath:
    """What the stage processes run of ``config``'s path."""
    from stream.paths import ServeOptions, path_spec

    spec = path_spec(config.path)
    assert spec.serve is not None  # validated
    options = ServeOptions(model=config.model, weights=config.weights,
                           max_samples=config.max_samples)
    try:
        return spec.serve(options, config.settings)
    except ValueError as exc:
        raise ConfigError(f"bad service configuration: {exc}") from exc


def stage_configs(cfg: ServiceConfig, path: ServedPath, ipc: str) -> list[StageConfig]:
    """The stage processes of a service for ``cfg`` serving ``path``, wired over ``ipc``
    (``ipc://`` folder prefix): publisher, workers, shards, then ingest (started last)."""
    from stream.dispatch import DoorConfig
    from stream.logs import current_settings
    from stream.stages import (
        BatchClock,
        DispatchConfig,
        IngestConfig,
        PublisherConfig,
        ShardConfig,
        StageWiring,
        WorkerConfig,
    )
    from stream.wire import WireLimits

    log_level, log_format = current_settings()
    wiring = StageWiring(
        control=f"{ipc}/control",
        parent_pid=os.getpid(),
        hwm=min(cfg.queue_depth, 1024),
        stats_interval_s=cfg.stats_interval_s,
        max_streams=cfg.max_streams,
        log_level=log_level,
        log_format=log_format,
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
        path, "deadline_ms", None)
    configs: list[StageConfig] = [
        PublisherConfig(
            name="publisher", wiring=wiring, endpoint=cfg.publish, inputs=publisher_input,
            upstream=1 + cfg.shards,
            security=cfg.security and cfg.security.for_publishing(),
        )
    ]
    configs += [
        WorkerConfig(
            name=f"worker-{j}", wiring=wiring, path=path, endpoint=worker_inputs[j],
            origins=results, backend=cfg.backend, cache_dir=cfg.cache_dir,
            max_batch=cfg.max_batch, max_wait_us=cfg.max_wait_us,
            queue_depth=credit * len(results) + cfg.max_batch, threads=cfg.threads,
            batch_clock=multiprocessing.get_context("spawn").RawValue(BatchClock),
        )
        for j in range(cfg.workers)
    ]
    configs += [
        ShardConfig(
            name=f"shard-{i}", wiring=wiring, path=path,
            endpoint=f"{ipc}/shard-{i}", command=f"{ipc}/command-shard-{i}",
            dispatch=dispatch(i), publisher=publisher_input, drain_s=drain_s,
        )
        for i in range(cfg.shards)
    ]
    configs.append(
        IngestConfig(
            name="ingest", wiring=wiring, endpoint=cfg.ingest, command=f"{ipc}/command-ingest",
            shards=tuple(f"{ipc}/shard-{i}" for i in range(cfg.shards)),
            publisher=publisher_input, path=path,
            limits=WireLimits(max_payload_bytes=cfg.max_payload_bytes),
            max_message_bytes=cfg.message_limit_bytes,
            door=DoorConfig(depth=cfg.queue_depth, max_bytes=cfg.queue_bytes,
                            policy=cfg.queue_policy, deadline_ms=deadline_ms),
            drain_s=drain_s,
            dispatch=None if cfg.shards else dispatch(0), security=cfg.security,
            mirror=cfg.mirror,
        )
    )
    return configs
