"""What the benches share: their JSON output, process readings, the load process that sends on
a schedule, the weights a spectral bench runs, and for benches that drive ``sigstream`` itself:
polling, free ports, the command line, a command's peak memory and a log tap.

The subscriber side is the project's own :class:`stream.results.ResultsClient`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

if TYPE_CHECKING:
    from stream.accounting import StreamSummary

__all__ = [
    "REPO",
    "LogTap",
    "PacedLoad",
    "SpectralRun",
    "add_service_options",
    "cli",
    "cpu_seconds",
    "emit",
    "engine_totals",
    "free_port",
    "load_avg_1m",
    "load_process",
    "measured",
    "peak_mb",
    "poll_until",
    "push_socket",
    "rss_mb",
    "roi_weights",
    "service_accounting",
    "spectral_run",
    "wait_until",
]

REPO = Path(__file__).resolve().parent.parent


def add_service_options(parser: argparse.ArgumentParser, *, workers: int,
                        workers_help: str | None = None) -> None:
    """The options of the service a bench starts (``ServiceConfig`` fields of the same names,
    the door's depth at the service's own default) and of its output: ``--backend --shards
    --workers --max-batch --max-wait-us --queue-depth --cache-dir --json``."""
    from stream.service_config import ServiceConfig

    parser.add_argument("--backend", default="auto")
    parser.add_argument("--shards", type=int, default=0)
    parser.add_argument("--workers", type=int, default=workers, help=workers_help)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-us", type=int, default=2000)
    parser.add_argument("--queue-depth", type=int, default=ServiceConfig.queue_depth,
                        help="messages waiting at the service's door (bounds the backlog)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")


def emit(result: dict[str, Any], json_path: Path | None) -> None:
    """Print a bench's JSON result, and write it to ``json_path`` if given."""
    text = json.dumps(result, indent=2)
    print(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def push_socket(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    """A PUSH socket connected to ``endpoint`` that queues without bound, so the load never
    blocks (a service that falls behind shows it as latency), and that gets its backlog out
    within 10 s of closing."""
    push = ctx.socket(zmq.PUSH)
    push.sndhwm = 0
    push.linger = 10_000
    push.connect(endpoint)
    return push


def wait_until(due_ns: int) -> int:
    """Sleep until ``due_ns`` (Unix ns) unless it has passed; returns the time then (Unix ns),
    which is later than ``due_ns`` by the lag of a load that fell behind its schedule."""
    now = time.time_ns()
    if due_ns > now:
        time.sleep((due_ns - now) / 1e9)
        now = time.time_ns()
    return now


class Schedule:
    """The due times of a paced load: round ``k`` of stream ``i`` (of ``streams``) is due at
    ``start_ns + (k + offset + i / streams) * period_ns``, the streams spread evenly over each
    period. Iterating sleeps until each is due and yields ``(k, i, now_ns)``; ``max_lag_ns``
    is how far the load fell behind its schedule."""

    def __init__(self, *, start_ns: int, rounds: int, streams: int, period_ns: float,
                 offset: int = 0) -> None:
        self.start_ns, self.rounds, self.streams = start_ns, rounds, streams
        self.period_ns, self.offset = period_ns, offset
        self.max_lag_ns = 0

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for k in range(self.rounds):
            for i in range(self.streams):
                due = self.start_ns + int((k + self.offset + i / self.streams) * self.period_ns)
                now = wait_until(due)
                self.max_lag_ns = max(self.max_lag_ns, now - due)
                yield k, i, now


class PacedLoad:
    """The sending end of a load process: a :func:`push_socket` to ``endpoint`` (``push``) and
    the :class:`Schedule` (``schedule``) of ``per_stream = max(1, round(rate_hz * seconds))``
    rounds for each of the stream ids ``ids``, ``rate_hz`` rounds/s from ``start_ns`` (Unix
    ns). Used as a context manager: on a normal exit the socket gets its backlog out, then
    ``{"sent": {id: per_stream}, **extra, "max_lag_ms", "elapsed_s"}`` goes on ``report`` (a
    pipe end; ``extra`` is this object's dict of the load's own totals). On an error nothing
    is reported: the collector sees the process die."""

    def __init__(self, *, endpoint: str, ids: list[str], rate_hz: float, seconds: float,
                 start_ns: int, report: Any) -> None:
        self.ids, self.start_ns, self.report = ids, start_ns, report
        self.per_stream = max(1, round(rate_hz * seconds))
        self.schedule = Schedule(start_ns=start_ns, rounds=self.per_stream, streams=len(ids),
                                 period_ns=1e9 / rate_hz)
        self.extra: dict[str, Any] = {}
        self._ctx: zmq.Context[Any] = zmq.Context()
        self.push = push_socket(self._ctx, endpoint)

    def __enter__(self) -> PacedLoad:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        elapsed_s = (time.time_ns() - self.start_ns) / 1e9
        self.push.close()
        self._ctx.term()
        if exc_type is None:
            self.report.send({"sent": {s: self.per_stream for s in self.ids}, **self.extra,
                              "max_lag_ms": self.schedule.max_lag_ns / 1e6,
                              "elapsed_s": elapsed_s})
            self.report.close()


@contextlib.contextmanager
def load_process(mp: Any, target: Callable[..., None], *, name: str,
                 **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """Start ``target(**kwargs, report=<pipe end>)`` in a process of the multiprocessing
    context ``mp``; yields ``(process, report)``, the end it reports its totals on. On the way
    out the process gets 10 s to end, then it is killed."""
    report, child_end = mp.Pipe(duplex=False)
    process = mp.Process(target=target, name=name, kwargs={**kwargs, "report": child_end})
    process.start()
    child_end.close()
    try:
        yield process, report
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


def roi_weights(args: argparse.Namespace, tmp: Path) -> tuple[Path | None, str]:
    """``(weights file or None for the shipped ones, what the JSON says about them)`` for
    ``args.model``/``args.weights``: an untrained model of the same architecture when the
    shipped weights are missing (latency and throughput do not depend on the weights)."""
    from engines.roi.specs import ROI_SPECS

    if args.weights:
        return Path(args.weights), f"file {args.weights}"
    spec = ROI_SPECS[args.model]
    if spec.weights_path.is_file():
        return None, f"shipped {spec.weights}"
    import torch

    torch.manual_seed(0)
    path = tmp / f"untrained_{args.model}.pt"
    torch.save(spec.build().state_dict(), path)
    return path, "untrained (shipped weights missing; timing does not depend on weights)"


def service_accounting(summary: Mapping[str, StreamSummary], *,
                       per_input: bool = True) -> dict[str, int]:
    """The service's own account (:meth:`stream.service.Service.summary`) summed over its
    streams: received, (with ``per_input=False``, for paths that do not answer input for
    input, consumed and emitted,) delivered, errors, dropped and unexplained messages."""
    from stream.accounting import total_summary

    total = total_summary(summary)
    counts = {"received": total.received}
    if not per_input:
        counts |= {"consumed": total.consumed, "emitted": total.emitted}
    return counts | {"delivered": total.delivered, "errors": total.errors_total,
                     "dropped": total.dropped_total, "unexplained": total.unexplained}


def engine_totals(stats: Mapping[str, Mapping[str, Any]]) -> tuple[int, int, float]:
    """``(batches, rows, engine seconds)`` over the engine workers (stages named
    ``worker...``) of a service's :meth:`~stream.service.Service.stats`."""
    batches = rows = 0
    engine_s = 0.0
    for name, snap in stats.items():
        if name.startswith("worker"):
            counts, rows_sum, _ = snap["batch_rows"]
            batches += sum(counts)
            rows += int(rows_sum)
            engine_s += float(snap["engine_s"][1])
    return batches, rows, engine_s


def load_avg_1m() -> float:
    """This machine's 1-minute load average (two decimals)."""
    return round(os.getloadavg()[0], 2)


@dataclass(kw_only=True)
class SpectralRun:
    """A spectral bench's run (:func:`spectral_run`): ``mp`` the spawn context of its
    processes, ``tmp`` its temporary folder, ``weights``/``weights_note`` what
    :func:`roi_weights` gave, ``result`` its JSON result."""

    mp: Any
    tmp: Path
    weights: Path | None
    weights_note: str
    result: dict[str, Any] = dataclasses.field(default_factory=dict)

    @staticmethod
    def machine_at_start() -> dict[str, Any]:
        """The ``config`` entries of the machine at the start: ``cpus``,
        ``load_avg_1m_at_start``."""
        return {"cpus": os.cpu_count(), "load_avg_1m_at_start": load_avg_1m()}


@contextlib.contextmanager
def spectral_run(args: argparse.Namespace, *, prefix: str) -> Iterator[SpectralRun]:
    """A spectral bench's run: a temporary folder (``prefix``) holding the weights for
    ``args.model``/``args.weights`` (:func:`roi_weights`) while it lasts; on a normal exit
    ``result["config"]["load_avg_1m_at_end"]`` is set."""
    import multiprocessing

    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        weights, note = roi_weights(args, Path(name))
        run = SpectralRun(mp=multiprocessing.get_context("spawn"), tmp=Path(name),
                          weights=weights, weights_note=note)
        yield run
        run.result.setdefault("config", {})["load_avg_1m_at_end"] = load_avg_1m()


def poll_until(done: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll ``done`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now (for a service restarted on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str) -> list[str]:
    """The ``sigstream`` command line, run by this interpreter."""
    return [sys.executable, "-m", "stream.cli", *args]


def _status_mb(pid: int, field: str) -> float | None:
    """A kB field of ``/proc/<pid>/status`` in MB (one decimal); ``None`` once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def peak_mb(pid: int) -> float | None:
    """Peak resident memory of a live process, MB (``VmHWM``)."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float | None:
    """Resident memory of a live process now, MB (``VmRSS``)."""
    return _status_mb(pid, "VmRSS")



def measured(cmd: list[str], *, timeout_s: float, env: dict[str, str] | None = None
             ) -> dict[str, Any]:
    """Run ``cmd`` to its end: exit code, wall time (s), peak RSS (MB), stderr's last line
    (clipped to 300 characters) and its full length in characters."""
    with tempfile.TemporaryDirectory(prefix="faults-time-") as tmp:
        report = Path(tmp) / "time.txt"
        if os.access("/usr/bin/time", os.X_OK):
            wrapped = ["/usr/bin/time", "-v", "-o", str(report), *cmd]
        else:
            wrapped = [sys.executable, "-c", (
                "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
                "open(sys.argv[1], 'w').write('Maximum resident set size (kbytes): %d\\n' % "
                "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"),
                str(report), *cmd]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(wrapped, cwd=REPO, capture_output=True, text=True,
                                  timeout=timeout_s, env=env, errors="replace")
            rc: int | str = proc.returncode
            stderr = proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc = f"timed out after {timeout_s:g} s"
            stderr = exc.stderr if isinstance(exc.stderr, str) else ""
        wall = time.monotonic() - t0
        text = report.read_text() if report.exists() else ""
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return {"exit_code": rc, "wall_s": round(wall, 2),
            "peak_rss_mb": round(int(found.group(1)) / 1024, 1) if found else None,
            "stderr_lines": len(lines), "traceback": "Traceback" in stderr,
            "error_line_chars": len(last), "error_line": last[:300]}


class LogTap(logging.Handler):
    """Keeps the records of this process's loggers (the supervisor's own lines) with their
    monotonic time."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[float, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.levelname, record.getMessage()))

    @contextlib.contextmanager
    def attached(self, name: str = "stream") -> Iterator[LogTap]:
        logger = logging.getLogger(name)
        level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)
