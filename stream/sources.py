"""Sources: push frames from devices to a service's ingest socket, in wire format v1.

One process can serve many instruments over one PUSH socket: every instrument is a
:class:`~devices.frames.FrameSource` (a spectrometer, an ECG wearable) with its own stream id
and its own ``seq`` (0, 1, 2, ... per stream, so a sink sees gaps), and the instrument due
first is read first. Each message is a data message (``kind="spectrum"``, ``"ecg"``) whose
``t_ns`` is the capture time of the frame's first sample and, for time series, whose ``fs`` is
the frame's sample rate.

A service that is missing or stuck is reported, not waited on forever: the socket only queues
to live connections (``ZMQ_IMMEDIATE``), queues at most ``sndhwm`` messages, and a send that
cannot complete within ``send_timeout_s`` stops the run with exit status 1.

Called from the CLI's main thread (``sigstream source ...``); Ctrl-C (SIGINT) or SIGTERM
stops a run cleanly: the summary is printed and the socket closed.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import zmq

from devices.ecg import EcgReplay, EcgReplayConfig, EcgSimulatorConfig, EcgSimulatorSource
from devices.frames import DeviceError, EndOfStream, FrameSource
from devices.spectrometer import (
    SpectrometerSimConfig,
    SpectrometerSimulator,
    SpectrumReplay,
    SpectrumReplayConfig,
)
from stream.errors import WireError
from stream.wire import data_message, encode

__all__ = [
    "PushReport",
    "interrupt_on_signals",
    "push_frames",
    "run_ecg_replay",
    "run_ecg_sim",
    "run_replay",
    "run_spectral_sim",
    "sim_stream_ids",
]

_HARDWARE_POLL_S = 0.01  # how long one read may block on a source with no clock


@dataclass(kw_only=True)
class PushReport:
    """What a push run did. ``sent``: messages per stream id; ``elapsed_s``: first read to end;
    ``first_send_s``/``last_send_s``: monotonic times of the first and last send;
    ``error``: why the run stopped early (``None`` when it ran to its end);
    ``interrupted``: stopped by Ctrl-C or SIGTERM."""

    sent: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    first_send_s: float | None = None
    last_send_s: float | None = None
    error: str | None = None
    interrupted: bool = False

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    @property
    def rate_hz(self) -> float:
        """Achieved send rate, messages/s over all streams: ``n`` spectra of a stream span
        ``n - 1`` periods, so each stream's first send opens the window rather than counting."""
        if self.first_send_s is None or self.last_send_s is None:
            return 0.0
        span = self.last_send_s - self.first_send_s
        intervals = self.total - sum(1 for n in self.sent.values() if n)
        return intervals / span if span > 0 and intervals > 0 else 0.0

    def summary(self, label: str, target_hz: float | None = None) -> str:
        """One line: totals, achieved rate (and target), and the count per stream."""
        rate = self.rate_hz
        target = f", target {target_hz:.1f}/s" if target_hz is not None else ""
        per_stream = " ".join(f"{name}={n}" for name, n in self.sent.items())
        end = " (interrupted)" if self.interrupted else ""
        end += f" (stopped: {self.error})" if self.error else ""
        return (
            f"{label}: sent {self.total} messages in {self.elapsed_s:.2f} s "
            f"({rate:.1f}/s{target}); per stream: {per_stream}{end}"
        )


