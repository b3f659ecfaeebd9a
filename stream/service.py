"""The service: one supervisor process wiring and watching the stage processes.

:class:`Service` is the one place the pipeline is composed (the stages themselves live in
:mod:`stream.stages`, the paths in :mod:`stream.paths`); ``name`` is a served path's::

    with Service(ServiceConfig(path=name, ingest="tcp://127.0.0.1:*",
                               publish="tcp://127.0.0.1:*", backend="eager")) as service:
        print(service.bound_ingest, service.bound_publish)
        ...                                   # senders PUSH, clients SUB
        service.stop()                        # drain: every accepted message answered
        print(service.summary())              # per-stream accounting

Lifecycle: the constructor validates and does no I/O; :meth:`Service.start` makes a private
folder for the ``ipc://`` endpoints, spawns the stages (``multiprocessing`` spawn context:
publisher, engine workers, shards, then ingest once every engine is loaded, so a sender that
starts first waits in its own socket's queue and loses nothing) and waits until each reports
ready or raises :class:`~stream.errors.ServiceError` with the failing stage's own error (an
endpoint in use, missing weights); :meth:`Service.stop` drains (ingest stops reading, an end
marker flows down every path, workers flush their batches, the publisher sends everything and
closes), joins, kills leftovers and removes the folder; :meth:`Service.close` is :meth:`stop`
and is safe twice; ``with`` starts and closes.

While it runs, a monitor thread of the supervisor reads the stages' reports (stats snapshots for
``/metrics`` and the per-stream summary) and supervises the processes: a stage that dies, or
that stops reporting for ``watchdog_s`` (a worker within one batch: ``batch_timeout_s``; it is
then killed), is restarted on the same endpoints. The messages a lost engine worker held are
answered ``worker_lost`` by the dispatcher that handed them out (:mod:`stream.dispatch`); what
an ingest, shard or publisher held when it died cannot be answered, and the final summary counts
it as dropped ``lost_in_restart``. A stage that dies again soon is restarted after a growing
delay (0.25 s, doubling, at most 5 s). More than ``restart_budget`` restarts within
``restart_window_s`` stop the whole service with :attr:`Service.failure` set (never half-dead,
never restarting forever).

:func:`stream.serving.serve` runs a service as a program (``sigstream run``).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import msgpack
import zmq

from devices.lifecycle import ClosesOnExit
from stream.accounting import StreamSummary, format_summaries, merge_ledgers
from stream.errors import ServiceError, StageError
from stream.metrics import LATENCY_BUCKETS_S, Histogram, MetricsCollector, MetricsServer
from stream.service_config import ServiceConfig, make_path, stage_configs
from stream.stages import (
    IngestConfig,
    ShardConfig,
    StageConfig,
    stage_main,
)

__all__ = ["Service", "ServiceConfig"]

log = logging.getLogger(__name__)

_MONITOR_POLL_MS = 50
_BACKOFF_S = (0.25, 5.0)  # delay before restarting a stage that died again: first, most
_FAILURE_GRACE_S = 3.0  # after the service failed: time the stages get to drain, then killed
LOST_IN_RESTART = "lost_in_restart"


class Service(ClosesOnExit):
    """A running pipeline for one path. See the module docstring for the lifecycle.

    Public methods are called from one thread (the owner's); the monitor thread reads reports,
    supervises the processes and sends the dispatchers their notices.
    """

    def __init__(self, config: ServiceConfig) -> None:
        if not isinstance(config, ServiceConfig):
            raise ServiceError(f"expected a ServiceConfig, got {type(config).__name__}")
        self.config = config
        self.path = make_path(config)
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
    def started(self) -> bool:
        """Every stage came up: :meth:`start` got as far as "service ready"."""
        return self._started

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
        """What each stage reported when ready: ``endpoint`` (ingest, publisher), ``mirror``
        (ingest, with one), ``backend`` and ``load_s`` (workers), ``pid``."""
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

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the service serves now (``/readyz``): started, not stopping or failed, and
        every stage ``ready`` rather than ``starting`` (engine not yet loaded), ``down`` (exited)
        or ``silent`` (no report for ``watchdog_s``, or a batch longer than
        ``batch_timeout_s``); with ``state``, each stage's status and the ``queues`` of the
        stages that have one (``depth``, ``capacity``): a dashboard polling every second reads
        this small document rather than ``/metrics``, whose size grows with the streams.
        Safe from any thread (it reads copies of the supervisor's state)."""
        now = time.monotonic()
        ready, seen, procs = dict(self._ready), dict(self._last_seen), dict(self._procs)
        stages = {name: "down" if proc.exitcode is not None
                  else "starting" if name not in ready
                  else "silent" if self._stalled(name, seen.get(name, now), now)
                  else "ready" for name, proc in sorted(procs.items())}
        state = ("failed" if self._failure is not None
                 else self._state if self._state != "running"  # new, stopped
                 else "stopping" if self._stop_requested.is_set() or self._tearing_down
                 else "running" if self._started else "starting")
        ok = state == "running" and all(v == "ready" for v in stages.values())
        queues = {name: {"depth": q.get("depth"), "capacity": q.get("capacity")}
                  for name, snap in sorted(self._collector.snapshots().items())
                  if isinstance(q := snap.get("queue"), dict)}
        return ok, {"state": state, "stages": stages, "queues": queues}

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
                 f", metrics :{self.metrics_port}/metrics (health: /healthz, /readyz)"
                 if self._metrics else "")

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

    def stream_counts(self) -> dict[str, Any]:
        """What a dashboard polls each second rather than reading every result (``/streams``):
        the served ``path``, and per stream, since the start, the results ``delivered``,
        ``errors`` and drops (``dropped``) by code, and the capture-to-result ``latency``
        histogram (counts per bucket of ``latency_bounds_s``, the last one beyond them)."""
        latency = self.latency()
        return {"path": self.config.path, "latency_bounds_s": list(LATENCY_BUCKETS_S),
                "streams": {name: {"delivered": s.delivered, "errors": s.errors,
                                   "dropped": s.dropped,
                                   "latency": latency[name].counts if name in latency else []}
                            for name, s in self.summary().items()}}

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
                                          addr=cfg.metrics_addr, readiness=self.readiness,
                                          streams=self.stream_counts)
            try:
                self._metrics.start()
            except OSError as exc:
                self._metrics = None
                raise ServiceError(
                    f"cannot serve metrics on {cfg.metrics_addr}:{cfg.metrics_port}: {exc}"
                ) from exc

        configs = stage_configs(cfg, self.path, ipc)
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
        mirror: dict[str, Any] = {"mirror": self._ready["ingest"].get("mirror")}
        for name, pins in (("publisher", {}), ("ingest", mirror)):
            self._configs[name] = dataclasses.replace(  # type: ignore[type-var]
                self._configs[name], endpoint=self._endpoint(name), **pins)

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
                if name in self._ready and seen is not None \
                        and not self._stop_requested.is_set():
                    stalled = self._stalled(name, seen, now)
                    if stalled:
                        log.error("stage %s (pid %s) %s: killing it", name, proc.pid, stalled)
                        proc.kill()
                continue
            self._exited.add(name)
            self._collector.set_up(name, False)
            self._pump(0)
            if self._tearing_down or (self._stopped.get(name) == 0 and proc.exitcode == 0):
                continue
            self._restart(name, proc)

    def _stalled(self, name: str, seen: float, now: float) -> str | None:
        """Why a running stage last heard from at ``seen`` counts as stalled, or ``None``. A
        worker in a batch sends nothing until the batch ends: it is given ``batch_timeout_s``
        from the batch's start and ``watchdog_s`` from its end, as its
        :class:`~stream.stages.BatchClock` tells."""
        clock = getattr(self._configs.get(name), "batch_clock", None)
        if clock is not None:
            since, done = clock.since, clock.done
            if since:
                if now - since > self.config.batch_timeout_s:
                    return f"has been in one batch for {now - since:.1f} s"
                return None
            seen = max(seen, done)
        if now - seen > self.config.watchdog_s:
            return f"sent nothing for {now - seen:.1f} s"
        return None

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