def sim_stream_ids(stream: str, streams: int) -> list[str]:
    """Stream ids of ``streams`` simulated instruments: ``stream`` itself for one, else
    ``stream-1 .. stream-N``."""
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    return [stream] if streams == 1 else [f"{stream}-{i}" for i in range(1, streams + 1)]


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGTERM (a supervisor's stop) ends a run like Ctrl-C. SIGINT is made to interrupt too:
    a process started in the background inherits it ignored. Main thread only (elsewhere
    Python cannot install handlers, and this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def push_frames(
    sources: Mapping[str, FrameSource],
    *,
    kind: str,
    connect: str,
    header: Mapping[str, Any] | None = None,
    seconds: float | None = None,
    send_timeout_s: float = 5.0,
    sndhwm: int = 1000,
    context: zmq.Context | None = None,
) -> PushReport:
    """Open ``sources`` (stream id -> source), push their frames to ``connect`` as ``kind``
    messages (``fs`` from the frame, extra ``header`` keys on every message) until every
    source is exhausted, ``seconds`` have passed, a send times out or Ctrl-C; close them all.

    Returns a :class:`PushReport`. Raises what ``open()`` raises (missing/corrupt file...).
    """
    report = PushReport(sent={name: 0 for name in sources})
    ctx = context or zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    linger_ms = int(send_timeout_s * 1000)
    try:
        sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.setsockopt(zmq.SNDTIMEO, int(send_timeout_s * 1000))
        # Queue only to completed connections: with no service a send times out (and is
        # reported) instead of filling a buffer nobody reads.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(connect)
        with ExitStack() as stack:
            for source in sources.values():
                stack.enter_context(source)
            start = time.monotonic()
            end_ns = None if seconds is None else time.monotonic_ns() + int(seconds * 1e9)
            try:
                with interrupt_on_signals():
                    _push_loop(dict(sources), sock, report, end_ns, connect, send_timeout_s,
                               kind, dict(header or {}))
            except KeyboardInterrupt:
                report.interrupted = True
            report.elapsed_s = time.monotonic() - start
        if report.error:
            linger_ms = 0  # nobody is taking messages: do not wait on close
    finally:
        sock.close(linger=linger_ms)
        if context is None:
            ctx.term()
    return report


def _push_loop(
    active: dict[str, FrameSource],
    sock: zmq.Socket,
    report: PushReport,
    end_ns: int | None,
    connect: str,
    send_timeout_s: float,
    kind: str,
    header: dict[str, Any],
) -> None:
    seq = {name: 0 for name in active}
    while active:
        now = time.monotonic_ns()
        if end_ns is not None and now >= end_ns:
            return
        name, source = min(active.items(), key=lambda item: item[1].next_due_ns or now)
        due = source.next_due_ns
        timeout_s = _HARDWARE_POLL_S if due is None else max(0.0, (due - now) / 1e9)
        if end_ns is not None:
            timeout_s = min(timeout_s, (end_ns - now) / 1e9)
        try:
            frame = source.read(timeout_s)
        except EndOfStream:
            del active[name]
            continue
        if frame is None:
            continue
        msg = data_message(kind, name, seq[name], frame.data, t_ns=frame.t_ns, fs=frame.fs,
                           **header)
        try:
            sock.send_multipart(encode(msg), copy=False)
        except zmq.Again:
            report.error = (
                f"no service took a message at {connect} for {send_timeout_s:g} s "
                "(not running, or not keeping up)"
            )
            return
        report.last_send_s = time.monotonic()
        if report.first_send_s is None:
            report.first_send_s = report.last_send_s
        seq[name] += 1
        report.sent[name] += 1


def _print_run(
    label: str, report: PushReport, target_hz: float | None, out: TextIO | None
) -> int:
    out = out or sys.stdout
    print(report.summary(label, target_hz), file=out, flush=True)
    if report.error:
        print(f"sigstream source: error: {report.error}", file=sys.stderr, flush=True)
        return 1
    return 130 if report.interrupted else 0


def run_spectral_sim(
    *,
    connect: str,
    rate_hz: float = 100.0,
    stream: str = "sim-1",
    streams: int = 1,
    count: int | None = None,
    seconds: float | None = None,
    length: int = 512,
    seed: int = 0,
    send_timeout_s: float = 5.0,
    context: zmq.Context | None = None,
    out: TextIO | None = None,
) -> int:
    """Simulate ``streams`` instruments at ``rate_hz`` spectra/s each and push them to
    ``connect``; stop after ``count`` spectra per stream and/or ``seconds``, or on Ctrl-C.

    Instrument ``i`` (0-based) is seeded ``[seed, i]``. Prints a one-line summary; returns the
    exit status (0 done, 1 service missing or stuck, 2 bad arguments, 130 interrupted).
    """
    try:
        names = sim_stream_ids(stream, streams)
        sources = {
            name: SpectrometerSimulator(
                SpectrometerSimConfig(
                    rate_hz=rate_hz, length=length, seed=seed, instrument=i, count=count
                )
            )
            for i, name in enumerate(names)
        }
        report = push_frames(
            sources, kind="spectrum", connect=connect, seconds=seconds,
            send_timeout_s=send_timeout_s, context=context,
        )
    except (ValueError, WireError, zmq.ZMQError) as exc:
        print(f"sigstream source: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return _print_run("spectral-sim", report, rate_hz * len(names), out)


def run_replay(
    path: Path,
    *,
    connect: str,
    rate_hz: float = 10.0,
    stream: str | None = None,
    count: int | None = None,
    loop: bool = False,
    skip_rows: int = 0,
    seconds: float | None = None,
    send_timeout_s: float = 5.0,
    context: zmq.Context | None = None,
    out: TextIO | None = None,
) -> int:
    """Replay ``path`` (CSV or NPY, one spectrum per row) at ``rate_hz`` to ``connect`` as
    stream ``stream`` (default: the file's name without suffix, spaces as ``_``).

    Stops at the end of the file (or after ``count`` spectra, ``seconds``, or Ctrl-C); with
    ``loop`` it starts again at the first row. Prints a one-line summary; returns the exit
    status (0 done, 1 service missing or stuck, 2 bad file or arguments, 130 interrupted).
    """
    path = Path(path)
    name = stream if stream is not None else "_".join(path.stem.split()) or "replay"
    try:
        source = SpectrumReplay(
            SpectrumReplayConfig(
                path=path, rate_hz=rate_hz, count=count, loop=loop, skip_rows=skip_rows
            )
        )
        report = push_frames(
            {name: source}, kind="spectrum", connect=connect, seconds=seconds,
            send_timeout_s=send_timeout_s, context=context,
        )
    except (OSError, DeviceError, ValueError, zmq.ZMQError) as exc:
        print(f"sigstream source: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return _print_run(f"replay {path.name}", report, rate_hz, out)


def run_ecg_sim(
    *,
    connect: str,
    stream: str = "wearable",
    streams: int = 1,
    fs_hz: float = 250.0,
    chunk_ms: float = 250.0,
    seconds: float | None = None,
    subject: int = 0,
    session: int = 1,
    snr_db: float | None = None,
    seed: int = 0,
    header: Mapping[str, Any] | None = None,
    send_timeout_s: float = 5.0,
    context: zmq.Context | None = None,
    out: TextIO | None = None,
) -> int:
    """Simulate ``streams`` ECG wearables (wearable ``i``, 0-based, is cohort subject
    ``subject + i`` of cohort ``seed``, in ``session``) and push ``chunk_ms`` chunks of
    ``fs_hz`` samples to ``connect`` in real time, with the extra ``header`` keys (``claim``,
    ``explain``, ``embed``); stop after ``seconds`` or on Ctrl-C. Prints a one-line summary;
    returns the exit status (0 done, 1 service missing or stuck, 2 bad arguments, 130
    interrupted)."""
    try:
        names = sim_stream_ids(stream, streams)
        sources = {
            name: EcgSimulatorSource(EcgSimulatorConfig(
                subject=subject + i, session=session, fs_hz=fs_hz, chunk_ms=chunk_ms,
                seed=seed, snr_db=snr_db,
            ))
            for i, name in enumerate(names)
        }
        report = push_frames(
            sources, kind="ecg", connect=connect, header=header, seconds=seconds,
            send_timeout_s=send_timeout_s, context=context,
        )
    except (ValueError, WireError, zmq.ZMQError) as exc:
        print(f"sigstream source: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return _print_run("ecg-sim", report, len(names) * 1e3 / chunk_ms, out)


def run_ecg_replay(
    path: Path,
    *,
    connect: str,
    stream: str | None = None,
    fs_hz: float | None = None,
    column: str | None = None,
    chunk_ms: float = 250.0,
    loop: bool = False,
    seconds: float | None = None,
    header: Mapping[str, Any] | None = None,
    send_timeout_s: float = 5.0,
    context: zmq.Context | None = None,
    out: TextIO | None = None,
) -> int:
    """Replay an ECG recording (CSV / NPY / WFDB, see :func:`devices.ecg.load_ecg`) at its
    recorded rate in ``chunk_ms`` chunks to ``connect`` as stream ``stream`` (default: the
    file's name). Exit status as :func:`run_replay`."""
    path = Path(path)
    name = stream if stream is not None else "_".join(path.stem.split()) or "ecg"
    col: int | str | None = int(column) if column is not None and column.isdigit() else column
    try:
        source = EcgReplay(EcgReplayConfig(path=path, fs_hz=fs_hz, column=col,
                                           chunk_ms=chunk_ms, loop=loop))
        report = push_frames(
            {name: source}, kind="ecg", connect=connect, header=header, seconds=seconds,
            send_timeout_s=send_timeout_s, context=context,
        )
    except (OSError, DeviceError, ValueError, zmq.ZMQError) as exc:
        print(f"sigstream source: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return _print_run(f"ecg-replay {path.name}", report, 1e3 / chunk_ms, out)
